//! Connection and call metrics, the same set cockroachdb/drpc's `drpcmetrics`
//! offers plus a latency histogram per rpc: read as a [`MetricsSnapshot`]
//! from `Server::metrics`, `Conn::metrics` and `Pool::metrics`.
//!
//! Each connection counts in relaxed atomics of its own, touched where the
//! work already happens (a read, a write, a stream's end); a snapshot sums
//! them. Nothing is counted twice and nothing is reset.
//!
//! The same events go to the [`metrics`](https://docs.rs/metrics) crate's
//! facade, so a Prometheus or OpenTelemetry exporter installed as its
//! recorder publishes them (names below, labels `side` = `client` or
//! `server`, `code` = the numeric status code, `rpc` = the full rpc name).
//! Connections hand the facade what changed from their watchdog, which wakes
//! every quarter of the shortest connection timeout but at least every 5 s
//! (2.5 s on a server, 5 s on a client by default), and when they close:
//! calls never touch it. Per-rpc latencies are recorded per call (a
//! thread-local and an atomic load with no recorder installed). Counters: `drpc_bytes_sent_total`, `drpc_bytes_received_total`,
//! `drpc_streams_opened_total`, `drpc_streams_closed_total`,
//! `drpc_streams_failed_total{code}`, `drpc_recv_blocked_total`,
//! `drpc_send_blocked_total`, `drpc_connections_opened_total`; gauges:
//! `drpc_active_streams`, `drpc_active_connections`; histogram (server):
//! `drpc_rpc_duration_seconds{rpc}`. Queued bytes are a snapshot-only gauge.

use crate::status::Code;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters and gauges of a server, a connection or a pool at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Bytes written to and read from the transports (frame headers included).
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub streams_opened: u64,
    /// Streams ended for any reason.
    pub streams_closed: u64,
    /// Streams ended with an error (any code).
    pub streams_failed: u64,
    /// Code to count, sorted by code, non-zero counts only.
    pub failed_by_code: Vec<(u32, u64)>,
    pub active_streams: u64,
    /// Receives that had to wait for the peer (or for back-pressure).
    pub recv_blocked: u64,
    /// Sends that waited because the connection's writer was at its cap.
    pub send_blocked: u64,
    /// Bytes queued in the connections' writers right now.
    pub queued_bytes: u64,
    pub connections_opened: u64,
    pub active_connections: u64,
    /// Server side: per registered rpc, sorted by name.
    pub rpcs: Vec<RpcStats>,
}

impl MetricsSnapshot {
    /// Streams that failed with `code`.
    pub fn failed_with(&self, code: Code) -> u64 {
        self.failed_by_code
            .iter()
            .find(|(c, _)| *c == code as u32)
            .map_or(0, |(_, n)| *n)
    }

    /// The statistics of one rpc, if the server has it registered.
    pub fn rpc(&self, rpc: &str) -> Option<&RpcStats> {
        self.rpcs.iter().find(|r| r.rpc == rpc)
    }
}

/// Calls of one rpc a server handled.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RpcStats {
    pub rpc: String,
    /// Handler runs finished.
    pub count: u64,
    /// Of those, the ones that ended with an error.
    pub failed: u64,
    /// Handler durations, from the invoke to the handler's end.
    pub latency: Histogram,
}

/// A histogram with fixed exponential buckets: `counts[i]` counts values
/// `<= bounds_us[i]` (and above the previous bound); the last count is
/// everything above the last bound.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    pub bounds_us: Vec<u64>,
    pub counts: Vec<u64>,
    pub sum_us: u64,
}

