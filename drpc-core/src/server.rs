//! The server: accepts connections on a listener (or serves any transport),
//! runs every RPC on its own task, turns handler errors and panics into Error
//! frames, and shuts down gracefully.

use crate::budget::{Account, MemoryBudget, CONNECTION_OVERHEAD, DEFAULT_MEMORY_BUDGET};
use crate::conn::{Acceptor, BoxRead, ConnOptions, ConnShared, Role};
use crate::metadata::Metadata;
use crate::peer::Peer;
use crate::router::{Handler, Router};
use crate::status::Status;
use crate::stream::{CallContext, StreamShared};
use crate::tasks::{CatchUnwind, TaskSet};
use crate::transport::{Listener, Socket};
use crate::writer::BoxWrite;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use crate::deadline::{parse_timeout, TIMEOUT_KEY};
use crate::metrics::{MetricsSnapshot, RpcMetrics, RpcStats, Totals};
use crate::trace::TraceContext;
use crate::context::Inherited;
use crate::interceptor::{run_handler_body, CallEnd, MessageObserver, Next, ServerCall, ServerInterceptor};
use crate::status::Code;
use crate::stream::record_end;
use tokio::time::Instant;
use tracing::Instrument;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerOptions {
    /// Settings of every connection; `conn.connection_buffer_budget` is each
    /// connection's share of `memory_budget`, and `conn.memory_budget` is
    /// ignored (the server makes one budget for all its connections).
    pub conn: ConnOptions,
    /// Bytes every connection together may hold (default
    /// [`DEFAULT_MEMORY_BUDGET`], 256 MiB; 0 means no limit). See
    /// [`MemoryBudget`] for what counts and what happens when it is full.
    pub memory_budget: usize,
    /// Longest deadline a client may set with `drpc-timeout`: a longer one
    /// is cut to it (a call that sends none keeps none). Default: no cap.
    pub max_deadline: Option<Duration>,
    /// Ignore the deadlines clients send: calls run without one.
    pub ignore_deadlines: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            conn: ConnOptions::default(),
            memory_budget: DEFAULT_MEMORY_BUDGET,
            max_deadline: None,
            ignore_deadlines: false,
        }
    }
}

/// A DRPC server. Cheap to clone; clones share connections and handlers.
#[derive(Clone)]
pub struct Server {
    inner: Arc<ServerInner>,
}

struct ServerInner {
    /// The router's handlers with each rpc's counters, looked up once per call.
    handlers_by_rpc: HashMap<String, (Handler, Arc<RpcMetrics>)>,
    interceptors: Arc<[Arc<dyn ServerInterceptor>]>,
    opts: ServerOptions,
    draining: AtomicBool,
    handlers: Arc<TaskSet>,
    conn_tasks: Arc<TaskSet>,
    accept_tasks: Arc<TaskSet>,
    conns: Mutex<Conns>,
    next_conn: AtomicU64,
    budget: MemoryBudget,
}

impl Server {
    pub fn new(router: Router) -> Server {
        Server::with_options(router, ServerOptions::default())
    }

    pub fn with_options(router: Router, mut opts: ServerOptions) -> Server {
        let budget = MemoryBudget::new(opts.memory_budget);
        opts.conn.memory_budget = Some(budget.clone());
        let handlers_by_rpc = router
            .handlers()
            .map(|(rpc, h)| (rpc.to_string(), (h.clone(), Arc::new(RpcMetrics::new(rpc)))))
            .collect();
        Server {
            inner: Arc::new(ServerInner {
                handlers_by_rpc,
                interceptors: router.interceptors().into(),
                opts,
                draining: AtomicBool::new(false),
                handlers: Arc::default(),
                conn_tasks: Arc::default(),
                accept_tasks: Arc::default(),
                conns: Mutex::default(),
                next_conn: AtomicU64::new(0),
                budget,
            }),
        }
    }

    /// Binds `addr` (`host:port`, port 0 allowed, or `unix:/path`) and serves it
    /// in the background. Returns the bound address.
    pub async fn listen(&self, addr: &str) -> std::io::Result<String> {
        let listener = Listener::bind(addr).await?;
        let local = listener.local_addr()?;
        self.serve(listener);
        Ok(local)
    }

