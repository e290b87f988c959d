//! `libdrpc`: the C ABI of drpc-rs.
//!
//! Conventions (modelled on rustls-ffi), repeated in `include/drpc.h`:
//!
//! * Every object is an opaque handle created by a `drpc_*_new` / `dial` /
//!   `open` function and released by exactly one call to its `_free` function.
//!   `_free(NULL)` is a no-op.
//! * Fallible functions return a [`drpc_status`]: `DRPC_OK` (0), a gRPC code
//!   (1..=16) for RPC failures, `DRPC_BAD_ARGUMENT` for a NULL or invalid
//!   argument, or `DRPC_END` for the clean end of a stream. When such a
//!   function takes a `drpc_error **err_out` and it is non-NULL, it is set to
//!   NULL on success and to a new error object (owned by the caller, freed
//!   with `drpc_error_free`) on any failure.
//! * No Rust panic crosses the boundary: every exported function catches
//!   panics and turns them into `DRPC_INTERNAL`.
//! * Handles are ids looked up in a table (see `handles`), never
//!   dereferenced: a stale or wrong-kind handle is `DRPC_BAD_ARGUMENT`, and
//!   every call holds a strong reference to its object while it runs.
//! * One shared multi-thread tokio runtime (one worker per CPU unless
//!   configured), created on first use, runs all I/O; blocking handlers run
//!   on a bounded pool of their own (see `runtime`). Blocking functions park
//!   the calling thread.

#![allow(non_camel_case_types)]
// Entry points are called from C, where "unsafe" does not exist; their
// pointer contracts are documented in drpc.h and NULL is always checked.
#![allow(clippy::missing_safety_doc, clippy::not_unsafe_ptr_arg_deref)]
#![deny(unsafe_op_in_unsafe_fn)]

/// A static NUL-terminated C string.
macro_rules! cstr {
    ($s:expr) => {
        concat!($s, "\0").as_ptr().cast::<std::ffi::c_char>()
    };
}

mod channel;
mod client;
mod handles;
mod intercept;
mod log;
mod metrics;
mod runtime;
mod server;
mod stream;
mod tls;

pub use channel::*;
pub use client::*;
pub use intercept::*;
pub use log::*;
pub use metrics::*;
pub use server::*;
pub use stream::*;
pub use tls::*;

use bytes::Bytes;
use drpc_core::{Code, Status};
use handles::{get, new_handle, take, try_get, HandleType};
use runtime::{block_on, check_may_block, poll_once, runtime, without_blocking};
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

/// Result of a libdrpc function, and the code of a `drpc_error`.
///
/// Values 0..=16 are the gRPC status codes DRPC uses (DESIGN.md section 5);
/// a remote error with a code outside that range is reported as
/// `DRPC_UNKNOWN` (its exact code is in `drpc_error_wire_code`). The values
/// from 100 up are produced by this library only.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drpc_status {
    /// Success.
    DRPC_OK = 0,
    DRPC_CANCELED = 1,
    DRPC_UNKNOWN = 2,
    /// Sent by a remote peer (or a handler); for misuse of this API see
    /// `DRPC_BAD_ARGUMENT`.
    DRPC_INVALID_ARGUMENT = 3,
    DRPC_DEADLINE_EXCEEDED = 4,
    DRPC_NOT_FOUND = 5,
    DRPC_ALREADY_EXISTS = 6,
    DRPC_PERMISSION_DENIED = 7,
    DRPC_RESOURCE_EXHAUSTED = 8,
    /// Also returned for calls made in the wrong state, e.g. registering a
    /// handler after `drpc_server_listen`, or a blocking call made from a
    /// thread that must not block (see `drpc_conn_unary_async`).
    DRPC_FAILED_PRECONDITION = 9,
    DRPC_ABORTED = 10,
    DRPC_OUT_OF_RANGE = 11,
    DRPC_UNIMPLEMENTED = 12,
    /// Also returned when the library itself failed (a caught panic).
    DRPC_INTERNAL = 13,
    DRPC_UNAVAILABLE = 14,
    DRPC_DATA_LOSS = 15,
    DRPC_UNAUTHENTICATED = 16,
    /// A NULL pointer where one is not allowed, a string that is not UTF-8,
    /// a zero size, or a handle of the wrong kind was passed to this library.
    /// Nothing was done.
    DRPC_BAD_ARGUMENT = 100,
    /// `drpc_stream_recv` only: the remote finished sending (clean end of
    /// the stream). Not an error: no error object is created.
    DRPC_END = 101,
    /// `drpc_stream_recv_timeout` only: no message arrived within the
    /// timeout. The stream is unaffected (nothing was lost); try again. Not
    /// an error: no error object is created.
    DRPC_TIMEOUT = 102,
}

