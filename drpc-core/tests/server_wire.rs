//! The server driven byte by byte by a raw peer: interleaving, partial packets,
//! control kinds, protocol errors, cancels and disconnects (DESIGN.md sections
//! 1 and 3). A malformed connection is closed alone; the server keeps serving
//! and leaves no handler or stream behind.

mod common;

use common::*;
use drpc_core::wire::{decode_error, put_varint, Kind};
use drpc_core::{CallOptions, Conn, ConnOptions, ServerOptions};
use std::sync::atomic::Ordering;

/// The server answers a well-formed unary call on a fresh connection.
async fn still_serving(addr: &str) {
    let conn = Conn::connect(addr, ConnOptions::default()).await.unwrap();
    let resp = conn
        .unary("/t.S/Echo", b"alive", &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(&resp[..], b"alive");
    conn.close().await;
}

#[tokio::test]
async fn unary_answer_is_message_then_close_send() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    peer.unary(1, "/t.S/Echo", b"hi").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!(
        (h.stream_id, h.message_id, h.kind, h.done, &p[..]),
        (1, 1, Kind::MESSAGE, true, &b"hi"[..])
    );
    let (h, _) = peer.read_frame().await.unwrap();
    assert_eq!(
        (h.stream_id, h.message_id, h.kind),
        (1, 2, Kind::CLOSE_SEND)
    );
    eventually("handler finished", || server.active_rpcs() == 0).await;
}

#[tokio::test]
async fn interleaved_split_frames_of_two_streams() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let mut out = Vec::new();
    out.extend(frame(1, 1, Kind::INVOKE, false, false, b"/t.S/"));
    out.extend(frame(3, 1, Kind::INVOKE, false, true, b"/t.S/Echo"));
    out.extend(frame(1, 1, Kind::INVOKE, false, true, b"Echo"));
    out.extend(frame(3, 2, Kind::MESSAGE, false, false, b"three-"));
    out.extend(frame(1, 2, Kind::MESSAGE, false, false, b"one-"));
    out.extend(frame(3, 2, Kind::MESSAGE, false, true, b"done"));
    out.extend(frame(1, 2, Kind::MESSAGE, false, true, b"done"));
    out.extend(frame(1, 3, Kind::CLOSE_SEND, false, true, b""));
    out.extend(frame(3, 3, Kind::CLOSE_SEND, false, true, b""));
    peer.send(&out).await;
    let mut got = std::collections::BTreeMap::new();
    for _ in 0..4 {
        let (h, p) = peer.read_frame().await.unwrap();
        if h.kind == Kind::MESSAGE {
            got.insert(h.stream_id, p);
        }
    }
    assert_eq!(got[&1], b"one-done");
    assert_eq!(got[&3], b"three-done");
}

#[tokio::test]
async fn higher_message_id_discards_partial_packet() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let mut out = frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Echo");
    out.extend(frame(1, 2, Kind::MESSAGE, false, false, b"stale"));
    out.extend(frame(1, 3, Kind::MESSAGE, false, true, b"fresh"));
    out.extend(frame(1, 4, Kind::CLOSE_SEND, false, true, b""));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.kind, &p[..]), (Kind::MESSAGE, &b"fresh"[..]));
}

#[tokio::test]
async fn invoke_metadata_reaches_the_handler() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let md = drpc_core::Metadata::from([("k".to_string(), "v".to_string())]);
    let mut out = frame(
        1,
        1,
        Kind::INVOKE_METADATA,
        false,
        true,
        &drpc_core::metadata::encode(&md),
    );
    out.extend(frame(1, 2, Kind::INVOKE, false, true, b"/t.S/Meta"));
    out.extend(frame(1, 3, Kind::MESSAGE, false, true, b""));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!(
        (h.kind, String::from_utf8(p).unwrap()),
        (Kind::MESSAGE, r#"{"k": "v"}"#.to_string())
    );
}

