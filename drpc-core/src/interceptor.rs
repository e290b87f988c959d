//! Interceptors: code that runs around every call, on the server (around the
//! handler) and on the client (around the call), chained in the order they
//! were added, the first added outermost. Unary and streaming calls go
//! through the same chain.
//!
//! An interceptor sees the rpc name, the invoke metadata (and may change
//! it), the peer and the deadline; rejects a call by returning a [`Status`]
//! without calling `next`; observes or changes every message by adding a
//! [`MessageObserver`]; and sees the outcome when `next` returns (or in
//! [`MessageObserver::on_end`], with the duration and message counts).
//!
//! ```
//! use drpc_core::interceptor::{BoxFuture, Next, ServerCall, ServerInterceptor};
//! use drpc_core::Status;
//!
//! struct RequireToken;
//!
//! impl ServerInterceptor for RequireToken {
//!     fn intercept<'a>(&'a self, call: ServerCall, next: Next) -> BoxFuture<'a, Result<(), Status>> {
//!         Box::pin(async move {
//!             if call.metadata().get("authorization").map(String::as_str) != Some("Bearer secret") {
//!                 return Err(Status::new(drpc_core::Code::Unauthenticated, "missing token"));
//!             }
//!             next.run(call).await
//!         })
//!     }
//! }
//! ```
//!
//! The server side is also a [`tower_service::Service`]: [`Router::layer`]
//! puts any tower layer (timeouts, concurrency and rate limits from `tower`
//! itself) in the chain, at its place in the order.
//!
//! [`Router::layer`]: crate::Router::layer

use crate::client::{CallOptions, Conn};
use crate::metadata::Metadata;
use crate::peer::Peer;
use crate::router::{Handler, Request};
use crate::status::{Code, Status};
use crate::stream::{CallContext, Stream, StreamShared};
use crate::trace::TraceContext;
use bytes::Bytes;
use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;

/// A boxed, sendable future (what interceptors return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Sees (and may change) every message of a call, and its end. Added to a
/// call by an interceptor ([`ServerCall::observe`], [`ClientCall::observe`]).
///
/// Incoming messages pass the observers in chain order (outermost first),
/// outgoing ones in reverse, as if each interceptor wrapped the stream.
/// Returning an error fails the call with it.
pub trait MessageObserver: Send + Sync + 'static {
    /// A message about to be sent (after the application encoded it).
    fn on_send<'m>(&self, message: Cow<'m, [u8]>) -> Result<Cow<'m, [u8]>, Status> {
        Ok(message)
    }

    /// A message received, before the application sees it.
    fn on_recv(&self, message: Bytes) -> Result<Bytes, Status> {
        Ok(message)
    }

    /// The call ended: how, after how long, with how many messages.
    fn on_end(&self, _end: &CallEnd) {}
}

/// A shared observer (kept by its interceptor to read what it saw).
impl<T: MessageObserver + ?Sized> MessageObserver for Arc<T> {
    fn on_send<'m>(&self, message: Cow<'m, [u8]>) -> Result<Cow<'m, [u8]>, Status> {
        (**self).on_send(message)
    }

    fn on_recv(&self, message: Bytes) -> Result<Bytes, Status> {
        (**self).on_recv(message)
    }

    fn on_end(&self, end: &CallEnd) {
        (**self).on_end(end)
    }
}

/// How a call ended, as observers and logs see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallEnd {
    pub rpc: Arc<str>,
    /// `Code::Ok` for a call that completed.
    pub code: Code,
    /// The error, if it failed.
    pub status: Option<Status>,
    /// From the call's start (the invoke, on a server) to its end.
    pub duration: Duration,
    pub stats: StreamStats,
}

/// Messages and payload bytes one stream carried (payload bytes as they
/// went on the wire, after compression).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub messages_sent: u64,
    pub messages_received: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

/// The observers of one call, shared by the chain and the call's end.
pub(crate) type Observers = Arc<[Arc<dyn MessageObserver>]>;

pub(crate) fn observe_send<'m>(
    observers: &[Arc<dyn MessageObserver>],
    mut message: Cow<'m, [u8]>,
) -> Result<Cow<'m, [u8]>, Status> {
    for o in observers.iter().rev() {
        message = o.on_send(message)?;
    }
    Ok(message)
}

