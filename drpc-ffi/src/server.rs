//! Server side: a server with C handlers, blocking (on the handler pool)
//! or non-blocking (on the runtime, answering later).

use crate::intercept::{
    drpc_direction, drpc_interceptor, interceptor_arg, server_outcome_code, with_inherited, CallInfoObj, Chain,
    Inherited, Intercepted, Interceptor,
};
use crate::runtime::{handler_pool, in_handler, is_in_handler, JobKind};
use crate::stream::{wait_cancelled, Role, StreamObj};
use crate::*;
use drpc_core::{CallContext, Request, Router, Server, ServerOptions, Status, Stream};
use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

/// A blocking unary handler: called with the handler's `userdata`, the call
/// (valid only until the handler returns) and the request bytes (owned by
/// the call, same lifetime; NULL-safe to read when `request_len` is 0).
///
/// Runs on a thread of the library's handler pool, one thread per running
/// handler, so it may block, sleep and call any drpc function (including
/// blocking client calls). When no pool thread is free the call is refused
/// with `DRPC_RESOURCE_EXHAUSTED` without running the handler (see
/// `drpc_runtime_configure`). It answers by calling
/// `drpc_server_call_respond` (success) or `drpc_server_call_fail` (an error
/// with any code and message) and returns a `drpc_status` value:
///
/// * `DRPC_OK` with a response: the client gets the response;
/// * after `drpc_server_call_fail`: the client gets that error, whatever
///   is returned;
/// * a gRPC code 1..=16 without `fail`: the client gets that code;
/// * `DRPC_OK` with no response, or any other value: the client gets
///   `DRPC_INTERNAL` ("failing handler").
///
/// C++ exceptions must not escape a handler.
pub type drpc_unary_handler = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        call: *mut drpc_server_call,
        request: *const u8,
        request_len: usize,
    ) -> u32,
>;

/// A blocking streaming handler (client-, server- or bidi-streaming): called
/// with the handler's `userdata` and the call's stream, which it uses with
/// `drpc_stream_recv` / `drpc_stream_send` / ... The stream is owned by the
/// library and valid until the handler returns (`drpc_stream_free` on it is a
/// no-op).
///
/// Runs on a handler-pool thread, like a blocking unary handler; streaming
/// handlers may hold at most three quarters of the pool, so long-lived
/// streams cannot starve unary calls (for many long-lived streams prefer
/// `drpc_server_register_stream_async`, which holds no thread).
/// Returning `DRPC_OK` ends the call cleanly (CloseSend); after
/// `drpc_stream_fail` the call ends with that error; a gRPC code 1..=16 ends
/// it with that code; any other value with `DRPC_INTERNAL`.
pub type drpc_stream_handler =
    Option<unsafe extern "C" fn(userdata: *mut c_void, stream: *mut drpc_stream) -> u32>;

/// A non-blocking unary handler (`drpc_server_register_unary_async`):
/// called on a runtime worker thread with the handler's `userdata`, the call
/// and the request bytes (owned by the call, valid until it is freed). It
/// must return quickly and must not block (blocking drpc functions return
/// `DRPC_FAILED_PRECONDITION` there). The call handle belongs to the
/// application: it answers, now or later and from any thread, with
/// `drpc_server_call_respond` or `drpc_server_call_fail` (sent at once),
/// and releases it with `drpc_server_call_free`.
pub type drpc_unary_async_handler = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        call: *mut drpc_server_call,
        request: *const u8,
        request_len: usize,
    ),
>;

/// A non-blocking streaming handler (`drpc_server_register_stream_async`):
/// called on a runtime worker thread with the handler's `userdata` and the
/// call's stream; it must return quickly and must not block. The stream
/// handle belongs to the application, which drives it with the
/// non-blocking functions (`drpc_stream_recv_async`,
/// `drpc_stream_send_async`, `drpc_stream_recv_timeout` with 0, ...) from
/// callbacks or any thread, ends the call with `drpc_stream_finish` and
/// releases the handle with `drpc_stream_free`. An idle stream holds no
/// thread.
pub type drpc_stream_async_handler =
    Option<unsafe extern "C" fn(userdata: *mut c_void, stream: *mut drpc_stream)>;

/// The call a unary handler answers. For a blocking handler it is owned by
/// the library and valid only while the handler runs; for a non-blocking
/// handler it is owned by the application (`drpc_server_call_free`). Its
/// functions are thread-safe.
pub struct drpc_server_call {
    _opaque: [u8; 0],
}

pub(crate) struct ServerCallObj {
    ctx: CallContext,
    rpc: CString,
    metadata: MetadataView,
    request: bytes::Bytes,
    answer: Mutex<Answer>,
    peer: crate::tls::PeerSlot,
    /// The call's deadline and trace context, as strings for C.
    traceparent: Option<CString>,
}

/// How a call is answered.
enum Answer {
    /// Blocking handler: the answer is recorded and sent when it returns.
    Recorded(Option<Result<bytes::Bytes, Status>>),
    /// Non-blocking handler: the answer is sent at once (`None` once sent).
    Send(Option<oneshot::Sender<Result<bytes::Bytes, Status>>>),
}

impl HandleType for ServerCallObj {
    type C = drpc_server_call;
    const NAME: &'static str = "drpc_server_call";
}

