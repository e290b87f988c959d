//! The client and server together over real sockets: every call shape,
//! concurrency on one connection, deadlines, cancellation, error codes,
//! sequential mode, graceful shutdown, and that nothing leaks.

mod common;

use bytes::Bytes;
use common::*;
use drpc_core::{
    CallOptions, CancelToken, Code, Conn, ConnOptions, Router, Server, ServerOptions, Status,
    Stream,
};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

async fn setup() -> (Server, Conn, std::sync::Arc<Seen>) {
    let (server, addr, seen) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    (server, conn, seen)
}

#[tokio::test]
async fn unary_and_streaming_shapes() {
    let (server, conn, _) = setup().await;
    let r = conn
        .unary("/t.S/Echo", b"x", &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(&r[..], b"x");
    let md = CallOptions::new().metadata("a", "1").metadata("b", "ü");
    let r = conn.unary("/t.S/Meta", b"", &md).await.unwrap();
    assert_eq!(&r[..], r#"{"a": "1", "b": "ü"}"#.as_bytes());
    let resp: Counted = conn
        .invoke("/t.S/Slow", &Counted { n: 3 }, &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(resp.n, 3);

    let s = conn
        .stream("/t.S/Count", &CallOptions::new())
        .await
        .unwrap();
    for _ in 0..5 {
        s.send(b"m").await.unwrap();
    }
    s.close_send().await.unwrap();
    assert_eq!(
        s.recv_msg::<Counted>().await.unwrap(),
        Some(Counted { n: 5 })
    );
    assert_eq!(s.recv().await.unwrap(), None);
    assert!(s.is_finished());
    assert_eq!(
        s.send(b"late").await.unwrap_err().code(),
        Code::FailedPrecondition
    );

    let s = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    for i in 0..10u8 {
        s.send([i]).await.unwrap();
        assert_eq!(s.recv().await.unwrap().unwrap()[..], [i]);
    }
    s.close_send().await.unwrap();
    assert_eq!(s.recv().await.unwrap(), None);
    drop(s);
    eventually("streams released", || {
        conn.active_streams() == 0 && server.active_rpcs() == 0
    })
    .await;
}

#[tokio::test]
async fn concurrent_unary_calls_overlap_on_one_connection() {
    let (server, conn, _) = setup().await;
    let start = Instant::now();
    let calls: Vec<_> = (0..100u32)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move {
                let r: Counted = conn
                    .invoke(
                        "/t.S/Slow",
                        &Counted { n: 200 + i % 3 },
                        &CallOptions::new(),
                    )
                    .await?;
                assert_eq!(r.n, 200 + i % 3);
                Ok::<_, Status>(())
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    // 100 calls of 200 ms each finish in far less than their sum.
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "calls did not overlap: {:?}",
        start.elapsed()
    );
    assert_eq!(server.connections(), 1);
    assert_eq!(conn.active_streams(), 0);
}

#[tokio::test]
async fn errors_keep_code_and_message_and_panics_become_internal() {
    let (server, conn, _) = setup().await;
    let e = conn
        .unary("/t.S/Fail", b"", &CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::NotFound, "no such thing"));
    let e = conn
        .unary("/t.S/Panic", b"", &CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Internal);
    assert!(e.message().contains("handler exploded"), "{e}");
    let e = conn
        .unary("/nope/Nope", b"", &CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert!(e.message().contains("/nope/Nope"));
    // The connection survived all of it.
    assert_eq!(
        &conn
            .unary("/t.S/Echo", b"ok", &CallOptions::new())
            .await
            .unwrap()[..],
        b"ok"
    );
    eventually("no handler left", || server.active_rpcs() == 0).await;
}

#[tokio::test]
async fn deadline_cancels_the_call_and_the_server_sees_it() {
    let (server, conn, seen) = setup().await;
    let start = Instant::now();
    let e = conn
        .unary(
            "/t.S/Sleep",
            b"",
            &CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    assert!(start.elapsed() < Duration::from_secs(1));
    eventually("server observed the cancel", || {
        seen.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("released", || {
        server.active_rpcs() == 0 && conn.active_streams() == 0
    })
    .await;

    // Streams honour the deadline too, even when nobody is waiting on them.
    let s = conn
        .stream(
            "/t.S/Bidi",
            &CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(s.recv().await.unwrap_err().code(), Code::DeadlineExceeded);
    eventually("server stream released", || server.active_rpcs() == 0).await;
}

#[tokio::test]
async fn cancel_token_and_drop_cancel_only_their_call() {
    let (server, conn, seen) = setup().await;
    let token = CancelToken::new();
    let slow = {
        let (conn, token) = (conn.clone(), token.clone());
        tokio::spawn(async move {
            conn.unary("/t.S/Sleep", b"", &CallOptions::new().cancel_token(token))
                .await
        })
    };
    eventually("started", || seen.started.load(Ordering::SeqCst) == 1).await;
    let other = conn
        .unary("/t.S/Echo", b"meanwhile", &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(&other[..], b"meanwhile");
    token.cancel();
    assert_eq!(slow.await.unwrap().unwrap_err().code(), Code::Canceled);
    eventually("server saw it", || {
        seen.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;

    // Dropping the call future cancels as well.
    let plain = CallOptions::new();
    let fut = conn.unary("/t.S/Sleep", b"", &plain);
    assert!(tokio::time::timeout(Duration::from_millis(50), fut)
        .await
        .is_err());
    eventually("server saw the drop", || {
        seen.cancelled.load(Ordering::SeqCst) == 2
    })
    .await;

    // And dropping an open stream.
    let s = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    s.send(b"x").await.unwrap();
    drop(s);
    eventually("all released", || {
        server.active_rpcs() == 0 && conn.active_streams() == 0
    })
    .await;
    assert!(!conn.is_closed());
}

#[tokio::test]
async fn finished_cancel_or_deadline_fails_before_using_a_stream_id() {
    let (_server, conn, _) = setup().await;
    let token = CancelToken::new();
    token.cancel();
    let e = conn
        .unary(
            "/t.S/Echo",
            b"",
            &CallOptions::new().cancel_token(token.clone()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Canceled);
    let e = conn
        .stream(
            "/t.S/Bidi",
            &CallOptions::new().deadline(tokio::time::Instant::now()),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    let s = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    assert_eq!(s.id(), 1, "the failed calls must not have used stream ids");
}

#[tokio::test]
async fn closing_the_connection_fails_calls_with_unavailable() {
    let (server, conn, seen) = setup().await;
    let slow = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.unary("/t.S/Sleep", b"", &CallOptions::new()).await })
    };
    let s = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    eventually("started", || seen.started.load(Ordering::SeqCst) == 1).await;
    conn.close().await;
    assert_eq!(slow.await.unwrap().unwrap_err().code(), Code::Unavailable);
    assert_eq!(s.recv().await.unwrap_err().code(), Code::Unavailable);
    assert_eq!(
        conn.unary("/t.S/Echo", b"", &CallOptions::new())
            .await
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
    // The server side sees its handlers cancelled and lets go of everything.
    eventually("server handler cancelled", || {
        seen.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("server released", || {
        server.active_rpcs() == 0 && server.connections() == 0
    })
    .await;
}

#[tokio::test]
async fn server_going_away_fails_calls_with_unavailable() {
    let (server, conn, seen) = setup().await;
    let slow = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.unary("/t.S/Sleep", b"", &CallOptions::new()).await })
    };
    eventually("started", || seen.started.load(Ordering::SeqCst) == 1).await;
    server.shutdown(Duration::from_millis(50)).await;
    let e = slow.await.unwrap().unwrap_err();
    assert!(
        matches!(e.code(), Code::Unavailable | Code::Canceled),
        "{e}"
    );
    let closed = tokio::time::timeout(Duration::from_secs(2), conn.closed())
        .await
        .expect("conn noticed");
    assert_eq!(closed.code(), Code::Unavailable);
    assert_eq!(conn.active_streams(), 0);
}

#[tokio::test]
async fn graceful_shutdown_lets_in_flight_calls_finish() {
    let (server, conn, _) = setup().await;
    let call = {
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.invoke::<_, Counted>("/t.S/Slow", &Counted { n: 300 }, &CallOptions::new())
                .await
        })
    };
    eventually("in flight", || server.active_rpcs() == 1).await;
    let start = Instant::now();
    server.shutdown(Duration::from_secs(5)).await;
    assert_eq!(call.await.unwrap().unwrap().n, 300);
    assert!(start.elapsed() < Duration::from_secs(2));
    assert_eq!((server.active_rpcs(), server.connections()), (0, 0));
}

#[tokio::test]
async fn sequential_mode_runs_one_stream_at_a_time() {
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    let active = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (a, p) = (active.clone(), peak.clone());
    let router = Router::new().unary_raw("/t.S/Track", move |req| {
        let (a, p) = (a.clone(), p.clone());
        async move {
            let now = a.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(5)).await;
            a.fetch_sub(1, Ordering::SeqCst);
            Ok::<Bytes, Status>(req.data)
        }
    });
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(
        &addr,
        ConnOptions {
            sequential: true,
            ..ConnOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(conn.is_sequential());
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.unary("/t.S/Track", &[i], &CallOptions::new()).await })
        })
        .collect();
    for (i, c) in calls.into_iter().enumerate() {
        assert_eq!(c.await.unwrap().unwrap()[..], [i as u8]);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 1);
    // A waiting call still honours its deadline.
    let s = conn
        .stream("/t.S/Track", &CallOptions::new())
        .await
        .unwrap();
    let e = conn
        .unary(
            "/t.S/Track",
            b"",
            &CallOptions::new().timeout(Duration::from_millis(30)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    drop(s);
    assert_eq!(
        &conn
            .unary("/t.S/Track", b"z", &CallOptions::new())
            .await
            .unwrap()[..],
        b"z"
    );
}

#[tokio::test]
async fn oversized_messages_fail_with_resource_exhausted_both_ways() {
    let opts = ConnOptions {
        max_message_size: 1000,
        ..ConnOptions::default()
    };
    let (_server, addr, _) = start_server(ServerOptions {
        conn: opts.clone(),
        ..ServerOptions::default()
    })
    .await;
    let conn = Conn::connect(&addr, opts).await.unwrap();
    let e = conn
        .unary("/t.S/Echo", &[0; 1001], &CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    let s = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    assert_eq!(
        s.send([0; 2000]).await.unwrap_err().code(),
        Code::ResourceExhausted
    );
    // A larger peer limit: the server refuses what the client may send.
    let big = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let e = big
        .unary("/t.S/Echo", &[0; 5000], &CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert_eq!(
        &big.unary("/t.S/Echo", b"fits", &CallOptions::new())
            .await
            .unwrap()[..],
        b"fits"
    );
    assert_eq!(
        &conn
            .unary("/t.S/Echo", b"fits", &CallOptions::new())
            .await
            .unwrap()[..],
        b"fits"
    );
}

#[tokio::test]
async fn handler_streams_see_remote_close_send_and_errors() {
    let router = Router::new().bidi("/t.S/FailLate", |stream: Stream| async move {
        stream.send(b"first").await?;
        Err(Status::new(Code::Aborted, "late failure"))
    });
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let s = conn
        .stream("/t.S/FailLate", &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(&s.recv().await.unwrap().unwrap()[..], b"first");
    let e = s.recv().await.unwrap_err();
    assert_eq!((e.code(), e.message()), (Code::Aborted, "late failure"));
}

#[tokio::test]
async fn unix_sockets_and_any_transport() {
    let dir = std::env::temp_dir().join(format!("drpc-test-{}.sock", std::process::id()));
    let seen = std::sync::Arc::new(Seen::default());
    let server = Server::new(router(seen));
    let addr = server
        .listen(&format!("unix:{}", dir.display()))
        .await
        .unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    assert_eq!(
        &conn
            .unary("/t.S/Echo", b"unix", &CallOptions::new())
            .await
            .unwrap()[..],
        b"unix"
    );
    server.shutdown(Duration::from_secs(1)).await;
    assert!(!dir.exists(), "socket file removed on shutdown");

    let (a, b) = tokio::io::duplex(1024);
    let server = Server::new(router(std::sync::Arc::new(Seen::default())));
    let serving = tokio::spawn({
        let server = server.clone();
        async move { server.serve_transport(b).await }
    });
    let conn = Conn::new(a, ConnOptions::default());
    let big = vec![7u8; 200_000];
    assert_eq!(
        conn.unary("/t.S/Echo", &big, &CallOptions::new())
            .await
            .unwrap()
            .len(),
        big.len()
    );
    conn.close().await;
    tokio::time::timeout(Duration::from_secs(2), serving)
        .await
        .unwrap()
        .unwrap();
}
