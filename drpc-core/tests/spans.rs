//! The tracing span of every call, on both sides, and the log lines of
//! failures. Alone in its test binary: tracing caches callsite interest
//! process-wide, so tests without a subscriber running beside it would
//! hide its spans.

mod common;

use common::{frame, start_server, RawPeer};
use drpc_core::wire::Kind;
use drpc_core::{CallOptions, Code, Conn, ConnOptions, ServerOptions, TraceContext};
use std::time::Duration;

mod capture {
    //! A tracing layer that keeps every span's fields and every event.
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Subscriber};
    use tracing_subscriber::layer::Context;
    use tracing_subscriber::registry::LookupSpan;

    #[derive(Clone, Debug, Default)]
    pub struct Captured {
        /// Every span ever opened, in order.
        pub spans: Vec<(String, BTreeMap<String, String>)>,
        /// Open span ids to their index (the registry reuses closed ids).
        live: BTreeMap<u64, usize>,
        pub events: Vec<(tracing::Level, BTreeMap<String, String>)>,
    }

    #[derive(Clone, Default)]
    pub struct Capture(pub Arc<Mutex<Captured>>);

    struct Fields<'a>(&'a mut BTreeMap<String, String>);

    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_string(), format!("{value:?}").trim_matches('"').to_string());
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_string(), value.to_string());
        }
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Capture {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            attrs.record(&mut Fields(&mut fields));
            let name = attrs.metadata().name().to_string();
            let mut captured = self.0.lock().unwrap();
            captured.spans.push((name, fields));
            let index = captured.spans.len() - 1;
            captured.live.insert(id.into_u64(), index);
        }
        fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
            let mut captured = self.0.lock().unwrap();
            if let Some(&index) = captured.live.get(&id.into_u64()) {
                values.record(&mut Fields(&mut captured.spans[index].1));
            }
        }
        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut fields = BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().events.push((*event.metadata().level(), fields));
        }
    }
}

#[tokio::test]
async fn every_call_has_a_span_on_both_sides_and_failures_are_logged() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = capture::Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let (_server, addr, _seen) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let parent = TraceContext::new_root();
    let opts = CallOptions::new().trace(parent.clone());
    conn.unary("/t.S/Echo", b"12345", &opts).await.unwrap();
    let err = conn.unary("/t.S/Fail", b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let _ = conn.unary("/t.S/Panic", b"", &CallOptions::new()).await.unwrap_err();
    tokio::time::sleep(Duration::from_millis(50)).await;

    let captured = capture.0.lock().unwrap().clone();
    let span = |name: &str, rpc: &str| {
        captured
            .spans
            .iter()
            .find(|(n, f)| n == name && f.get("rpc").map(String::as_str) == Some(rpc))
            .unwrap_or_else(|| panic!("no {name} span for {rpc}: {:?}", captured.spans))
            .1
            .clone()
    };
    for side in ["drpc.client", "drpc.server"] {
        let echo = span(side, "/t.S/Echo");
        assert_eq!(echo["trace_id"], parent.trace_id_hex(), "{side}");
        assert_eq!(echo["code"], "0", "{side}");
        assert_eq!(echo["stream_id"], "1", "{side}");
        assert_eq!(echo["messages_sent"], "1", "{side}");
        assert_eq!(echo["messages_received"], "1", "{side}");
        assert!(echo.contains_key("duration_us"), "{side}");
        let fail = span(side, "/t.S/Fail");
        assert_eq!(fail["code"], "5", "{side}");
        assert!(!fail.contains_key("trace_id"), "no trace, none invented");
    }
    assert!(span("drpc.server", "/t.S/Echo")["peer"].starts_with("127.0.0.1:"));
    let errors: Vec<_> = captured
        .events
        .iter()
        .filter(|(level, _)| *level == tracing::Level::ERROR)
        .map(|(_, f)| f.clone())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0]["rpc"], "/t.S/Fail");
    assert!(errors[0]["peer"].starts_with("127.0.0.1:"));
    assert_eq!(errors[1]["rpc"], "/t.S/Panic");
    assert_eq!(errors[1]["panic"], "handler exploded");
}

#[tokio::test]
async fn protocol_errors_are_warnings_naming_the_peer() {
    use tracing_subscriber::layer::SubscriberExt;
    let capture = capture::Capture::default();
    let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let (_server, addr, _seen) = start_server(ServerOptions::default()).await;
    let mut peer = RawPeer::connect(&addr).await;
    // A data frame of a kind no version of the protocol has.
    peer.send(&frame(1, 1, Kind(42), false, true, b"x")).await;
    assert!(peer.closed_by_server().await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let captured = capture.0.lock().unwrap().clone();
    let warning = captured
        .events
        .iter()
        .find(|(level, f)| {
            *level == tracing::Level::WARN && f.get("status").is_some_and(|s| s.contains("protocol error"))
        })
        .unwrap_or_else(|| panic!("no protocol-error warning: {:?}", captured.events))
        .1
        .clone();
    assert!(warning["peer"].starts_with("127.0.0.1:"), "{warning:?}");
}