impl ServerCallObj {
    /// `metadata`: what the interceptors left, if any ran.
    fn new(req: Request, answer: Answer, metadata: Option<&drpc_core::Metadata>) -> ServerCallObj {
        ServerCallObj {
            rpc: cstring_lossy(req.context.rpc()),
            metadata: MetadataView::new(metadata.unwrap_or(req.context.metadata())),
            traceparent: crate::intercept::server_trace(&req.context).map(|t| cstring_lossy(&t.to_traceparent())),
            ctx: req.context,
            request: req.data,
            answer: Mutex::new(answer),
            peer: Default::default(),
        }
    }

    pub(crate) fn peer_view(&self) -> &crate::tls::PeerView {
        self.peer.view(self.ctx.peer())
    }

    fn answer(&self, result: Result<bytes::Bytes, Status>) -> Res<()> {
        let mut answer = self.answer.lock().unwrap_or_else(|e| e.into_inner());
        let already = || {
            Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "the call was already answered",
            ))
        };
        match &mut *answer {
            Answer::Recorded(Some(_)) => already(),
            Answer::Recorded(slot) => {
                *slot = Some(result);
                Ok(())
            }
            Answer::Send(tx) => match tx.take() {
                Some(tx) => {
                    let _ = tx.send(result);
                    Ok(())
                }
                None => already(),
            },
        }
    }
}

#[derive(Clone, Copy)]
struct UserData(*mut c_void);
// SAFETY: the C caller promises userdata may be used from handler threads.
unsafe impl Send for UserData {}
unsafe impl Sync for UserData {}

/// Counts C handler invocations started or queued, so shutdown can wait
/// until no C code of the server runs any more.
#[derive(Default)]
struct Tracker {
    running: Mutex<usize>,
    idle: Condvar,
    /// The server's interceptors, frozen when it starts serving.
    chain: OnceLock<Chain>,
}

struct Running(Arc<Tracker>);

impl Running {
    fn new(t: &Arc<Tracker>) -> Running {
        *t.running.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        Running(t.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut n = self.0.running.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl Tracker {
    /// The interceptor chain (empty before the server started).
    fn chain(&self) -> Option<&Chain> {
        self.chain.get().filter(|c| !c.is_empty())
    }

    fn wait_idle(&self) {
        let n = self.running.lock().unwrap_or_else(|e| e.into_inner());
        drop(
            self.idle
                .wait_while(n, |n| *n > 0)
                .unwrap_or_else(|e| e.into_inner()),
        );
    }
}

/// A DRPC server with C handlers. Thread-safe. Released with
/// `drpc_server_free`.
pub struct drpc_server {
    _opaque: [u8; 0],
}

pub(crate) struct ServerObj {
    state: Mutex<ServerState>,
    tracker: Arc<Tracker>,
}

impl HandleType for ServerObj {
    type C = drpc_server;
    const NAME: &'static str = "drpc_server";
}

struct ServerState {
    router: Router,
    names: HashSet<String>,
    opts: ServerOptions,
    server: Option<Server>,
    shut_down: bool,
    /// The acceptors of the TLS addresses, for `drpc_server_reload_tls`.
    tls: Vec<drpc_tls::TlsAcceptor>,
    /// Interceptors added so far (frozen into the tracker's chain on start).
    interceptors: Vec<Interceptor>,
    /// The metrics when the server was shut down.
    final_metrics: Option<drpc_core::metrics::MetricsSnapshot>,
}

impl ServerObj {
    /// The running server, started with the registered handlers on first use.
    pub(crate) fn started(&self) -> Res<Server> {
        let mut st = lock(self);
        if st.shut_down {
            return Err(Fail::code(drpc_core::Code::FailedPrecondition, "the server was shut down"));
        }
        if st.server.is_none() {
            let chain: Chain = std::mem::take(&mut st.interceptors).into();
            let _ = self.tracker.chain.set(chain);
            let router = std::mem::take(&mut st.router);
            let _rt = runtime().enter();
            st.server = Some(Server::with_options(router, st.opts.clone()));
        }
        Ok(st.server.clone().expect("just set"))
    }

    /// The server's metrics now (zero before it started, final after it
    /// was shut down).
    pub(crate) fn metrics(&self) -> drpc_core::metrics::MetricsSnapshot {
        let st = lock(self);
        match (&st.server, &st.final_metrics) {
            (Some(srv), _) => srv.metrics(),
            (None, Some(m)) => m.clone(),
            (None, None) => Default::default(),
        }
    }

    pub(crate) fn add_tls_acceptor(&self, acceptor: drpc_tls::TlsAcceptor) {
        lock(self).tls.push(acceptor);
    }

    pub(crate) fn tls_acceptors(&self) -> Vec<drpc_tls::TlsAcceptor> {
        lock(self).tls.clone()
    }
}

/// A new server with no handlers (an rpc nobody registered is answered
/// with `DRPC_UNIMPLEMENTED`). Never returns NULL. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_new() -> *mut drpc_server {
    guard(std::ptr::null_mut(), || {
        new_handle(Arc::new(ServerObj {
            state: Mutex::new(ServerState {
                router: Router::new(),
                names: HashSet::new(),
                opts: ServerOptions {
                    ..Default::default()
                },
                server: None,
                shut_down: false,
                tls: Vec::new(),
                interceptors: Vec::new(),
                final_metrics: None,
            }),
            tracker: Arc::default(),
        }))
    })
}

fn lock(s: &ServerObj) -> std::sync::MutexGuard<'_, ServerState> {
    s.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Changes the connection options of a server that is not listening yet.
fn set_option(
    server: *const drpc_server,
    f: impl FnOnce(&mut drpc_core::ConnOptions) -> Res<()>,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = get::<ServerObj>(server, "server")?;
        let mut st = lock(&s);
        // Bad values are reported as such, whatever the state.
        let mut conn = st.opts.conn.clone();
        f(&mut conn)?;
        if st.server.is_some() || st.shut_down {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "the server is already listening",
            ));
        }
        st.opts.conn = conn;
        Ok(drpc_status::DRPC_OK)
    })
}

