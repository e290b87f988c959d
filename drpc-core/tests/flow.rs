//! Flow control, memory bounds, stream limits and the bounded writer
//! (DESIGN.md section 4): every refusal asserts its code and that the
//! connection survives.

mod common;

use bytes::Bytes;
use common::*;
use drpc_core::wire::{decode_error, put_varint, Kind};
use drpc_core::{
    CallOptions, Code, Conn, ConnOptions, FlowControl, Router, Server, ServerOptions, Status,
    Stream,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const CHUNK: usize = 64 << 10;

/// A server whose "/f.S/Flood" handler sends `n` messages of 64 KiB as fast as
/// credit allows, counting what it managed to send.
async fn flood_server(opts: ConnOptions) -> (Server, String, Arc<AtomicUsize>) {
    let sent = Arc::new(AtomicUsize::new(0));
    let s = sent.clone();
    let router = Router::new()
        .stream_raw("/f.S/Flood", move |stream: Stream| {
            let sent = s.clone();
            async move {
                let n = stream.recv().await?.map_or(0, |b| b[0] as usize * 100);
                let chunk = Bytes::from(vec![1u8; CHUNK]);
                for _ in 0..n {
                    stream.send(&chunk).await?;
                    sent.fetch_add(1, Ordering::SeqCst);
                }
                Ok(())
            }
        })
        .unary_raw(
            "/f.S/Echo",
            |req| async move { Ok::<Bytes, Status>(req.data) },
        );
    let server = Server::with_options(
        router,
        ServerOptions {
            conn: opts,
            ..ServerOptions::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    (server, addr, sent)
}

#[tokio::test]
async fn a_reader_that_never_reads_holds_at_most_window_plus_one_message() {
    let opts = ConnOptions::default().with_flow_control();
    let window = FlowControl::default().window as usize;
    let (server, addr, sent) = flood_server(opts.clone()).await;
    let conn = Conn::connect(&addr, opts).await.unwrap();
    let slow = conn
        .stream("/f.S/Flood", &CallOptions::new())
        .await
        .unwrap();
    slow.send([10u8]).await.unwrap(); // asks for 1,000 x 64 KiB = 62.5 MiB
    slow.close_send().await.unwrap();

    // Other calls on the same connection run at full speed meanwhile.
    let start = Instant::now();
    for i in 0..300u32 {
        let r = conn
            .unary("/f.S/Echo", &i.to_be_bytes(), &CallOptions::new())
            .await
            .unwrap();
        assert_eq!(&r[..], &i.to_be_bytes());
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "other streams were slowed: {:?}",
        start.elapsed()
    );

    // The sender is blocked on credit: what it sent fits the window (+1 message).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let held = conn.buffered_bytes();
    assert!(
        held <= window + CHUNK,
        "client holds {held} bytes for the unread stream"
    );
    assert!(
        sent.load(Ordering::SeqCst) * CHUNK <= window + CHUNK,
        "server sent past its credit"
    );
    assert!(
        held >= window / 2,
        "the stream should have used its window: {held}"
    );

    // Cancelling unblocks the sender and frees the memory.
    slow.cancel();
    eventually("server handler unblocked and finished", || {
        server.active_rpcs() == 0
    })
    .await;
    eventually("buffer released", || conn.buffered_bytes() == 0).await;
    assert!(sent.load(Ordering::SeqCst) < 1000);
}

#[tokio::test]
async fn reading_grants_credit_and_the_whole_stream_arrives() {
    let opts = ConnOptions::default().with_flow_control();
    let (_server, addr, sent) = flood_server(opts.clone()).await;
    let conn = Conn::connect(&addr, opts).await.unwrap();
    let s = conn
        .stream("/f.S/Flood", &CallOptions::new())
        .await
        .unwrap();
    s.send([1u8]).await.unwrap(); // 100 x 64 KiB = 6.25 MiB, three windows' worth
    s.close_send().await.unwrap();
    let mut got = 0;
    while let Some(m) = s.recv().await.unwrap() {
        assert_eq!(m.len(), CHUNK);
        got += 1;
    }
    assert_eq!((got, sent.load(Ordering::SeqCst)), (100, 100));
}

#[tokio::test]
async fn a_blocked_client_sender_unblocks_on_cancel() {
    // The server never reads its stream, so the client runs out of credit.
    let router = Router::new().stream_raw("/f.S/Ignore", |stream: Stream| async move {
        stream.context().cancelled().await;
        Ok(())
    });
    let opts = ConnOptions::default().with_flow_control();
    let server = Server::with_options(
        router,
        ServerOptions {
            conn: opts.clone(),
            ..ServerOptions::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&addr, opts).await.unwrap();
    let s = Arc::new(
        conn.stream("/f.S/Ignore", &CallOptions::new())
            .await
            .unwrap(),
    );
    let sender = {
        let s = s.clone();
        tokio::spawn(async move {
            let chunk = vec![0u8; CHUNK];
            let mut n = 0;
            loop {
                if let Err(e) = s.send(&chunk).await {
                    return (n, e);
                }
                n += 1;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !sender.is_finished(),
        "the sender should be blocked on credit"
    );
    assert!(s.send_credit().unwrap() < 0);
    s.cancel();
    let (n, e) = tokio::time::timeout(Duration::from_secs(2), sender)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.code(), Code::Canceled);
    assert!(
        n * CHUNK <= (2 << 20) + CHUNK,
        "sent {n} chunks past the window"
    );
    eventually("server released", || server.active_rpcs() == 0).await;
}

#[tokio::test]
async fn a_peer_overrunning_its_window_gets_resource_exhausted() {
    let opts = ConnOptions {
        flow_control: Some(FlowControl {
            window: 1000,
            grant_threshold: 500,
        }),
        max_message_size: 1000,
        ..ConnOptions::default()
    };
    let router = Router::new()
        .stream_raw("/f.S/Never", |stream: Stream| async move {
            stream.context().cancelled().await;
            Err(stream
                .context()
                .failure()
                .unwrap_or_else(|| Status::canceled("canceled")))
        })
        .unary_raw(
            "/f.S/Echo",
            |req| async move { Ok::<Bytes, Status>(req.data) },
        );
    let server = Server::with_options(
        router,
        ServerOptions {
            conn: opts,
            ..ServerOptions::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let mut peer = RawPeer::connect(&addr).await;
    let mut out = frame(1, 1, Kind::INVOKE, false, true, b"/f.S/Never");
    for mid in 2..5 {
        out.extend(frame(1, mid, Kind::MESSAGE, false, true, &[0; 900])); // 2,700 > 1,000 + 1,000
    }
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!(
        (h.stream_id, h.kind, decode_error(&p).0),
        (1, Kind::ERROR, 8)
    );
    peer.unary(3, "/f.S/Echo", b"still here").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, &p[..]), (3, &b"still here"[..]));
    eventually("handler released", || server.active_rpcs() == 0).await;
}

#[tokio::test]
async fn malformed_window_updates_are_dropped_not_fatal() {
    let (_server, addr, _) = start_server(ServerOptions {
        conn: ConnOptions::default().with_flow_control(),
        ..ServerOptions::default()
    })
    .await;
    let mut peer = RawPeer::connect(&addr).await;
    let mut big = Vec::new();
    put_varint(&mut big, 1 << 20);
    let mut out = frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Bidi");
    out.extend(frame(1, 0, Kind::WINDOW_UPDATE, true, true, &[0])); // delta 0
    out.extend(frame(1, 3, Kind::WINDOW_UPDATE, true, true, &big)); // message id not 0
    out.extend(frame(1, 0, Kind::WINDOW_UPDATE, true, true, &[0x80])); // truncated varint
    out.extend(frame(1, 0, Kind::WINDOW_UPDATE, true, true, &[1, 2])); // trailing bytes
    out.extend(frame(0, 0, Kind::WINDOW_UPDATE, true, true, &big)); // stream 0
    out.extend(frame(99, 0, Kind::WINDOW_UPDATE, true, true, &big)); // unknown stream
    out.extend(frame(1, 2, Kind::MESSAGE, false, true, b"ping"));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.kind, &p[..]), (Kind::MESSAGE, &b"ping"[..]));
}

#[tokio::test]
async fn server_refuses_streams_over_its_limit_with_unavailable() {
    let opts = ConnOptions {
        max_concurrent_streams: 2,
        ..ConnOptions::default()
    };
    let (server, addr, seen) = start_server(ServerOptions {
        conn: opts,
        ..ServerOptions::default()
    })
    .await;
    let mut peer = RawPeer::connect(&addr).await;
    peer.unary(1, "/t.S/Sleep", b"").await;
    peer.unary(3, "/t.S/Sleep", b"").await;
    eventually("two handlers", || seen.started.load(Ordering::SeqCst) == 2).await;
    peer.unary(5, "/t.S/Echo", b"third").await;
    let (h, p) = peer.read_frame().await.unwrap();
    let (code, msg) = decode_error(&p);
    assert_eq!((h.stream_id, h.kind, code), (5, Kind::ERROR, 14));
    assert!(msg.contains("limit is 2"), "{msg}");
    // Once one finishes, new streams are welcome again on the same connection.
    peer.send(&frame(1, 4, Kind::CANCEL, true, true, b"")).await;
    eventually("one handler left", || server.active_rpcs() == 1).await;
    peer.unary(7, "/t.S/Echo", b"fourth").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, &p[..]), (7, &b"fourth"[..]));
}

#[tokio::test]
async fn client_queues_calls_over_its_stream_limit_and_deadlines_still_apply() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(
        &addr,
        ConnOptions {
            max_concurrent_streams: 1,
            ..ConnOptions::default()
        },
    )
    .await
    .unwrap();
    let open = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    let e = conn
        .unary(
            "/t.S/Echo",
            b"",
            &CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    let queued = {
        let conn = conn.clone();
        tokio::spawn(async move { conn.unary("/t.S/Echo", b"later", &CallOptions::new()).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!queued.is_finished());
    open.close_send().await.unwrap();
    assert_eq!(open.recv().await.unwrap(), None);
    assert_eq!(&queued.await.unwrap().unwrap()[..], b"later");
}

#[tokio::test]
async fn without_flow_control_the_buffer_budget_stops_the_reader() {
    let (_server, addr, sent) = flood_server(ConnOptions::default()).await;
    let budget = 1 << 20;
    let opts = ConnOptions {
        connection_buffer_budget: budget,
        ..ConnOptions::default()
    };
    let conn = Conn::connect(&addr, opts).await.unwrap();
    let s = conn
        .stream("/f.S/Flood", &CallOptions::new())
        .await
        .unwrap();
    s.send([2u8]).await.unwrap(); // 200 x 64 KiB
    s.close_send().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = conn.buffered_bytes();
    assert!(
        held <= budget + CHUNK,
        "client buffered {held} bytes past its budget"
    );
    assert!(
        sent.load(Ordering::SeqCst) < 200,
        "the server should be held back by TCP"
    );
    let mut got = 0;
    while s.recv().await.unwrap().is_some() {
        got += 1;
    }
    assert_eq!(got, 200);
}

#[tokio::test]
async fn cancel_goes_out_under_heavy_write_load() {
    // A server that reads nothing for a while: the client's writer fills up.
    let (server, addr, seen) = start_server(ServerOptions::default()).await;
    let opts = ConnOptions {
        writer_buffer_cap: 256 << 10,
        ..ConnOptions::default()
    };
    let conn = Conn::connect(&addr, opts).await.unwrap();
    let sleeper = {
        let conn = conn.clone();
        tokio::spawn(async move {
            conn.unary(
                "/t.S/Sleep",
                b"",
                &CallOptions::new().timeout(Duration::from_millis(300)),
            )
            .await
        })
    };
    eventually("sleeping", || seen.started.load(Ordering::SeqCst) == 1).await;
    let bulk = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    let writer = tokio::spawn(async move {
        // Nobody reads the echoes, so TCP fills both ways; sends then wait.
        let chunk = vec![0u8; CHUNK];
        for _ in 0..2000 {
            if bulk.send(&chunk).await.is_err() {
                break;
            }
        }
        bulk
    });
    let e = sleeper.await.unwrap().unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    eventually("the cancel reached the server past the queued data", || {
        seen.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    writer.abort();
    let _ = writer.await;
    eventually("all released", || server.active_rpcs() == 0).await;
}
