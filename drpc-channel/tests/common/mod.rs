//! Test servers for the channel suites: each answers `/t.T/Who` with its
//! name (after an optional delay), counts what it served, and runs the
//! health service.

#![allow(dead_code)]

use bytes::Bytes;
use drpc_channel::health::HealthService;
use drpc_core::{Code, Request, Router, Server, Status, Stream};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub const WHO: &str = "/t.T/Who";
pub const FLAKY: &str = "/t.T/Flaky";
pub const FAIL: &str = "/t.T/Fail";
pub const STREAM: &str = "/t.T/Stream";

pub struct TestServer {
    pub name: String,
    pub addr: String,
    pub server: Server,
    pub health: HealthService,
    /// Calls answered successfully.
    pub hits: Arc<AtomicU64>,
    /// Calls of any rpc received.
    pub received: Arc<AtomicU64>,
    /// Flaky rpcs fail with Unavailable while this is above zero (each failure takes one).
    pub flaky_failures: Arc<AtomicI64>,
}

impl TestServer {
    pub async fn start(name: &str, addr: &str) -> TestServer {
        let hits = Arc::new(AtomicU64::new(0));
        let received = Arc::new(AtomicU64::new(0));
        let flaky_failures = Arc::new(AtomicI64::new(0));
        let health = HealthService::new();
        let router = router(name, hits.clone(), received.clone(), flaky_failures.clone());
        let server = Server::new(health.register(router));
        let addr = server.listen(addr).await.expect("listen");
        TestServer { name: name.to_string(), addr, server, health, hits, received, flaky_failures }
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    /// Stops the server now: calls in flight are cut off.
    pub async fn kill(&self) {
        self.server.shutdown(Duration::ZERO).await;
    }
}

fn router(name: &str, hits: Arc<AtomicU64>, received: Arc<AtomicU64>, flaky: Arc<AtomicI64>) -> Router {
    let who_name = Bytes::from(name.to_string());
    let (who_hits, who_received) = (hits.clone(), received.clone());
    let (flaky_hits, flaky_received, flaky_left) = (hits.clone(), received.clone(), flaky.clone());
    let (stream_hits, stream_received, stream_left) = (hits, received.clone(), flaky);
    let fail_received = received;
    let stream_name = who_name.clone();
    let flaky_name = who_name.clone();
    Router::new()
        .unary_raw(WHO, move |req: Request| {
            let (name, hits) = (who_name.clone(), who_hits.clone());
            who_received.fetch_add(1, Ordering::SeqCst);
            async move {
                let delay_ms: u64 = std::str::from_utf8(&req.data).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
                if delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                hits.fetch_add(1, Ordering::SeqCst);
                Ok(name)
            }
        })
        .unary_raw(FLAKY, move |_req: Request| {
            flaky_received.fetch_add(1, Ordering::SeqCst);
            let failing = flaky_left.fetch_sub(1, Ordering::SeqCst) > 0;
            let (name, hits) = (flaky_name.clone(), flaky_hits.clone());
            async move {
                if failing {
                    return Err(Status::unavailable("flaky: not this time"));
                }
                hits.fetch_add(1, Ordering::SeqCst);
                Ok(name)
            }
        })
        .unary_raw(FAIL, move |req: Request| {
            fail_received.fetch_add(1, Ordering::SeqCst);
            async move {
                let code: u64 = std::str::from_utf8(&req.data).ok().and_then(|s| s.parse().ok()).unwrap_or(2);
                Err::<Bytes, _>(Status::new(Code::from_u64(code), "failing as asked"))
            }
        })
        .stream_raw(STREAM, move |stream: Stream| {
            stream_received.fetch_add(1, Ordering::SeqCst);
            let failing = stream_left.fetch_sub(1, Ordering::SeqCst) > 0;
            let (name, hits) = (stream_name.clone(), stream_hits.clone());
            async move {
                let count: u32 = match stream.recv().await? {
                    Some(req) => std::str::from_utf8(&req).ok().and_then(|s| s.parse().ok()).unwrap_or(3),
                    None => return Err(Status::invalid_argument("no request")),
                };
                if failing {
                    return Err(Status::unavailable("flaky stream: not this time"));
                }
                for _ in 0..count {
                    stream.send(&name).await?;
                }
                hits.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
}

/// Fast reconnects for tests (the gRPC defaults start at one second).
pub fn fast_backoff() -> drpc_channel::ConnectBackoff {
    drpc_channel::ConnectBackoff {
        initial: Duration::from_millis(20),
        multiplier: 1.6,
        jitter: 0.2,
        max: Duration::from_millis(200),
        min_connect_timeout: Duration::from_secs(2),
    }
}

pub fn test_options() -> drpc_channel::ChannelOptions {
    drpc_channel::ChannelOptions { connect_backoff: fast_backoff(), ..Default::default() }
}

/// Waits until `f` holds, for up to `limit`.
pub async fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f()
}
