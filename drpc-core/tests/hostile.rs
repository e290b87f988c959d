//! A hostile client against each server limit: metadata size, incomplete
//! invokes, buffered bytes. Each time the server stays within its bound, keeps
//! serving other connections, and leaves nothing behind.

mod common;

use common::*;
use drpc_core::wire::Kind;
use drpc_core::{
    metadata, CallOptions, Code, Conn, ConnOptions, Metadata, Router, Server, ServerOptions, Stream,
};
use std::time::Duration;

async fn serves(addr: &str) {
    let conn = Conn::connect(addr, ConnOptions::default()).await.unwrap();
    assert_eq!(
        &conn
            .unary("/t.S/Echo", b"ok", &CallOptions::new())
            .await
            .unwrap()[..],
        b"ok"
    );
}

/// Invoke metadata of `len` bytes encoded: one entry whose value fills it.
fn metadata_of_len(len: usize) -> Metadata {
    let mut value_len = len.saturating_sub(8);
    loop {
        let md = Metadata::from([("k".to_string(), "v".repeat(value_len))]);
        match metadata::encoded_len(&md).cmp(&len) {
            std::cmp::Ordering::Equal => return md,
            std::cmp::Ordering::Less => value_len += 1,
            std::cmp::Ordering::Greater => value_len -= 1,
        }
    }
}

/// The next frame on `sid` other than CloseSend, skipping other streams' frames.
async fn next_frame_on(peer: &mut RawPeer, sid: u64) -> (drpc_core::wire::FrameHeader, Vec<u8>) {
    loop {
        let (h, payload) = peer.read_frame().await.expect("a frame");
        if h.stream_id == sid && h.kind != Kind::CLOSE_SEND {
            return (h, payload);
        }
    }
}

/// Frames of one packet split into `chunk`-byte payloads.
fn split_packet(sid: u64, mid: u64, kind: Kind, data: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let parts: Vec<&[u8]> = if data.is_empty() {
        vec![&[][..]]
    } else {
        data.chunks(chunk).collect()
    };
    for (i, part) in parts.iter().enumerate() {
        out.extend(frame(sid, mid, kind, false, i + 1 == parts.len(), part));
    }
    out
}

