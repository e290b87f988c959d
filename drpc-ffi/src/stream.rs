//! Streams: a client's streaming call or the stream a server handler works
//! on, with blocking, timed, polling and callback operations.

use crate::client::{call_options, outcome_parts, ConnObj, SendPtr};
use crate::intercept::{drpc_direction, Intercepted};
use crate::*;
use drpc_core::{Metadata, Status, Stream};
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};
use tokio::sync::oneshot;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stream: a client's streaming call (`drpc_conn_stream`) or the stream a
/// server's streaming handler works on.
///
/// Thread-safe: one thread may send while another receives, and
/// `drpc_stream_cancel` may be called from any thread at any time.
pub struct drpc_stream {
    _opaque: [u8; 0],
}

/// Who owns a stream handle and how its call ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// `drpc_conn_stream`: owned by the caller; freeing cancels.
    Client,
    /// A blocking handler's stream: owned by the library, which ends the
    /// call when the handler returns.
    ServerBlocking,
    /// A non-blocking handler's stream: owned by the application, which
    /// ends the call with `drpc_stream_finish`.
    ServerAsync,
}

pub(crate) struct StreamObj {
    pub(crate) stream: std::mem::ManuallyDrop<Stream>,
    rpc: CString,
    metadata: MetadataView,
    pub(crate) role: Role,
    /// Blocking server streams: the failure recorded by `drpc_stream_fail`.
    pub(crate) failure: Mutex<Option<Status>>,
    ops: Mutex<Ops>,
    peer: crate::tls::PeerSlot,
    /// The interceptors watching the call, if any.
    pub(crate) intercepted: Option<Arc<Intercepted>>,
    /// The call's deadline, and its trace context (server: the server
    /// span's; client: what it sent).
    pub(crate) deadline: Option<std::time::Instant>,
    pub(crate) traceparent: Option<CString>,
}

/// Asynchronous operations in flight (at most one receive and one send), and
/// what waits for the send to complete.
#[derive(Default)]
struct Ops {
    recv_pending: bool,
    send_pending: bool,
    close_after_send: bool,
    /// Non-blocking server streams: where the end of the call goes.
    end_tx: Option<oneshot::Sender<Result<(), Status>>>,
    /// An end requested while a send was pending.
    end_after_send: Option<Result<(), Status>>,
}

impl Ops {
    fn ended(&self) -> bool {
        self.end_tx.is_none() || self.end_after_send.is_some()
    }
}

impl Drop for StreamObj {
    /// The last reference may go on any thread (a caller's, after its call
    /// returned): the stream (which cancels itself if unfinished) is
    /// released inside the runtime's context.
    fn drop(&mut self) {
        let _rt = runtime().enter();
        // SAFETY: dropped once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.stream) }
    }
}

impl HandleType for StreamObj {
    type C = drpc_stream;
    const NAME: &'static str = "drpc_stream";
}

impl StreamObj {
    pub(crate) fn new(
        stream: Stream,
        metadata: &Metadata,
        role: Role,
        end_tx: Option<oneshot::Sender<Result<(), Status>>>,
    ) -> StreamObj {
        let (deadline, traceparent) = match role {
            Role::Client => (None, None),
            _ => (
                crate::intercept::server_deadline(stream.context()),
                crate::intercept::server_trace(stream.context()).map(|t| cstring_lossy(&t.to_traceparent())),
            ),
        };
        StreamObj {
            rpc: cstring_lossy(stream.context().rpc()),
            metadata: MetadataView::new(metadata),
            intercepted: None,
            deadline,
            traceparent,
            stream: std::mem::ManuallyDrop::new(stream),
            role,
            failure: Mutex::new(None),
            ops: Mutex::new(Ops {
                end_tx,
                ..Ops::default()
            }),
            peer: Default::default(),
        }
    }

    pub(crate) fn peer_view(&self) -> &crate::tls::PeerView {
        self.peer.view(self.stream.context().peer())
    }

    /// Shows a message to the interceptors.
    fn observe(&self, direction: drpc_direction, data: &[u8]) {
        if let Some(i) = &self.intercepted {
            i.message(direction, data);
        }
    }

    /// Tells a client stream's interceptors how a receive ended the call
    /// (the clean end or an error).
    fn observe_end(&self, result: &Result<Option<bytes::Bytes>, Status>) {
        let Some(i) = &self.intercepted else { return };
        if self.role != Role::Client {
            return;
        }
        match result {
            Ok(Some(msg)) => i.message(drpc_direction::DRPC_DIRECTION_RECEIVED, msg),
            Ok(None) => i.finish(0),
            Err(s) => i.finish(s.wire_code()),
        }
    }