/// The largest message the server accepts or sends on each connection
/// (> 0; default 4 MiB). Only before the first `drpc_server_listen`
/// (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_max_message_size(
    server: *const drpc_server,
    size: usize,
) -> drpc_status {
    set_option(server, |o| {
        if size == 0 {
            return Err(Fail::bad("max message size is 0"));
        }
        o.max_message_size = size;
        Ok(())
    })
}

/// Per-stream flow control on every connection the server accepts (see
/// `drpc_conn_options_set_flow_control`): `true` turns it on with the
/// window set by `drpc_server_set_flow_control_window`, else the default
/// (2 MiB window, 512 KiB grant threshold); `false` turns it off. Default:
/// off. It is not negotiated, so all clients must have it on as well (and
/// `storj.io/drpc` clients cannot). Only before the first
/// `drpc_server_listen` (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_flow_control(
    server: *const drpc_server,
    enabled: bool,
) -> drpc_status {
    set_option(server, |o| {
        if !enabled {
            o.flow_control = None;
        } else if o.flow_control.is_none() {
            o.flow_control = Some(drpc_core::FlowControl::default());
        }
        Ok(())
    })
}

/// Turns flow control on (see `drpc_server_set_flow_control`) with a stream
/// window of `window` bytes (1..=2^48) and a grant threshold of
/// `grant_threshold` bytes (1..=`window`), as
/// `drpc_conn_options_set_flow_control_window`. Out-of-range values are
/// `DRPC_BAD_ARGUMENT`. Only before the first `drpc_server_listen`
/// (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_flow_control_window(
    server: *const drpc_server,
    window: u64,
    grant_threshold: u64,
) -> drpc_status {
    set_option(server, |o| {
        o.flow_control = Some(flow_control(window, grant_threshold)?);
        Ok(())
    })
}

/// The most streams (unary calls included) a client may have open at once
/// on one connection (> 0; default 10000). A call beyond it is refused at
/// once with `DRPC_UNAVAILABLE` (retryable), without running a handler; the
/// connection stays usable. Only before the first `drpc_server_listen`
/// (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_max_concurrent_streams(
    server: *const drpc_server,
    max_streams: usize,
) -> drpc_status {
    set_option(server, |o| {
        if max_streams == 0 {
            return Err(Fail::bad("max concurrent streams is 0"));
        }
        o.max_concurrent_streams = max_streams;
        Ok(())
    })
}

/// The memory budget of the whole server, in bytes (0: no limit; default
/// 256 MiB): everything all its connections together may make it hold
/// (unread messages, packets being assembled, pending invokes and their
/// metadata, queued writes, read buffers, a fixed amount per connection and
/// per stream). When it is nearly full the server stops reading from the
/// connections holding the most (TCP back-pressure), refuses new streams
/// with `DRPC_RESOURCE_EXHAUSTED` and closes new connections at once; it
/// never grows past it. Only before the first `drpc_server_listen`
/// (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_memory_budget(server: *const drpc_server, bytes: usize) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = get::<ServerObj>(server, "server")?;
        let mut st = lock(&s);
        if st.server.is_some() || st.shut_down {
            return Err(Fail::code(drpc_core::Code::FailedPrecondition, "the server is already listening"));
        }
        st.opts.memory_budget = bytes;
        Ok(drpc_status::DRPC_OK)
    })
}

/// The most one connection may hold of the server's memory budget, in
/// bytes (> 0; default 64 MiB); past it the server stops reading that
/// connection until its handlers read. Only before the first
/// `drpc_server_listen` (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_connection_memory(server: *const drpc_server, bytes: usize) -> drpc_status {
    set_option(server, |o| {
        if bytes == 0 {
            return Err(Fail::bad("connection memory is 0"));
        }
        o.connection_buffer_budget = bytes;
        Ok(())
    })
}

/// Connection timeouts in milliseconds, 0 disabling each: a connection that
/// sends no complete frame within `handshake_ms` of being accepted (default
/// 10000), that holds no stream and sends nothing for `idle_ms` (default
/// 300000), or whose frame takes longer than `read_ms` from its first byte to
/// its last (default 30000) is closed. Only before the first
/// `drpc_server_listen` (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_timeouts(
    server: *const drpc_server,
    handshake_ms: u64,
    idle_ms: u64,
    read_ms: u64,
) -> drpc_status {
    set_option(server, |o| {
        o.handshake_timeout = std::time::Duration::from_millis(handshake_ms);
        o.idle_timeout = std::time::Duration::from_millis(idle_ms);
        o.read_timeout = std::time::Duration::from_millis(read_ms);
        Ok(())
    })
}