#[tokio::test]
async fn unknown_control_kinds_and_window_updates_are_ignored() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let mut delta = Vec::new();
    put_varint(&mut delta, 131072);
    let mut out = frame(1, 1, Kind(42), true, true, b"future extension");
    out.extend(frame(9, 0, Kind::WINDOW_UPDATE, true, true, &delta));
    out.extend(frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Echo"));
    out.extend(frame(1, 2, Kind(50), true, true, b""));
    out.extend(frame(1, 3, Kind::MESSAGE, false, true, b"ok"));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.kind, &p[..]), (Kind::MESSAGE, &b"ok"[..]));
}

#[tokio::test]
async fn unknown_rpc_is_unimplemented_naming_it() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    peer.unary(1, "/no.Such/Method", b"").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!(h.kind, Kind::ERROR);
    let (code, msg) = decode_error(&p);
    assert_eq!(code, 12);
    assert!(msg.contains("/no.Such/Method"), "{msg}");
}

#[tokio::test]
async fn frames_for_finished_streams_are_dropped() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    peer.unary(1, "/t.S/Echo", b"a").await;
    peer.read_frame().await.unwrap();
    peer.read_frame().await.unwrap();
    let mut out = frame(1, 4, Kind::MESSAGE, false, true, b"late");
    out.extend(frame(1, 5, Kind::CLOSE, false, true, b""));
    out.extend(frame(7, 9, Kind::CLOSE_SEND, false, true, b""));
    peer.send(&out).await;
    peer.unary(2, "/t.S/Echo", b"b").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, &p[..]), (2, &b"b"[..]));
    eventually("no handler left", || server.active_rpcs() == 0).await;
}

/// One read carrying runs of frames for several streams (delivered to each
/// stream as a batch): every message counted once, nothing after a stream's
/// Cancel reaches it, an interleaved window update changes nothing.
#[tokio::test]
async fn runs_of_frames_in_one_read_reach_their_streams_once() {
    use prost::Message;
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let mut delta = Vec::new();
    put_varint(&mut delta, 4096);
    let mut out = frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Count");
    for mid in 2..5 {
        out.extend(frame(1, mid, Kind::MESSAGE, false, true, b"x"));
    }
    out.extend(frame(1, 5, Kind::CANCEL, true, true, b""));
    out.extend(frame(1, 6, Kind::MESSAGE, false, true, b"after cancel"));
    out.extend(frame(3, 1, Kind::INVOKE, false, true, b"/t.S/Count"));
    for mid in 2..6 {
        out.extend(frame(3, mid, Kind::MESSAGE, false, true, b"y"));
        if mid == 3 {
            out.extend(frame(3, 0, Kind::WINDOW_UPDATE, true, true, &delta));
        }
    }
    out.extend(frame(3, 6, Kind::MESSAGE, false, false, b"split "));
    out.extend(frame(3, 6, Kind::MESSAGE, false, true, b"message"));
    out.extend(frame(3, 7, Kind::CLOSE_SEND, false, true, b""));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, h.kind), (3, Kind::MESSAGE));
    assert_eq!(Counted::decode(&p[..]).unwrap().n, 5);
    eventually("no handler left", || server.active_rpcs() == 0).await;
    still_serving(&addr).await;
}

#[tokio::test]
async fn remote_cancel_reaches_the_handler_and_spares_the_connection() {
    let (server, addr, seen) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    peer.unary(1, "/t.S/Sleep", b"").await;
    eventually("handler started", || {
        seen.started.load(Ordering::SeqCst) == 1
    })
    .await;
    peer.send(&frame(1, 4, Kind::CANCEL, true, true, b"")).await;
    eventually("handler saw the cancel", || {
        seen.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("handler finished", || server.active_rpcs() == 0).await;
    peer.unary(2, "/t.S/Echo", b"after").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, &p[..]), (2, &b"after"[..]));
}

#[tokio::test]
async fn cancel_before_invoke_completes_drops_the_pending_invoke() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let md = drpc_core::metadata::encode(&drpc_core::Metadata::from([("a".into(), "b".into())]));
    let mut out = frame(1, 1, Kind::INVOKE_METADATA, false, true, &md);
    out.extend(frame(1, 2, Kind::CANCEL, true, true, b""));
    peer.send(&out).await;
    peer.unary(3, "/t.S/Echo", b"x").await;
    let (h, _) = peer.read_frame().await.unwrap();
    assert_eq!(h.stream_id, 3);
    assert_eq!(server.active_rpcs(), 0);
}

