//! Interceptors: chains of C callbacks around every call of a server
//! (`drpc_server_add_interceptor`) or a connection (`drpc_conn_options_add_interceptor`),
//! the per-call view they are given (`drpc_call_info`), and the deadline and
//! trace context a handler's thread passes on to the calls it makes.

use crate::client::SendPtr;
use crate::*;
use drpc_core::{CallContext, CallOptions, Metadata, Status};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which way a message went, for `drpc_interceptor.on_message`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drpc_direction {
    /// Sent by this side (a client's request, a server's response).
    DRPC_DIRECTION_SENT = 0,
    /// Received from the peer.
    DRPC_DIRECTION_RECEIVED = 1,
}

/// Runs before the call (client: before anything is sent; server: before
/// the handler), in registration order. It may read everything about the
/// call through `call` and change its metadata
/// (`drpc_call_info_set_metadata`). Returning `DRPC_OK` (0) lets the call
/// go on; to refuse it, call `drpc_call_info_reject` (any code and message)
/// and/or return a gRPC code 1..=16 (any other value is `DRPC_INTERNAL`):
/// the call then fails with that status, no later interceptor's `before`
/// and no handler run (client: nothing is sent).
pub type drpc_interceptor_before =
    Option<unsafe extern "C" fn(userdata: *mut c_void, call: *mut drpc_call_info) -> u32>;

/// Called for every message of the call (the request and response of a
/// unary call too) as it is sent or received: `data` is borrowed for the
/// duration of the callback. It observes only.
pub type drpc_interceptor_on_message = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        call: *mut drpc_call_info,
        direction: u32,
        data: *const u8,
        len: usize,
    ),
>;

/// Called once when the call has ended, in reverse registration order, for
/// every interceptor whose `before` was called (also when one of them
/// rejected the call): the final code as on the wire (0 for success, 4 when
/// the deadline passed, 1 when it was cancelled), the time since the first
/// `before` in microseconds, and the message payload bytes sent and
/// received by this side.
pub type drpc_interceptor_after = Option<
    unsafe extern "C" fn(
        userdata: *mut c_void,
        call: *mut drpc_call_info,
        code: u64,
        duration_us: u64,
        bytes_sent: u64,
        bytes_received: u64,
    ),
>;

/// An interceptor: up to three callbacks (any may be NULL, not all) and the
/// `userdata` passed to each. The struct is copied when registered;
/// `userdata` must stay valid as long as calls can run (for a server until
/// `drpc_server_shutdown`/`_free` returned, for a connection until it and
/// all its calls and streams are released).
///
/// Threads: on a server, `before` and `after` run on the handler's thread
/// (a handler-pool thread for blocking handlers, where they may block; a
/// runtime worker for non-blocking handlers, where they must not). On a
/// client, `before` runs on the thread that starts the call and `after` on
/// the thread where the call ended (the caller's for blocking calls, a
/// runtime worker for `_async` calls and callbacks). `on_message` runs on
/// the thread that sent or received the message. Callbacks of one call never
/// overlap, except `on_message` of a stream that is sent on and received on
/// by two threads at once.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct drpc_interceptor {
    pub before: drpc_interceptor_before,
    pub on_message: drpc_interceptor_on_message,
    pub after: drpc_interceptor_after,
    pub userdata: *mut c_void,
}

/// A registered interceptor (a copy of the C struct).
#[derive(Clone, Copy)]
pub(crate) struct Interceptor {
    before: drpc_interceptor_before,
    on_message: drpc_interceptor_on_message,
    after: drpc_interceptor_after,
    userdata: SendPtr<c_void>,
}

/// An ordered chain of interceptors, frozen once calls can use it.
pub(crate) type Chain = Arc<[Interceptor]>;

