//! The large-message path: owned payloads queued without a copy (vectored
//! writes) put exactly the bytes of the copying path on the wire, and large
//! messages assembled into recycled buffers stay intact while the
//! application holds them.

mod common;

use bytes::Bytes;
use common::*;
use drpc_core::{CallOptions, Conn, ConnOptions, ServerOptions};
use std::time::Duration;
use tokio::io::AsyncReadExt;

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect::<Vec<u8>>().into()
}

/// Everything a client writes for one stream carrying `messages`, sent with
/// `send_bytes` (owned) or `send` (borrowed).
async fn wire_bytes(messages: &[Bytes], owned: bool) -> Vec<u8> {
    // A small pipe: writes are partial, so queued chunks are written in
    // pieces.
    let (ours, mut theirs) = tokio::io::duplex(4000);
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        // Stop once the pipe stays quiet (everything was written).
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(300), theirs.read(&mut buf)).await {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    });
    let conn = Conn::new(ours, ConnOptions::default());
    let stream = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    for m in messages {
        if owned {
            stream.send_bytes(m.clone()).await.unwrap();
        } else {
            stream.send(m).await.unwrap();
        }
    }
    stream.close_send().await.unwrap();
    let out = reader.await.unwrap();
    drop((stream, conn));
    out
}

#[tokio::test]
async fn owned_payloads_put_the_same_bytes_on_the_wire_as_copied_ones() {
    // Large (split into 64 KiB frames, queued by reference), small (copied)
    // and exactly-at-the-threshold payloads, interleaved.
    let messages = vec![
        pattern(150_000, 1),
        pattern(5, 2),
        pattern(16 * 1024, 3),
        pattern(64 * 1024, 4),
        pattern(64 * 1024 + 1, 5),
        Bytes::new(),
        pattern(1 << 20, 6),
        pattern(100, 7),
    ];
    let owned = wire_bytes(&messages, true).await;
    let copied = wire_bytes(&messages, false).await;
    let total: usize = messages.iter().map(|m| m.len()).sum();
    assert!(copied.len() > total, "the copying path wrote {} bytes", copied.len());
    assert_eq!(owned.len(), copied.len());
    assert!(owned == copied, "owned and copied payloads differ on the wire");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_stay_intact_while_held_and_buffers_are_reused() {
    let (_server, addr, _) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    // Several streams echo large messages at once while small calls run;
    // every received message is kept until the end, so a recycled buffer
    // reused too early would corrupt an earlier one.
    let mut tasks = Vec::new();
    for s in 0..4u8 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let stream = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
            let mut kept = Vec::new();
            for i in 0..12u8 {
                let len = [300_000, 1 << 20, 200_000][usize::from(i % 3)] + usize::from(s);
                let msg = pattern(len, s.wrapping_mul(16).wrapping_add(i));
                if i % 2 == 0 {
                    stream.send_bytes(msg.clone()).await.unwrap();
                } else {
                    stream.send(&msg).await.unwrap();
                }
                let got = stream.recv().await.unwrap().expect("echo");
                kept.push((msg, got));
            }
            stream.close_send().await.unwrap();
            assert_eq!(stream.recv().await.unwrap(), None);
            for (sent, got) in &kept {
                assert!(sent == got, "a held message changed (len {})", sent.len());
            }
        }));
    }
    for i in 0..200u32 {
        let r = conn.unary("/t.S/Echo", &i.to_be_bytes(), &CallOptions::new()).await.unwrap();
        assert_eq!(&r[..], &i.to_be_bytes());
    }
    for t in tasks {
        t.await.unwrap();
    }
}