/// Sends `bad` on a connection that has a handler in flight, and checks that
/// only that connection is closed and nothing is left behind.
async fn closes_only_that_connection(bad: Vec<u8>) {
    let (server, addr, seen) = start_server(ServerOptions::default()).await;
    let healthy = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let mut peer = RawPeer::connect(&addr).await;
    peer.unary(1, "/t.S/Sleep", b"").await;
    eventually("handler started", || {
        seen.started.load(Ordering::SeqCst) == 1
    })
    .await;
    peer.send(&bad).await;
    assert!(
        peer.closed_by_server().await,
        "the server kept the bad connection open"
    );
    eventually("in-flight handler cancelled", || {
        seen.cancelled.load(Ordering::SeqCst) == 1
    })
    .await;
    eventually("no handler left", || server.active_rpcs() == 0).await;
    let resp = healthy
        .unary("/t.S/Echo", b"fine", &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(&resp[..], b"fine");
    still_serving(&addr).await;
    healthy.close().await;
    eventually("connections released", || server.connections() == 0).await;
}

#[tokio::test]
async fn overlong_varint_closes_the_connection() {
    let mut bad = vec![0x05];
    bad.extend_from_slice(&[0xff; 11]);
    closes_only_that_connection(bad).await;
}

#[tokio::test]
async fn frame_longer_than_the_maximum_closes_the_connection() {
    let mut bad = vec![0x05, 0x05, 0x01];
    put_varint(&mut bad, (drpc_core::DEFAULT_MAX_MESSAGE_SIZE + 1) as u64);
    closes_only_that_connection(bad).await;
}

#[tokio::test]
async fn second_invoke_on_a_live_stream_closes_the_connection() {
    closes_only_that_connection(frame(1, 9, Kind::INVOKE, false, true, b"/t.S/Echo")).await;
}

#[tokio::test]
async fn unknown_kind_without_control_bit_closes_the_connection() {
    closes_only_that_connection(frame(5, 1, Kind(33), false, true, b"")).await;
}

#[tokio::test]
async fn message_id_going_back_closes_the_connection() {
    closes_only_that_connection(frame(1, 1, Kind::MESSAGE, false, true, b"")).await;
}

#[tokio::test]
async fn malformed_metadata_closes_the_connection() {
    closes_only_that_connection(frame(
        5,
        1,
        Kind::INVOKE_METADATA,
        false,
        true,
        &[0x0a, 0x09, 0x0a],
    ))
    .await;
}

#[tokio::test]
async fn abrupt_disconnect_mid_frame_cancels_handlers() {
    // Half a frame, then the peer vanishes.
    let (server, addr, seen) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    peer.unary(1, "/t.S/Sleep", b"").await;
    peer.unary(3, "/t.S/Sleep", b"").await;
    eventually("handlers started", || {
        seen.started.load(Ordering::SeqCst) == 2
    })
    .await;
    peer.send(&[0x05, 0x05, 0x01, 0x10, b'p', b'a']).await;
    drop(peer);
    eventually("handlers cancelled", || {
        seen.cancelled.load(Ordering::SeqCst) == 2
    })
    .await;
    eventually("no handler left", || server.active_rpcs() == 0).await;
    eventually("connection released", || server.connections() == 0).await;
    still_serving(&addr).await;
}

#[tokio::test]
async fn oversized_message_fails_the_stream_not_the_connection() {
    let opts = ServerOptions {
        conn: ConnOptions {
            max_message_size: 1024,
            ..ConnOptions::default()
        },
        ..ServerOptions::default()
    };
    let (_server, addr, _) = start_server(opts).await;
    let mut peer = RawPeer::connect(&addr).await;
    let mut out = frame(1, 1, Kind::INVOKE, false, true, b"/t.S/Echo");
    out.extend(frame(1, 2, Kind::MESSAGE, false, false, &[0; 800]));
    out.extend(frame(1, 2, Kind::MESSAGE, false, true, &[0; 800]));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!(
        (h.stream_id, h.kind, decode_error(&p).0),
        (1, Kind::ERROR, 8)
    );
    peer.unary(3, "/t.S/Echo", b"small").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, &p[..]), (3, &b"small"[..]));
}