impl drpc_status {
    fn from_code(code: Code) -> drpc_status {
        use drpc_status::*;
        match code {
            Code::Ok => DRPC_OK,
            Code::Canceled => DRPC_CANCELED,
            Code::Unknown => DRPC_UNKNOWN,
            Code::InvalidArgument => DRPC_INVALID_ARGUMENT,
            Code::DeadlineExceeded => DRPC_DEADLINE_EXCEEDED,
            Code::NotFound => DRPC_NOT_FOUND,
            Code::AlreadyExists => DRPC_ALREADY_EXISTS,
            Code::PermissionDenied => DRPC_PERMISSION_DENIED,
            Code::ResourceExhausted => DRPC_RESOURCE_EXHAUSTED,
            Code::FailedPrecondition => DRPC_FAILED_PRECONDITION,
            Code::Aborted => DRPC_ABORTED,
            Code::OutOfRange => DRPC_OUT_OF_RANGE,
            Code::Unimplemented => DRPC_UNIMPLEMENTED,
            Code::Internal => DRPC_INTERNAL,
            Code::Unavailable => DRPC_UNAVAILABLE,
            Code::DataLoss => DRPC_DATA_LOSS,
            Code::Unauthenticated => DRPC_UNAUTHENTICATED,
        }
    }

    fn name(self) -> *const c_char {
        use drpc_status::*;
        match self {
            DRPC_OK => cstr!("OK"),
            DRPC_CANCELED => cstr!("CANCELED"),
            DRPC_UNKNOWN => cstr!("UNKNOWN"),
            DRPC_INVALID_ARGUMENT => cstr!("INVALID_ARGUMENT"),
            DRPC_DEADLINE_EXCEEDED => cstr!("DEADLINE_EXCEEDED"),
            DRPC_NOT_FOUND => cstr!("NOT_FOUND"),
            DRPC_ALREADY_EXISTS => cstr!("ALREADY_EXISTS"),
            DRPC_PERMISSION_DENIED => cstr!("PERMISSION_DENIED"),
            DRPC_RESOURCE_EXHAUSTED => cstr!("RESOURCE_EXHAUSTED"),
            DRPC_FAILED_PRECONDITION => cstr!("FAILED_PRECONDITION"),
            DRPC_ABORTED => cstr!("ABORTED"),
            DRPC_OUT_OF_RANGE => cstr!("OUT_OF_RANGE"),
            DRPC_UNIMPLEMENTED => cstr!("UNIMPLEMENTED"),
            DRPC_INTERNAL => cstr!("INTERNAL"),
            DRPC_UNAVAILABLE => cstr!("UNAVAILABLE"),
            DRPC_DATA_LOSS => cstr!("DATA_LOSS"),
            DRPC_UNAUTHENTICATED => cstr!("UNAUTHENTICATED"),
            DRPC_BAD_ARGUMENT => cstr!("BAD_ARGUMENT"),
            DRPC_END => cstr!("END"),
            DRPC_TIMEOUT => cstr!("TIMEOUT"),
        }
    }

    fn from_u32(v: u32) -> Option<drpc_status> {
        use drpc_status::*;
        const ALL: [drpc_status; 20] = [
            DRPC_OK,
            DRPC_CANCELED,
            DRPC_UNKNOWN,
            DRPC_INVALID_ARGUMENT,
            DRPC_DEADLINE_EXCEEDED,
            DRPC_NOT_FOUND,
            DRPC_ALREADY_EXISTS,
            DRPC_PERMISSION_DENIED,
            DRPC_RESOURCE_EXHAUSTED,
            DRPC_FAILED_PRECONDITION,
            DRPC_ABORTED,
            DRPC_OUT_OF_RANGE,
            DRPC_UNIMPLEMENTED,
            DRPC_INTERNAL,
            DRPC_UNAVAILABLE,
            DRPC_DATA_LOSS,
            DRPC_UNAUTHENTICATED,
            DRPC_BAD_ARGUMENT,
            DRPC_END,
            DRPC_TIMEOUT,
        ];
        ALL.iter().copied().find(|s| *s as u32 == v)
    }
}

