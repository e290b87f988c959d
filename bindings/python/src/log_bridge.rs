//! Routes the core's `tracing` events at WARN and ERROR (protocol errors,
//! refused connections, invalid deadlines, ...) to Python's `logging`, on the
//! `drpc.core.<module>` loggers (`drpc_core::conn` becomes `drpc.core.conn`).
//!
//! Events are queued and a thread of ours (`drpc-log`) hands them to
//! `logging`: the core may log while holding its own locks, and taking the
//! GIL there could deadlock with a Python thread waiting for those locks.
//! The queue is bounded; when Python does not keep up, events are dropped
//! and the next delivered record says how many. Lower levels are disabled at
//! the callsite, so the core's debug events cost nothing.

use pyo3::prelude::*;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

/// Records waiting for the `drpc-log` thread.
const QUEUE: usize = 1024;

struct LogRecord {
    level: Level,
    target: &'static str,
    text: String,
}

struct Bridge {
    tx: SyncSender<LogRecord>,
    dropped: Arc<AtomicU64>,
    next_span: AtomicU64,
}

fn wanted(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::WARN
}

/// The core logs every failed handler at ERROR; the Python layer logs the
/// same failure itself (with the traceback, and deliberate `RpcError`s at
/// DEBUG), so these would only be duplicates.
fn is_handler_failure(event: &Event<'_>) -> bool {
    event.metadata().target() == "drpc_core::server"
        && *event.metadata().level() == Level::ERROR
        && event.metadata().fields().field("rpc").is_some()
}

/// `message key=value ...` of one event.
struct Text(String);

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let rest = std::mem::take(&mut self.0);
            let _ = write!(self.0, "{value:?}");
            self.0.push_str(&rest);
        } else {
            let _ = write!(self.0, " {}={:?}", field.name(), value);
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0.insert_str(0, value);
        } else {
            let _ = write!(self.0, " {}={}", field.name(), value);
        }
    }
}

impl Subscriber for Bridge {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if wanted(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::WARN)
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        wanted(meta)
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        if is_handler_failure(event) {
            return;
        }
        let mut text = Text(String::new());
        event.record(&mut text);
        let record = LogRecord { level: *event.metadata().level(), target: event.metadata().target(), text: text.0 };
        match self.tx.try_send(record) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// `drpc_core::conn` → `drpc.core.conn`; other crates keep their path under `drpc.`.
fn logger_name(target: &str) -> String {
    let dotted = target.replace("::", ".");
    match dotted.strip_prefix("drpc_") {
        Some(rest) => format!("drpc.{rest}"),
        None => format!("drpc.{dotted}"),
    }
}

fn deliver(py: Python<'_>, record: &LogRecord, dropped: u64) -> PyResult<()> {
    let logging = py.import("logging")?;
    let logger = logging.call_method1("getLogger", (logger_name(record.target),))?;
    let level = if record.level == Level::ERROR { 40 } else { 30 };
    if dropped > 0 {
        logger.call_method1("log", (30, "%d earlier drpc log records were dropped (logging did not keep up)", dropped))?;
    }
    logger.call_method1("log", (level, "%s", record.text.as_str()))?;
    Ok(())
}

fn run(rx: Receiver<LogRecord>, dropped: &AtomicU64) {
    while let Ok(record) = rx.recv() {
        let dropped = dropped.swap(0, Ordering::Relaxed);
        // None: the interpreter is exiting; nothing can be logged any more.
        let delivered = super::enter_python(|py| {
            if let Err(err) = deliver(py, &record, dropped) {
                err.write_unraisable(py, None);
            }
        });
        if delivered.is_none() {
            return;
        }
    }
}

/// Installs the bridge as the process's `tracing` subscriber, unless one is
/// installed already (then the host application's choice stands).
pub(crate) fn install() {
    let (tx, rx) = sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let bridge = Bridge { tx, dropped: dropped.clone(), next_span: AtomicU64::new(1) };
    if tracing::subscriber::set_global_default(bridge).is_ok() {
        // Without the thread (spawn failed) events fill the queue and are
        // counted as dropped: logging is best effort, serving goes on.
        let _ = std::thread::Builder::new().name("drpc-log".into()).spawn(move || run(rx, &dropped));
    }
}
