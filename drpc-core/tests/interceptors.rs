//! Interceptors on both sides: order, short-circuit, metadata changes,
//! message observers and the outcome they see; tower layers in the server's
//! chain.

mod common;

use bytes::Bytes;
use drpc_core::interceptor::{
    self, BoxFuture, CallEnd, ClientCall, ClientInterceptor, ClientNext, MessageObserver, Next,
    Reply, ServerCall, ServerInterceptor,
};
use drpc_core::{CallOptions, Code, Conn, ConnOptions, Router, Server, Status, TraceContext};
use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Log = Arc<Mutex<Vec<String>>>;

fn log(log: &Log, line: impl Into<String>) {
    log.lock().unwrap().push(line.into());
}

fn lines(log: &Log) -> Vec<String> {
    log.lock().unwrap().clone()
}

/// Logs around the rest of the chain, adds a metadata entry, and rejects
/// calls that carry `reject-at: <its name>`.
struct Tagging {
    name: &'static str,
    log: Log,
}

impl ServerInterceptor for Tagging {
    fn intercept<'a>(&'a self, mut call: ServerCall, next: Next) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            log(&self.log, format!("{}>", self.name));
            if call.metadata().get("reject-at").map(String::as_str) == Some(self.name) {
                return Err(Status::new(Code::PermissionDenied, format!("rejected by {}", self.name)));
            }
            let seen = call.metadata().get("path").cloned().unwrap_or_default();
            call.metadata_mut().insert("path".into(), seen + self.name);
            let outcome = next.run(call).await;
            let code = outcome.as_ref().err().map_or(Code::Ok, Status::code);
            log(&self.log, format!("<{} {}", self.name, code.name()));
            outcome
        })
    }
}

fn tagged_server_router(the_log: &Log) -> Router {
    let handler_log = the_log.clone();
    Router::new()
        .unary_raw("/t.S/Path", move |req| {
            let handler_log = handler_log.clone();
            async move {
                log(&handler_log, "handler");
                let path = req.context.metadata().get("path").cloned().unwrap_or_default();
                Ok::<Bytes, Status>(Bytes::from(path))
            }
        })
        .intercept(Tagging { name: "A", log: the_log.clone() })
        .intercept(Tagging { name: "B", log: the_log.clone() })
        .intercept(Tagging { name: "C", log: the_log.clone() })
}

#[tokio::test]
async fn server_interceptors_run_in_order_and_can_short_circuit() {
    let the_log: Log = Arc::default();
    let server = Server::new(tagged_server_router(&the_log));
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();

    let path = conn.unary("/t.S/Path", b"", &CallOptions::new()).await.unwrap();
    assert_eq!(&path[..], b"ABC", "each interceptor changed the metadata the next one saw");
    assert_eq!(lines(&the_log), ["A>", "B>", "C>", "handler", "<C OK", "<B OK", "<A OK"]);

    the_log.lock().unwrap().clear();
    let err = conn
        .unary("/t.S/Path", b"", &CallOptions::new().metadata("reject-at", "B"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "rejected by B");
    assert_eq!(lines(&the_log), ["A>", "B>", "<A PERMISSION_DENIED"], "C and the handler never ran");

    // Unknown rpcs are refused before any interceptor.
    the_log.lock().unwrap().clear();
    let err = conn.unary("/t.S/Nope", b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(lines(&the_log).is_empty());
    let m = server.metrics();
    assert_eq!(m.failed_with(Code::PermissionDenied), 1);
    assert_eq!(m.rpc("/t.S/Path").unwrap().count, 2);
    assert_eq!(m.rpc("/t.S/Path").unwrap().failed, 1);
}

#[tokio::test]
async fn an_auth_check_rejects_calls_without_a_token() {
    let seen_tx = Arc::new(Mutex::new(Vec::new()));
    let record = seen_tx.clone();
    let router = common::router(Arc::default()).intercept(interceptor::check(move |call| {
        record.lock().unwrap().push((
            call.rpc().to_string(),
            call.peer().and_then(|p| p.addr.clone()),
            call.deadline().is_some(),
            call.trace().map(|t| t.trace_id_hex()),
        ));
        match call.metadata().get("authorization").map(String::as_str) {
            Some("Bearer let-me-in") => Ok(()),
            _ => Err(Status::new(Code::Unauthenticated, "missing or wrong token")),
        }
    }));
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let err = conn.unary("/t.S/Echo", b"hi", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    let parent = TraceContext::new_root();
    let opts = CallOptions::new()
        .metadata("authorization", "Bearer let-me-in")
        .timeout(Duration::from_secs(5))
        .trace(parent.clone());
    assert_eq!(&conn.unary("/t.S/Echo", b"hi", &opts).await.unwrap()[..], b"hi");
    // Streams pass the same chain.
    let stream = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    let _ = stream.send(b"x").await;
    assert_eq!(stream.recv().await.unwrap_err().code(), Code::Unauthenticated);
    let seen = seen_tx.lock().unwrap().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].0, "/t.S/Echo");
    assert!(seen[0].1.as_deref().unwrap().starts_with("127.0.0.1:"), "{:?}", seen[0].1);
    assert!(!seen[0].2 && seen[1].2, "the deadline is visible");
    assert_eq!(seen[1].3, Some(parent.trace_id_hex()));
    assert_eq!(seen[2].0, "/t.S/Bidi");
}

/// Upper-cases what the server sends, counts what it receives, keeps the end.
#[derive(Default)]
struct Shouting {
    received: AtomicUsize,
    end: Mutex<Option<CallEnd>>,
}

impl MessageObserver for Shouting {
    fn on_send<'m>(&self, message: Cow<'m, [u8]>) -> Result<Cow<'m, [u8]>, Status> {
        Ok(Cow::Owned(message.to_ascii_uppercase()))
    }

    fn on_recv(&self, message: Bytes) -> Result<Bytes, Status> {
        self.received.fetch_add(1, Ordering::SeqCst);
        if &message[..] == b"poison" {
            return Err(Status::invalid_argument("poisoned message"));
        }
        Ok(message)
    }

    fn on_end(&self, end: &CallEnd) {
        *self.end.lock().unwrap() = Some(end.clone());
    }
}