impl Histogram {
    /// Values recorded.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Latency bucket bounds: 8 us, 16 us, ... doubling up to 2^24 us (16.8 s).
const FIRST_BOUND_LOG2: u32 = 3;
const BUCKETS: usize = 22;

/// The bucket bounds every latency histogram uses, in microseconds.
pub fn latency_bounds_us() -> Vec<u64> {
    (0..BUCKETS as u32)
        .map(|i| 1u64 << (FIRST_BOUND_LOG2 + i))
        .collect()
}

/// The bucket of a value: the first bound it does not exceed.
fn bucket_of(us: u64) -> usize {
    if us <= 1 << FIRST_BOUND_LOG2 {
        return 0;
    }
    // ceil(log2(us)) without a loop.
    let log2 = 64 - (us - 1).leading_zeros();
    ((log2 - FIRST_BOUND_LOG2) as usize).min(BUCKETS)
}

/// Codes are gRPC's 0..=16; anything else was mapped to Unknown on the way in.
const CODES: usize = 17;

/// Which end of connections a set of counters describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// One connection's counters.
pub(crate) struct ConnMetrics {
    keys: &'static facade::SideKeys,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    streams_opened: AtomicU64,
    streams_closed: AtomicU64,
    failed: [AtomicU64; CODES],
    recv_blocked: AtomicU64,
    send_blocked: AtomicU64,
    /// What the facade was last given (see `publish`).
    published: std::sync::Mutex<Totals>,
}

impl ConnMetrics {
    /// The counters of a new connection (counted as opened and active in
    /// the facade until [`ConnMetrics::connection_closed`]).
    pub(crate) fn new(side: Side) -> ConnMetrics {
        let keys = facade::keys(side);
        facade::counter(&keys.connections_opened, 1);
        facade::gauge(&keys.active_connections, 1.0);
        ConnMetrics {
            keys,
            bytes_sent: AtomicU64::new(0),
            bytes_received: AtomicU64::new(0),
            streams_opened: AtomicU64::new(0),
            streams_closed: AtomicU64::new(0),
            failed: std::array::from_fn(|_| AtomicU64::new(0)),
            recv_blocked: AtomicU64::new(0),
            send_blocked: AtomicU64::new(0),
            published: Default::default(),
        }
    }

    /// Hands the facade what changed since the last call. Called from the
    /// connection's watchdog, which already wakes periodically, and when the
    /// connection ends, so calls themselves never touch the facade.
    pub(crate) fn publish(&self) {
        let mut now = Totals::default();
        now.add(self);
        let mut last = self.published.lock().unwrap();
        let k = self.keys;
        let pairs = [
            (&k.bytes_sent, now.bytes_sent, last.bytes_sent),
            (&k.bytes_received, now.bytes_received, last.bytes_received),
            (&k.streams_opened, now.streams_opened, last.streams_opened),
            (&k.streams_closed, now.streams_closed, last.streams_closed),
            (&k.recv_blocked, now.recv_blocked, last.recv_blocked),
            (&k.send_blocked, now.send_blocked, last.send_blocked),
        ];
        for (key, now, last) in pairs {
            if now > last {
                facade::counter(key, now - last);
            }
        }
        for (code, (now, last)) in now.failed.iter().zip(&last.failed).enumerate() {
            if now > last {
                facade::counter(&k.failed[code], now - last);
            }
        }
        let active = |t: &Totals| t.streams_opened as f64 - t.streams_closed as f64;
        let change = active(&now) - active(&last);
        if change != 0.0 {
            facade::gauge(&k.active_streams, change);
        }
        *last = now;
    }

    /// Called once, when the connection terminates (after its streams).
    pub(crate) fn connection_closed(&self) {
        self.publish();
        facade::gauge(&self.keys.active_connections, -1.0);
    }

    pub(crate) fn sent(&self, n: usize) {
        self.bytes_sent.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn received(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Relaxed);
    }

    pub(crate) fn recv_blocked(&self) {
        self.recv_blocked.fetch_add(1, Relaxed);
    }

    pub(crate) fn send_blocked(&self) {
        self.send_blocked.fetch_add(1, Relaxed);
    }

    pub(crate) fn stream_opened(&self) {
        self.streams_opened.fetch_add(1, Relaxed);
    }

