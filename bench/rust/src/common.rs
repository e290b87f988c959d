//! What every contender in this binary shares: arguments, the workload
//! parameters, the counting allocator, percentiles, RSS and JSON output.
//! The workloads themselves are specified in bench/README.md; the C, Go and
//! Python clients implement the same ones.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counts every allocation (alloc, alloc_zeroed, realloc) of the process.
pub struct Counting;

pub static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc_zeroed(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, n)
    }
}

pub fn allocs() -> u64 {
    ALLOCS.load(Ordering::Relaxed)
}

/// `--key value` arguments after the positional ones.
#[derive(Clone, Debug)]
pub struct Args {
    map: HashMap<String, String>,
}

impl Args {
    pub fn parse(rest: &[String]) -> Args {
        let mut map = HashMap::new();
        let mut it = rest.iter();
        while let Some(k) = it.next() {
            let k = k.trim_start_matches("--").to_string();
            let v = it.next().cloned().unwrap_or_default();
            map.insert(k, v);
        }
        Args { map }
    }
    pub fn str(&self, k: &str, d: &str) -> String {
        self.map.get(k).cloned().unwrap_or_else(|| d.to_string())
    }
    pub fn num(&self, k: &str, d: u64) -> u64 {
        self.map.get(k).map(|v| v.parse().expect("number")).unwrap_or(d)
    }
    pub fn secs(&self, k: &str, d: f64) -> Duration {
        Duration::from_secs_f64(self.map.get(k).map(|v| v.parse().expect("seconds")).unwrap_or(d))
    }
}

/// Workload parameters common to every client.
#[derive(Clone, Debug)]
pub struct Params {
    pub addr: String,
    pub workload: String,
    pub size: usize,
    pub concurrency: usize,
    pub streams: usize,
    pub calls: u64,
    pub warmup: Duration,
    pub duration: Duration,
    pub reps: usize,
    pub server_pid: u32,
    /// `--compress snappy|minlz-fastest`: drpc-rs clients compress their
    /// streams with this codec (the server answers with the same one).
    pub compress: Option<String>,
}

impl Params {
    pub fn from(a: &Args) -> Params {
        Params {
            addr: a.str("addr", "127.0.0.1:0"),
            workload: a.str("workload", "unary_lat"),
            size: a.num("size", 0) as usize,
            concurrency: a.num("concurrency", 1) as usize,
            streams: a.num("streams", 1) as usize,
            calls: a.num("calls", 1000),
            warmup: a.secs("warmup", 0.5),
            duration: a.secs("duration", 1.0),
            reps: a.num("reps", 3) as usize,
            server_pid: a.num("server-pid", 0) as u32,
            compress: Some(a.str("compress", "")).filter(|c| !c.is_empty()),
        }
    }
}

pub fn emit(v: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{v}").unwrap();
    out.flush().unwrap();
}

/// p-th percentile (0..=100) of nanosecond samples, in microseconds.
pub fn pct_us(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

/// VmRSS of a process in KiB (0 if unknown).
pub fn rss_kb(pid: u32) -> u64 {
    let path = if pid == 0 { "/proc/self/status".to_string() } else { format!("/proc/{pid}/status") };
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}

/// The server-streaming request: message size and how long to stream.
/// A message body that compresses like text (about 3:1 with snappy), so the
/// compressed workloads measure real work; without compression its content
/// does not matter.
pub fn text_payload(size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "stream", "frame", "drpc", "latency", "buffer", "message", "server", "client",
        "the", "of", "and", "multiplexing", "request", "response", "window", "deadline",
    ];
    let mut out = Vec::with_capacity(size + 16);
    let mut x: u32 = 0x9e37_79b9;
    while out.len() < size {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.extend_from_slice(WORDS[(x % 16) as usize].as_bytes());
        out.push(if x % 7 == 0 { b'\n' } else { b' ' });
        if x % 5 == 0 {
            out.extend_from_slice(format!("{} ", x % 100_000).as_bytes());
        }
    }
    out.truncate(size);
    out
}

pub fn stream_request(size: usize, dur: Duration) -> Vec<u8> {
    let mut v = Vec::with_capacity(16);
    v.extend_from_slice(&(size as u64).to_be_bytes());
    v.extend_from_slice(&(dur.as_millis() as u64).to_be_bytes());
    v
}

pub fn parse_stream_request(b: &[u8]) -> (usize, Duration) {
    let size = u64::from_be_bytes(b[0..8].try_into().unwrap()) as usize;
    let ms = u64::from_be_bytes(b[8..16].try_into().unwrap());
    (size, Duration::from_millis(ms))
}

/// Prints the bound address, then blocks until stdin closes (the harness's
/// way of stopping a server), then exits the process.
pub fn serve_until_stdin_closes(addr: &str) {
    println!("ADDR {addr}");
    std::io::stdout().flush().unwrap();
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    std::process::exit(0);
}
