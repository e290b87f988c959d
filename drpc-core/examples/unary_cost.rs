//! Unary call cost, for A/B comparisons of drpc-core versions: `N` sequential
//! 1-byte unary calls, client and server in one process over TCP loopback,
//! on a single-threaded runtime (deterministic under callgrind).
//!
//! ```sh
//! cargo run --release -p drpc-core --example unary_cost -- 20000
//! valgrind --tool=callgrind target/release/examples/unary_cost 20000
//! ```
//! Instructions per call = (Ir at 2N - Ir at N) / N, which removes setup.

use drpc_core::{CallOptions, Conn, ConnOptions, Router, Server};
use std::time::Instant;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let calls: u32 = std::env::args()
        .nth(1)
        .map(|n| n.parse().expect("a number of calls"))
        .unwrap_or(20_000);
    let router = Router::new().unary_raw("/bench.Bench/Unary", |req| async move { Ok(req.data) });
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.expect("listen");
    let conn = Conn::connect(&addr, ConnOptions::default()).await.expect("connect");
    let opts = CallOptions::new();
    let start = Instant::now();
    for _ in 0..calls {
        conn.unary("/bench.Bench/Unary", b"x", &opts).await.expect("call");
    }
    let per_call = start.elapsed() / calls.max(1);
    println!("{calls} calls, {per_call:?} per call");
}
