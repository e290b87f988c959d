//! A hostile client against each server limit: metadata size, incomplete
//! invokes, buffered bytes. Each time the server stays within its bound, keeps
//! serving other connections, and leaves nothing behind.

mod common;

use common::*;
use drpc_core::wire::Kind;
use drpc_core::{metadata, CallOptions, Code, Conn, ConnOptions, Metadata, Router, Server, ServerOptions, Stream};
use std::time::Duration;

async fn serves(addr: &str) {
    let conn = Conn::connect(addr, ConnOptions::default()).await.unwrap();
    assert_eq!(&conn.unary("/t.S/Echo", b"ok", &CallOptions::new()).await.unwrap()[..], b"ok");
}

#[tokio::test]
async fn oversized_metadata_closes_only_that_connection() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let md = Metadata::from([("k".to_string(), "v".repeat(100 << 10))]);
    let encoded = metadata::encode(&md);
    let mut out = Vec::new();
    for (i, chunk) in encoded.chunks(16 << 10).enumerate() {
        let last = (i + 1) * (16 << 10) >= encoded.len();
        out.extend(frame(1, 1, Kind::INVOKE_METADATA, false, last, chunk));
    }
    peer.send(&out).await;
    assert!(peer.closed_by_server().await);
    serves(&addr).await;
    eventually("released", || server.connections() == 0).await;

    // Our own client refuses to send it in the first place.
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let opts = CallOptions { metadata: md, ..CallOptions::new() };
    assert_eq!(conn.unary("/t.S/Echo", b"", &opts).await.unwrap_err().code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn too_many_incomplete_invokes_close_the_connection() {
    let opts = ConnOptions { max_pending_invokes: 100, ..ConnOptions::default() };
    let (_server, addr, _) = start_server(ServerOptions { conn: opts, ..ServerOptions::default() }).await;
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
        .unary_raw("/t.S/Echo", |req| async move { Ok::<bytes::Bytes, drpc_core::Status>(req.data) });
    let opts = ServerOptions { conn: ConnOptions { connection_buffer_budget: budget, ..ConnOptions::default() }, ..ServerOptions::default() };
    let server = Server::with_options(router, opts);
    let addr = server.listen("127.0.0.1:0").await.unwrap();

    let mut peer = RawPeer::connect(&addr).await;
    peer.send(&frame(1, 1, Kind::INVOKE, false, true, b"/h.S/Never")).await;
    let flood = tokio::spawn(async move {
        let chunk = vec![0u8; 60 << 10];
        for mid in 2..2000u64 {
            let f = frame(1, mid, Kind::MESSAGE, false, true, &chunk);
            if tokio::time::timeout(Duration::from_secs(2), peer.send(&f)).await.is_err() {
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
    eventually("released", || server.active_rpcs() == 0 && server.connections() == 0).await;
}
