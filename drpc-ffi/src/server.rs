//! Server side: a server with C handler callbacks.

use crate::client::wait_cancelled;
use crate::*;
use drpc_core::{CallContext, Request, Router, Server, ServerOptions, Stream};
use std::collections::HashSet;
use std::ffi::c_void;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// A unary handler: called with the handler's `userdata`, the call (valid
/// only until the handler returns) and the request bytes (owned by the
/// call, same lifetime; NULL-safe to read when `request_len` is 0).
///
/// Runs on a thread of the library's blocking pool, one thread per running
/// handler, so it may block, sleep and call any drpc function (including
/// blocking client calls). It answers by calling `drpc_server_call_respond`
/// (success) or `drpc_server_call_fail` (an error with any code and message)
/// and returns a `drpc_status` value:
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

/// A streaming handler (client-, server- or bidi-streaming): called with the
/// handler's `userdata` and the call's stream, which it uses with
/// `drpc_stream_recv` / `drpc_stream_send` / ... The stream is owned by the
/// library and valid until the handler returns (`drpc_stream_free` on it is a
/// no-op).
///
/// Runs on a thread of the library's blocking pool, like a unary handler.
/// Returning `DRPC_OK` ends the call cleanly (CloseSend); after
/// `drpc_stream_fail` the call ends with that error; a gRPC code 1..=16 ends
/// it with that code; any other value with `DRPC_INTERNAL`.
pub type drpc_stream_handler =
    Option<unsafe extern "C" fn(userdata: *mut c_void, stream: *mut drpc_stream) -> u32>;

/// The call a unary handler answers. Owned by the library; valid only while
/// the handler runs. Its functions are thread-safe.
pub struct drpc_server_call {
    ctx: CallContext,
    rpc: CString,
    metadata: MetadataView,
    outcome: Mutex<Outcome>,
}

#[derive(Default)]
enum Outcome {
    #[default]
    None,
    Response(bytes::Bytes),
    Failed(drpc_core::Status),
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
    state: Mutex<ServerState>,
    tracker: Arc<Tracker>,
}

struct ServerState {
    router: Router,
    names: HashSet<String>,
    opts: ServerOptions,
    server: Option<Server>,
    shut_down: bool,
}

/// A new server with no handlers (an rpc nobody registered is answered
/// with `DRPC_UNIMPLEMENTED`). Never returns NULL. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_server_new() -> *mut drpc_server {
    guard(std::ptr::null_mut(), || {
        let s = drpc_server {
            state: Mutex::new(ServerState {
                router: Router::new(),
                names: HashSet::new(),
                opts: ServerOptions::default(),
                server: None,
                shut_down: false,
            }),
            tracker: Arc::default(),
        };
        Arc::into_raw(Arc::new(s)).cast_mut()
    })
}

fn lock(s: &drpc_server) -> std::sync::MutexGuard<'_, ServerState> {
    s.state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Changes the connection options of a server that is not listening yet.
fn set_option(
    server: *const drpc_server,
    f: impl FnOnce(&mut drpc_core::ConnOptions) -> Res<()>,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live handle.
        let s = unsafe { server.as_ref() }.ok_or_else(|| Fail::bad("server is NULL"))?;
        let mut st = lock(s);
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

fn register(
    server: *const drpc_server,
    rpc: *const c_char,
    err_out: *mut *mut drpc_error,
    add: impl FnOnce(Router, &str, &Arc<Tracker>) -> Router,
) -> drpc_status {
    ffi(err_out, || {
        // SAFETY: NULL or a live handle; rpc per the contract.
        let (s, rpc) = unsafe {
            (
                server.as_ref().ok_or_else(|| Fail::bad("server is NULL"))?,
                arg_str(rpc, "rpc")?,
            )
        };
        let mut st = lock(s);
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
fn returned_status(ret: u32) -> drpc_core::Status {
    use drpc_core::{Code, Status};
    match ret {
        1..=16 => {
            let code = Code::from_u64(ret as u64);
            Status::new(code, format!("handler returned {}", code.name()))
        }
        0 => Status::internal("handler returned DRPC_OK without a response"),
        other => Status::internal(format!("handler failed (returned {other})")),
    }
}

/// Registers a unary handler for `rpc` (e.g. `"/pkg.Service/Method"`,
/// copied). `userdata` is passed to every call of `handler` and must stay
/// valid until `drpc_server_shutdown` or `drpc_server_free` has returned.
/// Only before the first `drpc_server_listen`; registering an rpc twice is
/// `DRPC_ALREADY_EXISTS`. Never blocks.
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
            async move {
                let task = tokio::task::spawn_blocking(move || {
                    let _running = running;
                    run_unary(handler, userdata, req)
                });
                match task.await {
                    Ok(result) => result,
                    Err(e) => Err(drpc_core::Status::internal(format!("handler failed: {e}"))),
                }
            }
        })
    })
}

