//! drpc-tls: TLS and mutual TLS for drpc-core (rustls, TLS 1.2 and 1.3,
//! modern cipher suites only, ALPN `drpc`), certificate reload without
//! restart, peer identity for handlers, and a shared-port listener
//! compatible with storj.io/drpc's `drpcmigrate` (`DRPC!!!1` header).
//!
//! Server: [`ServerTlsConfig`] → [`TlsAcceptor`] → [`serve_tls`] (or
//! [`SharedPort`] for a port shared with other protocols). Client:
//! [`ClientTlsConfig`] → [`Connector`]. Handlers read the peer with
//! `ctx.peer()` ([`drpc_core::Peer`]).

mod client;
mod config;
mod identity;
mod migrate;
mod prefixed;
mod server;

pub use client::Connector;
pub use config::{ClientAuth, ClientTlsConfig, Roots, ServerTlsConfig, TlsError, ALPN_DRPC};
pub use identity::tls_peer;
pub use migrate::{SharedPort, DRPC_HEADER};
pub use prefixed::Prefixed;
pub use server::{listen_tls, serve_tls, TlsAcceptor};