struct Observing(Arc<Shouting>);

impl ServerInterceptor for Observing {
    fn intercept<'a>(&'a self, mut call: ServerCall, next: Next) -> BoxFuture<'a, Result<(), Status>> {
        call.observe(self.0.clone());
        next.run(call)
    }
}

#[tokio::test]
async fn observers_change_messages_and_see_the_outcome() {
    let shouting = Arc::new(Shouting::default());
    let router = common::router(Arc::default()).intercept(Observing(shouting.clone()));
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();

    assert_eq!(&conn.unary("/t.S/Echo", b"quiet", &CallOptions::new()).await.unwrap()[..], b"QUIET");
    let stream = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    for word in ["one", "two", "three"] {
        stream.send(word).await.unwrap();
        assert_eq!(stream.recv().await.unwrap().unwrap(), word.to_uppercase().as_bytes());
    }
    stream.close_send().await.unwrap();
    assert_eq!(stream.recv().await.unwrap(), None);
    // The server's end is reported after the client saw it: wait for it.
    let end = eventually_end(&shouting, "/t.S/Bidi").await;
    assert_eq!(end.code, Code::Ok);
    assert_eq!(end.stats.messages_received, 3);
    assert_eq!(end.stats.messages_sent, 3);
    assert_eq!(end.stats.bytes_sent, 3 + 3 + 5);
    assert_eq!(shouting.received.load(Ordering::SeqCst), 4);

    // An observer's error fails the call with it.
    let stream = conn.stream("/t.S/Bidi", &CallOptions::new()).await.unwrap();
    stream.send("poison").await.unwrap();
    let err = stream.recv().await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let end = eventually_end(&shouting, "/t.S/Bidi").await;
    assert_eq!(end.code, Code::InvalidArgument);

    let err = conn.unary("/t.S/Fail", b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let end = eventually_end(&shouting, "/t.S/Fail").await;
    assert_eq!(end.code, Code::NotFound);
    assert_eq!(end.status.unwrap().message(), "no such thing");
}

async fn eventually_end(observer: &Shouting, rpc: &str) -> CallEnd {
    for _ in 0..500 {
        if let Some(end) = observer.end.lock().unwrap().take() {
            if &*end.rpc == rpc {
                return end;
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("no end reported for {rpc}");
}

/// A client interceptor that logs around the call, adds credentials, and
/// refuses rpcs named in `refuse`.
struct ClientTagging {
    name: &'static str,
    log: Log,
    ends: Arc<Mutex<Vec<CallEnd>>>,
}

struct EndRecorder(Arc<Mutex<Vec<CallEnd>>>);

impl MessageObserver for EndRecorder {
    fn on_end(&self, end: &CallEnd) {
        self.0.lock().unwrap().push(end.clone());
    }
}

impl ClientInterceptor for ClientTagging {
    fn intercept<'a>(&'a self, mut call: ClientCall, next: ClientNext) -> BoxFuture<'a, Result<Reply, Status>> {
        Box::pin(async move {
            log(&self.log, format!("{}>", self.name));
            if call.rpc() == "/t.S/Panic" {
                return Err(Status::new(Code::FailedPrecondition, format!("{} refuses", self.name)));
            }
            let path = call.metadata().get("path").cloned().unwrap_or_default();
            call.metadata_mut().insert("path".into(), path + self.name);
            call.observe(EndRecorder(self.ends.clone()));
            let reply = next.run(call).await;
            let code = reply.as_ref().err().map_or(Code::Ok, Status::code);
            log(&self.log, format!("<{} {}", self.name, code.name()));
            reply
        })
    }
}

#[tokio::test]
async fn client_interceptors_run_in_order_and_can_short_circuit() {
    let server_log: Log = Arc::default();
    let server = Server::new(tagged_server_router(&server_log).merge_for_test());
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let the_log: Log = Arc::default();
    let ends: Arc<Mutex<Vec<CallEnd>>> = Arc::default();
    let opts = ConnOptions::default()
        .intercept(ClientTagging { name: "x", log: the_log.clone(), ends: ends.clone() })
        .intercept(ClientTagging { name: "y", log: the_log.clone(), ends: ends.clone() });
    let conn = Conn::connect(&addr, opts).await.unwrap();
    let path = conn.unary("/t.S/Path", b"", &CallOptions::new()).await.unwrap();
    assert_eq!(&path[..], b"xyABC");
    assert_eq!(lines(&the_log), ["x>", "y>", "<y OK", "<x OK"]);
    assert_eq!(ends.lock().unwrap().len(), 2);
    assert_eq!(ends.lock().unwrap()[0].stats.messages_sent, 1);

    the_log.lock().unwrap().clear();
    ends.lock().unwrap().clear();
    let err = conn.unary("/t.S/Panic", b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(lines(&the_log), ["x>"], "y and the call never ran");
    assert_eq!(conn.metrics().streams_opened, 1, "nothing was sent");

    // A stream: `next` returns once it is open; the end comes when it ends.
    the_log.lock().unwrap().clear();
    let stream = conn.stream("/t.S/Echo", &CallOptions::new()).await.unwrap();
    assert_eq!(lines(&the_log), ["x>", "y>", "<y OK", "<x OK"]);
    assert!(ends.lock().unwrap().is_empty());
    stream.send(b"abc").await.unwrap();
    stream.close_send().await.unwrap();
    assert_eq!(&stream.recv().await.unwrap().unwrap()[..], b"abc");
    assert_eq!(stream.recv().await.unwrap(), None);
    let ends = ends.lock().unwrap().clone();
    assert_eq!(ends.len(), 2);
    assert_eq!(ends[0].code, Code::Ok);
    assert_eq!(ends[0].stats.messages_received, 1);
}

trait MergeForTest {
    fn merge_for_test(self) -> Router;
}

impl MergeForTest for Router {
    /// Adds an echo handler next to the tagged ones (streams in the test).
    fn merge_for_test(self) -> Router {
        self.unary_raw("/t.S/Echo", |req| async move { Ok::<Bytes, Status>(req.data) })
    }
}

#[tokio::test]
async fn tower_layers_limit_concurrency_and_time_calls_out() {
    let running = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let (r, p) = (running.clone(), peak.clone());
    let router = Router::new()
        .unary_raw("/t.S/Nap", move |req| {
            let (running, peak) = (r.clone(), p.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                let ms = u64::from(req.data[0]);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<Bytes, Status>(req.data)
            }
        })
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_millis(150)))
        .layer(tower::limit::ConcurrencyLimitLayer::new(1));
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let conn = Conn::connect(&addr, ConnOptions::default()).await.unwrap();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.unary("/t.S/Nap", &[20], &CallOptions::new()).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 1, "the concurrency limit held");
    let start = tokio::time::Instant::now();
    let err = conn.unary("/t.S/Nap", &[250], &CallOptions::new()).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(start.elapsed() < Duration::from_millis(240));
}
