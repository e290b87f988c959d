//! One port for DRPC and other protocols, compatible with storj.io/drpc's
//! `drpcmigrate`: a connection that starts with `DRPC!!!1` is DRPC (the
//! header is dropped); any other is handed to a user handler (an HTTP
//! server, say), served as DRPC anyway, or closed.

use crate::prefixed::Prefixed;
use crate::server::TlsAcceptor;
use drpc_core::{Listener, Peer, Server, Socket};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::AsyncReadExt;

/// The header drpcmigrate clients send first (`drpcmigrate.DRPCHeader`).
pub const DRPC_HEADER: &[u8; 8] = b"DRPC!!!1";

type Fallback = Arc<dyn Fn(Prefixed<Socket>, Peer) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How a shared port routes connections. Connections with the header are
/// always DRPC (over TLS when [`tls`](Self::tls) is set: the header comes
/// first, in the clear, as drpcmigrate sends it).
#[derive(Clone, Default)]
pub struct SharedPort {
    tls: Option<TlsAcceptor>,
    serve_headerless: bool,
    fallback: Option<Fallback>,
}

impl SharedPort {
    pub fn new() -> SharedPort {
        SharedPort::default()
    }

    /// DRPC connections run TLS after the header.
    pub fn tls(mut self, acceptor: TlsAcceptor) -> SharedPort {
        self.tls = Some(acceptor);
        self
    }

    /// Connections without the header are served as DRPC too (plain DRPC
    /// clients keep working while others migrate), unless a
    /// [`fallback`](Self::fallback) takes them.
    pub fn serve_headerless(mut self, serve: bool) -> SharedPort {
        self.serve_headerless = serve;
        self
    }

    /// Connections without the header go to `handler`, which reads them
    /// from their first byte (for example an HTTP server on the same port).
    /// It runs on its own task and owns the connection.
    pub fn fallback<F, Fut>(mut self, handler: F) -> SharedPort
    where
        F: Fn(Prefixed<Socket>, Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.fallback = Some(Arc::new(move |io, peer| Box::pin(handler(io, peer))));
        self
    }

    /// Serves `listener` in the background: routing and TLS run per
    /// connection on their own task, under the server's handshake timeout.
    pub fn serve(self, server: &Server, listener: Listener) {
        let port = Arc::new(self);
        server.serve_with(listener, move |socket, peer| {
            let port = port.clone();
            async move { port.route(socket, peer).await }
        });
    }

    /// Binds `addr` and serves it; returns the bound address.
    pub async fn listen(self, server: &Server, addr: &str) -> io::Result<String> {
        let listener = Listener::bind(addr).await?;
        let local = listener.local_addr()?;
        self.serve(server, listener);
        Ok(local)
    }

    async fn route(
        &self,
        mut socket: Socket,
        peer: Peer,
    ) -> io::Result<Option<(Box<dyn drpc_io::Io>, Peer)>> {
        // Read only while the bytes still match the header, so a protocol
        // whose first message is shorter than it is not kept waiting.
        let mut seen = Vec::with_capacity(DRPC_HEADER.len());
        while seen.len() < DRPC_HEADER.len() && DRPC_HEADER.starts_with(&seen) {
            let mut buf = [0u8; 8];
            let want = DRPC_HEADER.len() - seen.len();
            let n = socket.read(&mut buf[..want]).await?;
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
        }
        if seen.as_slice() == DRPC_HEADER {
            return self.drpc(Prefixed::new(Vec::new(), socket), peer).await;
        }
        let io = Prefixed::new(seen, socket);
        if let Some(fallback) = &self.fallback {
            tokio::spawn(fallback(io, peer));
            return Ok(None);
        }
        if self.serve_headerless {
            return self.drpc(io, peer).await;
        }
        Err(io::Error::new(io::ErrorKind::InvalidData, "connection without the DRPC!!!1 header refused"))
    }

    async fn drpc(&self, io: Prefixed<Socket>, peer: Peer) -> io::Result<Option<(Box<dyn drpc_io::Io>, Peer)>> {
        match &self.tls {
            Some(tls) => {
                let (tls, peer) = tls.accept(io, peer).await?;
                Ok(Some((Box::new(tls), peer)))
            }
            None => Ok(Some((Box::new(io), peer))),
        }
    }
}

mod drpc_io {
    /// A boxable byte stream.
    pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
    impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}
}
