//! Shared fixtures: a test server with a few handlers and a raw wire-level
//! peer for feeding the server arbitrary bytes.
#![allow(dead_code)]

use bytes::Bytes;
use drpc_core::wire::{parse_header, put_frame, FrameHeader, Kind};
use drpc_core::{CallContext, Code, Router, Server, ServerOptions, Status, Stream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
pub struct Seen {
    pub cancelled: AtomicUsize,
    pub started: AtomicUsize,
}

/// Handlers: Echo (unary), Sleep (unary, waits for cancel), Fail (NotFound),
/// Panic, Bidi (echo stream), Count (client streaming).
pub fn router(seen: Arc<Seen>) -> Router {
    let s = seen.clone();
    Router::new()
        .unary_raw(
            "/t.S/Echo",
            |req| async move { Ok::<Bytes, Status>(req.data) },
        )
        .unary_raw("/t.S/Meta", |req| async move {
            let md = req.context.metadata();
            Ok::<Bytes, Status>(Bytes::from(format!("{md:?}")))
        })
        .unary_raw("/t.S/Sleep", move |req| {
            let seen = s.clone();
            async move {
                seen.started.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(30)) => Ok(req.data),
                    _ = req.context.cancelled() => {
                        seen.cancelled.fetch_add(1, Ordering::SeqCst);
                        Err(Status::canceled("observed"))
                    }
                }
            }
        })
        .unary_raw("/t.S/Fail", |_| async {
            Err::<Bytes, _>(Status::new(Code::NotFound, "no such thing"))
        })
        .unary_raw("/t.S/Panic", |_| async { panic!("handler exploded") })
        .bidi("/t.S/Bidi", |stream: Stream| async move {
            while let Some(msg) = stream.recv().await? {
                stream.send(msg).await?;
            }
            Ok(())
        })
        .client_streaming("/t.S/Count", |stream: Stream| async move {
            let mut n = 0u32;
            while stream.recv().await?.is_some() {
                n += 1;
            }
            Ok(Counted { n })
        })
        .unary("/t.S/Slow", |req: Counted, _ctx: CallContext| async move {
            tokio::time::sleep(Duration::from_millis(req.n as u64)).await;
            Ok(req)
        })
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct Counted {
    #[prost(uint32, tag = "1")]
    pub n: u32,
}

pub async fn start_server(opts: ServerOptions) -> (Server, String, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let server = Server::with_options(router(seen.clone()), opts);
    let addr = server.listen("127.0.0.1:0").await.expect("listen");
    (server, addr, seen)
}

/// Polls `cond` until it holds or 3 s pass.
pub async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A wire-level peer: writes frames byte for byte and reads what comes back.
pub struct RawPeer {
    pub tcp: TcpStream,
    buf: Vec<u8>,
}

pub fn frame(sid: u64, mid: u64, kind: Kind, control: bool, done: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_frame(
        &mut out,
        &FrameHeader {
            stream_id: sid,
            message_id: mid,
            kind,
            control,
            done,
        },
        payload,
    );
    out
}

impl RawPeer {
    pub async fn connect(addr: &str) -> RawPeer {
        RawPeer {
            tcp: TcpStream::connect(addr).await.unwrap(),
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        self.tcp.write_all(bytes).await.unwrap();
    }

    /// Reads the next frame, or `None` at EOF / reset / 3 s of silence.
    pub async fn read_frame(&mut self) -> Option<(FrameHeader, Vec<u8>)> {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            if let Some((h, at, len)) = parse_header(&self.buf, usize::MAX).unwrap() {
                if self.buf.len() >= at + len {
                    let payload = self.buf[at..at + len].to_vec();
                    self.buf.drain(..at + len);
                    return Some((h, payload));
                }
            }
            let mut chunk = [0u8; 65536];
            let read = tokio::time::timeout_at(deadline.into(), self.tcp.read(&mut chunk)).await;
            match read {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Whether the server closed the connection (EOF or reset) within 3 s,
    /// skipping any frames still in flight.
    pub async fn closed_by_server(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut chunk = [0u8; 65536];
        loop {
            match tokio::time::timeout_at(deadline.into(), self.tcp.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    /// Invokes a unary rpc on `sid`: Invoke, Message, CloseSend.
    pub async fn unary(&mut self, sid: u64, rpc: &str, msg: &[u8]) {
        let mut out = frame(sid, 1, Kind::INVOKE, false, true, rpc.as_bytes());
        out.extend(frame(sid, 2, Kind::MESSAGE, false, true, msg));
        out.extend(frame(sid, 3, Kind::CLOSE_SEND, false, true, b""));
        self.send(&out).await;
    }
}

/// A small seeded PRNG (xorshift64*), so failing runs reproduce from a seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// The seeds a randomized test runs: `DRPC_SEED=n` reruns one.
pub fn seeds(default_count: u64) -> Vec<u64> {
    match std::env::var("DRPC_SEED") {
        Ok(s) => vec![s.parse().expect("DRPC_SEED is a number")],
        Err(_) => (1..=default_count).collect(),
    }
}
