//! Client side: connection options, metadata, connections, unary calls
//! (blocking and asynchronous) and streams.

use crate::intercept::{begin_client, drpc_direction, drpc_interceptor, interceptor_arg, Chain, Intercepted, Interceptor};
use crate::*;
use drpc_core::{CallOptions, CancelToken, Conn, ConnOptions, Metadata, Status};
use std::ffi::c_void;
use std::sync::{Condvar, Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Connection options.

/// Options for `drpc_conn_dial`. Owned by the caller (`drpc_conn_options_new`
/// / `drpc_conn_options_free`); not thread-safe while being modified; read
/// only during `drpc_conn_dial`, so it may be freed right after.
pub struct drpc_conn_options {
    _opaque: [u8; 0],
}

pub(crate) struct ConnOptionsObj {
    pub(crate) opts: Mutex<ConnOptions>,
    /// Client interceptors, in order (copied into each connection dialed).
    pub(crate) interceptors: Mutex<Vec<Interceptor>>,
}

/// The interceptor chain options hold.
pub(crate) fn interceptors_of(obj: &ConnOptionsObj) -> Chain {
    lock(&obj.interceptors).clone().into()
}

/// A copy of the options a handle holds.
pub(crate) fn options_of(obj: &ConnOptionsObj) -> ConnOptions {
    lock(&obj.opts).clone()
}

impl HandleType for ConnOptionsObj {
    type C = drpc_conn_options;
    const NAME: &'static str = "drpc_conn_options";
}

/// Applies `f` to the options behind handle `opts`.
fn with_options(
    opts: *mut drpc_conn_options,
    f: impl FnOnce(&mut ConnOptions) -> Res<()>,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let o = get::<ConnOptionsObj>(opts, "opts")?;
        f(&mut lock(&o.opts))?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// A new set of default options: multiplexing, max message size 4 MiB.
/// Never returns NULL. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_new() -> *mut drpc_conn_options {
    guard(std::ptr::null_mut(), || {
        new_handle(Arc::new(ConnOptionsObj {
            opts: Mutex::new(ConnOptions {
                ..Default::default()
            }),
            interceptors: Mutex::default(),
        }))
    })
}

/// Sequential mode: at most one call (unary or stream) at a time on the
/// connection; further calls wait for the slot. Required towards
/// `storj.io/drpc` peers. Default: false (multiplexing).
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_sequential(
    opts: *mut drpc_conn_options,
    sequential: bool,
) -> drpc_status {
    with_options(opts, |o| {
        o.sequential = sequential;
        Ok(())
    })
}

/// The largest message sent or received on the connection, in bytes
/// (must be > 0). A larger one fails its call with
/// `DRPC_RESOURCE_EXHAUSTED`. Default 4 MiB.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_max_message_size(
    opts: *mut drpc_conn_options,
    size: usize,
) -> drpc_status {
    with_options(opts, |o| {
        if size == 0 {
            return Err(Fail::bad("max message size is 0"));
        }
        o.max_message_size = size;
        Ok(())
    })
}

/// Per-stream flow control (DESIGN.md section 4, compatible with
/// cockroachdb/drpc): each stream may have at most a window of unread
/// Message bytes in flight, and the receiver grants consumed bytes back with
/// WindowUpdate frames, so a stream whose reader is slow cannot hold up the
/// other streams of the connection. `true` turns it on with the window set
/// by `drpc_conn_options_set_flow_control_window`, else the default window
/// of 2 MiB and grant threshold of 512 KiB; `false` turns it off.
///
/// Default: off. It is not negotiated on the wire, so both peers must turn it
/// on; a sequential (`storj.io/drpc`) peer rejects WindowUpdate frames, so
/// leave it off towards those. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_flow_control(
    opts: *mut drpc_conn_options,
    enabled: bool,
) -> drpc_status {
    with_options(opts, |o| {
        if !enabled {
            o.flow_control = None;
        } else if o.flow_control.is_none() {
            o.flow_control = Some(drpc_core::FlowControl::default());
        }
        Ok(())
    })
}

/// Turns flow control on (see `drpc_conn_options_set_flow_control`) with a
/// stream window of `window` bytes (1..=2^48; default 2 MiB) and a grant
/// threshold of `grant_threshold` bytes (1..=`window`; default 512 KiB):
/// consumed bytes are granted back to the sender once at least that many
/// have been read. Out-of-range values are `DRPC_BAD_ARGUMENT` (nothing is
/// changed). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_flow_control_window(
    opts: *mut drpc_conn_options,
    window: u64,
    grant_threshold: u64,
) -> drpc_status {
    with_options(opts, |o| {
        o.flow_control = Some(flow_control(window, grant_threshold)?);
        Ok(())
    })
}

