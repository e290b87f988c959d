//! The client side of every workload, generic over the RPC stack, so drpc-rs
//! and tonic run exactly the same loops. See bench/README.md for what each
//! workload means. Every result is one JSON line on stdout.

use crate::common::{allocs, emit, pct_us, rss_kb, stream_request, Params};
use bytes::Bytes;
use serde_json::json;
use std::future::Future;
use std::time::{Duration, Instant};

pub trait Client: Clone + Send + Sync + 'static {
    type Bidi: Bidi;
    fn unary(&self, data: Bytes) -> impl Future<Output = Bytes> + Send;
    /// Runs one server-streaming call; returns (messages, payload bytes).
    fn server_stream(&self, req: Vec<u8>) -> impl Future<Output = (u64, u64)> + Send;
    fn bidi(&self) -> impl Future<Output = Self::Bidi> + Send;
    /// The server's allocation counter (its Stats rpc).
    fn server_allocs(&self) -> impl Future<Output = u64> + Send;
    /// Runs one client-streaming call sending `msg` until `until`; returns
    /// (messages, payload bytes) as the server counted them. `None`: this
    /// contender has no upload rpc.
    fn upload(&self, _msg: Bytes, _until: Instant) -> impl Future<Output = Option<(u64, u64)>> + Send {
        async { None }
    }
}

pub trait Bidi: Send + 'static {
    /// One round trip: send `data`, receive the echo.
    fn rt(&mut self, data: &Bytes) -> impl Future<Output = ()> + Send;
    fn finish(self) -> impl Future<Output = ()> + Send;
}

fn payload(size: usize) -> Bytes {
    Bytes::from(vec![0x5a; size])
}

pub async fn run<C: Client>(c: C, p: &Params) {
    match p.workload.as_str() {
        "unary_lat" => unary_lat(c, p).await,
        "unary_tput" => unary_tput(c, p).await,
        "stream" => stream(c, p).await,
        "upload" => upload(c, p).await,
        "bidi" => bidi(c, p).await,
        "mux" => mux(c, p).await,
        "count" => count(c, p).await,
        w => panic!("unknown workload {w}"),
    }
}

async fn unary_lat<C: Client>(c: C, p: &Params) {
    let size = p.size;
    latency_reps(p, (c, payload(size)), |(c, data)| async move {
        let r = c.unary(data.clone()).await;
        assert_eq!(r.len(), size);
        (c, data)
    })
    .await;
}

/// Runs `round_trip` back to back (it takes `state` and gives it back):
/// warm-up, then the repetitions, one JSON line of latency percentiles each.
pub async fn latency_reps<S, F, Fut>(p: &Params, mut state: S, mut round_trip: F) -> S
where
    F: FnMut(S) -> Fut,
    Fut: Future<Output = S>,
{
    let end = Instant::now() + p.warmup;
    while Instant::now() < end {
        state = round_trip(state).await;
    }
    for rep in 0..p.reps {
        let mut lat = Vec::with_capacity(100_000);
        let start = Instant::now();
        let end = start + p.duration;
        loop {
            let t = Instant::now();
            if t >= end {
                break;
            }
            state = round_trip(state).await;
            lat.push(t.elapsed().as_nanos() as u64);
        }
        let secs = start.elapsed().as_secs_f64();
        lat.sort_unstable();
        emit(json!({"rep": rep, "calls": lat.len(), "secs": secs,
                    "p50_us": pct_us(&lat, 50.0), "p99_us": pct_us(&lat, 99.0)}));
    }
    state
}