#[tokio::test]
async fn metadata_over_the_limit_fails_only_that_stream() {
    let limit = 70 << 10;
    let conn_opts = ConnOptions {
        max_metadata_size: limit,
        ..ConnOptions::default()
    };
    let (server, addr, _) = start_server(ServerOptions {
        conn: conn_opts.clone(),
        ..ServerOptions::default()
    })
    .await;

    // Our client checks the exact encoded size: at the limit it goes, one over it does not.
    let conn = Conn::connect(&addr, conn_opts).await.unwrap();
    let at_limit = CallOptions {
        metadata: metadata_of_len(limit),
        ..CallOptions::new()
    };
    assert_eq!(
        &conn.unary("/t.S/Echo", b"x", &at_limit).await.unwrap()[..],
        b"x"
    );
    let over = CallOptions {
        metadata: metadata_of_len(limit + 1),
        ..CallOptions::new()
    };
    let err = conn.unary("/t.S/Echo", b"x", &over).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert!(err.message().contains(&limit.to_string()), "{err}");

    // A raw peer sending one byte over the limit (a 64 KiB value and small
    // entries, as storj.io/drpc allows) gets an error on that stream only.
    let mut peer = RawPeer::connect(&addr).await;
    let md = metadata::encode(&metadata_of_len(limit + 1));
    let mut out = split_packet(1, 1, Kind::INVOKE_METADATA, &md, 16 << 10);
    out.extend(frame(1, 2, Kind::INVOKE, false, true, b"/t.S/Echo"));
    out.extend(frame(1, 3, Kind::MESSAGE, false, true, b"lost"));
    out.extend(frame(1, 4, Kind::CLOSE_SEND, false, true, b""));
    peer.send(&out).await;
    let (h, payload) = peer.read_frame().await.expect("an error frame");
    assert_eq!((h.stream_id, h.kind), (1, Kind::ERROR));
    let (code, message) = drpc_core::wire::decode_error(&payload);
    assert_eq!(code, Code::ResourceExhausted as u64, "{message}");
    assert!(message.contains(&limit.to_string()), "{message}");
    // The same connection serves the next stream, with metadata at the limit.
    let md = metadata::encode(&metadata_of_len(limit));
    let mut out = split_packet(3, 1, Kind::INVOKE_METADATA, &md, 16 << 10);
    out.extend(frame(3, 2, Kind::INVOKE, false, true, b"/t.S/Echo"));
    out.extend(frame(3, 3, Kind::MESSAGE, false, true, b"fine"));
    out.extend(frame(3, 4, Kind::CLOSE_SEND, false, true, b""));
    peer.send(&out).await;
    let (h, payload) = peer.read_frame().await.expect("a response");
    assert_eq!(
        (h.stream_id, h.kind, &payload[..]),
        (3, Kind::MESSAGE, &b"fine"[..])
    );

    // An rpc name over the limit: the same.
    let name = format!("/t.S/{}", "x".repeat(limit));
    peer.send(&split_packet(5, 1, Kind::INVOKE, name.as_bytes(), 16 << 10))
        .await;
    let (h, payload) = next_frame_on(&mut peer, 5).await;
    assert_eq!((h.stream_id, h.kind), (5, Kind::ERROR));
    assert_eq!(
        drpc_core::wire::decode_error(&payload).0,
        Code::ResourceExhausted as u64
    );
    peer.unary(7, "/t.S/Echo", b"still").await;
    let (h, payload) = next_frame_on(&mut peer, 7).await;
    assert_eq!((h.stream_id, &payload[..]), (7, &b"still"[..]));
    drop(peer);
    eventually("released", || server.connections() == 1).await;
}

#[tokio::test]
async fn metadata_of_many_tiny_entries_is_refused_by_its_decoded_cost() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    // 3.8 MiB encoded (under the 4 MiB limit), but 350,000 entries decoded.
    let md: Metadata = (0..350_000u32)
        .map(|i| (format!("{i:x}"), String::new()))
        .collect();
    let encoded = metadata::encode(&md);
    assert!(encoded.len() < drpc_core::DEFAULT_MAX_METADATA_SIZE);
    let mut out = split_packet(1, 1, Kind::INVOKE_METADATA, &encoded, 60 << 10);
    out.extend(frame(1, 2, Kind::INVOKE, false, true, b"/t.S/Echo"));
    peer.send(&out).await;
    let (h, payload) = peer.read_frame().await.expect("an error frame");
    assert_eq!((h.stream_id, h.kind), (1, Kind::ERROR));
    assert_eq!(
        drpc_core::wire::decode_error(&payload).0,
        Code::ResourceExhausted as u64
    );
    peer.unary(3, "/t.S/Echo", b"ok").await;
    assert_eq!(peer.read_frame().await.expect("served").1, b"ok");
}

#[tokio::test]
async fn too_many_incomplete_invokes_close_the_connection() {
    let opts = ConnOptions {
        max_pending_invokes: 100,
        ..ConnOptions::default()
    };
    let (_server, addr, _) = start_server(ServerOptions {
        conn: opts,
        ..ServerOptions::default()
    })
    .await;
    let mut peer = RawPeer::connect(&addr).await;
    let md = metadata::encode(&Metadata::from([("a".to_string(), "b".to_string())]));
    let mut out = Vec::new();
    for sid in 1..=101u64 {
        out.extend(frame(sid, 1, Kind::INVOKE_METADATA, false, true, &md));
    }
    peer.send(&out).await;
    assert!(peer.closed_by_server().await);
    serves(&addr).await;
}

