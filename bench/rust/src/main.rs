//! drpc-bench: the Rust contenders of bench/ (see bench/README.md).
//!
//!   drpc-bench {drpc|drpc-tls|tonic|tcp} server --addr 127.0.0.1:0
//!       (drpc-tls: certificates from $DRPC_BENCH_CERTS, gen-test-certs output)
//!       prints "ADDR host:port", serves until stdin closes
//!   drpc-bench channel client ...   drpc-rs through drpc_channel::Channel
//!   drpc-bench {drpc|tonic|tcp|tokio-tcp} client --addr A --workload W [--size N]
//!       [--concurrency N] [--streams N] [--calls N] [--warmup S]
//!       [--duration S] [--reps N] [--server-pid PID]
//!       prints one JSON line per result

mod common;
mod drpc_impl;
mod tcp;
mod tonic_impl;
mod workloads;

use drpc_impl::Variant;

#[global_allocator]
static GLOBAL: common::Counting = common::Counting;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.len() < 3 {
        eprintln!("usage: drpc-bench {{drpc|drpc-tls|drpc-telemetry|channel|tonic|tcp|tokio-tcp}} {{server|client}} [--key value]...");
        std::process::exit(2);
    }
    let args = common::Args::parse(&argv[3..]);
    let p = common::Params::from(&args);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    match (argv[1].as_str(), argv[2].as_str()) {
        ("drpc", "server") => drpc_impl::server(&rt, &p.addr, Variant::Plain),
        ("drpc", "client") => drpc_impl::client(&rt, &p, Variant::Plain),
        ("drpc-tls", "server") => drpc_impl::server(&rt, &p.addr, Variant::Tls),
        ("drpc-tls", "client") => drpc_impl::client(&rt, &p, Variant::Tls),
        ("drpc-telemetry", "server") => drpc_impl::server(&rt, &p.addr, Variant::Telemetry),
        ("drpc-telemetry", "client") => drpc_impl::client(&rt, &p, Variant::Telemetry),
        ("channel", "client") => drpc_impl::channel_client(&rt, &p),
        ("tonic", "server") => tonic_impl::server(&rt, &p.addr),
        ("tonic", "client") => tonic_impl::client(&rt, &p),
        ("tcp", "server") => tcp::server(&p.addr),
        ("tcp", "client") => tcp::client(&p),
        ("tokio-tcp", "server") => tcp::tokio_server(&rt, &p.addr),
        ("tokio-tcp", "client") => tcp::tokio_client(&rt, &p),
        (i, r) => {
            eprintln!("unknown contender/role {i} {r}");
            std::process::exit(2);
        }
    }
}