pub(crate) fn observe_recv(
    observers: &[Arc<dyn MessageObserver>],
    mut message: Bytes,
) -> Result<Bytes, Status> {
    for o in observers {
        message = o.on_recv(message)?;
    }
    Ok(message)
}

// ---------------------------------------------------------------- server

/// A call a server received, on its way through the interceptors to its
/// handler.
pub struct ServerCall {
    pub(crate) rpc: Arc<str>,
    pub(crate) metadata: Metadata,
    pub(crate) peer: Option<Arc<Peer>>,
    pub(crate) deadline: Option<Instant>,
    pub(crate) trace: Option<Arc<TraceContext>>,
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) handler: Handler,
    pub(crate) observers: Arc<Mutex<Vec<Arc<dyn MessageObserver>>>>,
    pub(crate) started: Instant,
    /// The rest of the chain, while a tower service holds the call.
    pub(crate) next: Option<Next>,
}

impl ServerCall {
    pub fn rpc(&self) -> &str {
        &self.rpc
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata the handler (and later interceptors) will see.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// Who is calling: address and TLS identity, when known.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_deref()
    }

    /// The deadline the client sent (capped by the server's options).
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The server span context of the call, when the client sent one.
    pub fn trace(&self) -> Option<&TraceContext> {
        self.trace.as_deref()
    }

    pub fn stream_id(&self) -> u64 {
        self.shared.id
    }

    pub fn connection_id(&self) -> u64 {
        self.shared.conn.id
    }

    /// Time since the call's invoke arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Messages and bytes so far.
    pub fn stats(&self) -> StreamStats {
        self.shared.stats()
    }

    /// Adds an observer of the call's messages and end.
    pub fn observe(&mut self, observer: impl MessageObserver) {
        self.observers.lock().unwrap().push(Arc::new(observer));
    }
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("rpc", &self.rpc)
            .field("stream_id", &self.shared.id)
            .field("metadata", &self.metadata)
            .field("peer", &self.peer)
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// Runs around every call a server handles. Call `next.run(call)` to go on
/// to the next interceptor and finally the handler; its result is the
/// call's outcome (`Ok`: the handler succeeded). Return an error without
/// calling it to reject the call: the client receives that status.
pub trait ServerInterceptor: Send + Sync + 'static {
    fn intercept<'a>(&'a self, call: ServerCall, next: Next) -> BoxFuture<'a, Result<(), Status>>;
}

/// The rest of a server's chain, after the interceptor it is given to.
pub struct Next {
    chain: Arc<[Arc<dyn ServerInterceptor>]>,
    index: usize,
}

impl Next {
    pub(crate) fn start(chain: Arc<[Arc<dyn ServerInterceptor>]>) -> Next {
        Next { chain, index: 0 }
    }

    /// Runs the rest of the chain and the handler.
    pub fn run(self, call: ServerCall) -> BoxFuture<'static, Result<(), Status>> {
        Box::pin(async move {
            match self.chain.get(self.index).cloned() {
                Some(interceptor) => {
                    let next = Next {
                        chain: self.chain.clone(),
                        index: self.index + 1,
                    };
                    interceptor.intercept(call, next).await
                }
                None => dispatch(call).await,
            }
        })
    }
}

impl std::fmt::Debug for Next {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next")
            .field("remaining", &(self.chain.len() - self.index))
            .finish()
    }
}

/// The end of a server's chain: the handler, with the metadata and
/// observers the interceptors left.
pub(crate) async fn dispatch(call: ServerCall) -> Result<(), Status> {
    let observers: Option<Observers> = {
        let list = call.observers.lock().unwrap();
        (!list.is_empty()).then(|| list.iter().cloned().collect())
    };
    let ctx = CallContext {
        shared: call.shared,
        rpc: call.rpc,
        metadata: Arc::new(call.metadata),
        peer: call.peer,
        deadline: call.deadline,
        trace: call.trace,
        observers,
    };
    run_handler_body(call.handler, ctx).await
}