    /// A stream ended, failed with `code` unless it is `None` or OK.
    pub(crate) fn stream_closed(&self, code: Option<Code>) {
        if let Some(code) = code.filter(|c| *c != Code::Ok) {
            self.failed[code as usize].fetch_add(1, Relaxed);
        }
        self.streams_closed.fetch_add(1, Relaxed);
    }

    /// A stream refused before it existed (counted opened and failed).
    pub(crate) fn stream_refused(&self, code: Code) {
        self.stream_opened();
        self.stream_closed(Some(code));
    }
}

/// Plain sums of connection counters, kept for connections that closed.
#[derive(Clone, Default)]
pub(crate) struct Totals {
    bytes_sent: u64,
    bytes_received: u64,
    streams_opened: u64,
    streams_closed: u64,
    failed: [u64; CODES],
    recv_blocked: u64,
    send_blocked: u64,
}

impl Totals {
    pub(crate) fn add(&mut self, m: &ConnMetrics) {
        self.bytes_sent += m.bytes_sent.load(Relaxed);
        self.bytes_received += m.bytes_received.load(Relaxed);
        // Closed before opened: a stream opening meanwhile is never seen
        // closed without being seen opened.
        self.streams_closed += m.streams_closed.load(Relaxed);
        self.streams_opened += m.streams_opened.load(Relaxed);
        for (sum, n) in self.failed.iter_mut().zip(&m.failed) {
            *sum += n.load(Relaxed);
        }
        self.recv_blocked += m.recv_blocked.load(Relaxed);
        self.send_blocked += m.send_blocked.load(Relaxed);
    }

    /// The snapshot of these sums (gauges and rpcs left for the caller).
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        let failed_by_code: Vec<(u32, u64)> = self
            .failed
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(code, n)| (code as u32, *n))
            .collect();
        MetricsSnapshot {
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            streams_opened: self.streams_opened,
            streams_closed: self.streams_closed,
            streams_failed: failed_by_code.iter().map(|(_, n)| n).sum(),
            failed_by_code,
            active_streams: self.streams_opened.saturating_sub(self.streams_closed),
            recv_blocked: self.recv_blocked,
            send_blocked: self.send_blocked,
            ..MetricsSnapshot::default()
        }
    }
}

/// One rpc's counters and latency histogram (server side).
pub(crate) struct RpcMetrics {
    count: AtomicU64,
    failed: AtomicU64,
    buckets: [AtomicU64; BUCKETS + 1],
    sum_us: AtomicU64,
    /// The facade's histogram key, labelled with the rpc (built once).
    duration_key: ::metrics::Key,
}

impl RpcMetrics {
    pub(crate) fn new(rpc: &str) -> RpcMetrics {
        RpcMetrics {
            count: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            duration_key: facade::rpc_duration_key(rpc),
        }
    }

    pub(crate) fn record(&self, elapsed: Duration, failed: bool) {
        facade::histogram(&self.duration_key, elapsed.as_secs_f64());
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Relaxed);
        self.sum_us.fetch_add(us, Relaxed);
        if failed {
            self.failed.fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
    }

    pub(crate) fn stats(&self, rpc: &str) -> RpcStats {
        RpcStats {
            rpc: rpc.to_string(),
            count: self.count.load(Relaxed),
            failed: self.failed.load(Relaxed),
            latency: Histogram {
                bounds_us: latency_bounds_us(),
                counts: self.buckets.iter().map(|b| b.load(Relaxed)).collect(),
                sum_us: self.sum_us.load(Relaxed),
            },
        }
    }
}

/// The `metrics` crate side: keys built once, events handed to whatever
/// recorder is installed (none: a no-op).
mod facade {
    use super::{Side, CODES};
    use metrics::{Key, Label, Level, Metadata};
    use std::sync::LazyLock;

    static METADATA: Metadata<'static> =
        Metadata::new("drpc_core", Level::INFO, Some("drpc_core::metrics"));