/// An error: a status code, the exact wire code and a message.
///
/// Created by this library and handed to the caller through an `err_out`
/// parameter or a completion callback; the receiver owns it and must release
/// it with `drpc_error_free`. Immutable: may be read from any thread.
pub struct drpc_error {
    _opaque: [u8; 0],
}

pub(crate) struct ErrorData {
    status: drpc_status,
    wire_code: u64,
    /// The message with a NUL appended (interior NULs are kept; see
    /// `drpc_error_message_len`).
    message: Vec<u8>,
}

/// Values C owns as real pointers (errors and buffers, made in large
/// numbers): a box whose first word names its type, so that one passed
/// where the other is expected, or a handle passed to either, is refused
/// (`DRPC_BAD_ARGUMENT`) instead of read. The tag is cleared when the box
/// is freed; a freed pointer reused is still undefined behaviour.
#[repr(C)]
pub(crate) struct Tagged<T> {
    tag: u32,
    value: T,
}

const ERROR_TAG: u32 = 0xd7c0_e770;
const BUFFER_TAG: u32 = 0xd7c0_b0f0;

impl<T> Tagged<T> {
    fn into_raw<C>(tag: u32, value: T) -> *mut C {
        Box::into_raw(Box::new(Tagged { tag, value })).cast()
    }

    /// Borrows the value behind `p` if it is a live box with `tag`.
    ///
    /// # Safety
    /// `p` is NULL, a handle, or a pointer this library returned.
    unsafe fn borrow<'a, C>(p: *const C, tag: u32) -> Option<&'a T> {
        if p.is_null() || handles::looks_like_handle(p) {
            return None;
        }
        // SAFETY: every tagged box starts with its u32 tag (repr(C)).
        if unsafe { *p.cast::<u32>() } != tag {
            return None;
        }
        // SAFETY: the tag says it is a `Tagged<T>`.
        Some(unsafe { &(*p.cast::<Tagged<T>>()).value })
    }

    /// Frees the box behind `p` if it is a live box with `tag`.
    ///
    /// # Safety
    /// As for `borrow`; `p` is not used after.
    unsafe fn free<C>(p: *mut C, tag: u32) {
        // SAFETY: per the contract.
        if unsafe { Self::borrow(p.cast_const(), tag) }.is_none() {
            return;
        }
        let b = p.cast::<Tagged<T>>();
        // SAFETY: checked above; released once.
        unsafe {
            (*b).tag = 0;
            drop(Box::from_raw(b));
        }
    }
}

/// Borrows an error (`None` for NULL or anything else).
fn error_ref<'a>(err: *const drpc_error) -> Option<&'a ErrorData> {
    // SAFETY: NULL, a handle or a pointer from this library.
    unsafe { Tagged::<ErrorData>::borrow(err, ERROR_TAG) }
}

/// The failure type of the glue code.
#[derive(Debug, Clone)]
pub(crate) struct Fail {
    status: drpc_status,
    wire_code: u64,
    message: String,
}

impl Fail {
    pub(crate) fn bad(message: impl Into<String>) -> Fail {
        Fail {
            status: drpc_status::DRPC_BAD_ARGUMENT,
            wire_code: Code::InvalidArgument.as_u64(),
            message: message.into(),
        }
    }

    pub(crate) fn code(code: Code, message: impl Into<String>) -> Fail {
        Fail::from(Status::new(code, message))
    }

    pub(crate) fn into_raw_error(self) -> *mut drpc_error {
        let mut message = self.message.into_bytes();
        message.push(0);
        Tagged::into_raw(
            ERROR_TAG,
            ErrorData {
                status: self.status,
                wire_code: self.wire_code,
                message,
            },
        )
    }
}

impl From<Status> for Fail {
    fn from(s: Status) -> Fail {
        Fail {
            status: drpc_status::from_code(s.code()),
            wire_code: s.wire_code(),
            message: s.message().to_string(),
        }
    }
}

pub(crate) type Res<T> = Result<T, Fail>;

