//! Load balancing, reconnects, resolver updates and draining over real
//! sockets, several local servers.

mod common;

use common::*;
use drpc_channel::{Channel, ChannelOptions, EndpointState, LoadBalancing, ManualResolver, RetryPolicy};
use drpc_core::{CallOptions, Code, Status};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

async fn three_servers() -> Vec<TestServer> {
    let mut servers = Vec::new();
    for name in ["a", "b", "c"] {
        servers.push(TestServer::start(name, "127.0.0.1:0").await);
    }
    servers
}

fn ipv4_target(servers: &[TestServer]) -> String {
    format!("ipv4:{}", servers.iter().map(|s| s.addr.as_str()).collect::<Vec<_>>().join(","))
}

/// Runs `total` calls of `rpc` with `concurrency` at a time; returns the
/// result of each.
async fn load(channel: &Channel, rpc: &'static str, payload: &'static [u8], total: usize, concurrency: usize) -> Vec<Result<String, Status>> {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (channel, next) = (channel.clone(), next.clone());
        workers.spawn(async move {
            let mut results = Vec::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < total {
                let opts = CallOptions::new().timeout(Duration::from_secs(10));
                let r = channel.unary(rpc, payload, &opts).await;
                results.push(r.map(|b| String::from_utf8_lossy(&b).into_owned()));
            }
            results
        });
    }
    let mut all = Vec::new();
    while let Some(r) = workers.join_next().await {
        all.extend(r.unwrap());
    }
    all
}