/// Adds an interceptor (copied; see `drpc_interceptor`) to the server's
/// chain: its `before` runs after those added earlier, its `after` before
/// theirs. The chain wraps every handler registered with the
/// `drpc_server_register_*` functions (not unregistered rpcs, which are
/// answered `DRPC_UNIMPLEMENTED` without interceptors). Only before the first
/// `drpc_server_listen`: once the server serves, the chain is fixed and this
/// returns `DRPC_FAILED_PRECONDITION` (so a chain never changes under a
/// call). A NULL interceptor, or one with no callback, is
/// `DRPC_BAD_ARGUMENT`. Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_add_interceptor(
    server: *const drpc_server,
    interceptor: *const drpc_interceptor,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = get::<ServerObj>(server, "server")?;
        let ic = interceptor_arg(interceptor)?;
        let mut st = lock(&s);
        if st.server.is_some() || st.shut_down {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "interceptors must be added before drpc_server_listen",
            ));
        }
        st.interceptors.push(ic);
        Ok(drpc_status::DRPC_OK)
    })
}

/// Changes the server options of a server that is not listening yet.
fn set_server_option(server: *const drpc_server, f: impl FnOnce(&mut ServerOptions)) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = get::<ServerObj>(server, "server")?;
        let mut st = lock(&s);
        if st.server.is_some() || st.shut_down {
            return Err(Fail::code(drpc_core::Code::FailedPrecondition, "the server is already listening"));
        }
        f(&mut st.opts);
        Ok(drpc_status::DRPC_OK)
    })
}

/// Caps the deadline a client may ask for (its `drpc-timeout` metadata) at
/// `max_ms` milliseconds: a call without a deadline still has none, a
/// longer one is shortened (0: no cap, the default). When a call's deadline
/// passes, its handler sees the call cancelled (`drpc_server_call_is_cancelled`,
/// `drpc_stream_recv` fails) and the client gets `DRPC_DEADLINE_EXCEEDED`.
/// Only before the first `drpc_server_listen` (`DRPC_FAILED_PRECONDITION`
/// after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_max_deadline(server: *const drpc_server, max_ms: u64) -> drpc_status {
    set_server_option(server, |o| {
        o.max_deadline = (max_ms > 0).then(|| millis(max_ms));
    })
}

/// `true`: the server ignores the deadlines clients send (calls have none
/// and are never cut short by them). Default false. Only before the first
/// `drpc_server_listen` (`DRPC_FAILED_PRECONDITION` after). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_set_ignore_deadlines(server: *const drpc_server, ignore: bool) -> drpc_status {
    set_server_option(server, |o| {
        o.ignore_deadlines = ignore;
    })
}

/// Registers `rpc` with handlers `add` puts on the router (services built
/// elsewhere, such as the health service in channel.rs).
pub(crate) fn register_with(
    server: *const drpc_server,
    rpc: *const c_char,
    err_out: *mut *mut drpc_error,
    add: impl FnOnce(Router) -> Router,
) -> drpc_status {
    register(server, rpc, err_out, |router, _, _| add(router))
}

fn register(
    server: *const drpc_server,
    rpc: *const c_char,
    err_out: *mut *mut drpc_error,
    add: impl FnOnce(Router, &str, &Arc<Tracker>) -> Router,
) -> drpc_status {
    ffi(err_out, || {
        let s = get::<ServerObj>(server, "server")?;
        // SAFETY: rpc per the contract.
        let rpc = unsafe { arg_str(rpc, "rpc")? };
        let mut st = lock(&s);
        if st.server.is_some() || st.shut_down {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "handlers must be registered before drpc_server_listen",
            ));
        }
        if !st.names.insert(rpc.to_string()) {
            return Err(Fail::code(
                drpc_core::Code::AlreadyExists,
                format!("rpc {rpc} is already registered"),
            ));
        }
        let router = std::mem::take(&mut st.router);
        st.router = add(router, rpc, &s.tracker);
        Ok(drpc_status::DRPC_OK)
    })
}

/// The status a handler's return value stands for when it did not answer.
fn returned_status(ret: u32) -> Status {
    use drpc_core::Code;
    match ret {
        1..=16 => {
            let code = Code::from_u64(ret as u64);
            Status::new(code, format!("handler returned {}", code.name()))
        }
        0 => Status::internal("handler returned DRPC_OK without a response"),
        other => Status::internal(format!("handler failed (returned {other})")),
    }
}

/// Runs `job` on the handler pool and waits for its result; a full pool
/// refuses the call with ResourceExhausted.
async fn on_pool<T: Send + 'static>(
    kind: JobKind,
    conn: u64,
    running: Running,
    job: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    let (tx, rx) = oneshot::channel();
    let spawned = handler_pool().spawn(
        kind,
        conn,
        Box::new(move || {
            let _running = running;
            let _ = tx.send(job());
        }),
    );
    if let Err(why) = spawned {
        return Err(Status::resource_exhausted(why));
    }
    rx.await
        .unwrap_or_else(|_| Err(Status::internal("the handler thread failed")))
}

/// Registers a blocking unary handler for `rpc` (e.g.
/// `"/pkg.Service/Method"`, copied); see `drpc_unary_handler`. `userdata`
/// is passed to every call of `handler` and must stay valid until
/// `drpc_server_shutdown` or `drpc_server_free` has returned. Only before the
/// first `drpc_server_listen`; registering an rpc twice (by any of the four
/// register functions) is `DRPC_ALREADY_EXISTS`. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_register_unary(
    server: *const drpc_server,
    rpc: *const c_char,
    handler: drpc_unary_handler,
    userdata: *mut c_void,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    let Some(handler) = handler else {
        return ffi(err_out, || Err(Fail::bad("handler is NULL")));
    };
    let userdata = UserData(userdata);
    register(server, rpc, err_out, move |router, rpc, tracker| {
        let tracker = tracker.clone();
        router.unary_raw(rpc, move |req: Request| {
            let running = Running::new(&tracker);
            let conn = req.context.connection_id();
            let tracker = tracker.clone();
            on_pool(JobKind::Unary, conn, running, move || run_unary(handler, userdata, req, &tracker))
        })
    })
}