    fn check_no_async_recv(&self) -> Res<()> {
        if lock(&self.ops).recv_pending {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "a drpc_stream_recv_async is pending on this stream",
            ));
        }
        Ok(())
    }

    /// Ends a non-blocking server stream's call now, or after the pending
    /// send.
    pub(crate) fn finish(&self, end: Result<(), Status>) -> Res<()> {
        let tx = {
            let mut ops = lock(&self.ops);
            if ops.ended() {
                return Err(Fail::code(
                    drpc_core::Code::FailedPrecondition,
                    "the call was already finished",
                ));
            }
            if ops.send_pending {
                ops.end_after_send = Some(end);
                return Ok(());
            }
            ops.end_tx.take()
        };
        if let Some(tx) = tx {
            let _ = tx.send(end);
        }
        Ok(())
    }
}

fn stream_ref(stream: *const drpc_stream) -> Res<Arc<StreamObj>> {
    get::<StreamObj>(stream, "stream")
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
        let c = get::<ConnObj>(conn, "conn")?;
        // SAFETY: NUL-terminated string per the contract.
        let rpc = unsafe { arg_str(rpc, "rpc")? };
        let mut opts = call_options(md, timeout_ms)?;
        let intercepted = crate::intercept::begin_client(&c.interceptors, rpc, c.peer(), &mut opts)?.map(Arc::new);
        let deadline = crate::intercept::options_deadline(&opts);
        let traceparent = crate::intercept::options_traceparent(&opts);
        let stream = match block_on(c.conn.stream(rpc, &opts))? {
            Ok(stream) => stream,
            Err(status) => {
                if let Some(i) = &intercepted {
                    i.finish(status.wire_code());
                }
                return Err(status.into());
            }
        };
        let mut s = StreamObj::new(stream, &opts.metadata, Role::Client, None);
        s.intercepted = intercepted;
        s.deadline = deadline;
        s.traceparent = traceparent.as_deref().map(cstring_lossy);
        // SAFETY: valid out pointer.
        unsafe { *stream_out = new_handle(Arc::new(s)) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Sends one message (`len` bytes at `data`, copied; NULL allowed when `len`
/// is 0). Fails with the stream's error once it has ended, and with
/// `DRPC_FAILED_PRECONDITION` after `drpc_stream_close_send` or a clean end,
/// or while a `drpc_stream_send_async` is pending. A message over the max
/// message size fails with `DRPC_RESOURCE_EXHAUSTED` and cancels the stream.
///
/// Does not wait for the remote: the message is queued for the connection's
/// writer. Blocks only while the writer's buffer is full or, with flow
/// control, while the stream has no send window (`drpc_stream_send_async`
/// never blocks). Thread-safe; not from a callback.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_send(
    stream: *const drpc_stream,
    data: *const u8,
    len: usize,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let s = stream_ref(stream)?;
        // SAFETY: per the contract.
        let data = unsafe { arg_bytes(data, len, "data")? };
        if lock(&s.ops).send_pending {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "a drpc_stream_send_async is pending on this stream",
            ));
        }
        block_on(s.stream.send(data))??;
        s.observe(drpc_direction::DRPC_DIRECTION_SENT, data);
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
/// `DRPC_DEADLINE_EXCEEDED`). `DRPC_FAILED_PRECONDITION` while a
/// `drpc_stream_recv_async` is pending, or from a callback.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_recv(
    stream: *const drpc_stream,
    message_out: *mut *mut drpc_buffer,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    // SAFETY: per the contract.
    unsafe { recv(stream, None, message_out, err_out) }
}

/// Like `drpc_stream_recv`, waiting at most `timeout_ms` milliseconds:
/// `DRPC_TIMEOUT` (no error object, `*message_out` NULL) if nothing arrived
/// by then. A timeout never loses or reorders a message and does not affect
/// the stream: call again to keep waiting. `timeout_ms` 0 only checks what
/// has already arrived and never blocks, so it may be called anywhere,
/// including callbacks and non-blocking handlers.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_recv_timeout(
    stream: *const drpc_stream,
    timeout_ms: u64,
    message_out: *mut *mut drpc_buffer,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    // SAFETY: per the contract.
    unsafe { recv(stream, Some(timeout_ms), message_out, err_out) }
}

