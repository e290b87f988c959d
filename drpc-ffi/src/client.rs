//! Client side: connection options, metadata, connections, unary calls
//! (blocking and asynchronous) and streams.

use crate::*;
use drpc_core::{CallOptions, CancelToken, Conn, ConnOptions, Metadata, Stream};
use std::ffi::c_void;
use std::sync::{Condvar, Mutex};

// ---------------------------------------------------------------------------
// Connection options.

/// Options for `drpc_conn_dial`. Owned by the caller (`drpc_conn_options_new`
/// / `drpc_conn_options_free`); not thread-safe while being modified; read
/// only during `drpc_conn_dial`, so it may be freed right after.
pub struct drpc_conn_options {
    opts: ConnOptions,
}

/// A new set of default options: multiplexing, max message size 4 MiB.
/// Never returns NULL. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_conn_options_new() -> *mut drpc_conn_options {
    guard(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(drpc_conn_options {
            opts: ConnOptions::default(),
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
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live options object, not used concurrently.
        let o = unsafe { opts.as_mut() }.ok_or_else(|| Fail::bad("opts is NULL"))?;
        o.opts.sequential = sequential;
        Ok(drpc_status::DRPC_OK)
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
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live options object, not used concurrently.
        let o = unsafe { opts.as_mut() }.ok_or_else(|| Fail::bad("opts is NULL"))?;
        if size == 0 {
            return Err(Fail::bad("max message size is 0"));
        }
        o.opts.max_message_size = size;
        Ok(drpc_status::DRPC_OK)
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
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live options object, not used concurrently.
        let o = unsafe { opts.as_mut() }.ok_or_else(|| Fail::bad("opts is NULL"))?;
        if !enabled {
            o.opts.flow_control = None;
        } else if o.opts.flow_control.is_none() {
            o.opts.flow_control = Some(drpc_core::FlowControl::default());
        }
        Ok(drpc_status::DRPC_OK)
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
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live options object, not used concurrently.
        let o = unsafe { opts.as_mut() }.ok_or_else(|| Fail::bad("opts is NULL"))?;
        o.opts.flow_control = Some(flow_control(window, grant_threshold)?);
        Ok(drpc_status::DRPC_OK)
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
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live options object, not used concurrently.
        let o = unsafe { opts.as_mut() }.ok_or_else(|| Fail::bad("opts is NULL"))?;
        if max_streams == 0 {
            return Err(Fail::bad("max concurrent streams is 0"));
        }
        o.opts.max_concurrent_streams = max_streams;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases options. NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_conn_options_free(opts: *mut drpc_conn_options) {
    guard((), || {
        if !opts.is_null() {
            // SAFETY: from `drpc_conn_options_new`, released once.
            drop(unsafe { Box::from_raw(opts) });
        }
    })
}

// ---------------------------------------------------------------------------
// Metadata.

/// Invoke metadata to send with a call: string keys to string values.
/// Owned by the caller (`drpc_metadata_new` / `drpc_metadata_free`); not
/// thread-safe while being modified; calls copy it, so it may be freed or
/// reused as soon as the call function returns.
pub struct drpc_metadata {
    md: Metadata,
}

/// A new, empty metadata set. Never returns NULL.
#[no_mangle]
pub extern "C" fn drpc_metadata_new() -> *mut drpc_metadata {
    guard(std::ptr::null_mut(), || {
        Box::into_raw(Box::new(drpc_metadata {
            md: Metadata::new(),
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
        // SAFETY: NULL or a live metadata object, not used concurrently.
        let m = unsafe { md.as_mut() }.ok_or_else(|| Fail::bad("md is NULL"))?;
        // SAFETY: NUL-terminated strings per the contract.
        let (k, v) = unsafe { (arg_str(key, "key")?, arg_str(value, "value")?) };
        m.md.insert(k.to_string(), v.to_string());
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases metadata. NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_metadata_free(md: *mut drpc_metadata) {
    guard((), || {
        if !md.is_null() {
            // SAFETY: from `drpc_metadata_new`, released once.
            drop(unsafe { Box::from_raw(md) });
        }
    })
}

unsafe fn call_options(md: *const drpc_metadata, timeout_ms: u64) -> CallOptions {
    let mut opts = CallOptions::new();
    // SAFETY: NULL or live metadata.
    if let Some(m) = unsafe { md.as_ref() } {
        opts.metadata = m.md.clone();
    }
    if timeout_ms > 0 {
        opts.timeout = Some(millis(timeout_ms));
    }
    opts
}

// ---------------------------------------------------------------------------
// Connections.

/// A client connection. Thread-safe: any number of threads may make calls
/// on it at once (they multiplex over the one socket unless the connection
/// is sequential). Released with `drpc_conn_free`.
pub struct drpc_conn {
    conn: Conn,
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
        // SAFETY: NULL or live options.
        let opts = unsafe { opts.as_ref() }
            .map(|o| o.opts.clone())
            .unwrap_or_default();
        let conn = block_on(Conn::connect(addr, opts))??;
        // SAFETY: valid out pointer.
        unsafe { *conn_out = Arc::into_raw(Arc::new(drpc_conn { conn })).cast_mut() };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Closes the connection: every call and stream on it fails with
/// `DRPC_UNAVAILABLE`, and the connection's I/O tasks have ended when this
/// returns. Closing twice is fine. The handle must still be freed.
///
/// Blocks the calling thread briefly (not allowed from a completion
/// callback: use `drpc_conn_free` there, or close from another thread).
#[no_mangle]
pub extern "C" fn drpc_conn_close(conn: *const drpc_conn) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live handle.
        let c = unsafe { arc_ref(conn, "conn")? };
        block_on(c.conn.close())?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Whether the connection has terminated (closed here, by the remote, or by
/// an error); false if `conn` is NULL. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn drpc_conn_is_closed(conn: *const drpc_conn) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live handle.
        unsafe { conn.as_ref() }.is_some_and(|c| c.conn.is_closed())
    })
}

/// Releases the handle. Streams opened on the connection and asynchronous
/// calls still in flight keep the underlying connection open and complete
/// normally; the connection is closed once the handle and all of them are
/// released. Call `drpc_conn_close` first to fail them at once.
///
/// When nothing else uses the connection, it is closed here and the call
/// blocks briefly until the connection's background tasks have ended, so
/// nothing of it outlives this call; from a callback it only starts the
/// close. Must not race with another function using the same handle. NULL is
/// a no-op.
#[no_mangle]
pub extern "C" fn drpc_conn_free(conn: *mut drpc_conn) {
    guard((), || {
        if conn.is_null() {
            return;
        }
        // SAFETY: from `drpc_conn_dial`, released once.
        let handle = unsafe { Arc::from_raw(conn.cast_const()) };
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
/// completion callback (returns `DRPC_FAILED_PRECONDITION` there).
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
        // SAFETY: NULL or a live handle; arguments per the contract.
        let (c, rpc, req, opts) = unsafe {
            (
                arc_ref(conn, "conn")?,
                arg_str(rpc, "rpc")?,
                arg_bytes(request, request_len, "request")?,
                call_options(md, timeout_ms),
            )
        };
        let resp = block_on(c.conn.unary(rpc, req, &opts))??;
        // SAFETY: valid out pointer.
        unsafe { *response_out = drpc_buffer::into_raw(resp) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Completion callback of `drpc_conn_unary_async`, called exactly once per
/// started call with the caller's `userdata`, the call's status and either
/// `response` (status `DRPC_OK`) or `error` (any other status); the other is
/// NULL. The callback owns both and must release them with
/// `drpc_buffer_free` / `drpc_error_free` (or keep them).
///
/// It runs on a drpc runtime thread: it must return quickly and must not call
/// blocking drpc functions (they fail with `DRPC_FAILED_PRECONDITION`);
/// non-blocking ones such as `drpc_conn_unary_async`, `drpc_call_cancel` and
/// the `_free` functions are fine.
pub type drpc_unary_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        status: drpc_status,
        response: *mut drpc_buffer,
        error: *mut drpc_error,
    ),
>;

/// An asynchronous unary call started by `drpc_conn_unary_async`.
/// Thread-safe. Released with `drpc_call_free`.
pub struct drpc_call {
    cancel: CancelToken,
    done: Mutex<bool>,
    cv: Condvar,
}

struct SendPtr(*mut c_void);
// SAFETY: the C caller promises userdata may be used from the callback thread.
unsafe impl Send for SendPtr {}

/// Starts a unary call like `drpc_conn_unary` (same arguments, all copied
/// before this returns) without blocking: `callback(userdata, ...)` is
/// called once when the call ends. `userdata` must stay valid until then.
///
/// On success `*call_out` (which may be NULL if the caller does not need
/// the handle) is a new call handle owned by the caller (`drpc_call_free`),
/// which can cancel the call and wait for its completion. On failure (bad
/// arguments only) nothing was started and the callback is never called.
///
/// Never blocks. Thread-safe; may be called from a completion callback.
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
        // SAFETY: NULL or a live handle; arguments per the contract.
        let (c, rpc, req, mut opts) = unsafe {
            (
                arc_ref(conn, "conn")?,
                arg_str(rpc, "rpc")?.to_string(),
                arg_bytes(request, request_len, "request")?.to_vec(),
                call_options(md, timeout_ms),
            )
        };
        let call = Arc::new(drpc_call {
            cancel: CancelToken::new(),
            done: Mutex::new(false),
            cv: Condvar::new(),
        });
        opts.cancel = Some(call.cancel.clone());
        let userdata = SendPtr(userdata);
        let done = call.clone();
        runtime().spawn(async move {
            let result = c.conn.unary(&rpc, &req, &opts).await;
            drop(c);
            let userdata = userdata;
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let (status, buf, err) = match result {
                    Ok(resp) => (
                        drpc_status::DRPC_OK,
                        drpc_buffer::into_raw(resp),
                        std::ptr::null_mut(),
                    ),
                    Err(s) => {
                        let fail = Fail::from(s);
                        (
                            fail.status,
                            std::ptr::null_mut(),
                            Box::into_raw(fail.into_error()),
                        )
                    }
                };
                // SAFETY: the C callback per its contract.
                without_blocking(|| unsafe { callback(userdata.0, status, buf, err) });
            }));
            *done.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
            done.cv.notify_all();
        });
        if !call_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *call_out = Arc::into_raw(call).cast_mut() };
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
        // SAFETY: NULL or a live handle.
        let c = unsafe { call.as_ref() }.ok_or_else(|| Fail::bad("call is NULL"))?;
        c.cancel.cancel();
        Ok(drpc_status::DRPC_OK)
    })
}

/// Whether the call's callback has returned (false if `call` is NULL).
/// Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_call_is_done(call: *const drpc_call) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live handle.
        unsafe { call.as_ref() }.is_some_and(|c| *c.done.lock().unwrap_or_else(|e| e.into_inner()))
    })
}

/// Waits until the call's callback has returned, at most `timeout_ms`
/// milliseconds (0 = no limit). Returns `DRPC_OK` once it has,
/// `DRPC_DEADLINE_EXCEEDED` on timeout.
///
/// Blocks the calling thread; must not be called from the call's own
/// callback (it would wait for itself until the timeout).
#[no_mangle]
pub extern "C" fn drpc_call_wait(call: *const drpc_call, timeout_ms: u64) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live handle.
        let c = unsafe { call.as_ref() }.ok_or_else(|| Fail::bad("call is NULL"))?;
        check_may_block()?;
        let done = c.done.lock().unwrap_or_else(|e| e.into_inner());
        let done = if timeout_ms == 0 {
            c.cv.wait_while(done, |d| !*d)
                .unwrap_or_else(|e| e.into_inner())
        } else {
            c.cv.wait_timeout_while(done, millis(timeout_ms), |d| !*d)
                .unwrap_or_else(|e| e.into_inner())
                .0
        };
        Ok(if *done {
            drpc_status::DRPC_OK
        } else {
            drpc_status::DRPC_DEADLINE_EXCEEDED
        })
    })
}

