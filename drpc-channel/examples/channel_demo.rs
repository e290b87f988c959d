//! `make demo CHANNEL=1`: one Channel over three local servers. Prints the
//! per-server split of the load, what happens when one server is killed
//! mid-run (retries, failed calls by code), that the restarted server is
//! used again, and a graceful shutdown drained through the health service
//! without a failed call.

use drpc_channel::health::{self, HealthService};
use drpc_channel::{Channel, ChannelOptions, ConnectBackoff, EndpointState, RetryBudget, RetryPolicy};
use drpc_core::{CallOptions, Request, Router, Server, Status};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WHO: &str = "/demo.Demo/Who";

struct Replica {
    name: &'static str,
    addr: String,
    server: Server,
    health: HealthService,
}

async fn start(name: &'static str, addr: &str) -> Replica {
    let health = HealthService::new();
    let router = Router::new().unary_raw(WHO, move |_req: Request| async move {
        // A little work, so calls are in flight when a server goes away.
        tokio::time::sleep(Duration::from_millis(2)).await;
        Ok(bytes::Bytes::from_static(name.as_bytes()))
    });
    let server = Server::new(health.register(router));
    let addr = server.listen(addr).await.expect("listen");
    Replica { name, addr, server, health }
}

/// `total` calls, `concurrency` at a time; `at_half` runs once half are done.
async fn load(channel: &Channel, total: usize, concurrency: usize, at_half: impl std::future::Future<Output = ()>) -> (BTreeMap<String, usize>, BTreeMap<String, usize>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (channel, next, done) = (channel.clone(), next.clone(), done.clone());
        workers.spawn(async move {
            let mut ok = BTreeMap::<String, usize>::new();
            let mut failed = BTreeMap::<String, usize>::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let opts = CallOptions::new().timeout(Duration::from_secs(5));
                match channel.unary(WHO, b"", &opts).await {
                    Ok(name) => *ok.entry(String::from_utf8_lossy(&name).into_owned()).or_default() += 1,
                    Err(status) => *failed.entry(status.code().name().to_string()).or_default() += 1,
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            (ok, failed)
        });
    }
    while done.load(Ordering::Relaxed) < total / 2 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    at_half.await;
    let (mut ok, mut failed) = (BTreeMap::new(), BTreeMap::new());
    while let Some(r) = workers.join_next().await {
        let (o, f) = r.expect("worker");
        for (k, v) in o {
            *ok.entry(k).or_default() += v;
        }
        for (k, v) in f {
            *failed.entry(k).or_default() += v;
        }
    }
    (ok, failed, started.elapsed())
}

fn show(title: &str, total: usize, (ok, failed, took): &(BTreeMap<String, usize>, BTreeMap<String, usize>, Duration)) {
    println!("\n== {title}");
    for (name, n) in ok {
        println!("  {name}: {n:>5} calls ({:>5.1} %)", *n as f64 * 100.0 / total as f64);
    }
    if failed.is_empty() {
        println!("  failed: none");
    } else {
        for (code, n) in failed {
            println!("  failed with {code}: {n}");
        }
    }
    println!("  {total} calls in {:.2} s", took.as_secs_f64());
}

#[tokio::main]
async fn main() -> Result<(), Status> {
    let mut replicas = vec![start("a", "127.0.0.1:0").await, start("b", "127.0.0.1:0").await, start("c", "127.0.0.1:0").await];
    let target = format!("ipv4:{}", replicas.iter().map(|r| r.addr.as_str()).collect::<Vec<_>>().join(","));
    println!("three servers: {}", replicas.iter().map(|r| format!("{}={}", r.name, r.addr)).collect::<Vec<_>>().join("  "));
    println!("channel target: {target}  (round-robin, health-checked, up to 3 attempts per call, retry budget 100 tokens)");
    let opts = ChannelOptions {
        health_check: Some(String::new()),
        retry: RetryPolicy { max_attempts: 3, ..RetryPolicy::default() },
        // gRPC's usual 10 tokens would let only ~5 retries through when a
        // server dies under 32 concurrent calls; this demo wants them all.
        retry_budget: Some(RetryBudget { max_tokens: 100.0, token_ratio: 0.1 }),
        connect_backoff: ConnectBackoff { initial: Duration::from_millis(50), max: Duration::from_millis(500), ..ConnectBackoff::default() },
        ..ChannelOptions::default()
    };
    let channel = Channel::new(&target, opts)?;
    const TOTAL: usize = 6000;
    const CONCURRENCY: usize = 32;

    let steady = load(&channel, TOTAL, CONCURRENCY, async {}).await;
    show("steady load: calls spread evenly", TOTAL, &steady);

    let before = channel.stats();
    let b = &replicas[1];
    let killed = load(&channel, TOTAL, CONCURRENCY, async {
        println!("\n  ... killing server {} at {} mid-run (no grace: calls in flight are cut off)", b.name, b.addr);
        b.server.shutdown(Duration::ZERO).await;
    })
    .await;
    show("server b killed halfway", TOTAL, &killed);
    let after = channel.stats();
    println!(
        "  retries: {} (calls cut off on b, and picks of b before its loss was seen, were retried on a and c)",
        after.retries - before.retries
    );
    println!("  endpoints now: {:?}", channel.endpoints());

    let addr = replicas[1].addr.clone();
    println!("\n  ... restarting b on {addr}");
    replicas[1] = start("b", &addr).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !channel.endpoints().iter().all(|(_, s)| *s == EndpointState::Ready) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let restarted = load(&channel, TOTAL, CONCURRENCY, async {}).await;
    show("b restarted: it is used again", TOTAL, &restarted);

    let c = &replicas[2];
    let graceful = load(&channel, TOTAL, CONCURRENCY, async {
        println!("\n  ... graceful shutdown of c: NOT_SERVING, 200 ms for clients to move, then drain");
        health::graceful_shutdown(&c.server, &c.health, Duration::from_millis(200), Duration::from_secs(5)).await;
    })
    .await;
    show("c shut down gracefully halfway", TOTAL, &graceful);
    println!("\nchannel stats: {:?}", channel.stats());
    for r in &replicas {
        r.server.shutdown(Duration::from_secs(1)).await;
    }
    Ok(())
}
