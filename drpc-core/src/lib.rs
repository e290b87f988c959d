//! drpc-core: DRPC with stream multiplexing, wire-compatible with
//! `storj.io/drpc` (sequential) and `cockroachdb/drpc` (multiplexing).
//!
//! Layers, bottom up: [`wire`] (frames, varints, error payloads) and
//! [`metadata`]; [`packet`] (per-stream packet assembly) and [`state`] (the
//! per-stream state machine), all free of I/O; then the tokio layer: the
//! shared writer, the connection core with its reader task, [`Stream`],
//! the [`Conn`] client and the [`Server`] with its [`Router`].
//!
//! Around every call: [`interceptor`]s (server and client chains, tower
//! layers on the server), [`metrics`] (snapshots and the `metrics` crate
//! facade), a `tracing` span, [`deadline`] propagation (`drpc-timeout`) and
//! W3C [`trace`] context, both inherited by calls a handler makes
//! ([`context`]).

mod budget;
pub mod call;
pub mod compress;
pub mod context;
pub mod deadline;
pub mod interceptor;
pub mod metadata;
pub mod metrics;
pub mod packet;
mod peer;
pub mod state;
pub mod status;
pub mod trace;
pub mod wire;

mod client;
mod conn;
mod pool;
mod router;
mod server;
mod stream;
mod tasks;
mod transport;
mod writer;

pub use budget::{MemoryBudget, DEFAULT_MEMORY_BUDGET};
pub use client::{CallOptions, Conn};
pub use compress::Compression;
pub use conn::{
    ConnOptions, FlowControl, DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_CONCURRENT_STREAMS, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MAX_METADATA_SIZE,
    DEFAULT_READ_TIMEOUT,
};
pub use metadata::Metadata;
pub use metrics::MetricsSnapshot;
pub use trace::TraceContext;
pub use peer::{Peer, TlsPeer};
pub use pool::{Pool, PoolOptions};
pub use router::{Request, Router};
pub use server::{Server, ServerOptions};
pub use status::{Code, Status};
pub use stream::{CallContext, Stream};
/// A cancellation signal shared by clones (tokio-util's `CancellationToken`):
/// cancelling it cancels every call it was given to.
pub use tokio_util::sync::CancellationToken as CancelToken;
pub use server::HANDSHAKE_OVERHEAD;
pub use transport::{Listener, Socket};