/// Releases the call handle. Never blocks and does not cancel: a call still
/// in flight runs on and its callback is still called exactly once (cancel
/// first with `drpc_call_cancel` to end it). Fine from a callback, including
/// the call's own. NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_call_free(call: *mut drpc_call) {
    guard((), || {
        // SAFETY: from `drpc_conn_unary_async`, released once.
        unsafe { arc_free(call.cast_const()) }
    })
}

// ---------------------------------------------------------------------------
// Streams.

/// A stream: a client's streaming call (`drpc_conn_stream`) or the stream a
/// server's streaming handler works on.
///
/// Thread-safe: one thread may send while another receives, and
/// `drpc_stream_cancel` may be called from any thread at any time.
pub struct drpc_stream {
    pub(crate) stream: Stream,
    pub(crate) rpc: CString,
    pub(crate) metadata: MetadataView,
    /// Server streams are borrowed by the handler; the library frees them.
    pub(crate) server: bool,
    /// Server streams: the failure recorded by `drpc_stream_fail`.
    pub(crate) failure: Mutex<Option<drpc_core::Status>>,
}

impl drpc_stream {
    pub(crate) fn new(stream: Stream, metadata: &Metadata, server: bool) -> drpc_stream {
        drpc_stream {
            rpc: cstring_lossy(stream.context().rpc()),
            metadata: MetadataView::new(metadata),
            stream,
            server,
            failure: Mutex::new(None),
        }
    }
}