/// The most streams (unary calls included) open at once on the connection
/// (> 0; default 10000). Further calls wait until a stream finishes (their
/// timeouts still run). A sequential connection always allows one. Never
/// blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_max_concurrent_streams(
    opts: *mut drpc_conn_options,
    max_streams: usize,
) -> drpc_status {
    with_options(opts, |o| {
        if max_streams == 0 {
            return Err(Fail::bad("max concurrent streams is 0"));
        }
        o.max_concurrent_streams = max_streams;
        Ok(())
    })
}

/// The memory budget of the connection, in bytes (0: no limit; default
/// 256 MiB): what the server can make it hold. Past its per-connection
/// share (64 MiB, `drpc_conn_options_set_connection_memory`) the client
/// stops reading until the application reads. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_memory_budget(opts: *mut drpc_conn_options, bytes: usize) -> drpc_status {
    with_options(opts, |o| {
        o.memory_budget = Some(drpc_core::MemoryBudget::new(bytes));
        Ok(())
    })
}

/// The most the connection may hold before it stops reading (> 0; default
/// 64 MiB): unread messages, packets being assembled, queued writes. Never
/// blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_connection_memory(opts: *mut drpc_conn_options, bytes: usize) -> drpc_status {
    with_options(opts, |o| {
        if bytes == 0 {
            return Err(Fail::bad("connection memory is 0"));
        }
        o.connection_buffer_budget = bytes;
        Ok(())
    })
}

/// A frame from the server that takes longer than `read_ms` milliseconds
/// from its first byte to its last closes the connection (0 disables;
/// default 30000). Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_read_timeout(opts: *mut drpc_conn_options, read_ms: u64) -> drpc_status {
    with_options(opts, |o| {
        o.read_timeout = std::time::Duration::from_millis(read_ms);
        Ok(())
    })
}

/// Adds a client interceptor (copied; see `drpc_interceptor`) to the
/// options: every connection dialed with them (and every connection of a
/// channel given them, `drpc_channel_options_set_conn_options`) runs it
/// around each call, unary and streaming, after the interceptors added
/// earlier (`after`: before theirs). `before` may change the metadata sent
/// and reject the call before anything is sent. NULL, or an interceptor
/// with no callback, is `DRPC_BAD_ARGUMENT`. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_add_interceptor(
    opts: *mut drpc_conn_options,
    interceptor: *const drpc_interceptor,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let o = get::<ConnOptionsObj>(opts, "opts")?;
        let ic = interceptor_arg(interceptor)?;
        lock(&o.interceptors).push(ic);
        Ok(drpc_status::DRPC_OK)
    })
}

/// Whether calls send their deadline to the server in the invoke metadata
/// key `drpc-timeout` (gRPC's timeout grammar, e.g. `250m`), so the server
/// can cancel its handler when the deadline passes. Default true; peers that
/// do not know the key ignore it. A call whose metadata already has the key
/// sends it as given. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_set_send_deadline(opts: *mut drpc_conn_options, send: bool) -> drpc_status {
    with_options(opts, |o| {
        o.send_deadline = send;
        Ok(())
    })
}

/// Releases options. NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_conn_options_free(opts: *mut drpc_conn_options) {
    guard((), || {
        drop(take::<ConnOptionsObj>(opts));
    })
}

// ---------------------------------------------------------------------------
// Metadata.

/// Invoke metadata to send with a call: string keys to string values.
/// Owned by the caller (`drpc_metadata_new` / `drpc_metadata_free`); not
/// thread-safe while being modified; calls copy it, so it may be freed or
/// reused as soon as the call function returns.
pub struct drpc_metadata {
    _opaque: [u8; 0],
}

pub(crate) struct MetadataObj {
    md: Mutex<Metadata>,
}

impl HandleType for MetadataObj {
    type C = drpc_metadata;
    const NAME: &'static str = "drpc_metadata";
}

/// A new, empty metadata set. Never returns NULL.
#[no_mangle]
pub extern "C" fn drpc_metadata_new() -> *mut drpc_metadata {
    guard(std::ptr::null_mut(), || {
        new_handle(Arc::new(MetadataObj {
            md: Mutex::new(Metadata::new()),
        }))
    })
}

