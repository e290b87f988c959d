//! drpc-interop-client: runs the cases of shared/interop/CASES.md against a server.
//! Usage: drpc-interop-client --addr HOST:PORT --case NAME|all [--case NAME ...]
//!        [--mode mux|sequential] [--flow-control] [--compression snappy|minlz-fastest]

use drpc_core::{Compression, Conn, ConnOptions};
use drpc_interop::cases::{self, Client};
use drpc_interop::parse_args;

#[tokio::main]
async fn main() {
    let mut addr = None;
    let mut names: Vec<String> = Vec::new();
    let mut mux = true;
    let mut flow_control = false;
    let mut compression = None;
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        match (flag.as_str(), value) {
            ("addr", Some(v)) => addr = Some(v),
            ("case", Some(v)) => names.push(v),
            ("mode", Some(v)) if v == "mux" => mux = true,
            ("mode", Some(v)) if v == "sequential" => mux = false,
            ("flow-control", None) => flow_control = true,
            ("compression", Some(v)) => match Compression::from_name(&v) {
                Some(c) => compression = Some(c),
                None => usage(&format!("unknown compression {v:?} (snappy, minlz-fastest)")),
            },
            (f, _) => usage(&format!("unknown or malformed flag --{f}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    if names.is_empty() {
        usage("at least one --case is required");
    }
    let mut run: Vec<String> = Vec::new();
    for name in names {
        if name == "all" {
            run.extend(cases::all_cases(mux, flow_control).iter().map(|s| s.to_string()));
        } else if cases::is_known(&name) {
            run.push(name);
        } else {
            usage(&format!("unknown case {name}"));
        }
    }
    let mut opts = ConnOptions { sequential: !mux, ..ConnOptions::default() };
    if flow_control {
        opts = opts.with_flow_control();
    }
    let conn = match Conn::connect(&addr, opts).await {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("drpc-interop-client: {e}");
            std::process::exit(1);
        }
    };
    let mut client = Client::new(conn);
    if let Some(c) = compression {
        client.base = client.base.compression(c);
    }
    let mut failed = 0;
    for name in &run {
        match client.run(name).await {
            Ok(()) => println!("PASS {name}"),
            Err(reason) => {
                failed += 1;
                println!("FAIL {name}: {}", reason.replace('\n', "\\n"));
            }
        }
    }
    client.conn.close().await;
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

fn usage(err: &str) -> ! {
    eprintln!(
        "drpc-interop-client: {err}\nusage: drpc-interop-client --addr HOST:PORT --case NAME|all [--mode mux|sequential] [--flow-control] [--compression snappy|minlz-fastest]"
    );
    std::process::exit(2);
}