/// Opens a streaming call of `rpc` with optional invoke metadata (NULL for
/// none; copied) and a timeout in milliseconds for the whole stream (0 for
/// none; on expiry the stream is cancelled and its operations fail with
/// `DRPC_DEADLINE_EXCEEDED`). On success `*stream_out` is a new stream owned
/// by the caller (`drpc_stream_free`).
///
/// Blocks the calling thread until the invoke is written (on a sequential
/// connection, until the previous call has finished).
#[no_mangle]
pub unsafe extern "C" fn drpc_conn_stream(
    conn: *const drpc_conn,
    rpc: *const c_char,
    md: *const drpc_metadata,
    timeout_ms: u64,
    stream_out: *mut *mut drpc_stream,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(stream_out, "stream_out")?;
        // SAFETY: valid out pointer.
        unsafe { *stream_out = std::ptr::null_mut() };
        // SAFETY: NULL or a live handle; arguments per the contract.
        let (c, rpc, opts) = unsafe {
            (
                arc_ref(conn, "conn")?,
                arg_str(rpc, "rpc")?,
                call_options(md, timeout_ms),
            )
        };
        let stream = block_on(c.conn.stream(rpc, &opts))??;
        let s = drpc_stream::new(stream, &opts.metadata, false);
        // SAFETY: valid out pointer.
        unsafe { *stream_out = Arc::into_raw(Arc::new(s)).cast_mut() };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Sends one message (`len` bytes at `data`, copied; NULL allowed when `len`
/// is 0). Fails with the stream's error once it has ended, and with
/// `DRPC_FAILED_PRECONDITION` after `drpc_stream_close_send` or a clean end.
/// A message over the max message size fails with `DRPC_RESOURCE_EXHAUSTED`
/// and cancels the stream.
///
/// Does not wait for the remote: the message is queued for the connection's
/// writer. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_send(
    stream: *const drpc_stream,
    data: *const u8,
    len: usize,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        // SAFETY: NULL or a live handle; arguments per the contract.
        let (s, data) = unsafe { (arc_ref(stream, "stream")?, arg_bytes(data, len, "data")?) };
        block_on(s.stream.send(data))??;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Receives the next message. Returns `DRPC_OK` with `*message_out` set to a
/// new buffer owned by the caller (`drpc_buffer_free`); `DRPC_END` with
/// `*message_out` NULL once the remote finished sending (clean end, no error
/// object); or the stream's error code.
///
/// Blocks the calling thread until a message, the end or an error arrives
/// (or the stream is cancelled, by `drpc_stream_cancel`, its timeout or
/// `drpc_stream_free` from another thread: `DRPC_CANCELED` /
/// `DRPC_DEADLINE_EXCEEDED`).
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_recv(
    stream: *const drpc_stream,
    message_out: *mut *mut drpc_buffer,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(message_out, "message_out")?;
        // SAFETY: valid out pointer.
        unsafe { *message_out = std::ptr::null_mut() };
        // SAFETY: NULL or a live handle.
        let s = unsafe { arc_ref(stream, "stream")? };
        match block_on(s.stream.recv())?? {
            Some(msg) => {
                // SAFETY: valid out pointer.
                unsafe { *message_out = drpc_buffer::into_raw(msg) };
                Ok(drpc_status::DRPC_OK)
            }
            None => Ok(drpc_status::DRPC_END),
        }
    })
}

