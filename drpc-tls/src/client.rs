//! The client side: dial, optionally send the drpcmigrate header, run the
//! TLS handshake under a timeout, then DRPC over the result.

use crate::config::{ClientTlsConfig, TlsError};
use crate::migrate::DRPC_HEADER;
use drpc_core::{Conn, ConnOptions, Status};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

/// Dials servers with TLS (or plaintext) and, optionally, the drpcmigrate
/// `DRPC!!!1` header first. Build it once and share it (cheap to clone).
#[derive(Clone)]
pub struct Connector {
    tls: Option<(Arc<rustls::ClientConfig>, Option<String>)>,
    send_header: bool,
    handshake_timeout: Duration,
}

impl Connector {
    /// A connector that speaks TLS with `config`.
    pub fn tls(config: &ClientTlsConfig) -> Result<Connector, TlsError> {
        Ok(Connector {
            tls: Some((config.build()?, config.server_name_override().map(str::to_string))),
            send_header: false,
            handshake_timeout: drpc_core::DEFAULT_HANDSHAKE_TIMEOUT,
        })
    }

    /// A plaintext connector (useful with [`drpcmigrate_header`](Self::drpcmigrate_header)).
    pub fn plaintext() -> Connector {
        Connector { tls: None, send_header: false, handshake_timeout: drpc_core::DEFAULT_HANDSHAKE_TIMEOUT }
    }

    /// Sends `DRPC!!!1` as the connection's first bytes (before TLS), so a
    /// storj.io/drpc `drpcmigrate.ListenMux` or our [`SharedPort`](crate::SharedPort)
    /// routes the connection to DRPC.
    pub fn drpcmigrate_header(mut self, send: bool) -> Connector {
        self.send_header = send;
        self
    }

    /// How long the TLS handshake may take (default 10 s).
    pub fn handshake_timeout(mut self, timeout: Duration) -> Connector {
        self.handshake_timeout = timeout;
        self
    }

    /// Connects to `host:port` (or `unix:/path`, which needs a server name
    /// for TLS). Failures are Unavailable and name the cause.
    pub async fn connect(&self, addr: &str, opts: ConnOptions) -> Result<Conn, Status> {
        let fail = |what: &str, e: &dyn std::fmt::Display| Status::unavailable(format!("{what} {addr}: {e}"));
        if let Some(path) = addr.strip_prefix("unix:") {
            let io = UnixStream::connect(path).await.map_err(|e| fail("connecting to", &e))?;
            return self.over(io, addr, opts).await;
        }
        let io = TcpStream::connect(addr).await.map_err(|e| fail("connecting to", &e))?;
        io.set_nodelay(true).map_err(|e| fail("connecting to", &e))?;
        self.over(io, addr, opts).await
    }

    /// Runs the header and the handshake over an established byte stream;
    /// `addr` supplies the default server name.
    pub async fn over<S>(&self, mut io: S, addr: &str, opts: ConnOptions) -> Result<Conn, Status>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        if self.send_header {
            io.write_all(DRPC_HEADER)
                .await
                .map_err(|e| Status::unavailable(format!("sending the drpcmigrate header to {addr}: {e}")))?;
        }
        let Some((config, name)) = &self.tls else { return Ok(Conn::new(io, opts)) };
        let name = match name {
            Some(name) => name.clone(),
            None => host_of(addr).ok_or_else(|| {
                Status::unavailable(format!("TLS to {addr}: no server name; set one with server_name"))
            })?,
        };
        let server_name = ServerName::try_from(name.clone())
            .map_err(|e| Status::unavailable(format!("TLS to {addr}: bad server name {name:?}: {e}")))?;
        let handshake = tokio_rustls::TlsConnector::from(config.clone()).connect(server_name, io);
        let tls = match tokio::time::timeout(self.handshake_timeout, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => return Err(Status::unavailable(format!("TLS handshake with {addr} failed: {}", explain(&e)))),
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "TLS handshake with {addr} timed out after {:?}",
                    self.handshake_timeout
                )))
            }
        };
        Ok(Conn::new(NamedTlsErrors(tls), opts))
    }
}

/// A client TLS stream whose I/O errors from TLS (an alert after the
/// handshake, such as TLS 1.3's late refusal of a missing client
/// certificate) say they are TLS errors and what they usually mean.
struct NamedTlsErrors<S>(tokio_rustls::client::TlsStream<S>);

fn name_tls_error(e: std::io::Error) -> std::io::Error {
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) else { return e };
    let hint = match tls {
        rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired) => {
            " (the server requires a client certificate)"
        }
        rustls::Error::AlertReceived(
            rustls::AlertDescription::BadCertificate
            | rustls::AlertDescription::UnknownCA
            | rustls::AlertDescription::CertificateExpired
            | rustls::AlertDescription::CertificateUnknown,
        ) => " (the server rejected the client certificate)",
        _ => "",
    };
    std::io::Error::new(e.kind(), format!("TLS: {tls}{hint}"))
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for NamedTlsErrors<S> {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_read(cx, buf).map_err(name_tls_error)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for NamedTlsErrors<S> {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write(cx, buf).map_err(name_tls_error)
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs).map_err(name_tls_error)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_flush(cx).map_err(name_tls_error)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().0).poll_shutdown(cx).map_err(name_tls_error)
    }
}

/// rustls' reason, plus what an abrupt end usually means.
fn explain(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => {
            format!("{e} (the server closed the connection: it may not speak TLS on this port)")
        }
        _ => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(rustls::Error::InvalidMessage(_)) => {
                format!("{e} (the server's reply is not TLS: it may be a plaintext server)")
            }
            _ => e.to_string(),
        },
    }
}

/// The host part of `host:port` or `[v6]:port`.
fn host_of(addr: &str) -> Option<String> {
    if addr.starts_with("unix:") {
        return None;
    }
    let host = match addr.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => addr,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("localhost:443").as_deref(), Some("localhost"));
        assert_eq!(host_of("[::1]:8080").as_deref(), Some("::1"));
        assert_eq!(host_of("10.0.0.1:1").as_deref(), Some("10.0.0.1"));
        assert_eq!(host_of("unix:/tmp/s"), None);
        assert_eq!(host_of(":80"), None);
    }
}
