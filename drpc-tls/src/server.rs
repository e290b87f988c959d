//! The TLS side of a server: the handshake (with the certificate in force
//! when the connection arrived), peer identity, and a clear answer to
//! plaintext DRPC clients.

use crate::config::{ServerTlsConfig, TlsError};
use crate::identity::tls_peer;
use crate::prefixed::Prefixed;
use drpc_core::wire::{encode_error, parse_header, put_frame, FrameHeader, Kind, MAX_FRAME_HEADER};
use drpc_core::{Code, Listener, Peer, Server};
use std::io;
use std::sync::{Arc, RwLock};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_rustls::server::TlsStream;

/// The first byte of every TLS handshake record.
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// Accepts TLS connections with the current server configuration.
/// Cheap to clone; clones share the configuration, so [`reload`](Self::reload)
/// on any of them changes it for every new connection (connections already
/// up keep the certificate they were accepted with).
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<RwLock<Arc<rustls::ServerConfig>>>,
}

impl TlsAcceptor {
    pub fn new(config: &ServerTlsConfig) -> Result<TlsAcceptor, TlsError> {
        Ok(TlsAcceptor::from_rustls(config.build()?))
    }

    /// From a rustls configuration made elsewhere.
    pub fn from_rustls(config: Arc<rustls::ServerConfig>) -> TlsAcceptor {
        TlsAcceptor { config: Arc::new(RwLock::new(config)) }
    }

    /// Takes a new certificate, key or client CA for the connections
    /// accepted from now on. On error the configuration in force stays.
    pub fn reload(&self, config: &ServerTlsConfig) -> Result<(), TlsError> {
        self.replace(config.build()?);
        Ok(())
    }

    /// [`reload`](Self::reload) with a rustls configuration built already.
    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Runs the server side of a handshake over `io` and returns the TLS
    /// stream and `peer` with its TLS identity. A client that starts with a
    /// DRPC frame instead of a ClientHello gets an Unavailable error on its
    /// stream saying TLS is required, then the connection fails.
    pub async fn accept<S>(&self, mut io: S, mut peer: Peer) -> io::Result<(TlsStream<Prefixed<S>>, Peer)>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut first = [0u8; 1];
        if io.read(&mut first).await? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "closed before the TLS handshake"));
        }
        if first[0] != TLS_HANDSHAKE_RECORD {
            answer_plaintext(&mut io, first[0]).await;
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not a TLS ClientHello (first byte {:#04x}): plaintext client on a TLS port?", first[0]),
            ));
        }
        let io = Prefixed::new(first.to_vec(), io);
        let tls = tokio_rustls::TlsAcceptor::from(self.current()).accept(io).await?;
        let conn = tls.get_ref().1;
        peer.tls = Some(tls_peer(conn, conn.server_name()));
        Ok((tls, peer))
    }
}

/// Tells a plaintext DRPC client why it is refused: an Error frame on the
/// stream its first frame opened (best effort; garbage just gets closed).
async fn answer_plaintext<S>(io: &mut S, first: u8)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = vec![first];
    let header = loop {
        match parse_header(&head, usize::MAX) {
            Ok(Some((header, _, _))) => break header,
            Ok(None) if head.len() < MAX_FRAME_HEADER => {
                let mut more = [0u8; MAX_FRAME_HEADER];
                let want = MAX_FRAME_HEADER - head.len();
                match io.read(&mut more[..want]).await {
                    Ok(n) if n > 0 => head.extend_from_slice(&more[..n]),
                    _ => return,
                }
            }
            _ => return,
        }
    };
    if !header.kind.is_known() || header.stream_id == 0 {
        return;
    }
    let payload = encode_error(
        Code::Unavailable as u64,
        "this server requires TLS: the client sent plaintext DRPC (configure the client with TLS)",
    );
    let reply = FrameHeader { stream_id: header.stream_id, message_id: 1, kind: Kind::ERROR, control: false, done: true };
    let mut out = Vec::new();
    put_frame(&mut out, &reply, &payload);
    if io.write_all(&out).await.is_err() || io.shutdown().await.is_err() {
        return;
    }
    // Closing with unread input would send a reset, which can discard the
    // reply before the client reads it: read what the client still sends
    // (briefly, and a bounded amount) before closing.
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), async {
        while drained < (1 << 20) {
            match io.read(&mut sink).await {
                Ok(n) if n > 0 => drained += n,
                _ => break,
            }
        }
    })
    .await;
}

/// Serves `listener` with TLS in the background: each handshake runs on its
/// own task under the server's `conn.handshake_timeout` and memory budget
/// (see [`Server::serve_with`]).
pub fn serve_tls(server: &Server, listener: Listener, acceptor: TlsAcceptor) {
    server.serve_with(listener, move |socket, peer| {
        let acceptor = acceptor.clone();
        async move { acceptor.accept(socket, peer).await.map(Some) }
    });
}

/// Binds `addr` and serves it with TLS; returns the bound address.
pub async fn listen_tls(server: &Server, addr: &str, acceptor: TlsAcceptor) -> io::Result<String> {
    let listener = Listener::bind(addr).await?;
    let local = listener.local_addr()?;
    serve_tls(server, listener, acceptor);
    Ok(local)
}
