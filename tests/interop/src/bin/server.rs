//! drpc-interop-server: serves the interop TestService (see shared/interop/CASES.md).
//! Usage: drpc-interop-server --addr HOST:PORT [--flow-control] [--max-concurrent-streams N]

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
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        match (flag.as_str(), value) {
            ("addr", Some(v)) => addr = v,
            ("flow-control", None) => opts.conn = opts.conn.with_flow_control(),
            ("max-concurrent-streams", Some(v)) => match v.parse() {
                Ok(n) => opts.conn.max_concurrent_streams = n,
                Err(_) => usage("--max-concurrent-streams takes a number"),
            },
            (f, _) => usage(&format!("unknown or malformed flag --{f}")),
        }
    }
    let server = Server::with_options(service::router(Arc::new(service::Stats::default())), opts);
    let bound = match server.listen(&addr).await {
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

fn usage(err: &str) -> ! {
    eprintln!("drpc-interop-server: {err}\nusage: drpc-interop-server --addr HOST:PORT [--flow-control] [--max-concurrent-streams N]");
    std::process::exit(2);
}