/// Writes the outcome of a fallible function into `err_out` and returns its
/// status. `f` runs under `catch_unwind`; `Ok(status)` lets it return
/// `DRPC_OK` or `DRPC_END` without an error object.
pub(crate) fn ffi(
    err_out: *mut *mut drpc_error,
    f: impl FnOnce() -> Res<drpc_status>,
) -> drpc_status {
    if !err_out.is_null() {
        // SAFETY: the caller passes NULL or a valid `drpc_error **`.
        unsafe { *err_out = std::ptr::null_mut() };
    }
    let fail = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(status)) => return status,
        Ok(Err(fail)) => fail,
        Err(panic) => Fail::code(
            Code::Internal,
            format!("drpc internal error: {}", panic_message(&*panic)),
        ),
    };
    let status = fail.status;
    if !err_out.is_null() {
        // SAFETY: as above.
        unsafe { *err_out = fail.into_raw_error() };
    }
    status
}

/// Runs an infallible function (a getter or `_free`) under `catch_unwind`,
/// returning `default` if it panicked.
pub(crate) fn guard<T>(default: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(default)
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_string()
    }
}

// ---------------------------------------------------------------------------
// Argument helpers.

/// Borrows a required NUL-terminated UTF-8 string argument.
pub(crate) unsafe fn arg_str<'a>(p: *const c_char, what: &str) -> Res<&'a str> {
    if p.is_null() {
        return Err(Fail::bad(format!("{what} is NULL")));
    }
    // SAFETY: the caller passes a NUL-terminated string.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Fail::bad(format!("{what} is not valid UTF-8")))
}

/// Borrows an optional string argument: NULL is "".
pub(crate) unsafe fn opt_str<'a>(p: *const c_char, what: &str) -> Res<&'a str> {
    if p.is_null() {
        return Ok("");
    }
    // SAFETY: per the caller's contract.
    unsafe { arg_str(p, what) }
}

