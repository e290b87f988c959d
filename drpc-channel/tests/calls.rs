//! Retries, the retry budget, deadlines, wait-for-ready, health checking,
//! DNS re-resolution and the generated-client trait, over real sockets.

mod common;

use common::*;
use drpc_channel::health::{self, HealthService, ServingStatus};
use drpc_channel::{BoxFuture, Channel, ChannelOptions, DnsResolver, HostLookup, RetryBudget, RetryPolicy};
use drpc_core::{CallOptions, Code, Conn, ConnOptions};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_counted_and_stop_at_max_attempts() {
    let server = TestServer::start("s", "127.0.0.1:0").await;
    let channel = Channel::new(&server.addr, ChannelOptions { retry_budget: None, ..test_options() }).unwrap();
    server.flaky_failures.store(2, Ordering::SeqCst);
    assert_eq!(&channel.unary(FLAKY, b"", &CallOptions::new()).await.unwrap()[..], b"s");
    assert_eq!(server.received.load(Ordering::SeqCst), 3);
    let stats = channel.stats();
    assert_eq!((stats.attempts, stats.retries), (3, 2));

    server.flaky_failures.store(3, Ordering::SeqCst);
    let err = channel.unary(FLAKY, b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(server.received.load(Ordering::SeqCst), 6, "max_attempts is 3");

    // Codes outside the policy are not retried.
    let err = channel.unary(FAIL, b"3", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(server.received.load(Ordering::SeqCst), 7);
    // Unless the policy says so.
    let opts = ChannelOptions {
        retry: RetryPolicy { retryable_codes: vec![Code::Unavailable, Code::ResourceExhausted], ..RetryPolicy::default() },
        retry_budget: None,
        ..test_options()
    };
    let channel = Channel::new(&server.addr, opts).unwrap();
    let err = channel.unary(FAIL, b"8", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(server.received.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_stops_a_retry_storm() {
    let server = TestServer::start("s", "127.0.0.1:0").await;
    let opts = ChannelOptions {
        retry: RetryPolicy { max_attempts: 5, initial_backoff: Duration::from_millis(1), ..RetryPolicy::default() },
        retry_budget: Some(RetryBudget { max_tokens: 10.0, token_ratio: 0.1 }),
        ..test_options()
    };
    let channel = Channel::new(&server.addr, opts).unwrap();
    server.flaky_failures.store(i64::MAX / 2, Ordering::SeqCst);
    for _ in 0..20 {
        let err = channel.unary(FLAKY, b"", &CallOptions::new()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    // 10 tokens: retries while more than 5 remain, i.e. 4 retries, then
    // every call is a single attempt.
    let stats = channel.stats();
    assert_eq!(stats.retries, 4, "{stats:?}");
    assert_eq!(stats.attempts, 24, "{stats:?}");
    assert_eq!(server.received.load(Ordering::SeqCst), 24);
    assert!(stats.throttled >= 16, "{stats:?}");
    // Successes refill the bucket, 0.1 token each: 60 bring it to 6, and a
    // failure leaves 5, not above half: still no retry.
    server.flaky_failures.store(0, Ordering::SeqCst);
    for _ in 0..60 {
        channel.unary(FLAKY, b"", &CallOptions::new()).await.unwrap();
    }
    server.flaky_failures.store(1, Ordering::SeqCst);
    assert_eq!(channel.unary(FLAKY, b"", &CallOptions::new()).await.unwrap_err().code(), Code::Unavailable);
    // 20 more (7 tokens): a failure leaves 6, and the retry goes ahead.
    for _ in 0..20 {
        channel.unary(FLAKY, b"", &CallOptions::new()).await.unwrap();
    }
    server.flaky_failures.store(1, Ordering::SeqCst);
    channel.unary(FLAKY, b"", &CallOptions::new()).await.unwrap();
    assert_eq!(channel.stats().retries, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_attempt_runs_within_the_one_deadline() {
    let server = TestServer::start("s", "127.0.0.1:0").await;
    let opts = ChannelOptions {
        retry: RetryPolicy { max_attempts: 100, initial_backoff: Duration::from_millis(30), max_backoff: Duration::from_millis(30), ..RetryPolicy::default() },
        retry_budget: None,
        ..test_options()
    };
    let channel = Channel::new(&server.addr, opts).unwrap();
    server.flaky_failures.store(i64::MAX / 2, Ordering::SeqCst);
    let start = Instant::now();
    let err = channel.unary(FLAKY, b"", &CallOptions::new().timeout(Duration::from_millis(300))).await.unwrap_err();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(400), "{took:?}");
    assert!(matches!(err.code(), Code::Unavailable | Code::DeadlineExceeded), "{err}");
    let attempts = server.received.load(Ordering::SeqCst);
    assert!((2..=40).contains(&attempts), "{attempts}");
    // A slow attempt is cut by the overall deadline, not restarted.
    let start = Instant::now();
    let err = channel.unary(WHO, b"1000", &CallOptions::new().timeout(Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    assert!(start.elapsed() < Duration::from_millis(350));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_streaming_calls_retry_until_the_first_response() {
    let server = TestServer::start("s", "127.0.0.1:0").await;
    let channel = Channel::new(&server.addr, test_options()).unwrap();
    server.flaky_failures.store(2, Ordering::SeqCst);
    let mut stream = channel.server_streaming(STREAM, b"3", &CallOptions::new()).await.unwrap();
    let mut got = Vec::new();
    while let Some(msg) = stream.recv().await.unwrap() {
        got.push(msg);
    }
    assert_eq!(got.len(), 3);
    assert_eq!(channel.stats().attempts, 3);
    // An empty stream is an answer too.
    let mut empty = channel.server_streaming(STREAM, b"0", &CallOptions::new()).await.unwrap();
    assert!(empty.recv().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_versus_wait_for_ready() {
    // A port with nothing listening (bound, then released).
    let addr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let channel = Channel::new(&addr, test_options()).unwrap();
    let start = Instant::now();
    let err = channel.unary(WHO, b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert!(err.message().contains(&addr), "{err}");

    let waiting = channel.wait_for_ready(true);
    let err = waiting.unary(WHO, b"", &CallOptions::new().timeout(Duration::from_millis(200))).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");

    // Waiting calls go through once the server comes up.
    let call = tokio::spawn({
        let waiting = waiting.clone();
        async move { waiting.unary(WHO, b"", &CallOptions::new().timeout(Duration::from_secs(5))).await }
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let server = TestServer::start("late", &addr).await;
    assert_eq!(&call.await.unwrap().unwrap()[..], b"late");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_service_check_and_watch() {
    let server = TestServer::start("h", "127.0.0.1:0").await;
    let conn = Conn::connect(&server.addr, ConnOptions::default()).await.unwrap();
    let opts = CallOptions::new();
    assert_eq!(health::check(&conn, "", &opts).await.unwrap(), ServingStatus::Serving);
    assert_eq!(health::check(&conn, "kv.KV", &opts).await.unwrap_err().code(), Code::NotFound);
    server.health.set_status("kv.KV", ServingStatus::NotServing);
    assert_eq!(health::check(&conn, "kv.KV", &opts).await.unwrap(), ServingStatus::NotServing);

    let watch = conn.stream(health::WATCH_RPC, &opts).await.unwrap();
    watch.send_msg(&health::HealthCheckRequest { service: "kv.KV".into() }).await.unwrap();
    watch.close_send().await.unwrap();
    let step = std::sync::atomic::AtomicUsize::new(0);
    let next = || async {
        let n = step.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match watch.recv_msg::<health::HealthCheckResponse>().await {
            Ok(Some(resp)) => ServingStatus::try_from(resp.status).unwrap(),
            other => panic!("watch ended early at step {n}: {other:?} (stream failure: {:?})", watch.context().failure()),
        }
    };
    assert_eq!(next().await, ServingStatus::NotServing);
    server.health.set_status("kv.KV", ServingStatus::Serving);
    assert_eq!(next().await, ServingStatus::Serving);
    server.health.clear_status("kv.KV");
    assert_eq!(next().await, ServingStatus::ServiceUnknown);
    server.health.set_status("kv.KV", ServingStatus::Serving);
    assert_eq!(next().await, ServingStatus::Serving);
    server.health.shutdown();
    assert_eq!(next().await, ServingStatus::NotServing);
    // Then the watch ends, so it does not hold the server's shutdown up.
    assert!(watch.recv().await.unwrap().is_none());
    // Shutting down is final.
    server.health.set_status("kv.KV", ServingStatus::Serving);
    assert_eq!(health::check(&conn, "kv.KV", &opts).await.unwrap(), ServingStatus::NotServing);
    assert_eq!(health::check(&conn, "", &opts).await.unwrap(), ServingStatus::NotServing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_health_checks_take_not_serving_endpoints_out_of_rotation() {
    let a = TestServer::start("a", "127.0.0.1:0").await;
    let b = TestServer::start("b", "127.0.0.1:0").await;
    let opts = ChannelOptions { health_check: Some("kv.KV".into()), ..test_options() };
    a.health.set_status("kv.KV", ServingStatus::Serving);
    b.health.set_status("kv.KV", ServingStatus::Serving);
    let channel = Channel::new(&format!("ipv4:{},{}", a.addr, b.addr), opts).unwrap();
    channel.connect();
    assert!(eventually(Duration::from_secs(3), || channel.endpoints().iter().all(|(_, s)| *s == drpc_channel::EndpointState::Ready)).await);
    let count = |n: usize| {
        let channel = channel.clone();
        async move {
            let mut per = HashMap::new();
            for _ in 0..n {
                let r = channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
                *per.entry(String::from_utf8(r.to_vec()).unwrap()).or_insert(0) += 1;
            }
            per
        }
    };
    assert_eq!(count(10).await.len(), 2);
    b.health.set_status("kv.KV", ServingStatus::NotServing);
    assert!(eventually(Duration::from_secs(3), || channel.endpoints()[1].1 == drpc_channel::EndpointState::NotServing).await);
    assert_eq!(count(20).await.get("a"), Some(&20));
    b.health.set_status("kv.KV", ServingStatus::Serving);
    assert!(eventually(Duration::from_secs(3), || channel.endpoints()[1].1 == drpc_channel::EndpointState::Ready).await);
    assert_eq!(count(10).await.len(), 2);
    // Nothing serving: fail fast with Unavailable.
    a.health.set_status("kv.KV", ServingStatus::NotServing);
    b.health.set_status("kv.KV", ServingStatus::NotServing);
    assert!(eventually(Duration::from_secs(3), || channel.endpoints().iter().all(|(_, s)| *s == drpc_channel::EndpointState::NotServing)).await);
    assert_eq!(channel.unary(WHO, b"", &CallOptions::new()).await.unwrap_err().code(), Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_is_drained_without_failed_calls() {
    let servers = [
        TestServer::start("a", "127.0.0.1:0").await,
        TestServer::start("b", "127.0.0.1:0").await,
        TestServer::start("c", "127.0.0.1:0").await,
    ];
    let target = format!("ipv4:{}", servers.iter().map(|s| s.addr.as_str()).collect::<Vec<_>>().join(","));
    let opts = ChannelOptions { health_check: Some(String::new()), retry: RetryPolicy::none(), ..test_options() };
    let channel = Channel::new(&target, opts).unwrap();
    channel.connect();
    channel.ready(Duration::from_secs(3)).await.unwrap();
    let stop = drpc_core::CancelToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (channel, stop) = (channel.clone(), stop.clone());
        workers.spawn(async move {
            let mut failures = Vec::new();
            let mut calls = 0;
            while !stop.is_cancelled() {
                calls += 1;
                if let Err(e) = channel.unary(WHO, b"10", &CallOptions::new()).await {
                    failures.push(e);
                }
            }
            (calls, failures)
        });
    }
    assert!(eventually(Duration::from_secs(5), || servers[0].hits() >= 100).await);
    let shutdown_started = Instant::now();
    health::graceful_shutdown(&servers[0].server, &servers[0].health, Duration::from_millis(200), Duration::from_secs(5)).await;
    assert!(shutdown_started.elapsed() < Duration::from_secs(2), "health watches held the shutdown up");
    let stopped_at = servers[0].hits();
    assert!(eventually(Duration::from_secs(5), || servers[1].hits() + servers[2].hits() >= 800).await);
    stop.cancel();
    let mut calls = 0;
    while let Some(r) = workers.join_next().await {
        let (n, failures) = r.unwrap();
        assert!(failures.is_empty(), "failed calls without retries: {failures:?}");
        calls += n;
    }
    assert_eq!(servers[0].hits(), stopped_at);
    assert!(calls > 900);
}

/// A host lookup answering from a table the test changes: stands in for DNS
/// (see the README for why no DNS server runs in the tests).
#[derive(Default)]
struct TableLookup {
    table: Mutex<HashMap<String, Vec<IpAddr>>>,
    lookups: Mutex<u64>,
}

impl HostLookup for TableLookup {
    fn lookup(&self, host: &str) -> BoxFuture<'_, std::io::Result<Vec<IpAddr>>> {
        *self.lookups.lock().unwrap() += 1;
        let found = self.table.lock().unwrap().get(host).cloned();
        Box::pin(async move { found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")) })
    }
}

/// Servers on 127.0.0.1-3 sharing one port (a DNS name maps to addresses, not ports).
async fn servers_on_loopback_ips() -> (Vec<TestServer>, u16) {
    loop {
        let first = TestServer::start("ip1", "127.0.0.1:0").await;
        let port: u16 = first.addr.rsplit(':').next().unwrap().parse().unwrap();
        let mut servers = vec![first];
        for i in 2..=3 {
            let addr = format!("127.0.0.{i}:{port}");
            if drpc_core::Listener::bind(&addr).await.is_err() {
                break;
            }
            servers.push(TestServer::start(&format!("ip{i}"), &addr).await);
        }
        if servers.len() == 3 {
            return (servers, port);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_names_are_re_resolved_periodically_and_on_failure() {
    let (servers, port) = servers_on_loopback_ips().await;
    let lookup = Arc::new(TableLookup::default());
    let ip = |i: u8| IpAddr::from([127, 0, 0, i]);
    lookup.table.lock().unwrap().insert("svc.test".into(), vec![ip(1), ip(2)]);
    let opts = ChannelOptions {
        host_lookup: lookup.clone(),
        resolve_interval: Duration::from_millis(200),
        min_resolve_interval: Duration::from_millis(10),
        ..test_options()
    };
    let channel = Channel::new(&format!("dns:///svc.test:{port}"), opts).unwrap();
    channel.connect();
    assert!(eventually(Duration::from_secs(3), || channel.endpoints().len() == 2
        && channel.endpoints().iter().all(|(_, s)| *s == drpc_channel::EndpointState::Ready))
    .await);
    for _ in 0..20 {
        channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
    }
    assert_eq!((servers[0].hits(), servers[1].hits(), servers[2].hits()), (10, 10, 0));
    // The periodic re-resolution picks up the new answer.
    lookup.table.lock().unwrap().insert("svc.test".into(), vec![ip(3)]);
    assert!(eventually(Duration::from_secs(3), || channel.endpoints().len() == 1).await);
    channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
    assert_eq!(servers[2].hits(), 1);
    // A failed lookup keeps the endpoints known so far.
    lookup.table.lock().unwrap().clear();
    let resolutions = channel.stats().resolutions;
    assert!(eventually(Duration::from_secs(3), || channel.stats().resolutions > resolutions + 1).await);
    channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();

    // Re-resolution on failure: a long interval, then the endpoint dies.
    lookup.table.lock().unwrap().insert("svc.test".into(), vec![ip(1)]);
    let opts = ChannelOptions {
        host_lookup: lookup.clone(),
        resolve_interval: Duration::from_secs(3600),
        min_resolve_interval: Duration::from_millis(10),
        ..test_options()
    };
    let channel = Channel::new(&format!("dns:///svc.test:{port}"), opts).unwrap();
    assert_eq!(&channel.unary(WHO, b"", &CallOptions::new()).await.unwrap()[..], b"ip1");
    lookup.table.lock().unwrap().insert("svc.test".into(), vec![ip(2)]);
    servers[0].kill().await;
    let reply = channel.wait_for_ready(true).unary(WHO, b"", &CallOptions::new().timeout(Duration::from_secs(3))).await.unwrap();
    assert_eq!(&reply[..], b"ip2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_system_resolver_finds_localhost() {
    let server = TestServer::start("local", "127.0.0.1:0").await;
    let port = server.addr.rsplit(':').next().unwrap();
    let resolver = DnsResolver::new("localhost", port.parse().unwrap());
    let endpoints = drpc_channel::Resolver::resolve(&resolver).await.unwrap();
    assert!(endpoints.contains(&server.addr), "{endpoints:?}");
    let channel = Channel::new(&format!("dns:///127.0.0.1:{port}"), test_options()).unwrap();
    assert_eq!(&channel.unary(WHO, b"", &CallOptions::new()).await.unwrap()[..], b"local");
}

/// What generated clients call through.
async fn call_through<C: drpc_core::call::Channel>(channel: &C) -> Vec<u8> {
    channel.unary(WHO, b"", &CallOptions::new()).await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_clients_work_over_a_channel() {
    let server = TestServer::start("gen", "127.0.0.1:0").await;
    let channel = Channel::new(&server.addr, test_options()).unwrap();
    assert_eq!(call_through(&channel).await, b"gen");
    let stream = drpc_core::call::Channel::stream(&channel, STREAM, &CallOptions::new()).await.unwrap();
    stream.send(b"2").await.unwrap();
    stream.close_send().await.unwrap();
    assert!(stream.recv().await.unwrap().is_some());
    assert!(stream.recv().await.unwrap().is_some());
    assert!(stream.recv().await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_channel_closes_its_connections() {
    let server = TestServer::start("s", "127.0.0.1:0").await;
    let channel = Channel::new(&server.addr, test_options()).unwrap();
    channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
    let call = tokio::spawn({
        let channel = channel.clone();
        async move { channel.unary(WHO, b"200", &CallOptions::new()).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(channel);
    // The call in flight still finishes; then the connection goes.
    assert_eq!(&call.await.unwrap().unwrap()[..], b"s");
    assert!(eventually(Duration::from_secs(3), || server.server.connections() == 0).await);
}

#[test]
fn health_service_is_a_plain_router_addition() {
    let router = HealthService::new().register(drpc_core::Router::new());
    let mut rpcs: Vec<&str> = router.rpcs().collect();
    rpcs.sort();
    assert_eq!(rpcs, [health::CHECK_RPC, health::WATCH_RPC]);
}