unsafe fn recv(
    stream: *const drpc_stream,
    timeout_ms: Option<u64>,
    message_out: *mut *mut drpc_buffer,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(message_out, "message_out")?;
        // SAFETY: valid out pointer.
        unsafe { *message_out = std::ptr::null_mut() };
        let s = stream_ref(stream)?;
        s.check_no_async_recv()?;
        // The core's recv takes a message off the queue only when it
        // completes, so dropping it on a timeout loses nothing.
        let received = match timeout_ms {
            None => Some(block_on(s.stream.recv())?),
            Some(0) => poll_once(s.stream.recv()),
            // Built inside the runtime: a timer needs its context.
            Some(ms) => block_on(async { tokio::time::timeout(millis(ms), s.stream.recv()).await })?.ok(),
        };
        if let Some(result) = &received {
            match result {
                Ok(Some(msg)) if s.role != Role::Client => s.observe(drpc_direction::DRPC_DIRECTION_RECEIVED, msg),
                _ => s.observe_end(result),
            }
        }
        match received {
            None => Ok(drpc_status::DRPC_TIMEOUT),
            Some(Ok(Some(msg))) => {
                // SAFETY: valid out pointer.
                unsafe { *message_out = drpc_buffer::into_raw(msg) };
                Ok(drpc_status::DRPC_OK)
            }
            Some(Ok(None)) => Ok(drpc_status::DRPC_END),
            Some(Err(status)) => Err(status.into()),
        }
    })
}

/// Completion callback of `drpc_stream_recv_async`: `userdata` and `stream`
/// as given, then what `drpc_stream_recv` would have returned: `DRPC_OK`
/// with `message` (owned by the callback: `drpc_buffer_free`), `DRPC_END`
/// (both NULL), or the stream's error status with `error` (owned by the
/// callback: `drpc_error_free`).
///
/// Runs on a runtime worker thread: it must return quickly and must not call
/// blocking drpc functions (they return `DRPC_FAILED_PRECONDITION`); it may
/// call `drpc_stream_recv_async` again (the usual way to keep reading),
/// `drpc_stream_send_async`, `drpc_stream_close_send`, `drpc_stream_finish`,
/// `drpc_stream_cancel` and `drpc_stream_free`. If the stream was freed
/// meanwhile, `stream` is the stale handle (calls with it return
/// `DRPC_BAD_ARGUMENT`).
pub type drpc_stream_recv_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        stream: *mut drpc_stream,
        status: drpc_status,
        message: *mut drpc_buffer,
        error: *mut drpc_error,
    ),
>;

/// Completion callback of `drpc_stream_send_async`: `DRPC_OK` once the
/// message is queued for the connection's writer, else the error (owned by
/// the callback: `drpc_error_free`). Same thread rules as
/// `drpc_stream_recv_callback`.
pub type drpc_stream_send_callback = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        stream: *mut drpc_stream,
        status: drpc_status,
        error: *mut drpc_error,
    ),
>;

/// Receives the next message without blocking: `callback(userdata, stream,
/// ...)` is called exactly once, on a runtime worker thread, when a message,
/// the end or an error arrives — also when the stream is cancelled or freed
/// (then with `DRPC_CANCELED`). `userdata` must stay valid until then.
///
/// At most one receive may be pending per stream: another
/// `drpc_stream_recv_async`, `drpc_stream_recv` or
/// `drpc_stream_recv_timeout` meanwhile returns `DRPC_FAILED_PRECONDITION`.
/// The callback may start the next one. With it one thread (or none) drives
/// any number of streams. Never blocks; thread-safe; fine from callbacks.
#[no_mangle]
pub extern "C" fn drpc_stream_recv_async(
    stream: *const drpc_stream,
    callback: drpc_stream_recv_callback,
    userdata: *mut c_void,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let callback = callback.ok_or_else(|| Fail::bad("callback is NULL"))?;
        let s = stream_ref(stream)?;
        {
            let mut ops = lock(&s.ops);
            if ops.recv_pending {
                return Err(Fail::code(
                    drpc_core::Code::FailedPrecondition,
                    "a drpc_stream_recv_async is already pending on this stream",
                ));
            }
            ops.recv_pending = true;
        }
        let (handle, userdata) = (SendPtr(stream.cast_mut()), SendPtr(userdata));
        runtime().spawn(async move {
            let result = s.stream.recv().await;
            runtime::without_blocking(|| match &result {
                Ok(Some(msg)) if s.role != Role::Client => s.observe(drpc_direction::DRPC_DIRECTION_RECEIVED, msg),
                _ => s.observe_end(&result),
            });
            // Cleared first, so the callback can start the next receive.
            lock(&s.ops).recv_pending = false;
            drop(s);
            let (handle, userdata) = (handle, userdata);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let (status, msg, err) = outcome_parts(result, drpc_status::DRPC_END);
                // SAFETY: the C callback per its contract.
                without_blocking(|| unsafe { callback(userdata.0, handle.0, status, msg, err) });
            }));
        });
        Ok(drpc_status::DRPC_OK)
    })
}

