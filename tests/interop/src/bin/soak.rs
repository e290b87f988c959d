//! drpc-interop-soak: a mixed, endless load against an interop server for a set
//! time: unary calls, streams of every shape, cancels and deadlines, on one
//! multiplexed connection plus a reconnecting one. Prints one line per
//! interval (calls, errors by code, this process's resident memory) and exits
//! non-zero if any call failed with an unexpected code.
//! Usage: drpc-interop-soak --addr HOST:PORT --seconds N [--every SECONDS] [--workers N]

use drpc_core::{CallOptions, CancelToken, Code, Conn, ConnOptions, Status};
use drpc_interop::pb::*;
use drpc_interop::parse_args;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: Mutex<BTreeMap<String, u64>>,
    unexpected: AtomicU64,
}

impl Tally {
    /// Counts an outcome; `expected` lists the codes this operation may end with.
    fn record(&self, r: Result<(), Status>, expected: &[Code]) {
        match r {
            Ok(()) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
            }
            Err(s) => {
                *self.errors.lock().unwrap().entry(s.code().name().to_string()).or_default() += 1;
                if !expected.contains(&s.code()) {
                    self.unexpected.fetch_add(1, Ordering::Relaxed);
                    eprintln!("soak: unexpected {s}");
                }
            }
        }
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(|l| l.split_whitespace().nth(1).unwrap_or("0").parse().unwrap_or(0)))
        .unwrap_or(0)
}

async fn one_round(conn: &Conn, i: u64, tally: &Tally) {
    let client = TestServiceClient::new(conn.clone());
    let opts = CallOptions::new().timeout(Duration::from_secs(10));
    match i % 6 {
        0 | 1 => {
            let req = SimpleRequest { response_size: (i % 2048) as i32, payload: Some(Payload { body: vec![1; (i % 4096) as usize] }), ..Default::default() };
            let r = client.unary_call(&req, &opts).await;
            let r = r.and_then(|resp| match resp.payload.map(|p| p.body.len()) {
                Some(n) if n == (i % 2048) as usize => Ok(()),
                other => Err(Status::new(Code::DataLoss, format!("wrong response size {other:?}"))),
            });
            tally.record(r, &[]);
        }
        2 => {
            let r = async {
                let (requests, responses) = client.full_duplex_call(&opts).await?;
                for k in 0..5 {
                    let req = StreamingOutputCallRequest { response_parameters: vec![ResponseParameters { size: 100 + k, interval_ms: 0 }], ..Default::default() };
                    requests.send(&req).await?;
                    responses.recv().await?;
                }
                requests.close_send().await?;
                while responses.recv().await?.is_some() {}
                Ok(())
            };
            tally.record(r.await, &[]);
        }
        3 => {
            // Cancelled mid-flight: must end Canceled.
            let token = CancelToken::new();
            let t = token.clone();
            let canceller = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                t.cancel();
            });
            let req = SimpleRequest { sleep_ms: 1000, ..Default::default() };
            let r = client.unary_call(&req, &CallOptions::new().cancel_token(token)).await;
            let _ = canceller.await;
            tally.record(r.map(drop), &[Code::Canceled]);
        }
        4 => {
            let req = SimpleRequest { sleep_ms: 1000, ..Default::default() };
            let r = client.unary_call(&req, &CallOptions::new().timeout(Duration::from_millis(3))).await;
            tally.record(r.map(drop), &[Code::DeadlineExceeded]);
        }
        _ => {
            // A stream dropped half-way (cancels it on the wire).
            let r = async {
                let (requests, _response) = client.streaming_input_call(&opts).await?;
                requests.send(&StreamingInputCallRequest { payload: Some(Payload { body: vec![0; 512] }) }).await?;
                Ok(())
            };
            tally.record(r.await, &[]);
        }
    }
}

#[tokio::main]
async fn main() {
    let (mut addr, mut seconds, mut every, mut workers) = (String::new(), 60u64, 10u64, 32u64);
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        let v = value.unwrap_or_else(|| usage(&format!("--{flag} needs a value")));
        match flag.as_str() {
            "addr" => addr = v,
            "seconds" => seconds = v.parse().unwrap_or_else(|_| usage("--seconds takes a number")),
            "every" => every = v.parse().unwrap_or_else(|_| usage("--every takes a number")),
            "workers" => workers = v.parse().unwrap_or_else(|_| usage("--workers takes a number")),
            f => usage(&format!("unknown flag --{f}")),
        }
    }
    if addr.is_empty() {
        usage("--addr is required");
    }
    let tally = Arc::new(Tally::default());
    let stop = Arc::new(AtomicBool::new(false));
    let shared = Conn::connect(&addr, ConnOptions::default()).await.unwrap_or_else(|e| panic!("connect: {e}"));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (tally, stop, shared, addr) = (tally.clone(), stop.clone(), shared.clone(), addr.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                if w == 0 {
                    // One worker reconnects for every call: connection churn.
                    match Conn::connect(&addr, ConnOptions::default()).await {
                        Ok(conn) => {
                            one_round(&conn, i, &tally).await;
                            conn.close().await;
                        }
                        Err(e) => tally.record(Err(e), &[]),
                    }
                } else {
                    one_round(&shared, i, &tally).await;
                }
                i += workers;
            }
        }));
    }
    let start = Instant::now();
    let mut last = 0;
    while start.elapsed() < Duration::from_secs(seconds) {
        tokio::time::sleep(Duration::from_secs(every.min(seconds))).await;
        let ok = tally.ok.load(Ordering::Relaxed);
        let errors = tally.errors.lock().unwrap().clone();
        println!(
            "soak t={:>5}s calls_ok={ok} (+{}) errors={errors:?} rust_client_rss_kib={} open_streams={}",
            start.elapsed().as_secs(),
            ok - last,
            rss_kib(),
            shared.active_streams()
        );
        last = ok;
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    shared.close().await;
    let unexpected = tally.unexpected.load(Ordering::Relaxed);
    println!("soak done: calls_ok={} errors={:?} unexpected={unexpected}", tally.ok.load(Ordering::Relaxed), tally.errors.lock().unwrap());
    std::process::exit(if unexpected == 0 { 0 } else { 1 });
}

fn usage(err: &str) -> ! {
    eprintln!("drpc-interop-soak: {err}\nusage: drpc-interop-soak --addr HOST:PORT --seconds N [--every SECONDS] [--workers N]");
    std::process::exit(2);
}
