//! edge-server: serves the edge services (README.md) until SIGTERM or SIGINT.
//! Usage: edge-server [--addr HOST:PORT]; prints "listening HOST:PORT".

use drpc_build_edge::{parse_args, service};
use drpc_core::Server;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() {
    let mut addr = "127.0.0.1:0".to_string();
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        match flag.as_str() {
            "addr" => addr = value,
            other => usage(&format!("unknown flag --{other}")),
        }
    }
    let server = Server::new(service::router(Arc::new(service::StoreImpl::default())));
    let bound = server.listen(&addr).await.unwrap_or_else(|e| {
        eprintln!("edge-server: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
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

fn usage(err: &str) -> ! {
    eprintln!("edge-server: {err}\nusage: edge-server [--addr HOST:PORT]");
    std::process::exit(2);
}