/// Sends one message (`len` bytes at `data`, copied before this returns)
/// without blocking; `callback` (may be NULL) is called once, on a runtime
/// worker thread, when it is queued for the writer or failed. Messages keep
/// their order. At most one send may be pending per stream: another
/// `drpc_stream_send_async` or `drpc_stream_send` meanwhile returns
/// `DRPC_FAILED_PRECONDITION` (wait for the callback; that is the
/// backpressure). `drpc_stream_close_send` and `drpc_stream_finish` called
/// meanwhile take effect after the pending message. Never blocks;
/// thread-safe; fine from callbacks.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_send_async(
    stream: *const drpc_stream,
    data: *const u8,
    len: usize,
    callback: drpc_stream_send_callback,
    userdata: *mut c_void,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = stream_ref(stream)?;
        // SAFETY: per the contract.
        let data = bytes::Bytes::copy_from_slice(unsafe { arg_bytes(data, len, "data")? });
        {
            let mut ops = lock(&s.ops);
            if ops.send_pending {
                return Err(Fail::code(
                    drpc_core::Code::FailedPrecondition,
                    "a drpc_stream_send_async is already pending on this stream",
                ));
            }
            if ops.close_after_send || (s.role == Role::ServerAsync && ops.ended()) {
                return Err(Fail::code(
                    drpc_core::Code::FailedPrecondition,
                    "send after drpc_stream_close_send or drpc_stream_finish",
                ));
            }
            ops.send_pending = true;
        }
        let (handle, userdata) = (SendPtr(stream.cast_mut()), SendPtr(userdata));
        runtime().spawn(async move {
            let result = s.stream.send(&data).await;
            if result.is_ok() {
                runtime::without_blocking(|| s.observe(drpc_direction::DRPC_DIRECTION_SENT, &data));
            }
            let (close, end) = {
                let mut ops = lock(&s.ops);
                ops.send_pending = false;
                let close = std::mem::take(&mut ops.close_after_send);
                let end = match ops.end_after_send.take() {
                    Some(end) => ops.end_tx.take().map(|tx| (tx, end)),
                    None => None,
                };
                (close, end)
            };
            if close {
                let _ = poll_once(s.stream.close_send());
            }
            if let Some((tx, end)) = end {
                let _ = tx.send(end);
            }
            drop(s);
            let Some(callback) = callback else { return };
            let (handle, userdata) = (handle, userdata);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let (status, _, err) = outcome_parts(result.map(|()| None), drpc_status::DRPC_OK);
                // SAFETY: the C callback per its contract.
                without_blocking(|| unsafe { callback(userdata.0, handle.0, status, err) });
            }));
        });
        Ok(drpc_status::DRPC_OK)
    })
}

/// Tells the remote that no more messages will be sent (CloseSend). The
/// stream can still receive. With a `drpc_stream_send_async` pending, it
/// takes effect after that message. Idempotent. Never blocks; thread-safe;
/// fine from callbacks.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_close_send(
    stream: *const drpc_stream,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let s = stream_ref(stream)?;
        {
            let mut ops = lock(&s.ops);
            if ops.send_pending {
                ops.close_after_send = true;
                return Ok(drpc_status::DRPC_OK);
            }
        }
        match poll_once(s.stream.close_send()) {
            Some(result) => result?,
            None => {
                return Err(Fail::code(
                    drpc_core::Code::Internal,
                    "close_send did not complete at once",
                ))
            }
        }
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
        let s = stream_ref(stream)?;
        let _rt = runtime().enter();
        s.stream.cancel();
        Ok(drpc_status::DRPC_OK)
    })
}