/// Receives a unary request, runs the handler and sends its response; or
/// hands a streaming handler its stream.
pub(crate) async fn run_handler_body(handler: Handler, ctx: CallContext) -> Result<(), Status> {
    match handler {
        Handler::Unary(f) => {
            let data = match ctx.recv().await? {
                Some(data) => data,
                None => {
                    return Err(Status::invalid_argument(
                        "unary call without a request message",
                    ))
                }
            };
            let response = f(Request {
                data,
                context: ctx.clone(),
            })
            .await?;
            ctx.send_last(&response).await
        }
        Handler::Stream(f) => {
            f(Stream {
                ctx,
                keep_alive: None,
                watchdog: None,
            })
            .await
        }
    }
}

/// The service at the inner end of a tower layer in a server's chain: it
/// runs the rest of the chain (later interceptors and the handler). Layers
/// given to [`Router::layer`](crate::Router::layer) wrap it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dispatch;

impl tower_service::Service<ServerCall> for Dispatch {
    type Response = ();
    type Error = Status;
    type Future = BoxFuture<'static, Result<(), Status>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut call: ServerCall) -> Self::Future {
        match call.next.take() {
            Some(next) => next.run(call),
            None => Box::pin(dispatch(call)),
        }
    }
}

/// A tower service (a layer around [`Dispatch`]) as a link of the chain.
pub(crate) struct TowerInterceptor<S> {
    service: S,
}

impl<S> TowerInterceptor<S> {
    pub(crate) fn new(service: S) -> TowerInterceptor<S> {
        TowerInterceptor { service }
    }
}

impl<S> ServerInterceptor for TowerInterceptor<S>
where
    S: tower_service::Service<ServerCall, Response = ()> + Clone + Send + Sync + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send,
{
    fn intercept<'a>(&'a self, mut call: ServerCall, next: Next) -> BoxFuture<'a, Result<(), Status>> {
        call.next = Some(next);
        // Each call drives its own clone: tower services are readied and
        // called on the same instance (a concurrency limit's permit).
        let mut service = self.service.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| service.poll_ready(cx))
                .await
                .map_err(tower_status)?;
            service.call(call).await.map_err(tower_status)
        })
    }
}

/// The status of a tower middleware's error: a [`Status`] as is; tower's
/// timeout as DeadlineExceeded and its load shedding as Unavailable (they
/// are matched by message, so drpc-core needs no dependency on `tower`);
/// anything else as Unknown.
fn tower_status(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Status {
    let error = error.into();
    match error.downcast::<Status>() {
        Ok(status) => *status,
        Err(error) => {
            let message = error.to_string();
            let code = match message.as_str() {
                "request timed out" => Code::DeadlineExceeded,
                "service overloaded" => Code::Unavailable,
                _ => Code::Unknown,
            };
            Status::new(code, message)
        }
    }
}

// ---------------------------------------------------------------- client

/// A call a client is making, on its way through the interceptors.
pub struct ClientCall {
    pub(crate) rpc: Arc<str>,
    /// The call's options: metadata, deadline, cancel token, trace. An
    /// interceptor may change any of them.
    pub options: CallOptions,
    /// The request of a unary call; `None` for a streaming call.
    pub(crate) request: Option<Bytes>,
    pub(crate) observers: Vec<Arc<dyn MessageObserver>>,
}

impl ClientCall {
    pub fn rpc(&self) -> &str {
        &self.rpc
    }

    pub fn metadata(&self) -> &Metadata {
        &self.options.metadata
    }

    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.options.metadata
    }

    /// Whether this is a unary call (else a stream is being opened).
    pub fn is_unary(&self) -> bool {
        self.request.is_some()
    }

    /// The unary request message, which an interceptor may replace.
    pub fn request_mut(&mut self) -> Option<&mut Bytes> {
        self.request.as_mut()
    }

    /// Adds an observer of the call's messages and end.
    pub fn observe(&mut self, observer: impl MessageObserver) {
        self.observers.push(Arc::new(observer));
    }
}

impl std::fmt::Debug for ClientCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCall")
            .field("rpc", &self.rpc)
            .field("unary", &self.is_unary())
            .field("options", &self.options)
            .finish()
    }
}

/// What a client call produced: a unary response or an open stream.
#[derive(Debug)]
pub enum Reply {
    Unary(Bytes),
    Stream(Stream),
}