type UnaryFn = unsafe extern "C" fn(*mut c_void, *mut drpc_server_call, *const u8, usize) -> u32;
type StreamFn = unsafe extern "C" fn(*mut c_void, *mut drpc_stream) -> u32;

/// Runs the server's interceptors' `before`s for a call (`None` without
/// interceptors).
fn intercept(tracker: &Tracker, ctx: &CallContext) -> Result<Option<Intercepted>, Status> {
    match tracker.chain() {
        None => Ok(None),
        Some(chain) => Intercepted::begin(chain, CallInfoObj::server(ctx, ctx.metadata())).map(Some),
    }
}

fn run_unary(handler: UnaryFn, userdata: UserData, req: Request, tracker: &Tracker) -> Result<bytes::Bytes, Status> {
    // Interceptors and handler alike run as the handler: marked, and with
    // its deadline and trace context passed on to the calls they make.
    in_handler(|| {
        with_inherited(Inherited::of(&req.context), || {
            let intercepted = intercept(tracker, &req.context)?;
            let metadata = intercepted.as_ref().map(|i| i.metadata());
            if let Some(i) = &intercepted {
                i.message(drpc_direction::DRPC_DIRECTION_RECEIVED, &req.data);
            }
            let ctx = req.context.clone();
            let result = call_unary(handler, userdata, req, metadata.as_ref());
            if let Some(i) = &intercepted {
                if let Ok(resp) = &result {
                    i.message(drpc_direction::DRPC_DIRECTION_SENT, resp);
                }
                i.finish(server_outcome_code(&ctx, result.as_ref().map(|_| ())));
            }
            result
        })
    })
}

fn call_unary(
    handler: UnaryFn,
    userdata: UserData,
    req: Request,
    metadata: Option<&drpc_core::Metadata>,
) -> Result<bytes::Bytes, Status> {
    let call = Arc::new(ServerCallObj::new(req, Answer::Recorded(None), metadata));
    let handle = new_handle(call.clone());
    let ud = userdata;
    let ret = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the C handler per its contract; the request lives in `call`.
        unsafe { handler(ud.0, handle, call.request.as_ptr(), call.request.len()) }
    }));
    handles::forget(handle);
    let answer = match &mut *call.answer.lock().unwrap_or_else(|e| e.into_inner()) {
        Answer::Recorded(answer) => answer.take(),
        Answer::Send(_) => None,
    };
    match (ret, answer) {
        (Err(_), _) => Err(Status::internal("handler panicked")),
        (_, Some(Err(status))) => Err(status),
        (Ok(0), Some(Ok(resp))) => Ok(resp),
        (Ok(ret), _) => Err(returned_status(ret)),
    }
}

/// Registers a blocking streaming handler for `rpc` (see
/// `drpc_stream_handler`), under the same rules as
/// `drpc_server_register_unary`.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_register_stream(
    server: *const drpc_server,
    rpc: *const c_char,
    handler: drpc_stream_handler,
    userdata: *mut c_void,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    let Some(handler) = handler else {
        return ffi(err_out, || Err(Fail::bad("handler is NULL")));
    };
    let userdata = UserData(userdata);
    register(server, rpc, err_out, move |router, rpc, tracker| {
        let tracker = tracker.clone();
        router.stream_raw(rpc, move |stream: Stream| {
            let running = Running::new(&tracker);
            let conn = stream.context().connection_id();
            let tracker = tracker.clone();
            on_pool(JobKind::Stream, conn, running, move || run_stream(handler, userdata, stream, &tracker))
        })
    })
}

fn run_stream(handler: StreamFn, userdata: UserData, stream: Stream, tracker: &Tracker) -> Result<(), Status> {
    in_handler(|| {
        with_inherited(Inherited::of(stream.context()), || {
            let intercepted = intercept(tracker, stream.context())?.map(Arc::new);
            let md = match &intercepted {
                Some(i) => i.metadata(),
                None => stream.context().metadata().clone(),
            };
            let ctx = stream.context().clone();
            let mut obj = StreamObj::new(stream, &md, Role::ServerBlocking, None);
            obj.intercepted = intercepted.clone();
            let result = call_stream(handler, userdata, Arc::new(obj));
            if let Some(i) = &intercepted {
                i.finish(server_outcome_code(&ctx, result.as_ref().map(|_| ())));
            }
            result
        })
    })
}

fn call_stream(handler: StreamFn, userdata: UserData, obj: Arc<StreamObj>) -> Result<(), Status> {
    let handle = new_handle(obj.clone());
    let ud = userdata;
    let ret = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the C handler per its contract.
        unsafe { handler(ud.0, handle) }
    }));
    handles::forget(handle);
    let failure = obj
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match (ret, failure) {
        (Err(_), _) => Err(Status::internal("handler panicked")),
        (_, Some(status)) => Err(status),
        (Ok(0), None) => Ok(()),
        (Ok(ret), None) => Err(returned_status(ret)),
    }
}

