//! drpc-interop-server: serves the interop TestService (see shared/interop/CASES.md).
//! Usage: drpc-interop-server --addr HOST:PORT [--flow-control] [--max-concurrent-streams N] [--forward HOST:PORT]
//!        [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] [--drpcmigrate]
//! --drpcmigrate: a shared port (storj.io/drpc drpcmigrate): connections
//! that start with `DRPC!!!1` are DRPC (TLS after the header, if set); any
//! other gets a fixed HTTP/1.1 response naming what it sent.
//! --forward: UnaryCalls with an echo_metadata_key go on to that server's
//! UnaryCall from inside the handler (deadline and trace inherited).

use drpc_core::{Server, ServerOptions};
use drpc_interop::{parse_args, service};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_writer(std::io::stderr).with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    let mut addr = "127.0.0.1:0".to_string();
    let mut opts = ServerOptions::default();
    let (mut tls_cert, mut tls_key, mut tls_client_ca) = (None, None, None);
    let mut shared_port = false;
    let mut forward = None;
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        match (flag.as_str(), value) {
            ("addr", Some(v)) => addr = v,
            ("flow-control", None) => opts.conn = opts.conn.with_flow_control(),
            ("max-concurrent-streams", Some(v)) => match v.parse() {
                Ok(n) => opts.conn.max_concurrent_streams = n,
                Err(_) => usage("--max-concurrent-streams takes a number"),
            },
            ("drpcmigrate", None) => shared_port = true,
            ("forward", Some(v)) => forward = Some(v),
            ("tls-cert", Some(v)) => tls_cert = Some(v),
            ("tls-key", Some(v)) => tls_key = Some(v),
            ("tls-client-ca", Some(v)) => tls_client_ca = Some(v),
            (f, _) => usage(&format!("unknown or malformed flag --{f}")),
        }
    }
    let stats = Arc::new(service::Stats::default());
    let router = match forward {
        Some(addr) => {
            let pool = drpc_core::Pool::new(drpc_core::PoolOptions::default());
            service::forwarding_router(stats, service::Forward { pool, addr })
        }
        None => service::router(stats),
    };
    let server = Server::with_options(router, opts);
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(&cert, &key, tls_client_ca.as_deref())),
        (None, None) if tls_client_ca.is_none() => None,
        _ => usage("--tls-cert and --tls-key go together (and --tls-client-ca needs them)"),
    };
    let listening = match (tls, shared_port) {
        (tls, true) => {
            let port = drpc_tls::SharedPort::new().fallback(http_fallback);
            let port = match tls {
                Some(acceptor) => port.tls(acceptor),
                None => port,
            };
            port.listen(&server, &addr).await
        }
        (Some(acceptor), false) => drpc_tls::listen_tls(&server, &addr, acceptor).await,
        (None, false) => server.listen(&addr).await,
    };
    let bound = match listening {
        Ok(bound) => bound,
        Err(e) => {
            eprintln!("drpc-interop-server: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening {bound}");
    std::io::stdout().flush().expect("flush stdout");
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    server.shutdown(Duration::from_secs(5)).await;
}

/// The non-DRPC side of a shared port: reads one HTTP/1.1 request head and
/// answers `200 OK` with body `not drpc: <request line>`.
async fn http_fallback(mut io: drpc_tls::Prefixed<drpc_core::Socket>, _peer: drpc_core::Peer) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 << 10 {
        match tokio::time::timeout(Duration::from_secs(10), io.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let body = format!("not drpc: {}", String::from_utf8_lossy(line));
    let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    let _ = io.write_all(reply.as_bytes()).await;
    let _ = io.shutdown().await;
}

fn tls_acceptor(cert: &str, key: &str, client_ca: Option<&str>) -> drpc_tls::TlsAcceptor {
    let config = drpc_tls::ServerTlsConfig::from_pem_files(cert, key)
        .and_then(|c| match client_ca {
            Some(ca) => c.client_ca_file(ca),
            None => Ok(c),
        })
        .and_then(|c| drpc_tls::TlsAcceptor::new(&c));
    config.unwrap_or_else(|e| {
        eprintln!("drpc-interop-server: TLS: {e}");
        std::process::exit(1);
    })
}

fn usage(err: &str) -> ! {
    eprintln!("drpc-interop-server: {err}\nusage: drpc-interop-server --addr HOST:PORT [--flow-control] [--max-concurrent-streams N] [--forward HOST:PORT] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]] [--drpcmigrate]");
    std::process::exit(2);
}