/// Tells the remote that no more messages will be sent (CloseSend). The
/// stream can still receive. Idempotent. Never blocks; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_close_send(
    stream: *const drpc_stream,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        // SAFETY: NULL or a live handle.
        let s = unsafe { arc_ref(stream, "stream")? };
        block_on(s.stream.close_send())??;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Cancels the stream: unless it already finished, the remote gets a Cancel
/// and blocked and later operations on the stream fail with `DRPC_CANCELED`.
/// The connection is not affected. Idempotent. Never blocks; thread-safe;
/// fine from any callback.
#[no_mangle]
pub extern "C" fn drpc_stream_cancel(stream: *const drpc_stream) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live handle.
        let s = unsafe { stream.as_ref() }.ok_or_else(|| Fail::bad("stream is NULL"))?;
        let _rt = runtime().enter();
        s.stream.cancel();
        Ok(drpc_status::DRPC_OK)
    })
}

/// Whether the stream has finished: completed, failed or cancelled
/// (false if `stream` is NULL). Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_is_finished(stream: *const drpc_stream) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live handle.
        unsafe { stream.as_ref() }.is_some_and(|s| s.stream.is_finished())
    })
}

/// Whether the call ended other than by completing: cancelled by either
/// side, failed, timed out or its connection lost (false if NULL). Never
/// blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_is_cancelled(stream: *const drpc_stream) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live handle.
        unsafe { stream.as_ref() }.is_some_and(|s| s.stream.context().is_cancelled())
    })
}

