//! Addresses and sockets: `host:port` is TCP, `unix:/path` a Unix socket.

use crate::conn::BoxRead;
use crate::writer::BoxWrite;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// Dials `addr` and returns the two halves of the socket.
pub(crate) async fn connect(addr: &str) -> io::Result<(BoxRead, BoxWrite)> {
    if let Some(path) = addr.strip_prefix("unix:") {
        let (rd, wr) = UnixStream::connect(path).await?.into_split();
        return Ok((Box::new(rd), Box::new(wr)));
    }
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (rd, wr) = tcp.into_split();
    Ok((Box::new(rd), Box::new(wr)))
}

/// A bound listening socket.
pub enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

impl Listener {
    /// Binds `host:port` (port 0 picks one) or `unix:/path` (a stale socket
    /// file at the path is replaced).
    pub async fn bind(addr: &str) -> io::Result<Listener> {
        if let Some(path) = addr.strip_prefix("unix:") {
            let _ = std::fs::remove_file(path);
            return Ok(Listener::Unix(UnixListener::bind(path)?, path.into()));
        }
        Ok(Listener::Tcp(TcpListener::bind(addr).await?))
    }

    /// The bound address in the form `bind` takes (`host:port` or `unix:/path`).
    pub fn local_addr(&self) -> io::Result<String> {
        match self {
            Listener::Tcp(l) => Ok(l.local_addr()?.to_string()),
            Listener::Unix(_, path) => Ok(format!("unix:{}", path.display())),
        }
    }

    /// The next connection, split, and the peer's address.
    pub(crate) async fn accept(&self) -> io::Result<(BoxRead, BoxWrite, String)> {
        match self {
            Listener::Tcp(l) => {
                let (tcp, addr) = l.accept().await?;
                tcp.set_nodelay(true)?;
                let (rd, wr) = tcp.into_split();
                Ok((Box::new(rd), Box::new(wr), addr.to_string()))
            }
            Listener::Unix(l, _) => {
                let (s, addr) = l.accept().await?;
                let (rd, wr) = s.into_split();
                Ok((Box::new(rd), Box::new(wr), unix_peer_name(&addr)))
            }
        }
    }

    /// The next connection, whole (for a handshake to wrap), and the peer's address.
    pub async fn accept_socket(&self) -> io::Result<(Socket, String)> {
        match self {
            Listener::Tcp(l) => {
                let (tcp, addr) = l.accept().await?;
                tcp.set_nodelay(true)?;
                Ok((Socket::Tcp(tcp), addr.to_string()))
            }
            Listener::Unix(l, _) => {
                let (s, addr) = l.accept().await?;
                Ok((Socket::Unix(s), unix_peer_name(&addr)))
            }
        }
    }
}

fn unix_peer_name(addr: &tokio::net::unix::SocketAddr) -> String {
    match addr.as_pathname() {
        Some(path) => format!("unix:{}", path.display()),
        None => "unix:".to_string(),
    }
}

/// An accepted TCP or Unix-socket connection.
#[derive(Debug)]
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl AsyncRead for Socket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}
