//! The `metrics` crate facade: with a recorder installed, every counter of
//! the snapshot reaches it (from the connections' watchdogs while they live,
//! and when they close), and each server call records its latency. Alone in
//! its binary: the recorder is process-wide.

mod common;

use common::start_server;
use drpc_core::{CallOptions, Code, Conn, ConnOptions, ServerOptions};
use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every metric by `name{label=value,...}`: counters and gauges as their
/// value, histograms as their number of samples.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<BTreeMap<String, f64>>>);

struct Cell(Captured, String);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += value as f64;
    }
    fn absolute(&self, value: u64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), value as f64);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += value;
    }
    fn decrement(&self, value: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() -= value;
    }
    fn set(&self, value: f64) {
        self.0 .0.lock().unwrap().insert(self.1.clone(), value);
    }
}

impl HistogramFn for Cell {
    fn record(&self, _value: f64) {
        *self.0 .0.lock().unwrap().entry(self.1.clone()).or_default() += 1.0;
    }
}

impl Captured {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let mut labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
        labels.sort();
        Arc::new(Cell(self.clone(), format!("{}{{{}}}", key.name(), labels.join(","))))
    }

    fn get(&self, name: &str) -> f64 {
        self.0.lock().unwrap().get(name).copied().unwrap_or(0.0)
    }
}

impl Recorder for Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key))
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(tokio::time::Instant::now() < until, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_facade_gets_every_counter_and_each_calls_latency() {
    let captured = Captured::default();
    metrics::set_global_recorder(captured.clone()).expect("the only recorder of this binary");
    let (server, addr, _seen) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    for _ in 0..3 {
        conn.unary("/t.S/Echo", b"hello", &CallOptions::new()).await.unwrap();
    }
    let err = conn.unary("/t.S/Fail", b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(captured.get("drpc_rpc_duration_seconds{rpc=/t.S/Echo}"), 3.0, "recorded per call");
    assert_eq!(captured.get("drpc_active_connections{side=server}"), 1.0);
    assert_eq!(captured.get("drpc_connections_opened_total{side=client}"), 1.0);

    // While connections live, their watchdogs publish (every 2.5 s on a
    // server with the default timeouts).
    eventually("the server's watchdog published", || {
        captured.get("drpc_streams_closed_total{side=server}") == 4.0
    })
    .await;
    assert_eq!(captured.get("drpc_streams_failed_total{code=5,side=server}"), 1.0);

    // Closing publishes the rest at once.
    conn.close().await;
    eventually("the server saw the close", || server.connections() == 0).await;
    let snapshot = server.metrics();
    for side in ["client", "server"] {
        let get = |name: &str| captured.get(&format!("{name}{{side={side}}}"));
        assert_eq!(get("drpc_streams_opened_total"), 4.0, "{side}");
        assert_eq!(get("drpc_streams_closed_total"), 4.0, "{side}");
        assert_eq!(get("drpc_active_streams"), 0.0, "{side}");
        assert_eq!(get("drpc_active_connections"), 0.0, "{side}");
        assert_eq!(get("drpc_connections_opened_total"), 1.0, "{side}");
        assert_eq!(captured.get(&format!("drpc_streams_failed_total{{code=5,side={side}}}")), 1.0);
    }
    assert_eq!(captured.get("drpc_bytes_sent_total{side=server}"), snapshot.bytes_sent as f64);
    assert_eq!(captured.get("drpc_bytes_received_total{side=server}"), snapshot.bytes_received as f64);
    assert_eq!(
        captured.get("drpc_bytes_sent_total{side=client}"),
        captured.get("drpc_bytes_received_total{side=server}")
    );
}