/// Copies and checks an interceptor given through the C API.
pub(crate) fn interceptor_arg(p: *const drpc_interceptor) -> Res<Interceptor> {
    if p.is_null() {
        return Err(Fail::bad("interceptor is NULL"));
    }
    // SAFETY: the caller passes a readable `drpc_interceptor`.
    let ic = unsafe { *p };
    if ic.before.is_none() && ic.on_message.is_none() && ic.after.is_none() {
        return Err(Fail::bad("the interceptor has no callback"));
    }
    Ok(Interceptor {
        before: ic.before,
        on_message: ic.on_message,
        after: ic.after,
        userdata: SendPtr(ic.userdata),
    })
}

// ---------------------------------------------------------------------------
// The call as interceptors see it.

/// One call as its interceptors see it. Lives from the first `before` until
/// the last `after` has returned; the same handle is passed to every
/// callback of the call, so it may key per-call state. Thread-safe.
pub struct drpc_call_info {
    _opaque: [u8; 0],
}

pub(crate) struct CallInfoObj {
    server: bool,
    rpc: CString,
    peer: Option<CString>,
    deadline: Option<Instant>,
    traceparent: Option<CString>,
    state: Mutex<InfoState>,
}

struct InfoState {
    metadata: Metadata,
    /// Views handed out, the current one last: strings borrowed from an
    /// older view stay valid until the call ends.
    views: Vec<MetadataView>,
    /// The metadata changed since the last view was made.
    stale: bool,
    /// `before` callbacks are running: metadata may change, the call may be
    /// rejected.
    in_before: bool,
    rejected: Option<Status>,
}

impl HandleType for CallInfoObj {
    type C = drpc_call_info;
    const NAME: &'static str = "drpc_call_info";
}

impl CallInfoObj {
    pub(crate) fn new(
        server: bool,
        rpc: &str,
        peer: Option<&str>,
        metadata: Metadata,
        deadline: Option<Instant>,
        traceparent: Option<String>,
    ) -> CallInfoObj {
        CallInfoObj {
            server,
            rpc: cstring_lossy(rpc),
            peer: peer.map(cstring_lossy),
            deadline,
            traceparent: traceparent.as_deref().map(cstring_lossy),
            state: Mutex::new(InfoState {
                metadata,
                views: Vec::new(),
                stale: true,
                in_before: true,
                rejected: None,
            }),
        }
    }

    /// The server-side view of a call.
    pub(crate) fn server(ctx: &CallContext, metadata: &Metadata) -> CallInfoObj {
        let peer = ctx.peer().and_then(|p| p.addr.clone());
        CallInfoObj::new(
            true,
            ctx.rpc(),
            peer.as_deref(),
            metadata.clone(),
            server_deadline(ctx),
            server_trace(ctx).map(|t| t.to_traceparent()),
        )
    }

    /// Runs `f` on the current metadata view (made if stale).
    fn with_view<R>(&self, f: impl FnOnce(&MetadataView) -> R) -> R {
        let mut st = lock(&self.state);
        if st.stale || st.views.is_empty() {
            let view = MetadataView::new(&st.metadata);
            st.views.push(view);
            st.stale = false;
        }
        f(st.views.last().expect("just made"))
    }
}

fn info_ref(call: *const drpc_call_info) -> Res<Arc<CallInfoObj>> {
    get::<CallInfoObj>(call, "call")
}

/// Remaining time until `deadline` in microseconds (0 once passed), or -1
/// without a deadline.
pub(crate) fn remaining_us(deadline: Option<Instant>) -> i64 {
    match deadline {
        None => -1,
        Some(d) => d
            .saturating_duration_since(Instant::now())
            .as_micros()
            .min(i64::MAX as u128) as i64,
    }
}

/// Writes the remaining time of `deadline` to `out` (see `remaining_us`).
pub(crate) fn write_deadline(deadline: Option<Instant>, out: *mut i64) -> Res<drpc_status> {
    arg_out(out, "remaining_us_out")?;
    // SAFETY: checked non-NULL; a writable `int64_t *` per the contract.
    unsafe { *out = remaining_us(deadline) };
    Ok(drpc_status::DRPC_OK)
}