type UnaryFn = unsafe extern "C" fn(*mut c_void, *mut drpc_server_call, *const u8, usize) -> u32;
type StreamFn = unsafe extern "C" fn(*mut c_void, *mut drpc_stream) -> u32;

fn run_unary(
    handler: UnaryFn,
    userdata: UserData,
    req: Request,
) -> Result<bytes::Bytes, drpc_core::Status> {
    let md = req.context.metadata();
    let mut call = drpc_server_call {
        rpc: cstring_lossy(req.context.rpc()),
        metadata: MetadataView::new(md),
        ctx: req.context.clone(),
        outcome: Mutex::new(Outcome::None),
    };
    let data = req.data;
    let ud = userdata;
    let ret = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the C handler per its contract.
        in_handler(|| unsafe { handler(ud.0, &mut call, data.as_ptr(), data.len()) })
    }));
    let outcome = std::mem::take(&mut *call.outcome.lock().unwrap_or_else(|e| e.into_inner()));
    match (ret, outcome) {
        (Err(_), _) => Err(drpc_core::Status::internal("handler panicked")),
        (_, Outcome::Failed(status)) => Err(status),
        (Ok(0), Outcome::Response(resp)) => Ok(resp),
        (Ok(ret), _) => Err(returned_status(ret)),
    }
}

/// Registers a streaming handler for `rpc`, under the same rules as
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
            async move {
                let task = tokio::task::spawn_blocking(move || {
                    let _running = running;
                    run_stream(handler, userdata, stream)
                });
                match task.await {
                    Ok(result) => result,
                    Err(e) => Err(drpc_core::Status::internal(format!("handler failed: {e}"))),
                }
            }
        })
    })
}

fn run_stream(
    handler: StreamFn,
    userdata: UserData,
    stream: Stream,
) -> Result<(), drpc_core::Status> {
    let md = stream.context().metadata().clone();
    let handle = Arc::new(drpc_stream::new(stream, &md, true));
    let ptr = Arc::as_ptr(&handle).cast_mut();
    let ud = userdata;
    let ret = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: the C handler per its contract.
        in_handler(|| unsafe { handler(ud.0, ptr) })
    }));
    let failure = handle
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    match (ret, failure) {
        (Err(_), _) => Err(drpc_core::Status::internal("handler panicked")),
        (_, Some(status)) => Err(status),
        (Ok(0), None) => Ok(()),
        (Ok(ret), None) => Err(returned_status(ret)),
    }
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
        // SAFETY: NULL or a live handle; addr per the contract.
        let (s, addr) = unsafe {
            (
                server.as_ref().ok_or_else(|| Fail::bad("server is NULL"))?,
                arg_str(addr, "addr")?,
            )
        };
        check_may_block()?;
        let srv = {
            let mut st = lock(s);
            if st.shut_down {
                return Err(Fail::code(
                    drpc_core::Code::FailedPrecondition,
                    "the server was shut down",
                ));
            }
            if st.server.is_none() {
                let router = std::mem::take(&mut st.router);
                let _rt = runtime().enter();
                st.server = Some(Server::with_options(router, st.opts.clone()));
            }
            st.server.clone().expect("just set")
        };
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
        // SAFETY: NULL or a live handle.
        let Some(s) = (unsafe { server.as_ref() }) else {
            return 0;
        };
        lock(s).server.as_ref().map_or(0, |srv| srv.active_rpcs())
    })
}