/// Sets `key` to `value` (both NUL-terminated UTF-8, copied), replacing an
/// earlier value of the key.
///
/// Compression: a call is compressed by setting the key `drpc-compression`
/// to `snappy` or `minlz-fastest` in its metadata (as cockroachdb/drpc
/// does). Every Message of the call, in both directions, is then compressed
/// with that codec; the server answers in kind, with nothing to configure.
/// The peer must support it (towards `storj.io/drpc` leave it out). An
/// unknown codec name makes the call fail with `DRPC_UNIMPLEMENTED` before
/// anything is sent.
#[no_mangle]
pub unsafe extern "C" fn drpc_metadata_set(
    md: *mut drpc_metadata,
    key: *const c_char,
    value: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let m = get::<MetadataObj>(md, "md")?;
        // SAFETY: NUL-terminated strings per the contract.
        let (k, v) = unsafe { (arg_str(key, "key")?, arg_str(value, "value")?) };
        lock(&m.md).insert(k.to_string(), v.to_string());
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases metadata. NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_metadata_free(md: *mut drpc_metadata) {
    guard((), || {
        drop(take::<MetadataObj>(md));
    })
}

/// Call options from the optional metadata handle `md` and a timeout, with
/// the deadline and trace context of the handler running on this thread, if
/// any (the earlier deadline wins; `traceparent` in `md` wins).
pub(crate) fn call_options(md: *const drpc_metadata, timeout_ms: u64) -> Res<CallOptions> {
    let mut opts = CallOptions::new();
    if !md.is_null() {
        opts.metadata = lock(&get::<MetadataObj>(md, "md")?.md).clone();
    }
    if timeout_ms > 0 {
        opts.timeout = Some(millis(timeout_ms));
    }
    crate::intercept::inherit_into(&mut opts);
    Ok(opts)
}

/// Runs a unary call through a client interceptor chain: `before`s (which
/// may change `opts`' metadata or reject), the call, `on_message` for the
/// request and response, `after`.
pub(crate) async fn intercepted_unary<F>(
    intercepted: Option<Intercepted>,
    req: &[u8],
    call: F,
) -> Result<bytes::Bytes, Status>
where
    F: std::future::Future<Output = Result<bytes::Bytes, Status>>,
{
    if let Some(i) = &intercepted {
        i.message(drpc_direction::DRPC_DIRECTION_SENT, req);
    }
    let result = call.await;
    if let Some(i) = &intercepted {
        match &result {
            Ok(resp) => {
                i.message(drpc_direction::DRPC_DIRECTION_RECEIVED, resp);
                i.finish(0);
            }
            Err(s) => i.finish(s.wire_code()),
        }
    }
    result
}

// ---------------------------------------------------------------------------
// Connections.

/// A client connection. Thread-safe: any number of threads may make calls
/// on it at once (they multiplex over the one socket unless the connection
/// is sequential). Released with `drpc_conn_free`.
pub struct drpc_conn {
    _opaque: [u8; 0],
}

pub(crate) struct ConnObj {
    pub(crate) conn: std::mem::ManuallyDrop<Conn>,
    /// The client interceptors of the options it was dialed with.
    pub(crate) interceptors: Chain,
    /// The address dialed, for interceptors.
    addr: String,
}

impl ConnObj {
    pub(crate) fn new(conn: Conn, interceptors: Chain, addr: &str) -> ConnObj {
        ConnObj { conn: std::mem::ManuallyDrop::new(conn), interceptors, addr: addr.to_string() }
    }

    pub(crate) fn peer(&self) -> Option<&str> {
        Some(&self.addr)
    }
}

impl Drop for ConnObj {
    /// The last reference may go on any thread (a caller's, after its call
    /// returned): the connection is released inside the runtime's context.
    fn drop(&mut self) {
        let _rt = runtime().enter();
        // SAFETY: dropped once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.conn) }
    }
}

impl HandleType for ConnObj {
    type C = drpc_conn;
    const NAME: &'static str = "drpc_conn";
}

/// Connects to `addr`: `"host:port"` (TCP) or `"unix:/path"` (Unix socket).
/// `opts` may be NULL for defaults; it is only read during the call.
/// On success `*conn_out` is a new connection owned by the caller
/// (`drpc_conn_free`); on failure it is NULL (a failed connect is
/// `DRPC_UNAVAILABLE`).
///
/// Blocks the calling thread until connected.
#[no_mangle]
pub unsafe extern "C" fn drpc_conn_dial(
    addr: *const c_char,
    opts: *const drpc_conn_options,
    conn_out: *mut *mut drpc_conn,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(conn_out, "conn_out")?;
        // SAFETY: valid out pointer.
        unsafe { *conn_out = std::ptr::null_mut() };
        // SAFETY: NUL-terminated string.
        let addr = unsafe { arg_str(addr, "addr")? };
        let (opts, interceptors) = if opts.is_null() {
            (ConnOptions::default(), Chain::from(Vec::new()))
        } else {
            let o = get::<ConnOptionsObj>(opts, "opts")?;
            (options_of(&o), interceptors_of(&o))
        };
        let conn = block_on(Conn::connect(addr, opts))??;
        // SAFETY: valid out pointer.
        unsafe { *conn_out = new_handle(Arc::new(ConnObj::new(conn, interceptors, addr))) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Closes the connection: every call and stream on it fails with
/// `DRPC_UNAVAILABLE`, and the connection's I/O tasks have ended when this
/// returns. Closing twice is fine. The handle must still be freed.
///
/// Blocks the calling thread briefly (not allowed from a callback: use
/// `drpc_conn_free` there, or close from another thread).
#[no_mangle]
pub extern "C" fn drpc_conn_close(conn: *const drpc_conn) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = get::<ConnObj>(conn, "conn")?;
        block_on(c.conn.close())?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Whether the connection has terminated (closed here, by the remote, or by
/// an error); false if `conn` is not a live connection. Never blocks; any
/// thread.
#[no_mangle]
pub extern "C" fn drpc_conn_is_closed(conn: *const drpc_conn) -> bool {
    guard(false, || {
        try_get::<ConnObj>(conn).is_some_and(|c| c.conn.is_closed())
    })
}

/// Releases the handle. Calls in flight on the connection (blocking calls
/// on other threads, asynchronous calls, open streams) keep the underlying
/// connection open and complete normally; the connection is closed once the
/// handle and all of them are released. Call `drpc_conn_close` first to fail
/// them at once. Later calls with the freed handle return
/// `DRPC_BAD_ARGUMENT`.
///
/// When nothing else uses the connection, it is closed here and the call
/// blocks briefly until the connection's background tasks have ended, so
/// nothing of it outlives this call; from a callback it only starts the
/// close. NULL (or a handle of another kind) is a no-op.
#[no_mangle]
pub extern "C" fn drpc_conn_free(conn: *mut drpc_conn) {
    guard((), || {
        let Some(handle) = take::<ConnObj>(conn) else {
            return;
        };
        let rest = match Arc::try_unwrap(handle) {
            // Blocking is refused from a callback; then the drop below closes.
            Ok(last) if last.conn.is_last_handle() => {
                let _ = block_on(last.conn.close());
                Some(last)
            }
            Ok(last) => Some(last),
            Err(shared) => {
                drop(shared);
                None
            }
        };
        let _rt = runtime().enter();
        drop(rest);
    })
}

// ---------------------------------------------------------------------------
// Unary calls.

/// A blocking unary call of `rpc` (e.g. `"/pkg.Service/Method"`) with the
/// `request_len` bytes at `request` (NULL allowed when the length is 0),
/// optional invoke metadata `md` (NULL for none; copied) and a timeout in
/// milliseconds (0 for none; on expiry `DRPC_DEADLINE_EXCEEDED`).
///
/// On success `*response_out` is a new buffer owned by the caller
/// (`drpc_buffer_free`); on failure it is NULL and the status is the call's
/// error code (the remote's, `DRPC_UNAVAILABLE` for a lost connection, ...).
///
/// Blocks the calling thread until the call ends. Thread-safe: concurrent
/// calls on one connection run concurrently. Must not be called from a
/// callback (returns `DRPC_FAILED_PRECONDITION` there).
#[no_mangle]
pub unsafe extern "C" fn drpc_conn_unary(
    conn: *const drpc_conn,
    rpc: *const c_char,
    request: *const u8,
    request_len: usize,
    md: *const drpc_metadata,
    timeout_ms: u64,
    response_out: *mut *mut drpc_buffer,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(response_out, "response_out")?;
        // SAFETY: valid out pointer.
        unsafe { *response_out = std::ptr::null_mut() };
        let c = get::<ConnObj>(conn, "conn")?;
        // SAFETY: arguments per the contract.
        let (rpc, req) = unsafe { (arg_str(rpc, "rpc")?, arg_bytes(request, request_len, "request")?) };
        let mut opts = call_options(md, timeout_ms)?;
        let intercepted = begin_client(&c.interceptors, rpc, c.peer(), &mut opts)?;
        let resp = block_on(intercepted_unary(intercepted, req, c.conn.unary(rpc, req, &opts)))??;
        // SAFETY: valid out pointer.
        unsafe { *response_out = drpc_buffer::into_raw(resp) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Completion callback of `drpc_conn_unary_async`, called exactly once per
/// started call with the caller's `userdata`, the call's handle (the one
/// stored in `*call_out`, or NULL if `call_out` was NULL), the call's status
/// and either `response` (status `DRPC_OK`) or `error` (any other status);
/// the other is NULL. The callback owns both and must release them with
/// `drpc_buffer_free` / `drpc_error_free` (or keep them). It may release the
/// call handle (`drpc_call_free(call)`).
///
/// It runs on a drpc runtime worker thread: it must return quickly and must
/// not call blocking drpc functions (they fail with
/// `DRPC_FAILED_PRECONDITION`); non-blocking ones such as
/// `drpc_conn_unary_async`, `drpc_call_cancel` and the `_free` functions are
/// fine.
pub type drpc_unary_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        call: *mut drpc_call,
        status: drpc_status,
        response: *mut drpc_buffer,
        error: *mut drpc_error,
    ),
>;

/// An asynchronous unary call started by `drpc_conn_unary_async`.
/// Thread-safe. Released with `drpc_call_free`.
pub struct drpc_call {
    _opaque: [u8; 0],
}

pub(crate) struct CallObj {
    pub(crate) cancel: CancelToken,
    state: Mutex<CallState>,
    changed: Condvar,
}

#[derive(Default)]
struct CallState {
    /// The callback has returned.
    done: bool,
    /// The handle was freed (wakes waiters).
    freed: bool,
}

impl CallObj {
    pub(crate) fn new(cancel: CancelToken) -> CallObj {
        CallObj { cancel, state: Mutex::default(), changed: Condvar::new() }
    }

    /// The callback has returned: wakes `drpc_call_wait`.
    pub(crate) fn mark_done(&self) {
        lock(&self.state).done = true;
        self.changed.notify_all();
    }
}

impl HandleType for CallObj {
    type C = drpc_call;
    const NAME: &'static str = "drpc_call";
}

/// A C pointer moved to a runtime thread. The C caller promises it may be
/// used there (userdata) or it is a handle value (never dereferenced).
pub(crate) struct SendPtr<T>(pub(crate) *mut T);
impl<T> Clone for SendPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for SendPtr<T> {}
// SAFETY: see above.
unsafe impl<T> Send for SendPtr<T> {}
// SAFETY: see above.
unsafe impl<T> Sync for SendPtr<T> {}

/// The (status, response, error) triple C callbacks receive for a result.
pub(crate) fn outcome_parts(
    result: Result<Option<bytes::Bytes>, Status>,
    none_status: drpc_status,
) -> (drpc_status, *mut drpc_buffer, *mut drpc_error) {
    match result {
        Ok(Some(data)) => (drpc_status::DRPC_OK, drpc_buffer::into_raw(data), std::ptr::null_mut()),
        Ok(None) => (none_status, std::ptr::null_mut(), std::ptr::null_mut()),
        Err(s) => {
            let fail = Fail::from(s);
            (fail.status, std::ptr::null_mut(), fail.into_raw_error())
        }
    }
}

/// Starts a unary call like `drpc_conn_unary` (same arguments, all copied
/// before this returns) without blocking: `callback(userdata, call, ...)` is
/// called once when the call ends. `userdata` must stay valid until then.
///
/// On success `*call_out` (which may be NULL if the caller does not need
/// the handle) is a new call handle owned by the caller (`drpc_call_free`),
/// which can cancel the call and wait for its completion; the callback gets
/// the same handle, so it never needs to read `*call_out` (it may run before
/// this function returns). On failure (bad arguments only) nothing was
/// started and the callback is never called.
///
/// Never blocks. Thread-safe; may be called from a callback.
#[no_mangle]
pub unsafe extern "C" fn drpc_conn_unary_async(
    conn: *const drpc_conn,
    rpc: *const c_char,
    request: *const u8,
    request_len: usize,
    md: *const drpc_metadata,
    timeout_ms: u64,
    callback: drpc_unary_callback,
    userdata: *mut c_void,
    call_out: *mut *mut drpc_call,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        if !call_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *call_out = std::ptr::null_mut() };
        }
        let callback = callback.ok_or_else(|| Fail::bad("callback is NULL"))?;
        let c = get::<ConnObj>(conn, "conn")?;
        // SAFETY: arguments per the contract.
        let (rpc, req) = unsafe {
            (
                arg_str(rpc, "rpc")?.to_string(),
                arg_bytes(request, request_len, "request")?.to_vec(),
            )
        };
        let mut opts = call_options(md, timeout_ms)?;
        // A rejection is the call's outcome, reported through the callback.
        let intercepted = begin_client(&c.interceptors, &rpc, c.peer(), &mut opts);
        let call = Arc::new(CallObj {
            cancel: CancelToken::new(),
            state: Mutex::default(),
            changed: Condvar::new(),
        });
        opts.cancel = Some(call.cancel.clone());
        // The handle exists before the call starts, so the callback can be
        // given it whenever it runs.
        let handle = SendPtr(if call_out.is_null() {
            std::ptr::null_mut()
        } else {
            new_handle(call.clone())
        });
        let userdata = SendPtr(userdata);
        runtime().spawn(async move {
            let result = match intercepted {
                Ok(intercepted) => {
                    if let Some(i) = &intercepted {
                        i.set_non_blocking();
                    }
                    intercepted_unary(intercepted, &req, c.conn.unary(&rpc, &req, &opts)).await
                }
                Err(status) => Err(status),
            };
            drop(c);
            let (userdata, handle) = (userdata, handle);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let (status, buf, err) = outcome_parts(result.map(Some), drpc_status::DRPC_OK);
                // SAFETY: the C callback per its contract.
                without_blocking(|| unsafe { callback(userdata.0, handle.0, status, buf, err) });
            }));
            lock(&call.state).done = true;
            call.changed.notify_all();
        });
        if !call_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *call_out = handle.0 };
        }
        Ok(drpc_status::DRPC_OK)
    })
}