/// Writes a borrowed traceparent (or NULL) to `out`.
pub(crate) fn write_traceparent(tp: Option<&CStr>, out: *mut *const c_char) -> Res<drpc_status> {
    arg_out(out, "traceparent_out")?;
    // SAFETY: checked non-NULL; a writable `const char **`.
    unsafe { *out = tp.map_or(std::ptr::null(), |s| s.as_ptr()) };
    Ok(drpc_status::DRPC_OK)
}

/// The rpc name of the call, borrowed from `call` (valid until the call's
/// last `after` returned); NULL if `call` is not a live call info. Any
/// thread.
#[no_mangle]
pub extern "C" fn drpc_call_info_rpc(call: *const drpc_call_info) -> *const c_char {
    guard(std::ptr::null(), || {
        info_ref(call).map_or(std::ptr::null(), |c| c.rpc.as_ptr())
    })
}

/// Whether `call` is a server call (false: a client call, or not a live
/// call info). Any thread.
#[no_mangle]
pub extern "C" fn drpc_call_info_is_server(call: *const drpc_call_info) -> bool {
    guard(false, || info_ref(call).is_ok_and(|c| c.server))
}

/// The peer's address, borrowed from `call`: on a server the client's
/// (`"ip:port"`, or `"unix:..."`), on a client the address it dialed. NULL
/// when unknown or `call` is not a live call info. Any thread.
#[no_mangle]
pub extern "C" fn drpc_call_info_peer(call: *const drpc_call_info) -> *const c_char {
    guard(std::ptr::null(), || {
        info_ref(call)
            .ok()
            .and_then(|c| c.peer.as_ref().map(|p| p.as_ptr()))
            .unwrap_or(std::ptr::null())
    })
}

/// The value of invoke-metadata `key` as the call has it now (after the
/// changes of earlier interceptors), borrowed from `call` until its last
/// `after` returned; NULL if absent or an argument is invalid. Any thread.
#[no_mangle]
pub unsafe extern "C" fn drpc_call_info_metadata(
    call: *const drpc_call_info,
    key: *const c_char,
) -> *const c_char {
    guard(std::ptr::null(), || {
        // SAFETY: per the contract.
        let (Ok(c), Ok(k)) = (info_ref(call), unsafe { arg_str(key, "key") }) else {
            return std::ptr::null();
        };
        // The string lives in a view the call keeps until it ends.
        c.with_view(|v| v.get(k).map_or(std::ptr::null(), |s| s.as_ptr()))
    })
}

/// Sets `*count_out` to the number of invoke-metadata entries of the call.
/// `DRPC_BAD_ARGUMENT` for a NULL pointer or a handle that is not a live
/// call info. Any thread.
#[no_mangle]
pub extern "C" fn drpc_call_info_metadata_count(
    call: *const drpc_call_info,
    count_out: *mut usize,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = info_ref(call);
        match c {
            Ok(c) => c.with_view(|v| metadata_count(Some(v), "call", count_out)),
            Err(e) => {
                metadata_count(None, "call", count_out)?;
                Err(e)
            }
        }
    })
}

/// Borrows invoke-metadata entry `index` (keys in byte order) of the call,
/// as `drpc_server_call_metadata_entry` does; the strings stay valid until
/// the call's last `after` returned. Any thread.
#[no_mangle]
pub unsafe extern "C" fn drpc_call_info_metadata_entry(
    call: *const drpc_call_info,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || match info_ref(call) {
        Ok(c) => c.with_view(|v| metadata_entry(Some(v), "call", index, key_out, value_out)),
        Err(e) => {
            let _ = metadata_entry(None, "call", index, key_out, value_out);
            Err(e)
        }
    })
}