    const CODE_LABELS: [&str; CODES] = [
        "0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16",
    ];

    pub(crate) struct SideKeys {
        pub(crate) bytes_sent: Key,
        pub(crate) bytes_received: Key,
        pub(crate) streams_opened: Key,
        pub(crate) streams_closed: Key,
        pub(crate) failed: [Key; CODES],
        pub(crate) active_streams: Key,
        pub(crate) recv_blocked: Key,
        pub(crate) send_blocked: Key,
        pub(crate) connections_opened: Key,
        pub(crate) active_connections: Key,
    }

    impl SideKeys {
        fn new(side: &'static str) -> SideKeys {
            let key = |name: &'static str| Key::from_parts(name, vec![Label::from_static_parts("side", side)]);
            SideKeys {
                bytes_sent: key("drpc_bytes_sent_total"),
                bytes_received: key("drpc_bytes_received_total"),
                streams_opened: key("drpc_streams_opened_total"),
                streams_closed: key("drpc_streams_closed_total"),
                failed: std::array::from_fn(|code| {
                    Key::from_parts(
                        "drpc_streams_failed_total",
                        vec![
                            Label::from_static_parts("side", side),
                            Label::from_static_parts("code", CODE_LABELS[code]),
                        ],
                    )
                }),
                active_streams: key("drpc_active_streams"),
                recv_blocked: key("drpc_recv_blocked_total"),
                send_blocked: key("drpc_send_blocked_total"),
                connections_opened: key("drpc_connections_opened_total"),
                active_connections: key("drpc_active_connections"),
            }
        }
    }

    static KEYS: LazyLock<[SideKeys; 2]> =
        LazyLock::new(|| [SideKeys::new("client"), SideKeys::new("server")]);

    pub(crate) fn keys(side: Side) -> &'static SideKeys {
        &KEYS[side as usize]
    }

    pub(crate) fn rpc_duration_key(rpc: &str) -> Key {
        Key::from_parts(
            "drpc_rpc_duration_seconds",
            vec![Label::new("rpc", rpc.to_string())],
        )
    }

    pub(crate) fn counter(key: &Key, n: u64) {
        metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(n));
    }

    pub(crate) fn gauge(key: &Key, delta: f64) {
        metrics::with_recorder(|r| {
            let gauge = r.register_gauge(key, &METADATA);
            if delta >= 0.0 {
                gauge.increment(delta)
            } else {
                gauge.decrement(-delta)
            }
        });
    }

    pub(crate) fn histogram(key: &Key, value: f64) {
        metrics::with_recorder(|r| r.register_histogram(key, &METADATA).record(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_the_first_bound_not_exceeded() {
        let bounds = latency_bounds_us();
        assert_eq!(bounds.len(), BUCKETS);
        for us in [0u64, 1, 7, 8, 9, 15, 16, 17, 1000, 1 << 20, (1 << 24) - 1, 1 << 24] {
            let b = bucket_of(us);
            assert!(us <= bounds[b], "{us} in bucket {b}");
            assert!(b == 0 || us > bounds[b - 1], "{us} in bucket {b}");
        }
        assert_eq!(bucket_of((1 << 24) + 1), BUCKETS);
        assert_eq!(bucket_of(u64::MAX), BUCKETS);
    }

    #[test]
    fn a_histogram_sums_what_it_recorded() {
        let m = RpcMetrics::new("/x");
        m.record(Duration::from_micros(5), false);
        m.record(Duration::from_micros(100), true);
        m.record(Duration::from_secs(100), false);
        let s = m.stats("/x");
        assert_eq!((s.count, s.failed), (3, 1));
        assert_eq!(s.latency.count(), 3);
        assert_eq!(s.latency.counts[0], 1);
        assert_eq!(s.latency.counts[bucket_of(100)], 1);
        assert_eq!(s.latency.counts[BUCKETS], 1);
        assert_eq!(s.latency.sum_us, 100_000_105);
    }
}