/// Cancels the call: unless it already ended, it ends with `DRPC_CANCELED`
/// (the server is told) and the callback reports that. Idempotent. Never
/// blocks; thread-safe; fine from a callback.
#[no_mangle]
pub extern "C" fn drpc_call_cancel(call: *const drpc_call) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        get::<CallObj>(call, "call")?.cancel.cancel();
        Ok(drpc_status::DRPC_OK)
    })
}

/// Whether the call's callback has returned (false if `call` is not a live
/// call handle). Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_call_is_done(call: *const drpc_call) -> bool {
    guard(false, || try_get::<CallObj>(call).is_some_and(|c| lock(&c.state).done))
}

/// Waits until the call's callback has returned, at most `timeout_ms`
/// milliseconds (0 = no limit). Returns `DRPC_OK` once it has,
/// `DRPC_DEADLINE_EXCEEDED` on timeout, and `DRPC_CANCELED` if the handle
/// was freed (by another thread or the callback) before the callback
/// returned.
///
/// Blocks the calling thread; must not be called from a callback (returns
/// `DRPC_FAILED_PRECONDITION`).
#[no_mangle]
pub extern "C" fn drpc_call_wait(call: *const drpc_call, timeout_ms: u64) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = get::<CallObj>(call, "call")?;
        check_may_block()?;
        let st = lock(&c.state);
        let waiting = |s: &mut CallState| !s.done && !s.freed;
        let st = if timeout_ms == 0 {
            c.changed.wait_while(st, waiting).unwrap_or_else(|e| e.into_inner())
        } else {
            c.changed
                .wait_timeout_while(st, millis(timeout_ms), waiting)
                .unwrap_or_else(|e| e.into_inner())
                .0
        };
        Ok(if st.done {
            drpc_status::DRPC_OK
        } else if st.freed {
            drpc_status::DRPC_CANCELED
        } else {
            drpc_status::DRPC_DEADLINE_EXCEEDED
        })
    })
}

/// Releases the call handle. Never blocks and does not cancel: a call still
/// in flight runs on and its callback is still called exactly once (cancel
/// first with `drpc_call_cancel` to end it). Threads blocked in
/// `drpc_call_wait` on it return (`DRPC_CANCELED` unless the callback had
/// returned). Fine from a callback, including the call's own. NULL (or a
/// handle of another kind) is a no-op.
#[no_mangle]
pub extern "C" fn drpc_call_free(call: *mut drpc_call) {
    guard((), || {
        if let Some(c) = take::<CallObj>(call) {
            lock(&c.state).freed = true;
            c.changed.notify_all();
        }
    })
}