    /// Serves a bound listener in the background until `shutdown`.
    pub fn serve(&self, listener: Listener) {
        let server = self.clone();
        self.inner.accept_tasks.spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((rd, wr, addr)) => {
                        if server.admits_connection() {
                            server.start_conn(rd, wr, Some(Arc::new(Peer { addr: Some(addr), tls: None })));
                        } else {
                            // Closing it at once is the clearest answer a peer can get.
                            tracing::warn!("memory budget exhausted: refusing a connection");
                        }
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    /// Serves a bound listener in the background until `shutdown`, passing
    /// every accepted connection through `handshake` first (TLS, a protocol
    /// switch, ...). Each handshake runs on its own task, so a stalled one
    /// never holds up accepting; it has `conn.handshake_timeout` to finish
    /// (then the connection is closed) and counts [`HANDSHAKE_OVERHEAD`]
    /// bytes against the memory budget while it runs, so connections are
    /// refused once the budget cannot take one more. The handshake returns
    /// the byte stream to run DRPC over and the peer (it may add TLS
    /// identity), `Ok(None)` when it handed the connection elsewhere, or an
    /// error (logged with the peer's address; the connection is dropped).
    pub fn serve_with<H, Fut, T>(&self, listener: Listener, handshake: H)
    where
        H: Fn(Socket, Peer) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = std::io::Result<Option<(T, Peer)>>> + Send + 'static,
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let server = self.clone();
        let handshake = Arc::new(handshake);
        self.inner.accept_tasks.spawn(async move {
            loop {
                match listener.accept_socket().await {
                    Ok((socket, addr)) => {
                        if !server.admits_connection() {
                            tracing::warn!("memory budget exhausted: refusing a connection");
                            continue;
                        }
                        let account = Account::new(server.inner.budget.clone(), HANDSHAKE_OVERHEAD);
                        account.charge(HANDSHAKE_OVERHEAD);
                        let peer = Peer { addr: Some(addr.clone()), tls: None };
                        let running = handshake(socket, peer);
                        let server = server.clone();
                        server.inner.accept_tasks.clone().spawn(async move {
                            let limit = server.inner.opts.conn.handshake_timeout;
                            let outcome = if limit.is_zero() {
                                Ok(running.await)
                            } else {
                                tokio::time::timeout(limit, running).await
                            };
                            drop(account);
                            match outcome {
                                Ok(Ok(Some((io, peer)))) => {
                                    if server.inner.draining.load(Ordering::SeqCst) {
                                        return;
                                    }
                                    let (rd, wr) = tokio::io::split(io);
                                    server.start_conn(Box::new(rd), Box::new(wr), Some(Arc::new(peer)));
                                }
                                Ok(Ok(None)) => {}
                                Ok(Err(e)) => tracing::info!(peer = %addr, error = %e, "handshake failed"),
                                Err(_) => {
                                    tracing::info!(peer = %addr, timeout = ?limit, "handshake timed out: closing")
                                }
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
    }

    /// Serves one connection over any transport; resolves when it closes.
    pub async fn serve_transport<T>(&self, io: T)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.serve_connection(io, Peer::default()).await
    }

    /// Serves one connection over any transport, whose calls see `peer` as
    /// their [`CallContext::peer`]; resolves when it closes.
    pub async fn serve_connection<T>(&self, io: T, peer: Peer)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (conn, id) = self.start_conn(Box::new(rd), Box::new(wr), Some(Arc::new(peer)));
        conn.closed().await;
        self.inner.forget_conn(id);
        conn.close(Status::unavailable("connection closed")).await;
    }

    /// Whether the budget has room for one more connection's fixed memory.
    fn admits_connection(&self) -> bool {
        let budget = &self.inner.budget;
        budget.used().saturating_add(2 * CONNECTION_OVERHEAD) <= budget.limit()
    }

    fn start_conn(&self, rd: BoxRead, wr: BoxWrite, peer: Option<Arc<Peer>>) -> (Arc<ConnShared>, u64) {
        let acceptor: Arc<dyn Acceptor> = Arc::new(ConnAcceptor {
            server: Arc::downgrade(&self.inner),
            peer,
        });
        let conn = ConnShared::start_split(
            rd,
            wr,
            Role::Server,
            self.inner.opts.conn.clone(),
            Some(acceptor),
        );
        let id = self.inner.next_conn.fetch_add(1, Ordering::Relaxed);
        self.inner.conns.lock().unwrap().live.insert(id, conn.clone());
        let inner = self.inner.clone();
        let watched = conn.clone();
        // Forget the connection once it closes, and wait for its tasks.
        self.inner.conn_tasks.spawn(async move {
            watched.closed().await;
            inner.forget_conn(id);
            watched
                .close(Status::unavailable("connection closed"))
                .await;
        });
        (conn, id)
    }

    /// RPC handlers running now.
    pub fn active_rpcs(&self) -> usize {
        self.inner.handlers.len()
    }

    /// Received message bytes not yet read by handlers, over all connections.
    pub fn buffered_bytes(&self) -> usize {
        self.inner
            .conns
            .lock()
            .unwrap()
            .live
            .values()
            .map(|c| c.buffered())
            .sum()
    }

    /// The memory budget shared by every connection of this server.
    pub fn memory_budget(&self) -> &MemoryBudget {
        &self.inner.budget
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.inner.conns.lock().unwrap().live.len()
    }

    /// The server's counters over every connection it served, open or
    /// closed, and per registered rpc its calls, failures and latencies.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut snapshot = {
            let conns = self.inner.conns.lock().unwrap();
            let mut totals = conns.closed.clone();
            let mut queued = 0;
            for conn in conns.live.values() {
                totals.add(&conn.metrics);
                queued += conn.writer.queued() as u64;
            }
            let mut snapshot = totals.snapshot();
            snapshot.queued_bytes = queued;
            snapshot.active_connections = conns.live.len() as u64;
            snapshot
        };
        snapshot.connections_opened = self.inner.next_conn.load(Ordering::Relaxed);
        let mut rpcs: Vec<RpcStats> = self
            .inner
            .handlers_by_rpc
            .iter()
            .map(|(rpc, (_, m))| m.stats(rpc))
            .collect();
        rpcs.sort_by(|a, b| a.rpc.cmp(&b.rpc));
        snapshot.rpcs = rpcs;
        snapshot
    }

    /// Stops accepting connections and new RPCs, lets in-flight RPCs finish
    /// for up to `grace`, then cancels the rest and closes every connection.
    /// Returns within `grace` + 1 s whatever the peers do, normally once
    /// every task the server started has ended.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        let hard_deadline = tokio::time::Instant::now() + grace + Duration::from_millis(900);
        inner.draining.store(true, Ordering::SeqCst);
        inner.accept_tasks.abort_all();
        let _ = tokio::time::timeout(Duration::from_millis(100), inner.accept_tasks.idle()).await;
        if tokio::time::timeout(grace, inner.handlers.idle())
            .await
            .is_err()
        {
            tracing::info!(
                remaining = inner.handlers.len(),
                "grace period over, canceling RPCs"
            );
            self.close_all(Status::unavailable("server shut down"))
                .await;
            // Handlers have seen Canceled; give them a moment, then stop them.
            if tokio::time::timeout(Duration::from_millis(300), inner.handlers.idle())
                .await
                .is_err()
            {
                inner.handlers.abort_all();
            }
        }
        let rest = async {
            inner.handlers.idle().await;
            self.close_all(Status::unavailable("server shut down"))
                .await;
            inner.conn_tasks.idle().await;
        };
        if tokio::time::timeout_at(hard_deadline, rest).await.is_err() {
            tracing::warn!(
                handlers = inner.handlers.len(),
                connections = self.connections(),
                "shutdown: tasks still ending after the grace period; returning"
            );
            inner.handlers.abort_all();
            inner.conn_tasks.abort_all();
        }
    }

    /// Flushes every connection at once (200 ms at most), then closes them all.
    async fn close_all(&self, status: Status) {
        let conns: Vec<Arc<ConnShared>> =
            self.inner.conns.lock().unwrap().live.values().cloned().collect();
        let mut closing = tokio::task::JoinSet::new();
        for conn in conns {
            let status = status.clone();
            closing.spawn(async move {
                conn.flush(Duration::from_millis(200)).await;
                conn.close(status).await;
            });
        }
        while closing.join_next().await.is_some() {}
    }
}

/// The server's open connections, and the counters of those that closed.
#[derive(Default)]
struct Conns {
    live: HashMap<u64, Arc<ConnShared>>,
    closed: Totals,
}

impl ServerInner {
    /// Drops a closed connection, keeping its counters in the totals (under
    /// the same lock, so a snapshot sees it exactly once).
    fn forget_conn(&self, id: u64) {
        let mut conns = self.conns.lock().unwrap();
        if let Some(conn) = conns.live.remove(&id) {
            conns.closed.add(&conn.metrics);
        }
    }
}

/// Memory a TLS (or other) handshake in progress is counted as holding.
pub const HANDSHAKE_OVERHEAD: usize = 32 << 10;

struct ConnAcceptor {
    server: std::sync::Weak<ServerInner>,
    peer: Option<Arc<Peer>>,
}

impl Acceptor for ConnAcceptor {
    fn accepting(&self) -> bool {
        self.server
            .upgrade()
            .is_some_and(|s| !s.draining.load(Ordering::SeqCst))
    }

    fn accept(&self, stream: Arc<StreamShared>, rpc: String, metadata: Metadata) {
        let Some(server) = self.server.upgrade() else {
            return;
        };
        let Some((handler, rpc_metrics)) = server.handlers_by_rpc.get(&rpc) else {
            stream.refuse(&Status::unimplemented(format!(
                "unknown rpc: {}",
                shorten(&rpc, 256)
            )));
            return;
        };
        let started = Instant::now();
        let deadline = self.deadline(&server.opts, &rpc, &metadata, started);
        let trace = TraceContext::from_metadata(&metadata).map(|incoming| Arc::new(incoming.child()));
        let accepted = Accepted {
            handler: handler.clone(),
            shared: stream,
            rpc: rpc.into(),
            metadata,
            peer: self.peer.clone(),
            deadline,
            trace,
            started,
        };
        server.handlers.spawn(run_handler(
            accepted,
            server.interceptors.clone(),
            rpc_metrics.clone(),
        ));
    }

    fn peer_addr(&self) -> Option<&str> {
        self.peer.as_ref().and_then(|p| p.addr.as_deref())
    }
}

impl ConnAcceptor {
    /// The call's deadline from the `drpc-timeout` the client sent, capped
    /// by the server's `max_deadline`; none if it sent none (storj.io/drpc
    /// clients), sent an invalid one, or the server ignores them.
    fn deadline(
        &self,
        opts: &ServerOptions,
        rpc: &str,
        metadata: &Metadata,
        now: Instant,
    ) -> Option<Instant> {
        if opts.ignore_deadlines {
            return None;
        }
        let value = metadata.get(TIMEOUT_KEY)?;
        let Some(mut timeout) = parse_timeout(value) else {
            tracing::warn!(
                peer = self.peer_addr().unwrap_or("-"),
                rpc = %shorten(rpc, 256),
                value = %shorten(value, 64),
                "ignoring an invalid drpc-timeout"
            );
            return None;
        };
        if let Some(cap) = opts.max_deadline {
            timeout = timeout.min(cap);
        }
        // Too far to represent is as good as none.
        now.checked_add(timeout)
    }

}

/// The observers interceptors add to a call, kept for its end.
type SharedObservers = Arc<Mutex<Vec<Arc<dyn MessageObserver>>>>;

/// A call the server accepted, before its handler runs.
struct Accepted {
    handler: Handler,
    shared: Arc<StreamShared>,
    rpc: Arc<str>,
    metadata: Metadata,
    peer: Option<Arc<Peer>>,
    deadline: Option<Instant>,
    trace: Option<Arc<TraceContext>>,
    started: Instant,
}

async fn run_handler(
    call: Accepted,
    interceptors: Arc<[Arc<dyn ServerInterceptor>]>,
    rpc_metrics: Arc<RpcMetrics>,
) {
    let shared = call.shared.clone();
    let rpc = call.rpc.clone();
    let peer = call.peer.clone();
    let peer = peer.as_ref().and_then(|p| p.addr.as_deref()).unwrap_or("-");
    let (deadline, started) = (call.deadline, call.started);
    let span = tracing::info_span!(
        "drpc.server",
        rpc = %rpc,
        peer,
        stream_id = shared.id,
        conn_id = shared.conn.id,
        trace_id = tracing::field::Empty,
        code = tracing::field::Empty,
        duration_us = tracing::field::Empty,
        messages_sent = tracing::field::Empty,
        messages_received = tracing::field::Empty,
        bytes_sent = tracing::field::Empty,
        bytes_received = tracing::field::Empty,
        error = tracing::field::Empty,
    );
    if let Some(trace) = call.trace.as_deref().filter(|_| !span.is_disabled()) {
        span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
    }
    // Calls the handler makes inherit its deadline and trace; a call with
    // neither runs without the task-local.
    let inherited = (deadline.is_some() || call.trace.is_some()).then(|| Inherited {
        deadline,
        trace: call.trace.as_deref().cloned(),
    });
    let observers: Option<SharedObservers> = (!interceptors.is_empty()).then(Arc::default);
    let body = match &observers {
        None => {
            let ctx = CallContext {
                shared: call.shared,
                rpc: call.rpc,
                metadata: Arc::new(call.metadata),
                peer: call.peer,
                deadline,
                trace: call.trace,
                observers: None,
            };
            in_call(run_handler_body(call.handler, ctx), inherited, &span)
        }
        Some(observers) => {
            let call = ServerCall {
                rpc: call.rpc,
                metadata: call.metadata,
                peer: call.peer,
                deadline,
                trace: call.trace,
                shared: call.shared,
                handler: call.handler,
                observers: observers.clone(),
                started,
                next: None,
            };
            in_call(Next::start(interceptors).run(call), inherited, &span)
        }
    };
    let body = CatchUnwind(body);
    let outcome = match deadline {
        None => body.await,
        // Boxed: the timer would otherwise enlarge every call's task.
        Some(deadline) => Box::pin(under_deadline(body, deadline, shared.clone())).await,
    };
    let shared = &shared;
    let status = match outcome {
        // CloseSend and the end in one step.
        Ok(Ok(())) => shared.finish_ok(),
        Ok(Err(status)) if shared.is_finished() => {
            // The call was already over (cancelled, deadline passed): the
            // error is the handler seeing that, not news for the client.
            tracing::debug!(%rpc, peer, %status, "handler ended after its call did");
            shared.failure().or(Some(status))
        }
        Ok(Err(status)) => {
            tracing::error!(%rpc, peer, code = status.code().as_u64(), %status, "handler returned an error");
            shared.send_error(&status);
            Some(status)
        }
        Err(panic) => {
            tracing::error!(%rpc, peer, panic = %panic, "handler panicked");
            let status = Status::internal(format!("handler panicked: {panic}"));
            shared.send_error(&status);
            Some(status)
        }
    };
    // The handler is done (every branch above finished the stream);
    // whatever the client still sends is dropped.
    let duration = started.elapsed();
    rpc_metrics.record(duration, status.is_some());
    let observers = observers.map(|o| std::mem::take(&mut *o.lock().unwrap()));
    if !span.is_disabled() || observers.as_ref().is_some_and(|o| !o.is_empty()) {
        let end = CallEnd {
            rpc,
            code: status.as_ref().map_or(Code::Ok, Status::code),
            status,
            duration,
            stats: shared.stats(),
        };
        record_end(&span, &end);
        for o in observers.iter().flatten() {
            o.on_end(&end);
        }
    }
}

/// Runs a handler until it ends; if `deadline` passes first, fails its
/// stream like a client's cancel (the handler's receives and sends fail,
/// `cancelled()` fires, the client gets DeadlineExceeded) and lets it end on
/// its own.
async fn under_deadline<F: Future>(body: F, deadline: Instant, shared: Arc<StreamShared>) -> F::Output {
    tokio::pin!(body);
    tokio::select! {
        biased;
        outcome = &mut body => outcome,
        _ = tokio::time::sleep_until(deadline) => {
            shared.fail(Status::deadline_exceeded("deadline exceeded (server)"));
            body.await
        }
    }
}

/// The call's future with what it needs around it: the context its
/// outgoing calls inherit (when there is one) and its span.
fn in_call<F>(
    body: F,
    inherited: Option<Inherited>,
    span: &tracing::Span,
) -> Pin<Box<dyn Future<Output = Result<(), Status>> + Send>>
where
    F: Future<Output = Result<(), Status>> + Send + 'static,
{
    // A disabled span (no subscriber wants it) is left out of the polls.
    match (inherited, span.is_disabled()) {
        (Some(inherited), false) => Box::pin(crate::context::scope(inherited, body).instrument(span.clone())),
        (Some(inherited), true) => Box::pin(crate::context::scope(inherited, body)),
        (None, false) => Box::pin(body.instrument(span.clone())),
        (None, true) => Box::pin(body),
    }
}

/// At most `max` bytes of `s` (cut at a character boundary), marked if cut:
/// error messages name what the peer sent without echoing all of it.
fn shorten(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &s[..end], s.len()).into()
}

