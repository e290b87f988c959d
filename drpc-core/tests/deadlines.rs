//! Deadline propagation and trace context across real connections: the
//! client's `drpc-timeout` and `traceparent`, the server applying them, and
//! a handler's outgoing calls inheriting them.

mod common;

use bytes::Bytes;
use common::start_server;
use drpc_core::deadline::{parse_timeout, TIMEOUT_KEY};
use drpc_core::trace::TRACEPARENT_KEY;
use drpc_core::{
    CallContext, CallOptions, Code, Conn, ConnOptions, Router, Server, ServerOptions, Status,
    TraceContext,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// What a handler saw of its call.
#[derive(Clone, Debug, Default)]
struct Observed {
    timeout: Option<String>,
    traceparent: Option<String>,
    remaining: Option<Duration>,
    trace: Option<TraceContext>,
}

fn observing_router(seen: Arc<Mutex<Vec<Observed>>>) -> Router {
    Router::new().unary_raw("/t.S/Observe", move |req| {
        let seen = seen.clone();
        async move {
            let ctx = &req.context;
            seen.lock().unwrap().push(Observed {
                timeout: ctx.metadata().get(TIMEOUT_KEY).cloned(),
                traceparent: ctx.metadata().get(TRACEPARENT_KEY).cloned(),
                remaining: ctx.time_remaining(),
                trace: ctx.trace().cloned(),
            });
            Ok::<Bytes, Status>(req.data)
        }
    })
}

async fn observing_server(opts: ServerOptions) -> (Server, String, Arc<Mutex<Vec<Observed>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let server = Server::with_options(observing_router(seen.clone()), opts);
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    (server, addr, seen)
}

#[tokio::test]
async fn a_100ms_timeout_cancels_a_sleeping_handler_and_the_caller_sees_code_4() {
    // The handler records when it sees the cancellation; the client sets the
    // metadata by hand and has no deadline of its own, so code 4 can only
    // come from the server.
    let cancelled_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = cancelled_at.clone();
    let router = Router::new().unary_raw("/t.S/Sleep", move |req| {
        let seen = seen.clone();
        async move {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(5)) => Ok(req.data),
                _ = req.context.cancelled() => {
                    *seen.lock().unwrap() = Some(Instant::now());
                    assert_eq!(req.context.failure().unwrap().code(), Code::DeadlineExceeded);
                    Err(Status::canceled("observed"))
                }
            }
        }
    });
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    for _ in 0..5 {
        *cancelled_at.lock().unwrap() = None;
        let opts = CallOptions::new().metadata(TIMEOUT_KEY, "100m");
        let start = Instant::now();
        let err = conn.unary("/t.S/Sleep", b"x", &opts).await.unwrap_err();
        let answered = start.elapsed();
        assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
        assert_eq!(err.message(), "deadline exceeded (server)");
        let cancelled = cancelled_at.lock().unwrap().expect("the handler saw the cancel");
        let handler_cancel = cancelled - start;
        assert!(
            handler_cancel >= Duration::from_millis(99) && handler_cancel < Duration::from_millis(150),
            "handler cancelled after {handler_cancel:?}"
        );
        assert!(answered < Duration::from_millis(150), "answered after {answered:?}");
    }
    let m = server.metrics();
    assert_eq!(m.failed_with(Code::DeadlineExceeded), 5);
}

#[tokio::test]
async fn a_client_deadline_reaches_the_handler() {
    let (_server, addr, seen) = observing_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new().timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new()).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    let sent = parse_timeout(seen[0].timeout.as_deref().unwrap()).unwrap();
    assert!(sent > Duration::from_secs(4) && sent <= Duration::from_secs(5), "{sent:?}");
    let remaining = seen[0].remaining.unwrap();
    assert!(remaining > Duration::from_secs(4) && remaining <= Duration::from_secs(5));
    // No deadline: nothing sent, none applied.
    assert_eq!(seen[1].timeout, None);
    assert_eq!(seen[1].remaining, None);
}

#[tokio::test]
async fn servers_cap_or_ignore_deadlines_and_skip_invalid_ones() {
    let capped = ServerOptions {
        max_deadline: Some(Duration::from_millis(200)),
        ..ServerOptions::default()
    };
    let (_s1, addr, seen) = observing_server(capped).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new().timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    let remaining = seen.lock().unwrap()[0].remaining.unwrap();
    assert!(remaining <= Duration::from_millis(200), "{remaining:?}");
    for bad in ["", "1.5S", "123456789m", "-5m", "10s"] {
        conn.unary("/t.S/Observe", b"x", &CallOptions::new().metadata(TIMEOUT_KEY, bad))
            .await
            .unwrap();
        assert_eq!(seen.lock().unwrap().last().unwrap().remaining, None, "{bad:?}");
    }

    let ignoring = ServerOptions {
        ignore_deadlines: true,
        ..ServerOptions::default()
    };
    let (_s2, addr, seen) = observing_server(ignoring).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new().timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    let seen = seen.lock().unwrap()[0].clone();
    assert!(seen.timeout.is_some(), "sent");
    assert_eq!(seen.remaining, None, "not applied");
}