/// Waits until the call is cancelled (see `drpc_stream_is_cancelled`), at
/// most `timeout_ms` milliseconds (0 = no limit). Returns true if it was
/// cancelled, false on timeout or a NULL stream. Handy for a handler that
/// sleeps: it wakes up early when the client gives up.
///
/// Blocks the calling thread (returns false at once where blocking is not
/// allowed).
#[no_mangle]
pub extern "C" fn drpc_stream_wait_cancelled(stream: *const drpc_stream, timeout_ms: u64) -> bool {
    guard(false, || {
        // SAFETY: NULL or a live handle.
        let Some(s) = (unsafe { stream.as_ref() }) else {
            return false;
        };
        wait_cancelled(s.stream.context(), timeout_ms)
    })
}

pub(crate) fn wait_cancelled(ctx: &drpc_core::CallContext, timeout_ms: u64) -> bool {
    let fut = async {
        if timeout_ms == 0 {
            ctx.cancelled().await;
            true
        } else {
            tokio::time::timeout(millis(timeout_ms), ctx.cancelled())
                .await
                .is_ok()
        }
    };
    block_on(fut).unwrap_or_else(|_| ctx.is_cancelled())
}

/// The rpc name of the stream, NUL-terminated, owned by the stream (valid
/// until it is freed or, for a server stream, the handler returns).
/// NULL if `stream` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_rpc(stream: *const drpc_stream) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live handle.
        unsafe { stream.as_ref() }.map_or(std::ptr::null(), |s| s.rpc.as_ptr())
    })
}

/// The value of invoke-metadata `key` (for a server stream, what the client
/// sent; for a client stream, what it was opened with), NUL-terminated and
/// owned by the stream (lifetime as for `drpc_stream_rpc`); NULL if the key
/// is absent or an argument is NULL. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_metadata(
    stream: *const drpc_stream,
    key: *const c_char,
) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: NULL or a live handle; key per the contract.
        let (Some(s), Ok(k)) = (unsafe { stream.as_ref() }, unsafe { arg_str(key, "key") }) else {
            return std::ptr::null();
        };
        s.metadata.get(k).map_or(std::ptr::null(), |v| v.as_ptr())
    })
}

/// Sets `*count_out` to the number of invoke-metadata entries of the stream
/// (for a server stream, what the client sent; for a client stream, what it
/// was opened with). `DRPC_BAD_ARGUMENT` if an argument is NULL. Never
/// blocks; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_metadata_count(
    stream: *const drpc_stream,
    count_out: *mut usize,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live handle.
        let view = unsafe { stream.as_ref() }.map(|s| &s.metadata);
        metadata_count(view, "stream", count_out)
    })
}

/// Borrows invoke-metadata entry `index` (0 <= `index` <
/// `drpc_stream_metadata_count`; entries are in byte order of their keys)
/// of the stream: `*key_out` and `*value_out` are set to NUL-terminated
/// strings owned by the stream (lifetime as for `drpc_stream_rpc`). Either
/// out pointer may be NULL if not wanted, not both. `DRPC_BAD_ARGUMENT` (out
/// pointers set to NULL) if `stream` is NULL, both out pointers are NULL or
/// `index` is out of range. Never blocks; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_metadata_entry(
    stream: *const drpc_stream,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        // SAFETY: NULL or a live handle.
        let view = unsafe { stream.as_ref() }.map(|s| &s.metadata);
        metadata_entry(view, "stream", index, key_out, value_out)
    })
}

/// Releases a client stream. If it has not finished it is cancelled first
/// (the server is told; a thread blocked in `drpc_stream_recv` on it
/// returns `DRPC_CANCELED`). Never blocks. NULL is a no-op, and so is a
/// server stream (the library frees those after the handler returns).
/// The handle must not be used after, except by calls already blocked in it.
#[no_mangle]
pub extern "C" fn drpc_stream_free(stream: *mut drpc_stream) {
    guard((), || {
        // SAFETY: NULL or a live handle.
        let Some(s) = (unsafe { stream.as_ref() }) else {
            return;
        };
        if s.server {
            return;
        }
        let _rt = runtime().enter();
        s.stream.cancel();
        // SAFETY: from `drpc_conn_stream`, released once.
        unsafe { arc_free(stream.cast_const()) }
    })
}
