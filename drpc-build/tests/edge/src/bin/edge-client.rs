//! edge-client: runs the edge checks (README.md) against a server, printing
//! "PASS name" or "FAIL name: reason" per check; exits 1 if any failed.
//! Usage: edge-client --addr HOST:PORT [--check NAME|all]

use drpc_build_edge::checks::{Checks, CHECKS};
use drpc_build_edge::parse_args;
use drpc_core::{Conn, ConnOptions};

#[tokio::main]
async fn main() {
    let (mut addr, mut only) = (None, None);
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        match flag.as_str() {
            "addr" => addr = Some(value),
            "check" if value == "all" => only = None,
            "check" if CHECKS.contains(&value.as_str()) => only = Some(value),
            "check" => usage(&format!("unknown check {value}")),
            other => usage(&format!("unknown flag --{other}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap_or_else(|e| {
        eprintln!("edge-client: {e}");
        std::process::exit(1);
    });
    let checks = Checks::new(conn.clone());
    let mut failed = 0;
    let selected = |name: &&&str| match &only {
        Some(only) => only == **name,
        None => true,
    };
    for name in CHECKS.iter().filter(selected) {
        match checks.run(name).await {
            Ok(()) => println!("PASS {name}"),
            Err(reason) => {
                failed += 1;
                println!("FAIL {name}: {}", reason.replace('\n', "\\n"));
            }
        }
    }
    conn.close().await;
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

fn usage(err: &str) -> ! {
    eprintln!("edge-client: {err}\nusage: edge-client --addr HOST:PORT [--check NAME|all]");
    std::process::exit(2);
}