fn shutdown(s: &drpc_server, grace: Duration) -> Res<()> {
    check_may_block()?;
    if IN_HANDLER.with(|h| h.get()) {
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
        // SAFETY: NULL or a live handle.
        let s = unsafe { server.as_ref() }.ok_or_else(|| Fail::bad("server is NULL"))?;
        shutdown(s, millis(grace_ms))?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases the server. If it was not shut down, it is shut down first with
/// no grace period (running calls are cancelled), which blocks the calling
/// thread until every handler has returned, as in `drpc_server_shutdown`.
/// Called from a handler or completion callback (discouraged), it cannot
/// wait: the shutdown then finishes in the background and handlers may still
/// run (and use their userdata) for a moment after it returns.
/// Must not race with other functions on the same handle. NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_server_free(server: *mut drpc_server) {
    guard((), || {
        // SAFETY: NULL or a live handle.
        let Some(s) = (unsafe { server.as_ref() }) else {
            return;
        };
        let needs_shutdown = {
            let st = lock(s);
            st.server.is_some()
        };
        if needs_shutdown && shutdown(s, Duration::ZERO).is_err() {
            // Not allowed to block here: shut down in the background.
            let srv = lock(s).server.take();
            if let Some(srv) = srv {
                runtime().spawn(async move { srv.shutdown(Duration::ZERO).await });
            }
        }
        let _rt = runtime().enter();
        // SAFETY: from `drpc_server_new`, released once.
        unsafe { arc_free(server.cast_const()) }
    })
}

// ---------------------------------------------------------------------------
// The unary call a handler answers.

fn call_ref<'a>(call: *const drpc_server_call) -> Res<&'a drpc_server_call> {
    // SAFETY: NULL or a live call (valid while the handler runs).
    unsafe { call.as_ref() }.ok_or_else(|| Fail::bad("call is NULL"))
}

/// Sets the response of the call (`len` bytes at `data`, copied; NULL
/// allowed when `len` is 0); it is sent when the handler returns `DRPC_OK`.
/// Answering twice (respond or fail) is `DRPC_FAILED_PRECONDITION`.
/// Never blocks.
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
        let mut outcome = c.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*outcome, Outcome::None) {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "the call was already answered",
            ));
        }
        *outcome = Outcome::Response(bytes::Bytes::copy_from_slice(data));
        Ok(drpc_status::DRPC_OK)
    })
}

/// Fails the call with `code` (any value; 0 reaches the client as
/// `DRPC_UNKNOWN`) and `message` (NUL-terminated UTF-8, copied; NULL for an
/// empty message): the client gets exactly this code and message once the
/// handler returns. Answering twice is `DRPC_FAILED_PRECONDITION`.
/// Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_call_fail(
    call: *mut drpc_server_call,
    code: u64,
    message: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = call_ref(call)?;
        // SAFETY: per the contract.
        let message = if message.is_null() {
            ""
        } else {
            unsafe { arg_str(message, "message")? }
        };
        let mut outcome = c.outcome.lock().unwrap_or_else(|e| e.into_inner());
        if !matches!(*outcome, Outcome::None) {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "the call was already answered",
            ));
        }
        *outcome = Outcome::Failed(drpc_core::Status::from_wire(code, message));
        Ok(drpc_status::DRPC_OK)
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
        let view = call_ref(call).ok().map(|c| &c.metadata);
        metadata_count(view, "call", count_out)
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
        let view = call_ref(call).ok().map(|c| &c.metadata);
        metadata_entry(view, "call", index, key_out, value_out)
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

/// Server streams only: ends the call with `code` and `message` (as in
/// `drpc_server_call_fail`) when the handler returns, whatever it returns.
/// The last call wins. `DRPC_BAD_ARGUMENT` on a client stream. Never
/// blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_fail(
    stream: *const drpc_stream,
    code: u64,
    message: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live handle.
        let s = unsafe { stream.as_ref() }.ok_or_else(|| Fail::bad("stream is NULL"))?;
        if !s.server {
            return Err(Fail::bad(
                "drpc_stream_fail is for server streams; use drpc_stream_cancel",
            ));
        }
        // SAFETY: per the contract.
        let message = if message.is_null() {
            ""
        } else {
            unsafe { arg_str(message, "message")? }
        };
        *s.failure.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(drpc_core::Status::from_wire(code, message));
        Ok(drpc_status::DRPC_OK)
    })
}