#[tokio::test]
async fn a_client_flooding_an_unread_stream_is_held_to_the_buffer_budget() {
    let budget = 2 << 20;
    let start_reading = std::sync::Arc::new(tokio::sync::Notify::new());
    let go = start_reading.clone();
    let router = Router::new()
        .bidi("/h.S/Never", move |stream: Stream| {
            let go = go.clone();
            async move {
                go.notified().await;
                while stream.recv().await?.is_some() {}
                Ok(())
            }
        })
        .unary_raw("/t.S/Echo", |req| async move {
            Ok::<bytes::Bytes, drpc_core::Status>(req.data)
        });
    let opts = ServerOptions {
        conn: ConnOptions {
            connection_buffer_budget: budget,
            ..ConnOptions::default()
        },
        ..ServerOptions::default()
    };
    let server = Server::with_options(router, opts);
    let addr = server.listen("127.0.0.1:0").await.unwrap();

    let mut peer = RawPeer::connect(&addr).await;
    peer.send(&frame(1, 1, Kind::INVOKE, false, true, b"/h.S/Never"))
        .await;
    let flood = tokio::spawn(async move {
        let chunk = vec![0u8; 60 << 10];
        for mid in 2..2000u64 {
            let f = frame(1, mid, Kind::MESSAGE, false, true, &chunk);
            if tokio::time::timeout(Duration::from_secs(2), peer.send(&f))
                .await
                .is_err()
            {
                return (mid, peer); // TCP back-pressure: the server stopped reading
            }
        }
        (2000, peer)
    });
    let (sent, peer) = flood.await.unwrap();
    assert!(sent < 2000, "the server kept reading past its budget");
    let held = server.buffered_bytes();
    assert!(held <= budget + (64 << 10), "server holds {held} bytes");
    // Other connections are unaffected.
    serves(&addr).await;
    // Once the handler reads again, the reader resumes and sees the peer leave.
    drop(peer);
    start_reading.notify_one();
    eventually("released", || {
        server.active_rpcs() == 0 && server.connections() == 0
    })
    .await;
}

fn with_timeouts(handshake: u64, idle: u64, read: u64) -> ServerOptions {
    let conn = ConnOptions {
        handshake_timeout: Duration::from_millis(handshake),
        idle_timeout: Duration::from_millis(idle),
        read_timeout: Duration::from_millis(read),
        ..ConnOptions::default()
    };
    ServerOptions {
        conn,
        ..ServerOptions::default()
    }
}

