//! drpc-interop-server: serves the interop TestService (see shared/interop/CASES.md).
//! Usage: drpc-interop-server --addr HOST:PORT [--flow-control] [--max-concurrent-streams N]
//!        [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]

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
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        match (flag.as_str(), value) {
            ("addr", Some(v)) => addr = v,
            ("flow-control", None) => opts.conn = opts.conn.with_flow_control(),
            ("max-concurrent-streams", Some(v)) => match v.parse() {
                Ok(n) => opts.conn.max_concurrent_streams = n,
                Err(_) => usage("--max-concurrent-streams takes a number"),
            },
            ("tls-cert", Some(v)) => tls_cert = Some(v),
            ("tls-key", Some(v)) => tls_key = Some(v),
            ("tls-client-ca", Some(v)) => tls_client_ca = Some(v),
            (f, _) => usage(&format!("unknown or malformed flag --{f}")),
        }
    }
    let server = Server::with_options(service::router(Arc::new(service::Stats::default())), opts);
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(&cert, &key, tls_client_ca.as_deref())),
        (None, None) if tls_client_ca.is_none() => None,
        _ => usage("--tls-cert and --tls-key go together (and --tls-client-ca needs them)"),
    };
    let listening = match tls {
        Some(acceptor) => drpc_tls::listen_tls(&server, &addr, acceptor).await,
        None => server.listen(&addr).await,
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
    eprintln!("drpc-interop-server: {err}\nusage: drpc-interop-server --addr HOST:PORT [--flow-control] [--max-concurrent-streams N] [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]");
    std::process::exit(2);
}
