//! Runs the edge cases of tests/codegen against a server with drpc-build's
//! generated clients: "PASS case" or "FAIL case: why" per case, exit 1 if
//! any failed. Usage: codegen-edge-client --addr HOST:PORT

use drpc_codegen_edge::addr_flag;
use drpc_codegen_edge::cases::{Cases, CASES};
use drpc_core::{Conn, ConnOptions};

#[tokio::main]
async fn main() {
    let addr = addr_flag(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)).unwrap_or_else(|| usage("--addr is required"));
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap_or_else(|e| {
        eprintln!("codegen-edge-client: {e}");
        std::process::exit(1);
    });
    let cases = Cases::new(conn.clone());
    let mut failed = 0;
    for name in CASES {
        match cases.run(name).await {
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
    eprintln!("codegen-edge-client: {err}\nusage: codegen-edge-client --addr HOST:PORT");
    std::process::exit(2);
}