#[tokio::test]
async fn a_connection_that_never_sends_a_frame_is_closed_after_the_handshake_timeout() {
    let (server, addr, _) = start_server(with_timeouts(300, 0, 0)).await;
    let started = tokio::time::Instant::now();
    let mut silent = RawPeer::connect(&addr).await;
    let mut half = RawPeer::connect(&addr).await;
    half.send(&frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Echo")[..3])
        .await; // not a whole frame
    assert!(silent.closed_by_server().await);
    assert!(half.closed_by_server().await);
    assert!(started.elapsed() >= Duration::from_millis(300));
    serves(&addr).await; // a real client sends its first frame in time
    eventually("released", || server.connections() == 0).await;
}

#[tokio::test]
async fn an_idle_connection_is_closed_but_not_one_with_a_stream() {
    let (server, addr, seen) = start_server(with_timeouts(0, 300, 0)).await;
    let mut idle = RawPeer::connect(&addr).await;
    idle.unary(1, "/t.S/Echo", b"x").await;
    assert_eq!(next_frame_on(&mut idle, 1).await.1, b"x");
    let mut busy = RawPeer::connect(&addr).await;
    busy.unary(1, "/t.S/Sleep", b"").await; // a stream open for 30 s
    eventually("sleeping", || {
        seen.started.load(std::sync::atomic::Ordering::SeqCst) == 1
    })
    .await;
    let started = tokio::time::Instant::now();
    assert!(idle.closed_by_server().await, "idle connection left open");
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(
        server.connections(),
        1,
        "the connection with a stream stays"
    );
    // Once its stream ends, its idle clock starts.
    busy.send(&frame(1, 4, Kind::CANCEL, true, true, b"")).await;
    assert!(busy.closed_by_server().await);
    eventually("released", || server.connections() == 0).await;
}

#[tokio::test]
async fn a_frame_that_stalls_midway_closes_the_connection_after_the_read_timeout() {
    let (server, addr, _) = start_server(with_timeouts(0, 0, 300)).await;
    for len in [100usize, 200 << 10] {
        // small frames wait in the read buffer; large ones in a buffer of their own
        let mut peer = RawPeer::connect(&addr).await;
        peer.send(&frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Bidi"))
            .await;
        let whole = frame(1, 2, Kind::MESSAGE, false, true, &vec![7u8; len]);
        peer.send(&whole[..whole.len() / 2]).await;
        assert!(
            peer.closed_by_server().await,
            "a {len}-byte frame stalled forever"
        );
    }
    serves(&addr).await;
    eventually("released", || server.connections() == 0).await;
}

#[tokio::test]
async fn defaults_close_silent_connections() {
    let opts = ConnOptions::default();
    assert_eq!(opts.handshake_timeout, drpc_core::DEFAULT_HANDSHAKE_TIMEOUT);
    assert!(
        !opts.handshake_timeout.is_zero()
            && !opts.idle_timeout.is_zero()
            && !opts.read_timeout.is_zero()
    );
    assert!(ServerOptions::default().memory_budget <= 256 << 20);
}

/// Opens a raw connection in one of the states a shutdown must cope with.
async fn connection_in_state(addr: &str, state: usize) -> RawPeer {
    let mut peer = RawPeer::connect(addr).await;
    match state % 5 {
        0 => {} // silent
        1 => {
            peer.send(&frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Echo")[..4])
                .await
        } // partial frame
        2 => peer.unary(1, "/t.S/Sleep", b"").await, // a handler that ignores nothing but cancel
        3 => {
            peer.send(&frame(
                1,
                1,
                Kind::INVOKE_METADATA,
                false,
                true,
                &metadata::encode(&Metadata::from([("a".into(), "b".into())])),
            ))
            .await
        }
        _ => {
            // A bidi stream whose echoes the peer never reads: the server's writer is full.
            peer.send(&frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Bidi"))
                .await;
            let chunk = vec![1u8; 60 << 10];
            for mid in 2..40 {
                let f = frame(1, mid, Kind::MESSAGE, false, true, &chunk);
                if tokio::time::timeout(Duration::from_millis(100), peer.send(&f))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_within_its_grace_with_100_connections_in_mixed_states() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peers = Vec::new();
    for i in 0..100 {
        peers.push(connection_in_state(&addr, i).await);
    }
    eventually("all connected", || server.connections() == 100).await;
    let grace = Duration::from_millis(500);
    let started = tokio::time::Instant::now();
    server.shutdown(grace).await;
    let took = started.elapsed();
    assert!(
        took < grace + Duration::from_secs(1),
        "shutdown took {took:?}"
    );
    assert_eq!(server.connections(), 0);
    assert_eq!(server.active_rpcs(), 0);
    assert_eq!(
        server.memory_budget().used(),
        0,
        "memory left counted after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_holds_over_many_connections_and_new_clients_are_served() {
    let limit = 16 << 20;
    let never = std::sync::Arc::new(tokio::sync::Notify::new());
    let gate = never.clone();
    let router = Router::new()
        .bidi("/h.S/Never", move |stream: Stream| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                while stream.recv().await?.is_some() {}
                Ok(())
            }
        })
        .unary_raw("/t.S/Echo", |req| async move {
            Ok::<bytes::Bytes, drpc_core::Status>(req.data)
        });
    let server = Server::with_options(
        router,
        ServerOptions {
            memory_budget: limit,
            ..ServerOptions::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let mut floods = Vec::new();
    for _ in 0..16 {
        let mut peer = RawPeer::connect(&addr).await;
        floods.push(tokio::spawn(async move {
            peer.send(&frame(1, 1, Kind::INVOKE, false, true, b"/h.S/Never"))
                .await;
            let chunk = vec![0u8; 60 << 10];
            for mid in 2..1000u64 {
                let f = frame(1, mid, Kind::MESSAGE, false, true, &chunk);
                if tokio::time::timeout(Duration::from_secs(1), peer.send(&f))
                    .await
                    .is_err()
                {
                    break; // the server stopped reading
                }
            }
            peer
        }));
    }
    let mut peers = Vec::new();
    for f in floods {
        peers.push(f.await.unwrap());
    }
    let used = server.memory_budget().used();
    assert!(
        used <= limit,
        "the server holds {used} bytes over a budget of {limit}"
    );
    assert!(
        used > limit / 2,
        "the floods should have filled the budget ({used})"
    );
    tokio::time::timeout(Duration::from_secs(5), serves(&addr))
        .await
        .expect("a new client is served");
    drop(peers);
    never.notify_waiters();
    server.shutdown(Duration::from_secs(1)).await;
    assert_eq!(server.memory_budget().used(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_a_peer_never_reads_stop_the_reader_at_the_writer_cap() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    // Unknown rpcs, each answered by an Error frame as long as its invoke;
    // the peer never reads them. 40 MB of invokes would be 40 MB of errors.
    let name = format!("/t.S/{}", "u".repeat(200));
    let mut sent = 0;
    for round in 0..200u64 {
        let out: Vec<u8> = (0..1000u64)
            .flat_map(|i| {
                frame(
                    1 + 2 * (round * 1000 + i),
                    1,
                    Kind::INVOKE,
                    false,
                    true,
                    name.as_bytes(),
                )
            })
            .collect();
        if tokio::time::timeout(Duration::from_millis(500), peer.send(&out))
            .await
            .is_err()
        {
            break;
        }
        sent += 1;
    }
    assert!(
        sent < 200,
        "the server kept reading while its errors piled up"
    );
    let used = server.memory_budget().used();
    assert!(
        used < 4 << 20,
        "the server holds {used} bytes for one connection's errors"
    );
    serves(&addr).await;
    drop(peer);
    eventually("released", || {
        server.connections() == 0 && server.memory_budget().used() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_returns_to_its_idle_level_after_traffic() {
    // Every path that charges (small and large frames, multi-frame messages,
    // streams, writes) must give it back while the connection lives: a
    // drift would slowly close the server to everyone.
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let round = || {
        let conn = conn.clone();
        async move {
            for size in [0usize, 100, 20 << 10, 70 << 10, 300 << 10, 2 << 20] {
                let msg = vec![7u8; size];
                for _ in 0..20 {
                    assert_eq!(
                        conn.unary("/t.S/Echo", &msg, &CallOptions::new())
                            .await
                            .unwrap()
                            .len(),
                        size
                    );
                }
                let s = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
                for _ in 0..10 {
                    s.send(&msg).await.unwrap();
                    assert_eq!(s.recv().await.unwrap().unwrap().len(), size);
                }
                s.close_send().await.unwrap();
                assert!(s.recv().await.unwrap().is_none());
            }
            // Many small messages in flight: reads of many frames at once.
            let s = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
            let (tx, rx) = (&s, &s);
            let send = async move {
                for i in 0..3000u32 {
                    tx.send(i.to_le_bytes().repeat(25)).await.unwrap();
                }
                tx.close_send().await.unwrap();
            };
            let recv = async move {
                let mut n = 0;
                while rx.recv().await.unwrap().is_some() {
                    n += 1;
                }
                assert_eq!(n, 3000);
            };
            tokio::join!(send, recv);
        }
    };
    // Idle, a connection holds its fixed charge and at most two read
    // buffers (one moving on with a batch until it is freed).
    let idle_level = 8 * 1024 + 2 * 64 * 1024 + 16 * 1024;
    for _ in 0..4 {
        round().await;
        eventually("back to the idle level", || {
            server.active_rpcs() == 0 && server.memory_budget().used() <= idle_level
        })
        .await;
    }
    assert!(conn.buffered_bytes() == 0);
}
