//! The main demo: one server, one client, ONE TCP connection, and over it
//! 1,000 concurrent unary calls plus several bidi streams at the same time.
//! Run with `make demo` (or `cargo run --release -p drpc-core --example demo`).

use bytes::Bytes;
use drpc_core::{CallOptions, Conn, ConnOptions, Router, Server, Status, Stream};
use std::time::{Duration, Instant};

const UNARY_CALLS: usize = 1000;
const BIDI_STREAMS: usize = 8;
const BIDI_ROUNDS: usize = 100;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let router = Router::new()
        .unary_raw("/demo.Echo/Unary", |req| async move {
            // A little server-side latency makes the calls overlap for real.
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<Bytes, Status>(req.data)
        })
        .bidi("/demo.Echo/Bidi", |stream: Stream| async move {
            while let Some(msg) = stream.recv().await? {
                stream.send(msg).await?;
            }
            Ok(())
        });
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await?;
    println!("server listening on {addr}");

    let conn = Conn::connect(&addr, ConnOptions::default()).await?;
    let start = Instant::now();

    let unary = (0..UNARY_CALLS).map(|i| {
        let conn = conn.clone();
        tokio::spawn(async move {
            let request = format!("request {i}");
            let response = conn
                .unary("/demo.Echo/Unary", request.as_bytes(), &CallOptions::new())
                .await?;
            if response != request.as_bytes() {
                return Err(Status::internal(format!(
                    "call {i} got another call's response"
                )));
            }
            Ok(())
        })
    });
    let bidi = (0..BIDI_STREAMS).map(|s| {
        let conn = conn.clone();
        tokio::spawn(async move {
            let stream = conn.stream("/demo.Echo/Bidi", &CallOptions::new()).await?;
            for round in 0..BIDI_ROUNDS {
                let msg = format!("stream {s} round {round}");
                stream.send(msg.as_bytes()).await?;
                match stream.recv().await? {
                    Some(echo) if echo == msg.as_bytes() => {}
                    other => {
                        return Err(Status::internal(format!(
                            "stream {s}: unexpected {other:?}"
                        )))
                    }
                }
            }
            stream.close_send().await?;
            while stream.recv().await?.is_some() {}
            Ok(())
        })
    });
    let handles: Vec<_> = unary.chain(bidi).collect();
    let mut errors = 0;
    for h in handles {
        if let Err(e) = h.await? {
            errors += 1;
            eprintln!("error: {e}");
        }
    }
    let elapsed = start.elapsed();
    // Every call and stream above is done; the server still holds the one connection.
    let connections = server.connections();
    println!("unary calls:      {UNARY_CALLS} (concurrent)");
    println!("bidi streams:     {BIDI_STREAMS} x {BIDI_ROUNDS} round trips (concurrent with the unary calls)");
    println!("errors:           {errors}");
    println!("elapsed:          {:.1} ms", elapsed.as_secs_f64() * 1000.0);
    println!("connections used: {connections} (server side), 1 client Conn");
    conn.close().await;
    server.shutdown(Duration::from_secs(1)).await;
    if errors > 0 || connections != 1 {
        std::process::exit(1);
    }
    Ok(())
}
