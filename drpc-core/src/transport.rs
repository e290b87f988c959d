//! Addresses and sockets: `host:port` is TCP, `unix:/path` a Unix socket.

use crate::conn::BoxRead;
use crate::writer::BoxWrite;
use std::io;
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

    pub(crate) async fn accept(&self) -> io::Result<(BoxRead, BoxWrite)> {
        match self {
            Listener::Tcp(l) => {
                let (tcp, _) = l.accept().await?;
                tcp.set_nodelay(true)?;
                let (rd, wr) = tcp.into_split();
                Ok((Box::new(rd), Box::new(wr)))
            }
            Listener::Unix(l, _) => {
                let (s, _) = l.accept().await?;
                let (rd, wr) = s.into_split();
                Ok((Box::new(rd), Box::new(wr)))
            }
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