/// Whether the stream has finished: completed, failed or cancelled
/// (false if `stream` is not a live stream handle). Never blocks;
/// thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_is_finished(stream: *const drpc_stream) -> bool {
    guard(false, || {
        try_get::<StreamObj>(stream).is_some_and(|s| s.stream.is_finished())
    })
}

/// Whether the call ended other than by completing: cancelled by either
/// side, failed, timed out or its connection lost (false if `stream` is not
/// a live stream handle). Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_is_cancelled(stream: *const drpc_stream) -> bool {
    guard(false, || {
        try_get::<StreamObj>(stream).is_some_and(|s| s.stream.context().is_cancelled())
    })
}

/// Waits until the call is cancelled (see `drpc_stream_is_cancelled`), at
/// most `timeout_ms` milliseconds (0 = no limit). Returns true if it was
/// cancelled (freeing a client stream cancels it, so a thread waiting here
/// when another frees the stream returns true), false on timeout or if
/// `stream` is not a live stream handle. Handy for a handler that sleeps: it
/// wakes up early when the client gives up.
///
/// Blocks the calling thread (returns at once where blocking is not
/// allowed).
#[no_mangle]
pub extern "C" fn drpc_stream_wait_cancelled(stream: *const drpc_stream, timeout_ms: u64) -> bool {
    guard(false, || {
        try_get::<StreamObj>(stream).is_some_and(|s| wait_cancelled(s.stream.context(), timeout_ms))
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
/// until it is freed or, for a blocking handler's stream, the handler
/// returns). NULL if `stream` is not a live stream handle. Thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_rpc(stream: *const drpc_stream) -> *const c_char {
    guard(std::ptr::null(), || {
        // The pointer stays valid while the handle is live: the table holds
        // a reference to the stream until it is freed.
        try_get::<StreamObj>(stream).map_or(std::ptr::null(), |s| s.rpc.as_ptr())
    })
}

/// The value of invoke-metadata `key` (for a server stream, what the client
/// sent; for a client stream, what it was opened with), NUL-terminated and
/// owned by the stream (lifetime as for `drpc_stream_rpc`); NULL if the key
/// is absent or an argument is NULL or invalid. Thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_metadata(
    stream: *const drpc_stream,
    key: *const c_char,
) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: key per the contract.
        let (Some(s), Ok(k)) = (try_get::<StreamObj>(stream), unsafe { arg_str(key, "key") }) else {
            return std::ptr::null();
        };
        s.metadata.get(k).map_or(std::ptr::null(), |v| v.as_ptr())
    })
}

/// Sets `*count_out` to the number of invoke-metadata entries of the stream
/// (for a server stream, what the client sent; for a client stream, what it
/// was opened with). `DRPC_BAD_ARGUMENT` if an argument is NULL or invalid.
/// Never blocks; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_metadata_count(
    stream: *const drpc_stream,
    count_out: *mut usize,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = try_get::<StreamObj>(stream);
        metadata_count(s.as_ref().map(|s| &s.metadata), "stream", count_out)
    })
}

/// Borrows invoke-metadata entry `index` (0 <= `index` <
/// `drpc_stream_metadata_count`; entries are in byte order of their keys)
/// of the stream: `*key_out` and `*value_out` are set to NUL-terminated
/// strings owned by the stream (lifetime as for `drpc_stream_rpc`). Either
/// out pointer may be NULL if not wanted, not both. `DRPC_BAD_ARGUMENT` (out
/// pointers set to NULL) if `stream` is not a live stream, both out pointers
/// are NULL or `index` is out of range. Never blocks; thread-safe.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_metadata_entry(
    stream: *const drpc_stream,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = try_get::<StreamObj>(stream);
        metadata_entry(s.as_ref().map(|s| &s.metadata), "stream", index, key_out, value_out)
    })
}

/// Sets `*remaining_us_out` to the time left until the stream's deadline in
/// microseconds (0 once it passed), or -1 if it has none. A server stream's
/// deadline is the one the client sent (see `drpc_server_call_deadline`;
/// calls a blocking handler makes on its thread inherit it); a client
/// stream's is its timeout or the one it inherited. `DRPC_BAD_ARGUMENT` for
/// a NULL pointer or a handle that is not a live stream. Never blocks;
/// thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_deadline(stream: *const drpc_stream, remaining_us_out: *mut i64) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = stream_ref(stream)?;
        crate::intercept::write_deadline(s.deadline, remaining_us_out)
    })
}