/// Registers a non-blocking unary handler for `rpc` (see
/// `drpc_unary_async_handler`): it runs on the runtime, holds no thread
/// while the answer is pending, and answers through its call handle
/// whenever it is ready. Same rules as `drpc_server_register_unary`
/// otherwise. A call released (`drpc_server_call_free`) without an answer
/// fails with `DRPC_INTERNAL`.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_register_unary_async(
    server: *const drpc_server,
    rpc: *const c_char,
    handler: drpc_unary_async_handler,
    userdata: *mut c_void,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    let Some(handler) = handler else {
        return ffi(err_out, || Err(Fail::bad("handler is NULL")));
    };
    let userdata = UserData(userdata);
    register(server, rpc, err_out, move |router, rpc, tracker| {
        let tracker = tracker.clone();
        router.unary_raw(rpc, move |req: Request| {
            let running = Running::new(&tracker);
            let ctx = req.context.clone();
            let inherited = Inherited::of(&ctx);
            let (tx, rx) = oneshot::channel();
            let ud = userdata;
            let tracker = tracker.clone();
            // Interceptors' `before`s and the handler run here, on the
            // runtime: marked non-blocking.
            let started: Result<Option<Intercepted>, Status> = without_blocking(|| {
                with_inherited(inherited, || {
                    let intercepted = intercept(&tracker, &ctx)?;
                    let metadata = intercepted.as_ref().map(|i| i.metadata());
                    let call = Arc::new(ServerCallObj::new(req, Answer::Send(Some(tx)), metadata.as_ref()));
                    if let Some(i) = &intercepted {
                        i.set_non_blocking();
                        i.message(drpc_direction::DRPC_DIRECTION_RECEIVED, &call.request);
                    }
                    let handle = new_handle(call.clone());
                    let ret = catch_unwind(AssertUnwindSafe(|| {
                        // SAFETY: the C handler per its contract; the request lives in `call`.
                        unsafe { handler(ud.0, handle, call.request.as_ptr(), call.request.len()) }
                    }));
                    if ret.is_err() {
                        let _ = call.answer(Err(Status::internal("handler panicked")));
                    }
                    Ok(intercepted)
                })
            });
            drop(running);
            async move {
                let intercepted = started?;
                let result = rx.await.unwrap_or_else(|_| {
                    Err(Status::internal(
                        "the handler released the call without answering",
                    ))
                });
                if let Some(i) = &intercepted {
                    if let Ok(resp) = &result {
                        i.message(drpc_direction::DRPC_DIRECTION_SENT, resp);
                    }
                    i.finish(server_outcome_code(&ctx, result.as_ref().map(|_| ())));
                }
                result
            }
        })
    })
}

/// Registers a non-blocking streaming handler for `rpc` (see
/// `drpc_stream_async_handler`): it runs on the runtime and the stream holds
/// no thread, so any number of long-lived streams (watches, subscriptions)
/// cost no threads and cannot delay other calls. The call ends when the
/// application calls `drpc_stream_finish` (or frees the stream unfinished:
/// `DRPC_INTERNAL`). Same rules as `drpc_server_register_unary` otherwise.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_register_stream_async(
    server: *const drpc_server,
    rpc: *const c_char,
    handler: drpc_stream_async_handler,
    userdata: *mut c_void,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    let Some(handler) = handler else {
        return ffi(err_out, || Err(Fail::bad("handler is NULL")));
    };
    let userdata = UserData(userdata);
    register(server, rpc, err_out, move |router, rpc, tracker| {
        let tracker = tracker.clone();
        router.stream_raw(rpc, move |stream: Stream| {
            let running = Running::new(&tracker);
            let ctx = stream.context().clone();
            let inherited = Inherited::of(&ctx);
            let (tx, rx) = oneshot::channel();
            let ud = userdata;
            let tracker = tracker.clone();
            let started: Result<Option<Arc<Intercepted>>, Status> = without_blocking(|| {
                with_inherited(inherited, || {
                    let intercepted = intercept(&tracker, &ctx)?.map(Arc::new);
                    let md = match &intercepted {
                        Some(i) => {
                            i.set_non_blocking();
                            i.metadata()
                        }
                        None => ctx.metadata().clone(),
                    };
                    let mut obj = StreamObj::new(stream, &md, Role::ServerAsync, Some(tx));
                    obj.intercepted = intercepted.clone();
                    let obj = Arc::new(obj);
                    let handle = new_handle(obj.clone());
                    let ret = catch_unwind(AssertUnwindSafe(|| {
                        // SAFETY: the C handler per its contract.
                        unsafe { handler(ud.0, handle) }
                    }));
                    if ret.is_err() {
                        let _ = obj.finish(Err(Status::internal("handler panicked")));
                    }
                    Ok(intercepted)
                })
            });
            drop(running);
            async move {
                let intercepted = started?;
                let result = rx.await.unwrap_or_else(|_| {
                    Err(Status::internal(
                        "the handler released the stream without finishing the call",
                    ))
                });
                if let Some(i) = &intercepted {
                    i.finish(server_outcome_code(&ctx, result.as_ref().map(|_| ())));
                }
                result
            }
        })
    })
}