fn split(results: &[Result<String, Status>]) -> (HashMap<String, usize>, Vec<Status>) {
    let mut per_server = HashMap::new();
    let mut errors = Vec::new();
    for r in results {
        match r {
            Ok(name) => *per_server.entry(name.clone()).or_insert(0) += 1,
            Err(e) => errors.push(e.clone()),
        }
    }
    (per_server, errors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_within_ten_percent() {
    let servers = three_servers().await;
    let channel = Channel::new(&ipv4_target(&servers), test_options()).unwrap();
    let results = load(&channel, WHO, b"", 900, 12).await;
    let (per_server, errors) = split(&results);
    assert!(errors.is_empty(), "{errors:?}");
    for s in &servers {
        let n = per_server[&s.name] as f64;
        assert!((n - 300.0).abs() <= 30.0, "server {} got {n} of 900: {per_server:?}", s.name);
    }
    // Lazy: exactly one connection per server.
    for s in &servers {
        assert_eq!(s.server.connections(), 1, "{}", s.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_connects_before_the_first_call() {
    let servers = three_servers().await;
    let channel = Channel::new(&ipv4_target(&servers), test_options()).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(servers.iter().all(|s| s.server.connections() == 0));
    channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
    assert!(eventually(Duration::from_secs(2), || servers.iter().all(|s| s.server.connections() == 1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_server_mid_load_loses_no_retried_call() {
    let servers = three_servers().await;
    let opts = ChannelOptions {
        retry: RetryPolicy { max_attempts: 5, ..RetryPolicy::default() },
        retry_budget: None,
        ..test_options()
    };
    let channel = Channel::new(&ipv4_target(&servers), opts).unwrap();
    // 20 ms calls keep requests in flight on the server being killed.
    let running = tokio::spawn({
        let channel = channel.clone();
        async move { load(&channel, WHO, b"20", 1500, 30).await }
    });
    assert!(eventually(Duration::from_secs(10), || servers[1].hits() >= 100).await);
    servers[1].kill().await;
    let killed_at = servers[1].hits();
    let results = running.await.unwrap();
    let (per_server, errors) = split(&results);
    assert!(errors.is_empty(), "calls lost: {errors:?}");
    assert_eq!(results.len(), 1500);
    // Handlers cut off by the kill may have run without their answer
    // arriving (those calls were retried elsewhere); none answered later.
    assert!(per_server.get("b").copied().unwrap_or(0) as u64 <= killed_at, "calls answered by b after it died");
    assert_eq!(servers[1].hits(), killed_at);
    assert!(channel.stats().retries > 0, "no call was in flight on the killed server: {:?}", channel.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_every_failed_call_has_a_clear_code() {
    let servers = three_servers().await;
    let opts = ChannelOptions { retry: RetryPolicy::none(), ..test_options() };
    let channel = Channel::new(&ipv4_target(&servers), opts).unwrap();
    let running = tokio::spawn({
        let channel = channel.clone();
        async move { load(&channel, WHO, b"20", 900, 30).await }
    });
    assert!(eventually(Duration::from_secs(10), || servers[0].hits() >= 50).await);
    servers[0].kill().await;
    let results = running.await.unwrap();
    let (_, errors) = split(&results);
    for e in &errors {
        assert_eq!(e.code(), Code::Unavailable, "{e}");
    }
    assert_eq!(channel.stats().retries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_shutting_down_gracefully_loses_no_call_even_without_retries() {
    let servers = three_servers().await;
    // No retry policy and no health checking: only the transparent replay of
    // calls the draining server refused keeps every call alive.
    let opts = ChannelOptions { retry: RetryPolicy::none(), ..test_options() };
    let channel = Channel::new(&ipv4_target(&servers), opts).unwrap();
    let running = tokio::spawn({
        let channel = channel.clone();
        async move { load(&channel, WHO, b"5", 1500, 24).await }
    });
    assert!(eventually(Duration::from_secs(10), || servers[1].hits() >= 100).await);
    servers[1].server.shutdown(Duration::from_secs(5)).await;
    let stopped_at = servers[1].hits();
    let results = running.await.unwrap();
    let (per_server, errors) = split(&results);
    assert!(errors.is_empty(), "calls failed: {errors:?}");
    assert_eq!(results.len(), 1500);
    assert_eq!(per_server.get("b").copied().unwrap_or(0) as u64, stopped_at);
    let stats = channel.stats();
    assert_eq!(stats.retries, 0, "{stats:?}");
    assert!(stats.transparent_retries > 0, "no call reached b while it was draining: {stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_used_again() {
    let servers = three_servers().await;
    let channel = Channel::new(&ipv4_target(&servers), test_options()).unwrap();
    load(&channel, WHO, b"", 30, 3).await;
    let addr = servers[2].addr.clone();
    servers[2].kill().await;
    assert!(
        eventually(Duration::from_secs(5), || channel.endpoints().iter().any(|(a, s)| *a == addr
            && *s == EndpointState::TransientFailure))
        .await
    );
    let (_, errors) = split(&load(&channel, WHO, b"", 60, 3).await);
    assert!(errors.is_empty(), "{errors:?}");
    let restarted = TestServer::start("c2", &addr).await;
    assert!(
        eventually(Duration::from_secs(5), || channel.endpoints().iter().all(|(_, s)| *s == EndpointState::Ready)).await,
        "{:?}",
        channel.endpoints()
    );
    let (per_server, errors) = split(&load(&channel, WHO, b"", 90, 3).await);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(per_server.get("c2"), Some(&30), "{per_server:?}");
    drop(restarted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_adds_and_removes_endpoints_under_load() {
    let servers = three_servers().await;
    let resolver = ManualResolver::new([servers[0].addr.clone()]);
    let channel = Channel::with_resolver("manual", Arc::new(resolver.clone()), test_options());
    let running = tokio::spawn({
        let channel = channel.clone();
        async move { load(&channel, WHO, b"5", 1200, 12).await }
    });
    assert!(eventually(Duration::from_secs(10), || servers[0].hits() >= 100).await);
    resolver.set([servers[0].addr.clone(), servers[1].addr.clone()]);
    assert!(eventually(Duration::from_secs(10), || servers[1].hits() >= 100).await);
    resolver.set([servers[1].addr.clone(), servers[2].addr.clone()]);
    // a is drained: its connection closes once its calls finished.
    assert!(eventually(Duration::from_secs(5), || servers[0].server.connections() == 0).await);
    let a_final = servers[0].hits();
    assert!(eventually(Duration::from_secs(10), || servers[2].hits() >= 100).await);
    let results = running.await.unwrap();
    let (per_server, errors) = split(&results);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(per_server["a"] as u64, a_final);
    assert_eq!(servers[0].hits(), a_final, "a got calls after it was removed");
    assert_eq!(per_server.values().sum::<usize>(), 1200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_endpoint_finishes_its_calls_in_flight() {
    let servers = three_servers().await;
    let resolver = ManualResolver::new([servers[0].addr.clone()]);
    let channel = Channel::with_resolver("manual", Arc::new(resolver.clone()), test_options());
    let mut slow = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let channel = channel.clone();
        slow.spawn(async move { channel.unary(WHO, b"400", &CallOptions::new()).await });
    }
    assert!(eventually(Duration::from_secs(5), || servers[0].server.active_rpcs() == 20).await);
    resolver.set([servers[1].addr.clone()]);
    let b_addr = servers[1].addr.clone();
    assert!(eventually(Duration::from_secs(2), || channel.endpoints().iter().map(|(a, _)| a).eq([&b_addr])).await);
    // New calls go to b, while a's 20 are still running.
    let reply = channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
    assert_eq!(&reply[..], b"b");
    assert_eq!(servers[0].server.active_rpcs(), 20);
    while let Some(r) = slow.join_next().await {
        assert_eq!(&r.unwrap().unwrap()[..], b"a");
    }
    assert!(eventually(Duration::from_secs(5), || servers[0].server.connections() == 0).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pick_first_sticks_to_the_first_reachable_endpoint() {
    let servers = three_servers().await;
    let opts = ChannelOptions { load_balancing: LoadBalancing::PickFirst, ..test_options() };
    let channel = Channel::new(&ipv4_target(&servers), opts).unwrap();
    let (per_server, errors) = split(&load(&channel, WHO, b"", 100, 4).await);
    assert!(errors.is_empty());
    assert_eq!(per_server.get("a"), Some(&100));
    assert_eq!(servers[1].server.connections() + servers[2].server.connections(), 0);
    servers[0].kill().await;
    let (per_server, errors) = split(&load(&channel, WHO, b"", 100, 4).await);
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(per_server.get("b"), Some(&100), "{per_server:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_of_two_choices_favours_the_less_busy_endpoint() {
    // "fast" comes up late, so the 20 long calls all land on "slow" first.
    let fast_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let slow = TestServer::start("slow", "127.0.0.1:0").await;
    let opts = ChannelOptions { load_balancing: LoadBalancing::PowerOfTwoChoices, ..test_options() };
    let channel = Channel::new(&format!("ipv4:{fast_addr},{}", slow.addr), opts).unwrap();
    channel.ready(Duration::from_secs(2)).await.unwrap();
    let mut held = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let c = channel.clone();
        held.spawn(async move { c.unary(WHO, b"1000", &CallOptions::new()).await });
    }
    assert!(eventually(Duration::from_secs(2), || slow.server.active_rpcs() == 20).await);
    let fast = TestServer::start("fast", &fast_addr).await;
    assert!(eventually(Duration::from_secs(3), || channel.endpoints().iter().all(|(_, s)| *s == EndpointState::Ready)).await);
    // Two endpoints: both are always the two choices; the idle one wins.
    let (per_server, errors) = split(&load(&channel, WHO, b"", 200, 2).await);
    assert!(errors.is_empty());
    assert_eq!(per_server.get("fast"), Some(&200), "{per_server:?}");
    while let Some(r) = held.join_next().await {
        assert_eq!(&r.unwrap().unwrap()[..], b"slow");
    }
    drop(fast);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_peers_get_a_connection_per_concurrent_call() {
    let server = TestServer::start("seq", "127.0.0.1:0").await;
    let opts = ChannelOptions {
        conn: drpc_core::ConnOptions::default().sequential(),
        max_conns_per_endpoint: 4,
        ..test_options()
    };
    let channel = Channel::new(&server.addr, opts).unwrap();
    let results = load(&channel, WHO, b"50", 16, 8).await;
    assert!(results.iter().all(|r| r.is_ok()));
    assert_eq!(server.server.connections(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unix_socket_targets() {
    let path = std::env::temp_dir().join(format!("drpc-channel-{}.sock", std::process::id()));
    let server = TestServer::start("unix", &format!("unix:{}", path.display())).await;
    let channel = Channel::new(&format!("unix://{}", path.display()), test_options()).unwrap();
    assert_eq!(&channel.unary(WHO, b"", &CallOptions::new()).await.unwrap()[..], b"unix");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_and_reopen_on_demand() {
    let server = TestServer::start("idle", "127.0.0.1:0").await;
    let opts = ChannelOptions { idle_timeout: Duration::from_millis(150), ..test_options() };
    let channel = Channel::new(&server.addr, opts).unwrap();
    channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
    assert_eq!(server.server.connections(), 1);
    // A call longer than the idle timeout keeps its connection.
    channel.unary(WHO, b"400", &CallOptions::new()).await.unwrap();
    assert_eq!(server.server.connections(), 1);
    assert!(eventually(Duration::from_secs(3), || server.server.connections() == 0).await);
    assert_eq!(channel.endpoints()[0].1, EndpointState::Idle);
    channel.unary(WHO, b"", &CallOptions::new()).await.unwrap();
    assert_eq!(server.server.connections(), 1);
}