#[tokio::test]
async fn send_deadline_off_sends_none_and_a_callers_own_value_wins() {
    let (_server, addr, seen) = observing_server(ServerOptions::default()).await;
    let quiet = ConnOptions {
        send_deadline: false,
        ..ConnOptions::default()
    };
    let conn = Conn::connect(&addr, quiet).await.unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new().timeout(Duration::from_secs(5)))
        .await
        .unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let opts = CallOptions::new()
        .timeout(Duration::from_secs(5))
        .metadata(TIMEOUT_KEY, "7S");
    conn.unary("/t.S/Observe", b"x", &opts).await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].timeout, None);
    assert_eq!(seen[1].timeout.as_deref(), Some("7S"));
}

#[tokio::test]
async fn a_traceparent_gives_the_server_a_child_span_and_none_invents_one() {
    let (_server, addr, seen) = observing_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let parent = TraceContext::parse(SAMPLE, Some("k=v")).unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new().trace(parent.clone()))
        .await
        .unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new()).await.unwrap();
    conn.unary("/t.S/Observe", b"x", &CallOptions::new().metadata(TRACEPARENT_KEY, "garbage"))
        .await
        .unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0].traceparent.as_deref(), Some(SAMPLE));
    let server_span = seen[0].trace.clone().unwrap();
    assert_eq!(server_span.trace_id, parent.trace_id);
    assert_ne!(server_span.span_id, parent.span_id);
    assert_eq!(server_span.tracestate.as_deref(), Some("k=v"));
    assert_eq!(seen[1].traceparent, None);
    assert_eq!(seen[1].trace, None);
    assert_eq!(seen[2].trace, None);
}

/// A front server whose handler calls the back server: the back sees the
/// front's deadline (shortened by the time spent) and a child of the
/// front's span, without the handler copying anything by hand.
#[tokio::test]
async fn calls_made_inside_a_handler_inherit_its_deadline_and_trace() {
    let (_back, back_addr, seen) = observing_server(ServerOptions::default()).await;
    let back = Conn::connect(&back_addr, ConnOptions::default()).await.unwrap();
    let front_spans: Arc<Mutex<Vec<TraceContext>>> = Arc::default();
    let spans = front_spans.clone();
    let front = Server::new(Router::new().unary("/t.S/Forward", move |req: common::Counted, ctx: CallContext| {
        let back = back.clone();
        let spans = spans.clone();
        async move {
            spans.lock().unwrap().extend(ctx.trace().cloned());
            // Spawned work inherits only through an explicit scope.
            let inherited = ctx.inherited();
            let back2 = back.clone();
            let spawned = tokio::spawn(drpc_core::context::scope(inherited, async move {
                back2.unary("/t.S/Observe", b"spawned", &CallOptions::new()).await
            }));
            back.unary("/t.S/Observe", b"direct", &CallOptions::new()).await?;
            spawned.await.unwrap()?;
            Ok(req)
        }
    }));
    let front_addr = front.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&front_addr, ConnOptions::default()).await.unwrap();
    let parent = TraceContext::parse(SAMPLE, None).unwrap();
    let opts = CallOptions::new()
        .timeout(Duration::from_secs(5))
        .trace(parent.clone());
    let _: common::Counted = conn
        .invoke("/t.S/Forward", &common::Counted { n: 1 }, &opts)
        .await
        .unwrap();
    let front_span = front_spans.lock().unwrap()[0].clone();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    for back_call in &seen {
        let sent = parse_timeout(back_call.timeout.as_deref().unwrap()).unwrap();
        assert!(sent < Duration::from_secs(5) && sent > Duration::from_secs(3), "{sent:?}");
        let sent_parent = TraceContext::parse(back_call.traceparent.as_deref().unwrap(), None).unwrap();
        assert_eq!(sent_parent.trace_id, parent.trace_id);
        assert_eq!(sent_parent.span_id, front_span.span_id, "the parent is the front's span");
        assert_ne!(back_call.trace.as_ref().unwrap().span_id, front_span.span_id);
    }
    // Outside any handler nothing is inherited.
    assert!(drpc_core::context::current().is_none());
}

/// A peer that sends no deadline (storj.io/drpc clients) works as before.
#[tokio::test]
async fn a_call_without_deadline_metadata_runs_unbounded() {
    let (_server, addr, _seen) = start_server(ServerOptions::default()).await;
    let conn = Conn::connect(&addr, ConnOptions::default().sequential()).await.unwrap();
    let response = conn
        .invoke::<_, common::Counted>("/t.S/Slow", &common::Counted { n: 150 }, &CallOptions::new())
        .await
        .unwrap();
    assert_eq!(response.n, 150);
}
