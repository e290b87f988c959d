//! The server: accepts connections on a listener (or serves any transport),
//! runs every RPC on its own task, turns handler errors and panics into Error
//! frames, and shuts down gracefully.

use crate::budget::{Account, MemoryBudget, CONNECTION_OVERHEAD, DEFAULT_MEMORY_BUDGET};
use crate::conn::{Acceptor, BoxRead, ConnOptions, ConnShared, Role};
use crate::metadata::Metadata;
use crate::peer::Peer;
use crate::router::{Handler, Request, Router};
use crate::state::End;
use crate::status::Status;
use crate::stream::{CallContext, Stream, StreamShared};
use crate::tasks::{CatchUnwind, TaskSet};
use crate::transport::{Listener, Socket};
use crate::writer::BoxWrite;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Settings of every connection; `conn.connection_buffer_budget` is each
    /// connection's share of `memory_budget`, and `conn.memory_budget` is
    /// ignored (the server makes one budget for all its connections).
    pub conn: ConnOptions,
    /// Bytes every connection together may hold (default
    /// [`DEFAULT_MEMORY_BUDGET`], 256 MiB; 0 means no limit). See
    /// [`MemoryBudget`] for what counts and what happens when it is full.
    pub memory_budget: usize,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            conn: ConnOptions::default(),
            memory_budget: DEFAULT_MEMORY_BUDGET,
        }
    }
}

/// A DRPC server. Cheap to clone; clones share connections and handlers.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    router: Router,
    opts: ServerOptions,
    draining: AtomicBool,
    /// Streams refused because the server is shutting down; shutdown waits
    /// for this to stop growing before it closes connections.
    refused_while_draining: AtomicU64,
    handlers: Arc<TaskSet>,
    conn_tasks: Arc<TaskSet>,
    accept_tasks: Arc<TaskSet>,
    conns: Mutex<HashMap<u64, Arc<ConnShared>>>,
    next_conn: AtomicU64,
    budget: MemoryBudget,
}

impl Server {
    pub fn new(router: Router) -> Server {
        Server::with_options(router, ServerOptions::default())
    }

    pub fn with_options(router: Router, mut opts: ServerOptions) -> Server {
        let budget = MemoryBudget::new(opts.memory_budget);
        opts.conn.memory_budget = Some(budget.clone());
        Server {
            inner: Arc::new(ServerInner {
                router,
                opts,
                draining: AtomicBool::new(false),
                refused_while_draining: AtomicU64::new(0),
                handlers: Arc::default(),
                conn_tasks: Arc::default(),
                accept_tasks: Arc::default(),
                conns: Mutex::default(),
                next_conn: AtomicU64::new(0),
                budget,
            }),
        }
    }

    /// Binds `addr` (`host:port`, port 0 allowed, or `unix:/path`) and serves it
    /// in the background. Returns the bound address.
    pub async fn listen(&self, addr: &str) -> std::io::Result<String> {
        let listener = Listener::bind(addr).await?;
        let local = listener.local_addr()?;
        self.serve(listener);
        Ok(local)
    }