/// Runs around every call a client makes (set in
/// [`ConnOptions::interceptors`](crate::ConnOptions::interceptors), so a
/// `Pool` and every connection it dials use them too). Call
/// `next.run(call)` to go on; return an error without calling it to fail
/// the call before anything is sent. For a stream, `next` returns once it
/// is open: see its end in [`MessageObserver::on_end`].
pub trait ClientInterceptor: Send + Sync + 'static {
    fn intercept<'a>(&'a self, call: ClientCall, next: ClientNext) -> BoxFuture<'a, Result<Reply, Status>>;
}

/// The rest of a client's chain, after the interceptor it is given to.
pub struct ClientNext {
    conn: Conn,
    index: usize,
}

impl ClientNext {
    pub(crate) fn start(conn: Conn) -> ClientNext {
        ClientNext { conn, index: 0 }
    }

    /// Runs the rest of the chain and the call itself.
    pub fn run(self, call: ClientCall) -> BoxFuture<'static, Result<Reply, Status>> {
        Box::pin(async move {
            let chain = self.conn.options().interceptors.list.clone();
            match chain.get(self.index) {
                Some(interceptor) => {
                    let next = ClientNext {
                        conn: self.conn.clone(),
                        index: self.index + 1,
                    };
                    interceptor.intercept(call, next).await
                }
                None => {
                    let observers: Option<Observers> =
                        (!call.observers.is_empty()).then(|| call.observers.into());
                    match call.request {
                        Some(request) => self
                            .conn
                            .unary_observed(&call.rpc, &request, &call.options, observers)
                            .await
                            .map(Reply::Unary),
                        None => self
                            .conn
                            .stream_observed(&call.rpc, &call.options, observers)
                            .await
                            .map(Reply::Stream),
                    }
                }
            }
        })
    }
}

impl std::fmt::Debug for ClientNext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNext").field("index", &self.index).finish()
    }
}

/// A client's interceptors, in order (the first added outermost).
#[derive(Clone, Default)]
pub struct ClientInterceptors {
    pub(crate) list: Arc<[Arc<dyn ClientInterceptor>]>,
}

impl ClientInterceptors {
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// These interceptors with `interceptor` added innermost.
    pub fn with(&self, interceptor: impl ClientInterceptor) -> ClientInterceptors {
        let mut list: Vec<Arc<dyn ClientInterceptor>> = self.list.to_vec();
        list.push(Arc::new(interceptor));
        ClientInterceptors { list: list.into() }
    }
}

impl std::fmt::Debug for ClientInterceptors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientInterceptors({})", self.list.len())
    }
}

/// An interceptor from a function that checks (and may change) a server
/// call before its handler runs: the simplest way to authenticate.
pub fn check<F>(f: F) -> Check<F>
where
    F: Fn(&mut ServerCall) -> Result<(), Status> + Send + Sync + 'static,
{
    Check(f)
}

/// See [`check`].
pub struct Check<F>(F);

impl<F> ServerInterceptor for Check<F>
where
    F: Fn(&mut ServerCall) -> Result<(), Status> + Send + Sync + 'static,
{
    fn intercept<'a>(&'a self, mut call: ServerCall, next: Next) -> BoxFuture<'a, Result<(), Status>> {
        match (self.0)(&mut call) {
            Ok(()) => next.run(call),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}

/// A client interceptor from a function that checks (and may change) a
/// call before it is sent: the simplest way to add credentials.
pub fn check_client<F>(f: F) -> CheckClient<F>
where
    F: Fn(&mut ClientCall) -> Result<(), Status> + Send + Sync + 'static,
{
    CheckClient(f)
}

/// See [`check_client`].
pub struct CheckClient<F>(F);

impl<F> ClientInterceptor for CheckClient<F>
where
    F: Fn(&mut ClientCall) -> Result<(), Status> + Send + Sync + 'static,
{
    fn intercept<'a>(&'a self, mut call: ClientCall, next: ClientNext) -> BoxFuture<'a, Result<Reply, Status>> {
        match (self.0)(&mut call) {
            Ok(()) => next.run(call),
            Err(status) => Box::pin(std::future::ready(Err(status))),
        }
    }
}
