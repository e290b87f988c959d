//! Metrics after a scripted workload: exact stream counts by outcome and
//! code, per-rpc counts and latencies, bytes that agree on both ends.

mod common;

use common::{start_server, Counted};
use drpc_core::{CallOptions, Code, Conn, ConnOptions, MetricsSnapshot, Pool, PoolOptions, ServerOptions};
use std::time::Duration;

/// Polls `f` until it holds (handlers record their end after answering).
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(tokio::time::Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn counts_are_exact_after_a_scripted_workload() {
    const OK: u64 = 7;
    const FAILED: u64 = 3;
    const STREAMS: u64 = 2;
    const MESSAGES: usize = 4;
    let (server, addr, _seen) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let opts = CallOptions::new();
    for _ in 0..OK {
        conn.unary("/t.S/Echo", &[7; 100], &opts).await.unwrap();
    }
    for _ in 0..FAILED {
        let err = conn.unary("/t.S/Fail", b"", &opts).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
    let err = conn.unary("/t.S/Nope", b"", &opts).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    for _ in 0..STREAMS {
        let stream = conn.stream("/t.S/Bidi", &opts).await.unwrap();
        for _ in 0..MESSAGES {
            stream.send(b"ping").await.unwrap();
            assert_eq!(&stream.recv().await.unwrap().unwrap()[..], b"ping");
        }
        stream.close_send().await.unwrap();
        assert_eq!(stream.recv().await.unwrap(), None);
    }
    let total = OK + FAILED + 1 + STREAMS;
    eventually("every stream closed on the server", || {
        let m = server.metrics();
        m.streams_closed == total && m.rpc("/t.S/Bidi").unwrap().count == STREAMS
    })
    .await;

    let s = server.metrics();
    let c = conn.metrics();
    for (side, m) in [("server", &s), ("client", &c)] {
        assert_eq!(m.streams_opened, total, "{side}");
        assert_eq!(m.streams_closed, total, "{side}");
        assert_eq!(m.active_streams, 0, "{side}");
        assert_eq!(m.streams_failed, FAILED + 1, "{side}");
        assert_eq!(
            m.failed_by_code,
            vec![(Code::NotFound as u32, FAILED), (Code::Unimplemented as u32, 1)],
            "{side}"
        );
        assert_eq!(m.connections_opened, 1, "{side}");
        assert_eq!(m.active_connections, 1, "{side}");
        assert_eq!(m.queued_bytes, 0, "{side}");
    }
    // What one side wrote, the other read.
    assert_eq!(s.bytes_received, c.bytes_sent);
    assert_eq!(s.bytes_sent, c.bytes_received);
    assert!(c.bytes_sent > OK * 100);

    let echo = s.rpc("/t.S/Echo").unwrap();
    assert_eq!((echo.count, echo.failed), (OK, 0));
    assert_eq!(echo.latency.count(), OK);
    assert_eq!(echo.latency.counts.len(), echo.latency.bounds_us.len() + 1);
    let fail = s.rpc("/t.S/Fail").unwrap();
    assert_eq!((fail.count, fail.failed), (FAILED, FAILED));
    let bidi = s.rpc("/t.S/Bidi").unwrap();
    assert_eq!((bidi.count, bidi.failed), (STREAMS, 0));
    assert_eq!(s.rpc("/t.S/Panic").unwrap().count, 0, "registered, never called");
    assert!(s.rpc("/t.S/Nope").is_none(), "unknown rpcs get no entry");
    let names: Vec<&str> = s.rpcs.iter().map(|r| r.rpc.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);

    // A slow call shows as active on both sides while it runs; the server
    // ends it when the deadline the client sent passes.
    let sleeper = {
        let conn = conn.clone();
        tokio::spawn(async move {
            let opts = CallOptions::new()
                .timeout(Duration::from_secs(10))
                .metadata(drpc_core::deadline::TIMEOUT_KEY, "300m");
            conn.unary("/t.S/Sleep", b"", &opts).await
        })
    };
    eventually("the sleeping call is active", || {
        server.metrics().active_streams == 1 && conn.metrics().active_streams == 1
    })
    .await;
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    // The client's own deadline, not sent: it cancels, the server sees a cancel.
    let quiet = ConnOptions { send_deadline: false, ..ConnOptions::default() };
    let conn2 = Conn::connect(&addr, quiet).await.unwrap();
    let opts = CallOptions::new().timeout(Duration::from_millis(50));
    let err = conn2.unary("/t.S/Sleep", b"", &opts).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);
    eventually("both sleeping calls ended on the server", || {
        server.metrics().streams_closed == total + 2
    })
    .await;
    let s = server.metrics();
    assert_eq!(s.active_streams, 0);
    assert_eq!(s.failed_with(Code::DeadlineExceeded), 1);
    assert_eq!(s.failed_with(Code::Canceled), 1);
    assert_eq!(conn.metrics().failed_with(Code::DeadlineExceeded), 1);
    assert_eq!(conn2.metrics().failed_by_code, vec![(Code::DeadlineExceeded as u32, 1)]);
    assert_eq!(s.rpc("/t.S/Sleep").unwrap().failed, 2);
    assert_eq!(s.connections_opened, 2);
}

#[tokio::test]
async fn closed_connections_stay_counted_and_pools_sum_theirs() {
    let (server, addr, _seen) = start_server(ServerOptions::default()).await;
    let pool = Pool::new(PoolOptions::sequential(4));
    for n in 0..3u32 {
        let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
        let _: Counted = conn.invoke("/t.S/Slow", &Counted { n }, &CallOptions::new()).await.unwrap();
        conn.close().await;
    }
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let pool = pool.clone();
            let addr = addr.clone();
            tokio::spawn(async move {
                pool.invoke::<_, Counted>(&addr, "/t.S/Slow", &Counted { n: 50 }, &CallOptions::new())
                    .await
            })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let p = pool.metrics();
    assert_eq!(p.connections_opened, 4);
    assert_eq!(p.streams_opened, 4);
    assert_eq!(p.streams_closed, 4);
    pool.close().await;
    let after: MetricsSnapshot = pool.metrics();
    assert_eq!(after.streams_opened, 4, "closed pool connections stay counted");
    assert_eq!(after.bytes_sent, p.bytes_sent);
    assert_eq!(after.active_connections, 0);
    eventually("every connection closed on the server", || server.connections() == 0).await;
    let s = server.metrics();
    assert_eq!(s.connections_opened, 7);
    assert_eq!(s.active_connections, 0);
    assert_eq!(s.streams_opened, 7);
    assert_eq!(s.streams_closed, 7);
    assert_eq!(s.streams_failed, 0);
    assert_eq!(s.rpc("/t.S/Slow").unwrap().count, 7);
}
