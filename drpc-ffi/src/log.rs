//! Logging: the library's `tracing` events (handler errors at ERROR with the
//! rpc and peer, protocol errors at WARN with the peer, ...) handed to a C
//! callback.

use crate::client::SendPtr;
use crate::*;
use std::cell::Cell;
use std::ffi::c_void;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{OnceLock, RwLock};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{span, Event, Level, Metadata, Subscriber};

/// Log levels, most severe first (`drpc_set_log_callback`).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drpc_log_level {
    /// Nothing is logged.
    DRPC_LOG_OFF = 0,
    /// Handler errors and panics (with the rpc and the peer).
    DRPC_LOG_ERROR = 1,
    /// Protocol errors, refused connections (with the peer address).
    DRPC_LOG_WARN = 2,
    DRPC_LOG_INFO = 3,
    DRPC_LOG_DEBUG = 4,
    DRPC_LOG_TRACE = 5,
}

/// Receives one log event: its `drpc_log_level`, the module that logged it
/// (e.g. `"drpc_core::server"`) and the message with its fields
/// (`handler returned an error rpc=/pkg.Svc/Method peer=127.0.0.1:5000
/// code=5 ...`), both NUL-terminated and valid only during the call.
///
/// Called on whichever library thread logged (runtime workers, handler
/// threads), possibly on several at once. It must return quickly and must
/// not call drpc functions (events logged meanwhile on the same thread are
/// dropped).
pub type drpc_log_callback =
    Option<unsafe extern "C" fn(userdata: *mut c_void, level: u32, target: *const c_char, message: *const c_char)>;

struct Sink {
    callback: unsafe extern "C" fn(*mut c_void, u32, *const c_char, *const c_char),
    userdata: SendPtr<c_void>,
}

static SINK: RwLock<Option<Sink>> = RwLock::new(None);
/// The most verbose level passed on (a `drpc_log_level`; 0: none).
static MAX_LEVEL: AtomicU32 = AtomicU32::new(0);
/// Whether this library's subscriber is the process's `tracing` default.
static INSTALLED: OnceLock<bool> = OnceLock::new();

thread_local! {
    /// Set while the callback runs on this thread.
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
}

fn level_number(level: &Level) -> u32 {
    match *level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// The `tracing` subscriber that hands events to the callback. Spans are not
/// tracked (their fields appear on the events that carry them).
struct CallbackSubscriber {
    next_span: AtomicU64,
}

/// Formats an event's message and fields.
#[derive(Default)]
struct Line {
    message: String,
    fields: String,
}

impl Visit for Line {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.fields, " {}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.fields, " {}={:?}", field.name(), value);
        }
    }
}

impl Subscriber for CallbackSubscriber {
    fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
        // The level can change at run time: ask `enabled` each time.
        Interest::sometimes()
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(match MAX_LEVEL.load(Ordering::Relaxed) {
            0 => LevelFilter::OFF,
            1 => LevelFilter::ERROR,
            2 => LevelFilter::WARN,
            3 => LevelFilter::INFO,
            4 => LevelFilter::DEBUG,
            _ => LevelFilter::TRACE,
        })
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        meta.is_event() && level_number(meta.level()) <= MAX_LEVEL.load(Ordering::Relaxed)
    }

    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed))
    }

    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}

    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}

    fn event(&self, event: &Event<'_>) {
        if IN_CALLBACK.with(|c| c.get()) {
            return;
        }
        let mut line = Line::default();
        event.record(&mut line);
        line.message.push_str(&line.fields);
        let meta = event.metadata();
        let (target, message) = (cstring_lossy(meta.target()), cstring_lossy(&line.message));
        let level = level_number(meta.level());
        // Held while the callback runs, so that once drpc_set_log_callback
        // returned the old callback is neither running nor called again.
        let sink = SINK.read().unwrap_or_else(|e| e.into_inner());
        let Some(sink) = sink.as_ref() else { return };
        IN_CALLBACK.with(|c| c.set(true));
        let _ = catch_unwind(AssertUnwindSafe(|| {
            // SAFETY: the C callback per its contract; the strings live
            // until it returns.
            runtime::without_blocking(|| unsafe {
                (sink.callback)(sink.userdata.0, level, target.as_ptr(), message.as_ptr())
            })
        }));
        IN_CALLBACK.with(|c| c.set(false));
    }

    fn enter(&self, _: &span::Id) {}

    fn exit(&self, _: &span::Id) {}
}

/// Sends the library's log events of `max_level` (a `drpc_log_level`) and
/// more severe to `callback` (see `drpc_log_callback`) with `userdata`;
/// replaces an earlier callback. A NULL callback or `DRPC_LOG_OFF` stops
/// logging. Once this returns, an earlier callback is not running and is not
/// called again. By default nothing is logged.
///
/// The first call makes the library's logger the process-wide default of
/// Rust's `tracing`; if Rust code in the process already installed another,
/// nothing changes and this returns `DRPC_FAILED_PRECONDITION` (that logger
/// gets the events). A `max_level` above `DRPC_LOG_TRACE` is
/// `DRPC_BAD_ARGUMENT`. Must not be called from the callback. Any thread.
#[no_mangle]
pub extern "C" fn drpc_set_log_callback(
    max_level: u32,
    callback: drpc_log_callback,
    userdata: *mut c_void,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        if max_level > drpc_log_level::DRPC_LOG_TRACE as u32 {
            return Err(Fail::bad(format!("log level {max_level} is not a drpc_log_level")));
        }
        let installed = *INSTALLED.get_or_init(|| {
            tracing::subscriber::set_global_default(CallbackSubscriber { next_span: AtomicU64::new(1) }).is_ok()
        });
        if !installed {
            return Err(Fail::code(
                drpc_core::Code::FailedPrecondition,
                "another tracing subscriber is the process's default",
            ));
        }
        let sink = callback.map(|callback| Sink { callback, userdata: SendPtr(userdata) });
        let level = if sink.is_some() { max_level } else { 0 };
        *SINK.write().unwrap_or_else(|e| e.into_inner()) = sink;
        MAX_LEVEL.store(level, Ordering::Relaxed);
        // Callsites cache their interest and the global max level: recompute.
        tracing::callsite::rebuild_interest_cache();
        Ok(drpc_status::DRPC_OK)
    })
}