async fn unary_tput<C: Client>(c: C, p: &Params) {
    let data = payload(p.size);
    for rep in 0..=p.reps {
        // rep 0 is the warm-up
        let d = if rep == 0 { p.warmup } else { p.duration };
        let start = Instant::now();
        let end = start + d;
        let tasks: Vec<_> = (0..p.concurrency)
            .map(|_| {
                let c = c.clone();
                let data = data.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < end {
                        c.unary(data.clone()).await;
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut calls = 0;
        for t in tasks {
            calls += t.await.unwrap();
        }
        let secs = start.elapsed().as_secs_f64();
        if rep > 0 {
            emit(json!({"rep": rep - 1, "calls": calls, "secs": secs, "conns": 1}));
        }
    }
}

async fn stream<C: Client>(c: C, p: &Params) {
    c.server_stream(stream_request(p.size, p.warmup)).await;
    for rep in 0..p.reps {
        let start = Instant::now();
        let (msgs, bytes) = c.server_stream(stream_request(p.size, p.duration)).await;
        let secs = start.elapsed().as_secs_f64();
        emit(json!({"rep": rep, "msgs": msgs, "bytes": bytes, "secs": secs}));
    }
}

async fn upload<C: Client>(c: C, p: &Params) {
    let msg = Bytes::from(crate::common::text_payload(p.size));
    c.upload(msg.clone(), Instant::now() + p.warmup).await.expect("this contender has no upload rpc");
    for rep in 0..p.reps {
        let start = Instant::now();
        let (msgs, bytes) = c.upload(msg.clone(), start + p.duration).await.expect("upload");
        let secs = start.elapsed().as_secs_f64();
        emit(json!({"rep": rep, "msgs": msgs, "bytes": bytes, "secs": secs}));
    }
}

async fn bidi<C: Client>(c: C, p: &Params) {
    let data = payload(p.size);
    let mut s = c.bidi().await;
    let end = Instant::now() + p.warmup;
    while Instant::now() < end {
        s.rt(&data).await;
    }
    for rep in 0..p.reps {
        let mut lat = Vec::with_capacity(100_000);
        let start = Instant::now();
        let end = start + p.duration;
        loop {
            let t = Instant::now();
            if t >= end {
                break;
            }
            s.rt(&data).await;
            lat.push(t.elapsed().as_nanos() as u64);
        }
        let secs = start.elapsed().as_secs_f64();
        lat.sort_unstable();
        emit(json!({"rep": rep, "calls": lat.len(), "secs": secs,
                    "p50_us": pct_us(&lat, 50.0), "p99_us": pct_us(&lat, 99.0)}));
    }
    s.finish().await;
}

async fn mux<C: Client>(c: C, p: &Params) {
    let data = payload(p.size);
    c.unary(Bytes::new()).await; // the connection is up and warm
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (cb, sb) = (rss_kb(0), rss_kb(p.server_pid));
    let t0 = Instant::now();
    let opening: Vec<_> = (0..p.streams)
        .map(|_| {
            let c = c.clone();
            let data = data.clone();
            tokio::spawn(async move {
                let mut s = c.bidi().await;
                s.rt(&data).await;
                s
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(p.streams);
    for o in opening {
        streams.push(o.await.unwrap());
    }
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (ca, sa) = (rss_kb(0), rss_kb(p.server_pid));
    emit(json!({"event": "mem", "streams": p.streams, "open_secs": open_secs, "conns": 1,
                "client_rss_kb_before": cb, "client_rss_kb_after": ca,
                "server_rss_kb_before": sb, "server_rss_kb_after": sa}));
    for rep in 0..=p.reps {
        let d = if rep == 0 { p.warmup } else { p.duration };
        let start = Instant::now();
        let end = start + d;
        let tasks: Vec<_> = streams
            .drain(..)
            .map(|mut s| {
                let data = data.clone();
                tokio::spawn(async move {
                    let mut n = 0u64;
                    while Instant::now() < end {
                        s.rt(&data).await;
                        n += 1;
                    }
                    (s, n)
                })
            })
            .collect();
        let mut calls = 0;
        for t in tasks {
            let (s, n) = t.await.unwrap();
            calls += n;
            streams.push(s);
        }
        let secs = start.elapsed().as_secs_f64();
        if rep > 0 {
            emit(json!({"rep": rep - 1, "calls": calls, "secs": secs}));
        }
    }
    let closing: Vec<_> = streams.into_iter().map(|s| tokio::spawn(s.finish())).collect();
    for c in closing {
        c.await.unwrap();
    }
}

/// `calls` sequential unary calls of `size` bytes, after 200 warm-up calls;
/// reports the allocations on both sides per call.
async fn count<C: Client>(c: C, p: &Params) {
    let data = payload(p.size);
    for _ in 0..200 {
        c.unary(data.clone()).await;
    }
    let s0 = c.server_allocs().await;
    let s1 = c.server_allocs().await; // the cost of one Stats call, subtracted below
    let a0 = allocs();
    let start = Instant::now();
    for _ in 0..p.calls {
        c.unary(data.clone()).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let a1 = allocs();
    let s2 = c.server_allocs().await;
    let stats_cost = s1 - s0;
    let server = (s2 - s1).saturating_sub(stats_cost);
    emit(json!({"calls": p.calls, "secs": secs,
                "client_allocs_per_call": (a1 - a0) as f64 / p.calls as f64,
                "server_allocs_per_call": server as f64 / p.calls as f64}));
}
