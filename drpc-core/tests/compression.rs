//! Per-stream compression chosen through `drpc-compression` invoke metadata.

mod common;

use common::*;
use drpc_core::wire::{decode_error, Kind};
use drpc_core::{
    metadata, CallOptions, Code, Compression, Conn, ConnOptions, Metadata, ServerOptions,
};

#[tokio::test]
async fn both_codecs_work_both_ways_for_unary_and_streams() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let body: Vec<u8> = (0..300_000u32).map(|i| (i % 7) as u8).collect();
    for codec in [Compression::Snappy, Compression::MinLzFastest] {
        let opts = CallOptions::new().compression(codec);
        let r = conn.unary("/t.S/Echo", &body, &opts).await.unwrap();
        assert_eq!(r, body, "{codec:?} unary");
        let s = conn.stream("/t.S/Bidi", &opts).await.unwrap();
        for i in 0..3 {
            s.send(&body[i..]).await.unwrap();
            assert_eq!(
                s.recv().await.unwrap().unwrap(),
                body[i..],
                "{codec:?} stream"
            );
        }
        s.close_send().await.unwrap();
        assert_eq!(s.recv().await.unwrap(), None);
    }
    eventually("released", || {
        server.active_rpcs() == 0 && conn.active_streams() == 0
    })
    .await;
}

#[tokio::test]
async fn the_server_answers_compressed_on_the_wire() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let md = Metadata::from([("drpc-compression".to_string(), "snappy".to_string())]);
    let plain = vec![b'z'; 10_000];
    let packed = Compression::Snappy.compress(&plain).unwrap();
    let mut out = frame(
        1,
        1,
        Kind::INVOKE_METADATA,
        false,
        true,
        &metadata::encode(&md),
    );
    out.extend(frame(1, 2, Kind::INVOKE, false, true, b"/t.S/Echo"));
    out.extend(frame(1, 3, Kind::MESSAGE, false, true, &packed));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!(h.kind, Kind::MESSAGE);
    assert!(
        p.len() < 1000,
        "response travels compressed ({} bytes)",
        p.len()
    );
    assert_eq!(
        Compression::Snappy.decompress(&p, usize::MAX).unwrap(),
        plain
    );
}

#[tokio::test]
async fn an_unknown_codec_fails_that_stream_with_unimplemented() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let md = Metadata::from([("drpc-compression".to_string(), "brotli".to_string())]);
    let mut out = frame(
        1,
        1,
        Kind::INVOKE_METADATA,
        false,
        true,
        &metadata::encode(&md),
    );
    out.extend(frame(1, 2, Kind::INVOKE, false, true, b"/t.S/Echo"));
    out.extend(frame(1, 3, Kind::MESSAGE, false, true, b"x"));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    let (code, msg) = decode_error(&p);
    assert_eq!((h.stream_id, h.kind, code), (1, Kind::ERROR, 12));
    assert!(msg.contains("brotli"), "{msg}");
    peer.unary(3, "/t.S/Echo", b"plain").await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, &p[..]), (3, &b"plain"[..]));
    assert_eq!(server.active_rpcs(), 0);

    // The client refuses an unknown codec before using a stream id.
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let e = conn
        .unary(
            "/t.S/Echo",
            b"",
            &CallOptions::new().metadata("drpc-compression", "lz4"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unimplemented);
    assert_eq!(
        conn.stream("/t.S/Bidi", &CallOptions::new())
            .await
            .unwrap()
            .id(),
        1
    );
}

#[tokio::test]
async fn corrupt_compressed_data_fails_the_stream_only() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    let md = Metadata::from([("drpc-compression".to_string(), "minlz-fastest".to_string())]);
    let mut out = frame(
        1,
        1,
        Kind::INVOKE_METADATA,
        false,
        true,
        &metadata::encode(&md),
    );
    out.extend(frame(1, 2, Kind::INVOKE, false, true, b"/t.S/Echo"));
    out.extend(frame(
        1,
        3,
        Kind::MESSAGE,
        false,
        true,
        b"\xff\xff\xff\xff\x0fnot minlz",
    ));
    peer.send(&out).await;
    let (h, p) = peer.read_frame().await.unwrap();
    assert_eq!((h.stream_id, h.kind), (1, Kind::ERROR));
    assert_ne!(decode_error(&p).0, 0);
    peer.unary(3, "/t.S/Echo", b"ok").await;
    let (h, _) = peer.read_frame().await.unwrap();
    assert_eq!(h.stream_id, 3);
}