/// Borrows a byte argument; NULL is allowed only with length 0.
pub(crate) unsafe fn arg_bytes<'a>(p: *const u8, len: usize, what: &str) -> Res<&'a [u8]> {
    if p.is_null() {
        if len == 0 {
            return Ok(&[]);
        }
        return Err(Fail::bad(format!("{what} is NULL but its length is {len}")));
    }
    // SAFETY: the caller passes `len` readable bytes.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Checks an output pointer.
pub(crate) fn arg_out<T>(p: *mut T, what: &str) -> Res<()> {
    if p.is_null() {
        return Err(Fail::bad(format!("{what} is NULL")));
    }
    Ok(())
}

pub(crate) fn cstring_lossy(s: &str) -> CString {
    CString::new(s.replace('\0', "\u{FFFD}")).expect("no NUL left")
}

/// Invoke metadata as C sees it: NUL-terminated copies of every entry, in
/// key order (byte order of the keys), immutable once built.
pub(crate) struct MetadataView {
    entries: Vec<(CString, CString)>,
}

impl MetadataView {
    pub(crate) fn new(md: &drpc_core::Metadata) -> MetadataView {
        MetadataView {
            entries: md
                .iter()
                .map(|(k, v)| (cstring_lossy(k), cstring_lossy(v)))
                .collect(),
        }
    }

    /// The value of `key` (metadata is small: a linear scan is fine).
    pub(crate) fn get(&self, key: &str) -> Option<&CStr> {
        self.entries
            .iter()
            .find(|(k, _)| k.as_bytes() == key.as_bytes())
            .map(|(_, v)| v.as_c_str())
    }
}

/// Sets `*count_out` to the number of entries of `view` (0 on failure;
/// `what` names a NULL handle).
pub(crate) fn metadata_count(
    view: Option<&MetadataView>,
    what: &str,
    count_out: *mut usize,
) -> Res<drpc_status> {
    arg_out(count_out, "count_out")?;
    // SAFETY: checked non-NULL; the caller passes a writable `size_t *`.
    unsafe { *count_out = 0 };
    let view = view.ok_or_else(|| Fail::bad(format!("{what} is NULL")))?;
    // SAFETY: as above.
    unsafe { *count_out = view.entries.len() };
    Ok(drpc_status::DRPC_OK)
}

/// Borrows entry `index` of `view` (`what` names a NULL handle) into the
/// optional out pointers, which are cleared first.
pub(crate) fn metadata_entry(
    view: Option<&MetadataView>,
    what: &str,
    index: usize,
    key_out: *mut *const c_char,
    value_out: *mut *const c_char,
) -> Res<drpc_status> {
    for out in [key_out, value_out] {
        if !out.is_null() {
            // SAFETY: NULL or a writable `const char **`.
            unsafe { *out = std::ptr::null() };
        }
    }
    let view = view.ok_or_else(|| Fail::bad(format!("{what} is NULL")))?;
    if key_out.is_null() && value_out.is_null() {
        return Err(Fail::bad("key_out and value_out are both NULL"));
    }
    let (k, v) = view.entries.get(index).ok_or_else(|| {
        Fail::bad(format!(
            "metadata index {index} out of range ({} entries)",
            view.entries.len()
        ))
    })?;
    // SAFETY: as above.
    unsafe {
        if !key_out.is_null() {
            *key_out = k.as_ptr();
        }
        if !value_out.is_null() {
            *value_out = v.as_ptr();
        }
    }
    Ok(drpc_status::DRPC_OK)
}

/// Checks flow-control settings given through the C API.
pub(crate) fn flow_control(window: u64, grant_threshold: u64) -> Res<drpc_core::FlowControl> {
    if window == 0 || window > MAX_FLOW_WINDOW {
        return Err(Fail::bad(format!(
            "flow-control window {window} is not in 1..=2^48"
        )));
    }
    if grant_threshold == 0 || grant_threshold > window {
        return Err(Fail::bad(format!(
            "grant threshold {grant_threshold} is not in 1..=window ({window})"
        )));
    }
    Ok(drpc_core::FlowControl {
        window,
        grant_threshold,
    })
}

/// The largest flow-control window the C API accepts (256 TiB).
pub(crate) const MAX_FLOW_WINDOW: u64 = 1 << 48;

/// Sleeps are bounded; `u64::MAX` ms would overflow `Instant`.
pub(crate) fn millis(ms: u64) -> std::time::Duration {
    std::time::Duration::from_millis(ms.min(100 * 365 * 24 * 3600 * 1000))
}

// ---------------------------------------------------------------------------
// Version, status names, errors, buffers, strings.

/// The library version, e.g. `"0.1.0"`: a static NUL-terminated string,
/// never freed. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn drpc_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// The name of a status, e.g. `"DEADLINE_EXCEEDED"`, or `"?"` for a value
/// that is not a `drpc_status`: a static string, never freed. Any thread.
#[no_mangle]
pub extern "C" fn drpc_status_name(status: u32) -> *const c_char {
    match drpc_status::from_u32(status) {
        Some(s) => s.name(),
        None => cstr!("?"),
    }
}

/// The status code of an error (`DRPC_BAD_ARGUMENT` if `err` is NULL).
/// Any thread.
#[no_mangle]
pub extern "C" fn drpc_error_code(err: *const drpc_error) -> drpc_status {
    guard(drpc_status::DRPC_BAD_ARGUMENT, || {
        error_ref(err).map_or(drpc_status::DRPC_BAD_ARGUMENT, |e| e.status)
    })
}

/// The code exactly as it travelled in the remote's Error frame (it may lie
/// outside 0..=16, in which case `drpc_error_code` is `DRPC_UNKNOWN`); for
/// local errors the gRPC code of `drpc_error_code` (3 for
/// `DRPC_BAD_ARGUMENT`). 0 if `err` is NULL. Any thread.
#[no_mangle]
pub extern "C" fn drpc_error_wire_code(err: *const drpc_error) -> u64 {
    guard(0, || {
        error_ref(err).map_or(0, |e| e.wire_code)
    })
}

/// The error message: a NUL-terminated UTF-8 string owned by `err`, valid
/// until `drpc_error_free(err)`. Remote messages are kept verbatim; if one
/// contains NUL bytes, use `drpc_error_message_len` for its full length.
/// Returns `""` if `err` is NULL. Any thread.
#[no_mangle]
pub extern "C" fn drpc_error_message(err: *const drpc_error) -> *const c_char {
    guard(cstr!(""), || {
        match error_ref(err) {
            Some(e) => e.message.as_ptr().cast(),
            None => cstr!(""),
        }
    })
}

/// The length in bytes of the message, without the terminating NUL
/// (0 if `err` is NULL). Any thread.
#[no_mangle]
pub extern "C" fn drpc_error_message_len(err: *const drpc_error) -> usize {
    guard(0, || {
        error_ref(err).map_or(0, |e| e.message.len() - 1)
    })
}

/// Releases an error. NULL is a no-op. The error must not be used after.
#[no_mangle]
pub extern "C" fn drpc_error_free(err: *mut drpc_error) {
    guard((), || {
        // SAFETY: NULL, a handle or an error from this library, released once.
        unsafe { Tagged::<ErrorData>::free(err, ERROR_TAG) }
    })
}

/// A received message: an immutable byte buffer owned by the caller, to be
/// released with `drpc_buffer_free`. May be read from any thread.
pub struct drpc_buffer {
    _opaque: [u8; 0],
}

impl drpc_buffer {
    pub(crate) fn into_raw(data: Bytes) -> *mut drpc_buffer {
        Tagged::into_raw(BUFFER_TAG, data)
    }
}

fn buffer_ref<'a>(buf: *const drpc_buffer) -> Option<&'a Bytes> {
    // SAFETY: NULL, a handle or a pointer from this library.
    unsafe { Tagged::<Bytes>::borrow(buf, BUFFER_TAG) }
}

/// The bytes of a buffer, valid until `drpc_buffer_free(buf)`. NULL if
/// `buf` is NULL; for an empty buffer a non-NULL pointer that must not be
/// read. Any thread.
#[no_mangle]
pub extern "C" fn drpc_buffer_data(buf: *const drpc_buffer) -> *const u8 {
    guard(std::ptr::null(), || {
        buffer_ref(buf).map_or(std::ptr::null(), |b| b.as_ptr())
    })
}

/// The length of a buffer in bytes (0 if `buf` is NULL). Any thread.
#[no_mangle]
pub extern "C" fn drpc_buffer_len(buf: *const drpc_buffer) -> usize {
    guard(0, || {
        buffer_ref(buf).map_or(0, |b| b.len())
    })
}

/// Releases a buffer. NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_buffer_free(buf: *mut drpc_buffer) {
    guard((), || {
        // SAFETY: NULL, a handle or a buffer from this library, released once.
        unsafe { Tagged::<Bytes>::free(buf, BUFFER_TAG) }
    })
}