/// Sets invoke-metadata `key` to `value` (both NUL-terminated UTF-8,
/// copied), or removes it when `value` is NULL. Only from a `before`
/// callback (`DRPC_FAILED_PRECONDITION` later): on a client the change is
/// what is sent; on a server it is what later interceptors and the handler
/// see (`drpc_server_call_metadata`, `drpc_stream_metadata`). Strings
/// borrowed earlier stay valid.
#[no_mangle]
pub unsafe extern "C" fn drpc_call_info_set_metadata(
    call: *const drpc_call_info,
    key: *const c_char,
    value: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = info_ref(call)?;
        // SAFETY: per the contract.
        let key = unsafe { arg_str(key, "key")? };
        let value = if value.is_null() {
            None
        } else {
            // SAFETY: per the contract.
            Some(unsafe { arg_str(value, "value")? })
        };
        let mut st = lock(&c.state);
        if !st.in_before {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "metadata can only be changed from an interceptor's before callback",
            ));
        }
        match value {
            Some(v) => st.metadata.insert(key.to_string(), v.to_string()),
            None => st.metadata.remove(key),
        };
        st.stale = true;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Sets `*remaining_us_out` to the time left until the call's deadline in
/// microseconds (0 once it passed), or -1 if the call has no deadline. On a
/// server the deadline is the one the client sent (`drpc-timeout`), as the
/// server's options capped it; on a client the call's own (its timeout, or
/// the one inherited from the handler it is made in). `DRPC_BAD_ARGUMENT`
/// for a NULL pointer or a handle that is not a live call info. Any thread.
#[no_mangle]
pub extern "C" fn drpc_call_info_deadline(
    call: *const drpc_call_info,
    remaining_us_out: *mut i64,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = info_ref(call)?;
        write_deadline(c.deadline, remaining_us_out)
    })
}

/// Sets `*traceparent_out` to the call's W3C trace context
/// (`00-<trace id>-<span id>-<flags>`), borrowed from `call`, or NULL when it
/// has none. On a server it is the server span's context (same trace id as
/// the client's `traceparent`, a new span id); on a client the context the
/// call sends. Any thread.
#[no_mangle]
pub extern "C" fn drpc_call_info_traceparent(
    call: *const drpc_call_info,
    traceparent_out: *mut *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        if !traceparent_out.is_null() {
            // SAFETY: a writable `const char **` per the contract.
            unsafe { *traceparent_out = std::ptr::null() };
        }
        let c = info_ref(call)?;
        write_traceparent(c.traceparent.as_deref(), traceparent_out)
    })
}

/// Rejects the call with `code` (any value; 0 is sent as `DRPC_UNKNOWN`)
/// and `message` (NUL-terminated UTF-8, copied; NULL for a default). Only
/// from a `before` callback (`DRPC_FAILED_PRECONDITION` later); the call
/// fails with this status once that callback returns, whatever it returns.
#[no_mangle]
pub unsafe extern "C" fn drpc_call_info_reject(
    call: *const drpc_call_info,
    code: u64,
    message: *const c_char,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let c = info_ref(call)?;
        // SAFETY: per the contract.
        let message = unsafe { opt_str(message, "message")? };
        let message = if message.is_empty() { "rejected by an interceptor" } else { message };
        let mut st = lock(&c.state);
        if !st.in_before {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "a call can only be rejected from an interceptor's before callback",
            ));
        }
        st.rejected = Some(Status::from_wire(code, message));
        Ok(drpc_status::DRPC_OK)
    })
}

// ---------------------------------------------------------------------------
// Running a chain around a call.

/// A call going through its interceptors: `begin` ran the `before`s, the
/// call then reports its messages and, once, its end (`finish`; dropping it
/// unfinished reports a cancel).
pub(crate) struct Intercepted {
    chain: Chain,
    info: Arc<CallInfoObj>,
    handle: SendPtr<drpc_call_info>,
    /// How many interceptors' `before` ran (their `after` will).
    entered: usize,
    start: Instant,
    sent: AtomicU64,
    received: AtomicU64,
    finished: AtomicBool,
    /// Run `after` with the no-blocking mark (runtime threads).
    non_blocking: AtomicBool,
}

/// The status a `before`'s return value stands for (`None`: go on).
fn before_verdict(ret: u32) -> Option<Status> {
    match ret {
        0 => None,
        1..=16 => {
            let code = drpc_core::Code::from_u64(ret as u64);
            Some(Status::new(code, format!("rejected by an interceptor ({})", code.name())))
        }
        other => Some(Status::internal(format!("an interceptor failed (returned {other})"))),
    }
}

