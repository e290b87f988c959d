//! Serves the edge services of tests/codegen (README.md's answer table)
//! with drpc-build's generated code until SIGTERM or SIGINT, then exits 0.
//! Usage: codegen-edge-server [--addr HOST:PORT]; prints "listening HOST:PORT".

use drpc_codegen_edge::{addr_flag, service};
use drpc_core::Server;
use std::io::Write;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() {
    let addr = addr_flag(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)).unwrap_or_else(|| "127.0.0.1:0".into());
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let server = Server::new(service::router());
    let bound = server.listen(&addr).await.unwrap_or_else(|e| {
        eprintln!("codegen-edge-server: cannot listen on {addr}: {e}");
        std::process::exit(1);
    });
    println!("listening {bound}");
    std::io::stdout().flush().expect("flush stdout");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    server.shutdown(Duration::from_secs(1)).await;
}

fn usage(err: &str) -> ! {
    eprintln!("codegen-edge-server: {err}\nusage: codegen-edge-server [--addr HOST:PORT]");
    std::process::exit(2);
}