/// Releases a string this library returned as `char *` (for example the
/// bound address of `drpc_server_listen`). NULL is a no-op.
#[no_mangle]
pub extern "C" fn drpc_string_free(s: *mut c_char) {
    guard((), || {
        if !s.is_null() && !handles::looks_like_handle(s) {
            // SAFETY: `s` came from `CString::into_raw` in this library.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

// ---------------------------------------------------------------------------
// Runtime configuration.

/// Configures the library's threads. Call it before any other drpc function
/// (typically first thing in `main`); once the runtime has started (on the
/// first call that needs it) it returns `DRPC_FAILED_PRECONDITION` and
/// changes nothing. A 0 leaves that setting as it is.
///
/// * `worker_threads`: runtime worker threads, which run all network I/O,
///   every completion and stream callback and every non-blocking handler.
///   Default: the number of CPUs, or the environment variable
///   `DRPC_WORKER_THREADS`.
/// * `handler_threads`: the most threads running blocking server handlers
///   at once (`drpc_server_register_unary` / `_stream`); they are started on
///   demand and stop after 10 s idle. Streaming handlers may hold at most
///   three quarters of them, so unary handlers always have the rest. A call
///   that finds no thread free is refused at once with
///   `DRPC_RESOURCE_EXHAUSTED`. Default 1024, or the environment variable
///   `DRPC_HANDLER_THREADS`.
///
/// Values given here win over the environment. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn drpc_runtime_configure(worker_threads: usize, handler_threads: usize) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        runtime::configure(worker_threads, handler_threads)?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Reads the effective configuration (see `drpc_runtime_configure`) into
/// the non-NULL out pointers. Starts the runtime if it has not started, so
/// the configuration is fixed from then on. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn drpc_runtime_settings(worker_threads_out: *mut usize, handler_threads_out: *mut usize) {
    guard((), || {
        let (workers, handlers) = runtime::current_settings();
        // SAFETY: NULL or writable `size_t *` per the contract.
        unsafe {
            if let Some(w) = worker_threads_out.as_mut() {
                *w = workers;
            }
            if let Some(h) = handler_threads_out.as_mut() {
                *h = handlers;
            }
        }
    })
}

/// The number of live handles of every kind (connections, streams, calls,
/// servers, options, metadata, a handler's call) the library holds for its
/// callers: handles that were created and not yet freed. A program that has
/// freed everything sees 0 (once running handlers have returned). For leak
/// checks in tests. Never blocks; any thread.
#[no_mangle]
pub extern "C" fn drpc_live_handles() -> usize {
    guard(0, handles::live_handles)
}

#[cfg(test)]
mod header_test;