/// Binds `addr` (`"host:port"`, port 0 picks a free port, or `"unix:/path"`)
/// and serves it in the background on the library's runtime. May be called
/// again for more addresses. If `bound_out` is non-NULL, `*bound_out` is set
/// to the bound address in the same form (e.g. `"127.0.0.1:40123"`), a new
/// string owned by the caller (`drpc_string_free`).
///
/// Blocks the calling thread briefly (bind only). After
/// `drpc_server_shutdown`: `DRPC_FAILED_PRECONDITION`. A bind failure is
/// `DRPC_UNAVAILABLE`.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_listen(
    server: *const drpc_server,
    addr: *const c_char,
    bound_out: *mut *mut c_char,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        if !bound_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *bound_out = std::ptr::null_mut() };
        }
        let s = get::<ServerObj>(server, "server")?;
        // SAFETY: addr per the contract.
        let addr = unsafe { arg_str(addr, "addr")? };
        check_may_block()?;
        let srv = s.started()?;
        let bound = block_on(srv.listen(addr))?.map_err(|e| {
            Fail::code(
                drpc_core::Code::Unavailable,
                format!("listening on {addr}: {e}"),
            )
        })?;
        if !bound_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *bound_out = cstring_lossy(&bound).into_raw() };
        }
        Ok(drpc_status::DRPC_OK)
    })
}

/// Handlers running right now (0 if `server` is NULL or not listening).
/// Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_active_rpcs(server: *const drpc_server) -> usize {
    guard(0, || {
        let Some(s) = try_get::<ServerObj>(server) else {
            return 0;
        };
        let active = lock(&s).server.as_ref().map_or(0, |srv| srv.active_rpcs());
        active
    })
}

fn shutdown(s: &ServerObj, grace: Duration) -> Res<()> {
    check_may_block()?;
    if is_in_handler() {
        return Err(Fail::code(
            drpc_core::Code::FailedPrecondition,
            "drpc_server_shutdown/free called from a server handler (it would wait for itself)",
        ));
    }
    let srv = {
        let mut st = lock(s);
        st.shut_down = true;
        st.server.take()
    };
    if let Some(srv) = srv {
        // Every task of the core server, and what it captured, is dropped by
        // the time shutdown returns; dropping `srv` here drops the router.
        block_on(srv.shutdown(grace))?;
        lock(s).final_metrics = Some(srv.metrics());
    }
    s.tracker.wait_idle();
    Ok(())
}

/// Stops accepting connections and calls, lets running calls finish for up
/// to `grace_ms` milliseconds, then cancels the rest (their handlers see
/// cancellation: `drpc_stream_recv` fails, `..._is_cancelled` is true) and
/// closes every connection. Returns once every handler callback has
/// returned: after it, no handler runs and no `userdata` is touched again.
/// Idempotent.
///
/// Blocks the calling thread (at least until the running handlers return,
/// so handlers should watch for cancellation). Must not be called from a
/// handler or completion callback: there it returns
/// `DRPC_FAILED_PRECONDITION` and does nothing.
#[no_mangle]
pub extern "C" fn drpc_server_shutdown(
    server: *const drpc_server,
    grace_ms: u64,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let s = get::<ServerObj>(server, "server")?;
        shutdown(&s, millis(grace_ms))?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases the server. If it was not shut down, it is shut down first with
/// no grace period (running calls are cancelled), which blocks the calling
/// thread until every handler has returned, as in `drpc_server_shutdown`.
/// Called from a handler or completion callback (discouraged), it cannot
/// wait: the shutdown then finishes in the background and handlers may still
/// run (and use their userdata) for a moment after it returns.
/// Threads blocked in other calls on the server (e.g. `drpc_server_shutdown`)
/// return normally; later calls with the handle return `DRPC_BAD_ARGUMENT`.
/// NULL (or a handle of another kind) is a no-op.
#[no_mangle]
pub extern "C" fn drpc_server_free(server: *mut drpc_server) {
    guard((), || {
        let Some(s) = take::<ServerObj>(server) else {
            return;
        };
        let needs_shutdown = lock(&s).server.is_some();
        if needs_shutdown && shutdown(&s, Duration::ZERO).is_err() {
            // Not allowed to block here: shut down in the background.
            let srv = lock(&s).server.take();
            if let Some(srv) = srv {
                runtime().spawn(async move { srv.shutdown(Duration::ZERO).await });
            }
        }
        let _rt = runtime().enter();
        drop(s);
    })
}

// ---------------------------------------------------------------------------
// The unary call a handler answers.

fn call_ref(call: *const drpc_server_call) -> Res<Arc<ServerCallObj>> {
    get::<ServerCallObj>(call, "call")
}

/// Answers the call with a response (`len` bytes at `data`, copied; NULL
/// allowed when `len` is 0). A blocking handler's answer is sent when it
/// returns `DRPC_OK`; a non-blocking handler's is sent at once. Answering
/// twice (respond or fail) is `DRPC_FAILED_PRECONDITION`. Never blocks;
/// thread-safe; fine from callbacks.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_call_respond(
    call: *mut drpc_server_call,
    data: *const u8,
    len: usize,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = call_ref(call)?;
        // SAFETY: per the contract.
        let data = unsafe { arg_bytes(data, len, "data")? };
        c.answer(Ok(bytes::Bytes::copy_from_slice(data)))?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Fails the call with `code` (any value; 0 reaches the client as
/// `DRPC_UNKNOWN`) and `message` (NUL-terminated UTF-8, copied; NULL for an
/// empty message): the client gets exactly this code and message (when a
/// blocking handler returns; at once for a non-blocking one). Answering
/// twice is `DRPC_FAILED_PRECONDITION`. Never blocks; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_call_fail(
    call: *mut drpc_server_call,
    code: u64,
    message: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = call_ref(call)?;
        // SAFETY: per the contract.
        let message = unsafe { opt_str(message, "message")? };
        c.answer(Err(Status::from_wire(code, message)))?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases the call of a non-blocking unary handler (any time after the
/// handler was called; the request bytes and strings borrowed from the call
/// are invalid after). A call not answered yet fails with `DRPC_INTERNAL`.
/// Later calls with the handle return `DRPC_BAD_ARGUMENT`. A no-op for a
/// blocking handler's call (the library releases those when the handler
/// returns) and for NULL. Never blocks; thread-safe; fine from callbacks.
#[no_mangle]
pub extern "C" fn drpc_server_call_free(call: *mut drpc_server_call) {
    guard((), || {
        match try_get::<ServerCallObj>(call) {
            Some(c) if matches!(*c.answer.lock().unwrap_or_else(|e| e.into_inner()), Answer::Send(_)) => {}
            _ => return,
        }
        if let Some(c) = take::<ServerCallObj>(call) {
            let _rt = runtime().enter();
            let _ = c.answer(Err(Status::internal(
                "the handler released the call without answering",
            )));
        }
    })
}

/// The rpc name of the call, owned by the call (valid while the handler
/// runs); NULL if `call` is NULL.
#[no_mangle]
pub extern "C" fn drpc_server_call_rpc(call: *const drpc_server_call) -> *const c_char {
    guard(std::ptr::null(), || {
        call_ref(call).map_or(std::ptr::null(), |c| c.rpc.as_ptr())
    })
}

/// The value of the invoke-metadata `key` the client sent, owned by the call
/// (valid while the handler runs); NULL if absent or an argument is NULL.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_call_metadata(
    call: *const drpc_server_call,
    key: *const c_char,
) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: per the contract.
        let (Ok(c), Ok(k)) = (call_ref(call), unsafe { arg_str(key, "key") }) else {
            return std::ptr::null();
        };
        c.metadata.get(k).map_or(std::ptr::null(), |v| v.as_ptr())
    })
}