impl Intercepted {
    /// Runs the `before` callbacks of `chain` in order. `Err` when one
    /// rejected the call: the `after`s of those that ran have run then.
    pub(crate) fn begin(chain: &Chain, info: CallInfoObj) -> Result<Intercepted, Status> {
        let info = Arc::new(info);
        let handle = SendPtr(new_handle(info.clone()));
        let mut me = Intercepted {
            chain: chain.clone(),
            info,
            handle,
            entered: 0,
            start: Instant::now(),
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            non_blocking: AtomicBool::new(false),
        };
        for ic in chain.iter() {
            me.entered += 1;
            let Some(before) = ic.before else { continue };
            let ret = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: the C callback per its contract.
                unsafe { before(ic.userdata.0, me.handle.0) }
            }))
            .unwrap_or(drpc_status::DRPC_INTERNAL as u32);
            let rejected = lock(&me.info.state).rejected.take();
            if let Some(status) = rejected.or_else(|| before_verdict(ret)) {
                lock(&me.info.state).in_before = false;
                me.finish(status.wire_code());
                return Err(status);
            }
        }
        lock(&me.info.state).in_before = false;
        Ok(me)
    }

    /// The metadata after the `before`s' changes.
    pub(crate) fn metadata(&self) -> Metadata {
        lock(&self.info.state).metadata.clone()
    }

    /// From now on `after` runs where blocking is not allowed.
    pub(crate) fn set_non_blocking(&self) {
        self.non_blocking.store(true, Ordering::Relaxed);
    }

    /// Counts a message and shows it to the `on_message` callbacks.
    pub(crate) fn message(&self, direction: drpc_direction, data: &[u8]) {
        if self.finished.load(Ordering::Acquire) {
            // An asynchronous operation completing after the call's end.
            return;
        }
        let counter = match direction {
            drpc_direction::DRPC_DIRECTION_SENT => &self.sent,
            drpc_direction::DRPC_DIRECTION_RECEIVED => &self.received,
        };
        counter.fetch_add(data.len() as u64, Ordering::Relaxed);
        for ic in &self.chain[..self.entered] {
            if let Some(on_message) = ic.on_message {
                let _ = catch_unwind(AssertUnwindSafe(|| {
                    // SAFETY: the C callback per its contract; `data` is
                    // borrowed for the callback.
                    unsafe { on_message(ic.userdata.0, self.handle.0, direction as u32, data.as_ptr(), data.len()) }
                }));
            }
        }
    }

    /// Reports the end of the call (once; later calls do nothing) to the
    /// `after` callbacks in reverse order, then retires the handle.
    pub(crate) fn finish(&self, code: u64) {
        if self.finished.swap(true, Ordering::AcqRel) {
            return;
        }
        let duration_us = self.start.elapsed().as_micros().min(u64::MAX as u128) as u64;
        let (sent, received) = (self.sent.load(Ordering::Relaxed), self.received.load(Ordering::Relaxed));
        let run = || {
            for ic in self.chain[..self.entered].iter().rev() {
                if let Some(after) = ic.after {
                    let _ = catch_unwind(AssertUnwindSafe(|| {
                        // SAFETY: the C callback per its contract.
                        unsafe { after(ic.userdata.0, self.handle.0, code, duration_us, sent, received) }
                    }));
                }
            }
        };
        if self.non_blocking.load(Ordering::Relaxed) {
            runtime::without_blocking(run);
        } else {
            run();
        }
        handles::forget(self.handle.0);
    }
}

impl Drop for Intercepted {
    /// A call dropped without an outcome (a stream released unfinished) was
    /// cancelled.
    fn drop(&mut self) {
        self.finish(drpc_core::Code::Canceled.as_u64());
    }
}

