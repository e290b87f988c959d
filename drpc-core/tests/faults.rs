//! Fault injection: a transport wrapper that, on a seeded schedule, splits
//! writes into single bytes, delays, stalls, fails or closes mid-frame, on
//! either side. Every call must end with a sensible code before its deadline,
//! never with another call's data, and once a connection dies every stream,
//! handler and connection must be gone.

mod common;

use bytes::Bytes;
use common::*;
use drpc_core::{CallOptions, Code, Conn, ConnOptions, Router, Server, Status, Stream};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Wraps a transport and misbehaves on a seeded schedule.
struct Faulty<T> {
    inner: T,
    rng: Arc<Mutex<Rng>>,
    /// Bytes after which the transport breaks (reads and writes fail).
    break_after: Option<u64>,
    moved: u64,
    /// Reads and writes stall separately: a timer remembers one waker only.
    read_stall: Option<Pin<Box<tokio::time::Sleep>>>,
    write_stall: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Faulty<T> {
    fn new(inner: T, seed: u64, break_after: Option<u64>) -> Faulty<T> {
        Faulty {
            inner,
            rng: Arc::new(Mutex::new(Rng::new(seed))),
            break_after,
            moved: 0,
            read_stall: None,
            write_stall: None,
        }
    }

    fn broken(&self) -> bool {
        self.break_after.is_some_and(|b| self.moved >= b)
    }

    /// Sometimes stalls for a few milliseconds before an operation.
    fn maybe_stall(&mut self, cx: &mut Context<'_>, write: bool) -> Poll<()> {
        let start = {
            let mut rng = self.rng.lock().unwrap();
            rng.chance(5).then(|| rng.below(5))
        };
        let stall = if write {
            &mut self.write_stall
        } else {
            &mut self.read_stall
        };
        if let (None, Some(ms)) = (&stall, start) {
            *stall = Some(Box::pin(tokio::time::sleep(Duration::from_millis(ms))));
        }
        if let Some(s) = stall {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            *stall = None;
        }
        Poll::Ready(())
    }

    /// How many bytes of `len` this operation may move (often one).
    fn allowance(&mut self, len: usize) -> usize {
        let mut rng = self.rng.lock().unwrap();
        let mut n = if rng.chance(30) {
            1
        } else {
            1 + rng.below(len as u64) as usize
        };
        if let Some(b) = self.break_after {
            n = n.min((b - self.moved.min(b)) as usize).max(1);
        }
        n.min(len)
    }
}

use std::future::Future;

impl<T: AsyncRead + Unpin> AsyncRead for Faulty<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.broken() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected fault",
            )));
        }
        if self.maybe_stall(cx, false).is_pending() {
            return Poll::Pending;
        }
        let n = self.allowance(buf.remaining());
        let mut small = vec![0u8; n];
        let mut small_buf = ReadBuf::new(&mut small);
        match Pin::new(&mut self.inner).poll_read(cx, &mut small_buf) {
            Poll::Ready(Ok(())) => {
                let got = small_buf.filled().len();
                buf.put_slice(&small[..got]);
                self.moved += got as u64;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Faulty<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.broken() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "injected fault",
            )));
        }
        if self.maybe_stall(cx, true).is_pending() {
            return Poll::Pending;
        }
        let n = self.allowance(data.len());
        match Pin::new(&mut self.inner).poll_write(cx, &data[..n]) {
            Poll::Ready(Ok(w)) => {
                self.moved += w as u64;
                Poll::Ready(Ok(w))
            }
            other => other,
        }
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn echo_router() -> Router {
    Router::new()
        .unary_raw("/f.S/Echo", |req| async move {
            let delay = req.data.first().copied().unwrap_or(0) as u64 % 4;
            tokio::time::sleep(Duration::from_millis(delay)).await;
            Ok::<Bytes, Status>(req.data)
        })
        .bidi("/f.S/Bidi", |stream: Stream| async move {
            while let Some(m) = stream.recv().await? {
                stream.send(m).await?;
            }
            Ok(())
        })
}

/// Runs a mixed load over a faulty connection; checks every outcome.
async fn run_seed(seed: u64, break_after: Option<u64>) {
    let server = Server::new(echo_router());
    let (a, b) = tokio::io::duplex(64 << 10);
    let serving = tokio::spawn({
        let server = server.clone();
        async move {
            server
                .serve_transport(Faulty::new(b, seed ^ 0xABCD, break_after))
                .await
        }
    });
    let conn = Conn::new(Faulty::new(a, seed, break_after), ConnOptions::default());
    let mut rng = Rng::new(seed);
    let deadline = Duration::from_secs(3);
    let mut calls = Vec::new();
    for i in 0..40u32 {
        let conn = conn.clone();
        let size = rng.below(200_000) as usize;
        let streaming = rng.chance(30);
        let cancel_early = rng.chance(10);
        calls.push(tokio::spawn(async move {
            let payload: Vec<u8> = (0..size).map(|j| (j as u32 ^ i) as u8).collect();
            let opts = CallOptions::new().timeout(deadline);
            let started = tokio::time::Instant::now();
            let outcome = if streaming {
                async {
                    let s = conn.stream("/f.S/Bidi", &opts).await?;
                    if cancel_early {
                        s.cancel();
                    }
                    for round in 0..3u8 {
                        let mut msg = payload.clone();
                        msg.push(round);
                        s.send(&msg).await?;
                        match s.recv().await? {
                            Some(echo) if echo == msg => {}
                            other => panic!(
                                "seed {seed}: call {i} got foreign data ({:?} bytes)",
                                other.map(|o| o.len())
                            ),
                        }
                    }
                    s.close_send().await?;
                    while s.recv().await?.is_some() {}
                    Ok::<(), Status>(())
                }
                .await
            } else {
                conn.unary("/f.S/Echo", &payload, &opts).await.map(|echo| {
                    assert!(
                        echo == payload,
                        "seed {seed}: call {i} got another call's data"
                    );
                })
            };
            assert!(
                started.elapsed() < deadline + Duration::from_secs(1),
                "seed {seed}: call {i} overran its deadline"
            );
            if let Err(e) = &outcome {
                let ok = matches!(
                    e.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Canceled
                );
                assert!(ok, "seed {seed}: call {i} failed with unexpected {e}");
                if break_after.is_none() && !cancel_early {
                    assert_ne!(
                        e.code(),
                        Code::Unavailable,
                        "seed {seed}: healthy transport lost: {e}"
                    );
                }
            }
            outcome.is_ok()
        }));
    }
    let mut succeeded = 0;
    for c in calls {
        succeeded += c.await.unwrap() as usize;
    }
    if break_after.is_none() {
        assert!(
            succeeded >= 30,
            "seed {seed}: only {succeeded} calls succeeded on a slow but healthy transport"
        );
    }
    conn.close().await;
    tokio::time::timeout(Duration::from_secs(3), serving)
        .await
        .expect("server connection ended")
        .unwrap();
    assert_eq!(conn.active_streams(), 0, "seed {seed}: client streams left");
    eventually("server handlers gone", || server.active_rpcs() == 0).await;
    assert_eq!(
        server.connections(),
        0,
        "seed {seed}: server connection left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_split_stalled_transports_deliver_every_call_intact() {
    for seed in seeds(4) {
        run_seed(seed, None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transports_breaking_mid_frame_fail_calls_cleanly_and_leak_nothing() {
    for seed in seeds(6) {
        let mut rng = Rng::new(seed * 7919);
        let break_after = 1 + rng.below(400_000);
        run_seed(seed, Some(break_after)).await;
    }
}