    /// Serves a bound listener in the background until `shutdown`.
    pub fn serve(&self, listener: Listener) {
        let server = self.clone();
        self.inner.accept_tasks.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((rd, wr, addr)) => {
                        if server.admits_connection() {
                            server.start_conn(rd, wr, Some(Arc::new(Peer { addr: Some(addr), tls: None })));
                        } else {
                            // Closing it at once is the clearest answer a peer can get.
                            tracing::warn!("memory budget exhausted: refusing a connection");
                        }
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    /// Serves a bound listener in the background until `shutdown`, passing
    /// every accepted connection through `handshake` first (TLS, a protocol
    /// switch, ...). Each handshake runs on its own task, so a stalled one
    /// never holds up accepting; it has `conn.handshake_timeout` to finish
    /// (then the connection is closed) and counts [`HANDSHAKE_OVERHEAD`]
    /// bytes against the memory budget while it runs, so connections are
    /// refused once the budget cannot take one more. The handshake returns
    /// the byte stream to run DRPC over and the peer (it may add TLS
    /// identity), `Ok(None)` when it handed the connection elsewhere, or an
    /// error (logged with the peer's address; the connection is dropped).
    pub fn serve_with<H, Fut, T>(&self, listener: Listener, handshake: H)
    where
        H: Fn(Socket, Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<Option<(T, Peer)>>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let server = self.clone();
        let handshake = Arc::new(handshake);
        self.inner.accept_tasks.spawn(async move {
            loop {
                match listener.accept_socket().await {
                    Ok((socket, addr)) => {
                        if !server.admits_connection() {
                            tracing::warn!("memory budget exhausted: refusing a connection");
                            continue;
                        }
                        let account = Account::new(server.inner.budget.clone(), HANDSHAKE_OVERHEAD);
                        account.charge(HANDSHAKE_OVERHEAD);
                        let peer = Peer { addr: Some(addr.clone()), tls: None };
                        let running = handshake(socket, peer);
                        let server = server.clone();
                        server.inner.accept_tasks.clone().spawn(async move {
                            let limit = server.inner.opts.conn.handshake_timeout;
                            let outcome = if limit.is_zero() {
                                Ok(running.await)
                            } else {
                                tokio::time::timeout(limit, running).await
                            };
                            drop(account);
                            match outcome {
                                Ok(Ok(Some((io, peer)))) => {
                                    if server.inner.draining.load(Ordering::SeqCst) {
                                        return;
                                    }
                                    let (rd, wr) = tokio::io::split(io);
                                    server.start_conn(Box::new(rd), Box::new(wr), Some(Arc::new(peer)));
                                }
                                Ok(Ok(None)) => {}
                                Ok(Err(e)) => tracing::info!(peer = %addr, error = %e, "handshake failed"),
                                Err(_) => {
                                    tracing::info!(peer = %addr, timeout = ?limit, "handshake timed out: closing")
                                }
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    /// Serves one connection over any transport; resolves when it closes.
    pub async fn serve_transport<T>(&self, io: T)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.serve_connection(io, Peer::default()).await
    }

    /// Serves one connection over any transport, whose calls see `peer` as
    /// their [`CallContext::peer`]; resolves when it closes.
    pub async fn serve_connection<T>(&self, io: T, peer: Peer)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (conn, id) = self.start_conn(Box::new(rd), Box::new(wr), Some(Arc::new(peer)));
        conn.closed().await;
        self.inner.conns.lock().unwrap().remove(&id);
        conn.close(Status::unavailable("connection closed")).await;
    }

    /// Whether the budget has room for one more connection's fixed memory.
    fn admits_connection(&self) -> bool {
        let budget = &self.inner.budget;
        budget.used().saturating_add(2 * CONNECTION_OVERHEAD) <= budget.limit()
    }

    fn start_conn(&self, rd: BoxRead, wr: BoxWrite, peer: Option<Arc<Peer>>) -> (Arc<ConnShared>, u64) {
        let acceptor: Arc<dyn Acceptor> = Arc::new(ConnAcceptor {
            server: Arc::downgrade(&self.inner),
            peer,
        });
        let conn = ConnShared::start_split(
            rd,
            wr,
            Role::Server,
            self.inner.opts.conn.clone(),
            Some(acceptor),
        );
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        self.inner.conns.lock().unwrap().insert(id, conn.clone());
        let inner = self.inner.clone();
        let watched = conn.clone();
        // Forget the connection once it closes, and wait for its tasks.
        self.inner.conn_tasks.spawn(async move {
            watched.closed().await;
            inner.conns.lock().unwrap().remove(&id);
            watched
                .close(Status::unavailable("connection closed"))
                .await;
        });
        (conn, id)
    }

    /// RPC handlers running now.
    pub fn active_rpcs(&self) -> usize {
        self.inner.handlers.len()
    }

    /// Received message bytes not yet read by handlers, over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.inner
            .conns
            .lock()
            .unwrap()
            .values()
            .map(|c| c.buffered())
            .sum()
    }

    /// The memory budget shared by every connection of this server.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.inner.budget
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.conns.lock().unwrap().len()
    }

    /// Stops accepting connections and new RPCs, lets in-flight RPCs finish
    /// for up to `grace`, then cancels the rest and closes every connection.
    /// Returns within `grace` + 1 s whatever the peers do, normally once
    /// every task the server started has ended.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        let start = tokio::time::Instant::now();
        let hard_deadline = start + grace + Duration::from_millis(900);
        // Listeners close before streams are refused: a client told "shutting
        // down" that reconnects must be refused, not accepted into a backlog
        // that is about to be reset.
        inner.accept_tasks.abort_all();
        let _ = tokio::time::timeout(Duration::from_millis(100), inner.accept_tasks.idle()).await;
        inner.draining.store(true, Ordering::SeqCst);
        if tokio::time::timeout(grace, inner.handlers.idle())
            .await
            .is_err()
        {
            tracing::info!(
                remaining = inner.handlers.len(),
                "grace period over, canceling RPCs"
            );
            self.close_all(Status::unavailable("server shut down"))
                .await;
            // Handlers have seen Canceled; give them a moment, then stop them.
            if tokio::time::timeout(Duration::from_millis(300), inner.handlers.idle())
                .await
                .is_err()
            {
                inner.handlers.abort_all();
            }
        }
        let rest = async {
            inner.handlers.idle().await;
            self.wait_for_quiet(start + grace).await;
            self.close_all(Status::unavailable("server shut down"))
                .await;
            inner.conn_tasks.idle().await;
        };
        if tokio::time::timeout_at(hard_deadline, rest).await.is_err() {
            tracing::warn!(
                handlers = inner.handlers.len(),
                connections = self.connections(),
                "shutdown: tasks still ending after the grace period; returning"
            );
            inner.handlers.abort_all();
            inner.conn_tasks.abort_all();
        }
    }

    /// DRPC has no "go away" frame: a client learns that this server is
    /// shutting down only from refused streams. Closing connections while
    /// clients still send would fail calls no handler saw with a bare
    /// "connection closed", which they cannot safely replay; so connections
    /// stay open until no stream has been refused for [`DRAIN_QUIET`] (the
    /// clients moved on, or had nothing to send), at most 1 s and never past
    /// `deadline`.
    async fn wait_for_quiet(&self, deadline: tokio::time::Instant) {
        let deadline = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
        let refused = || self.inner.refused_while_draining.load(Ordering::SeqCst);
        let mut seen = refused();
        if self.connections() == 0 {
            return;
        }
        loop {
            let wake = tokio::time::Instant::now() + DRAIN_QUIET;
            if wake > deadline {
                tokio::time::sleep_until(deadline).await;
                return;
            }
            tokio::time::sleep_until(wake).await;
            let now = refused();
            if now == seen {
                return;
            }
            seen = now;
        }
    }

    /// Flushes every connection at once (200 ms at most), then closes them all.
    async fn close_all(&self, status: Status) {
        let conns: Vec<Arc<ConnShared>> =
            self.inner.conns.lock().unwrap().values().cloned().collect();
        let mut closing = tokio::task::JoinSet::new();
        for conn in conns {
            let status = status.clone();
            closing.spawn(async move {
                conn.flush(Duration::from_millis(200)).await;
                conn.close(status).await;
            });
        }
        while closing.join_next().await.is_some() {}
    }
}

/// The message of the Unavailable status a server in graceful shutdown
/// refuses new streams with: no handler saw such a call, so clients (the
/// channel) may replay it on another server.
pub const SHUTTING_DOWN: &str = "server is shutting down";

/// How long a shutting-down server waits without refusing a stream before
/// it closes its connections (see `Server::wait_for_quiet`).
pub const DRAIN_QUIET: Duration = Duration::from_millis(100);

/// Memory a TLS (or other) handshake in progress is counted as holding.
pub const HANDSHAKE_OVERHEAD: usize = 32 << 10;

struct ConnAcceptor {
    server: std::sync::Weak<ServerInner>,
    peer: Option<Arc<Peer>>,
}

impl Acceptor for ConnAcceptor {
    fn accepting(&self) -> bool {
        let Some(server) = self.server.upgrade() else {
            return false;
        };
        if server.draining.load(Ordering::SeqCst) {
            server.refused_while_draining.fetch_add(1, Ordering::SeqCst);
            return false;
        }
        true
    }

    fn accept(&self, stream: Arc<StreamShared>, rpc: &str, metadata: Metadata) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let Some((name, handler)) = server.router.get(rpc) else {
            stream.refuse(&Status::unimplemented(format!(
                "unknown rpc: {}",
                shorten(&rpc, 256)
            )));
            return;
        };
        let ctx = CallContext {
            shared: stream,
            rpc: name,
            metadata: shared_metadata(metadata),
            peer: self.peer.clone(),
        };
        server.handlers.spawn(run_handler(handler, ctx));
    }
}

/// A call's metadata behind an `Arc`; calls without metadata (most) share
/// one empty map instead of allocating.
fn shared_metadata(metadata: Metadata) -> Arc<Metadata> {
    static EMPTY: std::sync::OnceLock<Arc<Metadata>> = std::sync::OnceLock::new();
    if metadata.is_empty() {
        return EMPTY.get_or_init(Arc::default).clone();
    }
    Arc::new(metadata)
}

async fn run_handler(handler: Handler, ctx: CallContext) {
    let shared = ctx.shared.clone();
    let rpc = ctx.rpc.clone();
    // Each shape in a box of its own: a streaming handler's task does not
    // carry a unary call's (much larger) state (memory per open stream).
    let outcome = match handler {
        Handler::Unary(f) => CatchUnwind(Box::pin(run_unary(f, ctx))).await,
        Handler::Stream(f) => CatchUnwind(Box::pin(run_stream(f, ctx))).await,
    };
    let shared = &shared;
    match outcome {
        Ok(Ok(())) => {
            let _ = shared.close_send();
        }
        Ok(Err(status)) => {
            tracing::debug!(%rpc, %status, "handler returned an error");
            shared.send_error(&status);
        }
        Err(panic) => {
            tracing::error!(%rpc, panic = %panic, "handler panicked");
            shared.send_error(&Status::internal(format!("handler panicked: {panic}")));
        }
    }
    // The handler is done; whatever the client still sends is dropped.
    shared.finish(End::Done);
}

/// At most `max` bytes of `s` (cut at a character boundary), marked if cut:
/// error messages name what the peer sent without echoing all of it.
fn shorten(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len()).into()
}

async fn run_unary(f: Arc<crate::router::UnaryFn>, ctx: CallContext) -> Result<(), Status> {
    let data = match shared_recv(&ctx).await {
        Ok(Some(data)) => data,
        Ok(None) => return Err(Status::invalid_argument("unary call without a request message")),
        Err(status) => return Err(status),
    };
    let response = f(Request { data, context: ctx.clone() }).await?;
    ctx.shared.send_last(response).await
}

async fn run_stream(f: Arc<crate::router::StreamFn>, ctx: CallContext) -> Result<(), Status> {
    f(Stream { ctx, keep_alive: None, watchdog: None }).await
}

async fn shared_recv(ctx: &CallContext) -> Result<Option<bytes::Bytes>, Status> {
    ctx.shared.recv().await
}