/// The code a server call ended with, for `after`: the deadline's or a
/// cancel's when the call was cut short, else the handler's.
pub(crate) fn server_outcome_code(ctx: &CallContext, result: Result<(), &Status>) -> u64 {
    if ctx.is_cancelled() {
        if server_deadline(ctx).is_some_and(|d| d <= Instant::now()) {
            return drpc_core::Code::DeadlineExceeded.as_u64();
        }
        if result.is_ok() {
            return drpc_core::Code::Canceled.as_u64();
        }
    }
    match result {
        Ok(()) => 0,
        Err(s) => s.wire_code(),
    }
}

// ---------------------------------------------------------------------------
// Deadline and trace context of server calls, and their inheritance by the
// calls a handler makes.

/// The effective deadline of a server call (the client's `drpc-timeout`, as
/// the server's options capped it).
pub(crate) fn server_deadline(ctx: &CallContext) -> Option<Instant> {
    ctx.deadline().map(|d| d.into_std())
}

/// The server span's trace context of a call.
pub(crate) fn server_trace(ctx: &CallContext) -> Option<drpc_core::trace::TraceContext> {
    ctx.trace().cloned()
}

/// What a handler passes on to the calls it makes.
#[derive(Clone)]
pub(crate) struct Inherited {
    pub(crate) deadline: Option<Instant>,
    pub(crate) trace: Option<drpc_core::trace::TraceContext>,
}

impl Inherited {
    pub(crate) fn of(ctx: &CallContext) -> Inherited {
        Inherited { deadline: server_deadline(ctx), trace: server_trace(ctx) }
    }
}

thread_local! {
    /// Set while a C handler runs on this thread.
    static INHERITED: RefCell<Option<Inherited>> = const { RefCell::new(None) };
}

/// Runs `f` (a C handler) with `inherited` as the thread's handler context.
pub(crate) fn with_inherited<R>(inherited: Inherited, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Inherited>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            INHERITED.with(|i| *i.borrow_mut() = previous);
        }
    }
    let _restore = Restore(INHERITED.with(|i| i.borrow_mut().replace(inherited)));
    f()
}

/// Gives call options made on this thread the deadline and trace context of
/// the handler running on it (the earlier deadline wins; an explicit trace
/// context or `traceparent` metadata is kept).
pub(crate) fn inherit_into(opts: &mut CallOptions) {
    INHERITED.with(|i| {
        let i = i.borrow();
        let Some(inherited) = i.as_ref() else { return };
        if let Some(d) = inherited.deadline {
            let d = tokio::time::Instant::from_std(d);
            opts.deadline = Some(opts.deadline.map_or(d, |own| own.min(d)));
        }
        if opts.trace.is_none() && !opts.metadata.contains_key("traceparent") {
            opts.trace = inherited.trace.clone();
        }
    })
}

/// The deadline call options amount to, for a client interceptor.
pub(crate) fn options_deadline(opts: &CallOptions) -> Option<Instant> {
    let by_timeout = opts.timeout.map(|t| Instant::now() + t.min(Duration::from_secs(100 * 365 * 24 * 3600)));
    let by_deadline = opts.deadline.map(|d| d.into_std());
    match (by_timeout, by_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The traceparent call options will send.
pub(crate) fn options_traceparent(opts: &CallOptions) -> Option<String> {
    opts.metadata
        .get("traceparent")
        .cloned()
        .or_else(|| opts.trace.as_ref().map(|t| t.to_traceparent()))
}

/// Runs a client chain's `before`s for a call about to be made with `opts`
/// to `peer`; their metadata changes are applied to `opts`.
pub(crate) fn begin_client(
    chain: &Chain,
    rpc: &str,
    peer: Option<&str>,
    opts: &mut CallOptions,
) -> Result<Option<Intercepted>, Status> {
    if chain.is_empty() {
        return Ok(None);
    }
    let info = CallInfoObj::new(
        false,
        rpc,
        peer,
        opts.metadata.clone(),
        options_deadline(opts),
        options_traceparent(opts),
    );
    let intercepted = Intercepted::begin(chain, info)?;
    opts.metadata = intercepted.metadata();
    Ok(Some(intercepted))
}