/// Sets `*count_out` to the number of invoke-metadata entries the client
/// sent with the call. `DRPC_BAD_ARGUMENT` if an argument is NULL. Never
/// blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_call_metadata_count(
    call: *const drpc_server_call,
    count_out: *mut usize,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = call_ref(call).ok();
        metadata_count(c.as_ref().map(|c| &c.metadata), "call", count_out)
    })
}

/// Borrows invoke-metadata entry `index` (0 <= `index` <
/// `drpc_server_call_metadata_count`; entries are in byte order of their
/// keys) of the call: `*key_out` and `*value_out` are set to NUL-terminated
/// strings owned by the call (valid while the handler runs). Either out
/// pointer may be NULL if not wanted, not both. `DRPC_BAD_ARGUMENT` (out
/// pointers set to NULL) if `call` is NULL, both out pointers are NULL or
/// `index` is out of range. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_call_metadata_entry(
    call: *const drpc_server_call,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = call_ref(call).ok();
        metadata_entry(c.as_ref().map(|c| &c.metadata), "call", index, key_out, value_out)
    })
}

/// Sets `*remaining_us_out` to the time left until the call's deadline in
/// microseconds (0 once it passed), or -1 if it has none (the client sent no
/// `drpc-timeout`, or the server ignores deadlines). Calls the handler
/// makes on its own thread inherit this deadline (and the trace context).
/// `DRPC_BAD_ARGUMENT` for a NULL pointer or a handle that is not a live
/// call. Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_call_deadline(
    call: *const drpc_server_call,
    remaining_us_out: *mut i64,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = call_ref(call)?;
        crate::intercept::write_deadline(crate::intercept::server_deadline(&c.ctx), remaining_us_out)
    })
}

/// Sets `*traceparent_out` to the W3C trace context of the call's server
/// span (`00-<trace id>-<span id>-<flags>`: the client's trace id, a new
/// span id), borrowed from the call (valid while the handler runs), or NULL
/// when the client sent no valid `traceparent`. Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_call_traceparent(
    call: *const drpc_server_call,
    traceparent_out: *mut *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        if !traceparent_out.is_null() {
            // SAFETY: a writable `const char **` per the contract.
            unsafe { *traceparent_out = std::ptr::null() };
        }
        let c = call_ref(call)?;
        crate::intercept::write_traceparent(c.traceparent.as_deref(), traceparent_out)
    })
}

/// Whether the client cancelled the call, its deadline passed or its
/// connection was lost (false if NULL). Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_call_is_cancelled(call: *const drpc_server_call) -> bool {
    guard(false, || call_ref(call).is_ok_and(|c| c.ctx.is_cancelled()))
}

/// Waits until the call is cancelled, at most `timeout_ms` milliseconds
/// (0 = no limit). Returns true if it was cancelled, false on timeout (or
/// NULL). Use it instead of sleeping in a handler. Blocks.
#[no_mangle]
pub extern "C" fn drpc_server_call_wait_cancelled(
    call: *const drpc_server_call,
    timeout_ms: u64,
) -> bool {
    guard(false, || {
        call_ref(call).is_ok_and(|c| wait_cancelled(&c.ctx, timeout_ms))
    })
}