/// Sets `*traceparent_out` to the stream's W3C trace context, borrowed from
/// the stream (lifetime as for `drpc_stream_rpc`), or NULL when it has
/// none: for a server stream the server span's (see
/// `drpc_server_call_traceparent`), for a client stream the one it sent.
/// Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_stream_traceparent(
    stream: *const drpc_stream,
    traceparent_out: *mut *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        if !traceparent_out.is_null() {
            // SAFETY: a writable `const char **` per the contract.
            unsafe { *traceparent_out = std::ptr::null() };
        }
        let s = stream_ref(stream)?;
        crate::intercept::write_traceparent(s.traceparent.as_deref(), traceparent_out)
    })
}

/// Server streams only: ends the call with `code` and `message` (as in
/// `drpc_server_call_fail`). For a blocking handler's stream this happens
/// when the handler returns, whatever it returns (the last call wins); for
/// a non-blocking handler's stream it is `drpc_stream_finish(stream, code,
/// message)`. `DRPC_BAD_ARGUMENT` on a client stream. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_fail(
    stream: *const drpc_stream,
    code: u64,
    message: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = stream_ref(stream)?;
        // SAFETY: per the contract.
        let message = unsafe { opt_str(message, "message")? };
        let status = Status::from_wire(code, message);
        match s.role {
            Role::Client => Err(Fail::bad(
                "drpc_stream_fail is for server streams; use drpc_stream_cancel",
            )),
            Role::ServerBlocking => {
                *lock(&s.failure) = Some(status);
                Ok(drpc_status::DRPC_OK)
            }
            Role::ServerAsync => {
                s.finish(Err(status))?;
                Ok(drpc_status::DRPC_OK)
            }
        }
    })
}

/// Non-blocking handlers' streams only (`drpc_server_register_stream_async`):
/// ends the call. `code` 0 ends it cleanly (the client's receive returns
/// `DRPC_END`); any other code fails it with that code and `message`
/// (NUL-terminated UTF-8, copied; NULL for none), as `drpc_server_call_fail`
/// does. With a `drpc_stream_send_async` pending, the end follows that
/// message. Finishing twice is `DRPC_FAILED_PRECONDITION`; other streams
/// are `DRPC_BAD_ARGUMENT`. The handle must still be freed. Never blocks;
/// thread-safe; fine from callbacks.
#[no_mangle]
pub unsafe extern "C" fn drpc_stream_finish(
    stream: *const drpc_stream,
    code: u64,
    message: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let s = stream_ref(stream)?;
        if s.role != Role::ServerAsync {
            return Err(Fail::bad(
                "drpc_stream_finish is for the streams of non-blocking handlers",
            ));
        }
        // SAFETY: per the contract.
        let message = unsafe { opt_str(message, "message")? };
        s.finish(if code == 0 {
            Ok(())
        } else {
            Err(Status::from_wire(code, message))
        })?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases a stream. A client stream that has not finished is cancelled
/// first (the server is told). A non-blocking handler's stream whose call
/// was not finished (`drpc_stream_finish`) ends it with `DRPC_INTERNAL`.
/// Threads blocked on the stream return: `drpc_stream_recv` with
/// `DRPC_CANCELED`, `drpc_stream_wait_cancelled` with true; a pending
/// `drpc_stream_recv_async` callback is called with `DRPC_CANCELED`. Later
/// calls with the handle return `DRPC_BAD_ARGUMENT`. Never blocks; fine from
/// callbacks. NULL is a no-op, and so is a blocking handler's stream (the
/// library frees those after the handler returns).
#[no_mangle]
pub extern "C" fn drpc_stream_free(stream: *mut drpc_stream) {
    guard((), || {
        match try_get::<StreamObj>(stream) {
            Some(s) if s.role == Role::ServerBlocking => return,
            Some(_) => {}
            None => return,
        }
        let Some(s) = take::<StreamObj>(stream) else {
            return;
        };
        let _rt = runtime().enter();
        match s.role {
            Role::Client => s.stream.cancel(),
            Role::ServerAsync => {
                let tx = {
                    let mut ops = lock(&s.ops);
                    if ops.end_after_send.is_some() {
                        None
                    } else {
                        ops.end_tx.take()
                    }
                };
                if let Some(tx) = tx {
                    let _ = tx.send(Err(Status::internal(
                        "the handler released the stream without finishing the call",
                    )));
                }
            }
            Role::ServerBlocking => {}
        }
    })
}
