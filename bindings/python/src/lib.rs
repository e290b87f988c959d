//! `drpc._native`: the PyO3 extension under the `drpc` Python package.
//!
//! Everything network-bound runs on one tokio runtime owned by this module.
//! Blocking entry points release the GIL and wait in short slices, checking
//! for signals in between, so Ctrl-C interrupts (and cancels) them promptly.
//! Asynchronous entry points (`*_async`) take a callback `cb(value, exc)` that
//! is called once, from a runtime thread with the GIL held, and return a
//! [`Task`] whose `cancel()` abandons the operation; the pure-Python
//! `drpc.aio` layer turns these into asyncio futures.
//!
//! Server handlers are Python callables registered with a flag saying whether
//! they are synchronous (run on the bounded `drpc-handler` pool, see
//! [`pool`], with the GIL) or
//! asynchronous (the callable schedules the work on an asyncio loop and reports
//! through a [`Completion`]).

use bytes::Bytes;
use drpc_core::{CallContext, CallOptions, Conn, ConnOptions, Request, Router, Server, Status, Stream};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTimeoutError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyType};
use std::collections::{BTreeMap, HashSet};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

mod pool;
use pool::{handler_pool, rt, JobKind};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::oneshot;

mod channel;
mod log_bridge;

/// How long a blocking wait runs before it checks for signals.
const SLICE: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------
// Entering Python from runtime threads

/// Runtime threads inside (or about to enter) Python right now.
static IN_PYTHON: AtomicUsize = AtomicUsize::new(0);
/// Set at interpreter exit: runtime threads no longer call into Python.
static CLOSING: AtomicBool = AtomicBool::new(false);

/// Cancelled with CLOSING set: wakes the waits of threads other than the
/// main one, which wait in one piece (only the main thread sees signals).
fn closing_token() -> &'static drpc_core::CancelToken {
    static TOKEN: OnceLock<drpc_core::CancelToken> = OnceLock::new();
    TOKEN.get_or_init(drpc_core::CancelToken::new)
}

thread_local! {
    /// Whether this is Python's main thread, once asked.
    static IS_MAIN_THREAD: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Whether the calling thread is Python's main thread, the only one whose
/// waits must wake up to run signal handlers (Ctrl-C).
fn is_main_thread(py: Python<'_>) -> bool {
    if let Some(known) = IS_MAIN_THREAD.with(|m| m.get()) {
        return known;
    }
    let main = (|| -> PyResult<bool> {
        let threading = py.import("threading")?;
        let main_ident = threading.call_method0("main_thread")?.getattr("ident")?;
        let own_ident = threading.call_method0("get_ident")?;
        main_ident.eq(own_ident)
    })()
    // Unknown: wait in slices, which is always correct.
    .unwrap_or(true);
    IS_MAIN_THREAD.with(|m| m.set(Some(main)));
    main
}

struct InPython;

impl Drop for InPython {
    fn drop(&mut self) {
        IN_PYTHON.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `Python::with_gil` for runtime threads: skipped (None) once the
/// interpreter is exiting, and counted so that exit can wait until no runtime
/// thread holds the GIL (a thread releasing the GIL of a finalizing
/// interpreter aborts the process).
fn enter_python<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    IN_PYTHON.fetch_add(1, Ordering::SeqCst);
    let _counted = InPython;
    if CLOSING.load(Ordering::SeqCst) {
        return None;
    }
    keep_thread_state();
    Some(Python::with_gil(f))
}

thread_local! {
    static KEEPS_THREAD_STATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Gives this thread (a runtime or handler-pool thread, which Python does
/// not know) a Python thread state for the rest of its life. Without it
/// every `with_gil` on such a thread creates a thread state and destroys it
/// again: measurable work on every call a handler serves.
fn keep_thread_state() {
    KEEPS_THREAD_STATE.with(|kept| {
        if kept.replace(true) {
            return;
        }
        // SAFETY: the interpreter is initialized (this module is loaded) and
        // not finalizing (the caller checked CLOSING). A thread Python
        // already knows keeps its own state. Otherwise PyGILState_Ensure
        // creates the state and takes the GIL; it is never released with
        // PyGILState_Release, so later Ensure/Release pairs (with_gil) find
        // it and leave it; PyEval_SaveThread gives the GIL back.
        unsafe {
            if !pyo3::ffi::PyGILState_GetThisThreadState().is_null() {
                return;
            }
            pyo3::ffi::PyGILState_Ensure();
            pyo3::ffi::PyEval_SaveThread();
        }
    });
}

/// Called at interpreter exit (atexit, after servers and clients were
/// stopped): stops runtime threads from entering Python and new blocking
/// waits from starting, then waits up to `timeout` seconds for runtime
/// threads inside Python and Python threads inside a wait to leave. Returns
/// whether they all left; finalization must not start before.
#[pyfunction]
#[pyo3(signature = (timeout=2.0))]
fn _quiesce(py: Python<'_>, timeout: f64) -> bool {
    CLOSING.store(true, Ordering::SeqCst);
    closing_token().cancel();
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    py.allow_threads(|| loop {
        if IN_PYTHON.load(Ordering::SeqCst) == 0 && IN_WAIT.load(Ordering::SeqCst) == 0 {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    })
}

// ---------------------------------------------------------------------------
// Errors

static ERRORS_MODULE: GILOnceCell<Py<PyModule>> = GILOnceCell::new();

fn errors_module(py: Python<'_>) -> PyResult<&Bound<'_, PyModule>> {
    Ok(ERRORS_MODULE
        .get_or_try_init(py, || py.import("drpc.errors").map(|m| m.unbind()))?
        .bind(py))
}

/// A `drpc.RpcError` (the subclass for its code) standing for `status`.
fn status_to_err(py: Python<'_>, status: &Status) -> PyErr {
    let made = errors_module(py).and_then(|m| {
        m.getattr("_from_status")?
            .call1((status.code().as_u64(), status.wire_code(), status.message()))
    });
    match made {
        Ok(exc) => PyErr::from_value(exc),
        Err(err) => err,
    }
}

/// The status a handler's exception becomes: a `drpc.RpcError` keeps its
/// code and message, anything else is Unknown with the exception's text.
fn err_to_status(py: Python<'_>, err: PyErr) -> Status {
    let value = err.value(py);
    if let Ok(m) = errors_module(py) {
        if let Ok(cls) = m.getattr("RpcError") {
            if let Ok(cls) = cls.downcast::<PyType>() {
                if value.is_instance(cls).unwrap_or(false) {
                    let code = value.getattr("code").and_then(|c| c.extract::<u64>()).unwrap_or(2);
                    let message = value
                        .getattr("message")
                        .and_then(|m| m.extract::<String>())
                        .unwrap_or_default();
                    return Status::from_wire(code, message);
                }
            }
        }
    }
    let message = value.str().map(|s| s.to_string()).unwrap_or_else(|_| "handler failed".into());
    let message = if message.is_empty() {
        value.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "exception".into())
    } else {
        message
    };
    Status::unknown(message)
}

fn io_err(e: std::io::Error) -> PyErr {
    PyOSError::new_err(e.to_string())
}

// ---------------------------------------------------------------------------
// Waiting

/// Polls a future once with a no-op waker.
fn poll_once<F: Future + ?Sized>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    fut.poll(&mut cx)
}

/// Python threads inside `wait` (with the GIL released, or taking it back).
static IN_WAIT: AtomicUsize = AtomicUsize::new(0);

struct Waiting;

impl Drop for Waiting {
    fn drop(&mut self) {
        IN_WAIT.fetch_sub(1, Ordering::SeqCst);
    }
}

fn exiting_err(py: Python<'_>) -> PyErr {
    status_to_err(py, &Status::unavailable("the Python interpreter is exiting"))
}

/// Drives `fut` on the calling thread with the GIL released, in slices,
/// checking for signals (KeyboardInterrupt) between them. On a signal the
/// future is dropped, which cancels the call it stands for.
///
/// A thread taking the GIL back once the interpreter finalizes is killed
/// with `pthread_exit`, which aborts the process when Rust frames are on its
/// stack. So waits are counted, and refused once exit began; a wait in
/// progress then ends (Unavailable) at its next slice, and `_quiesce` holds
/// finalization back until every one has taken the GIL back.
fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    // Both under the GIL, as `_quiesce` sets CLOSING: either it sees this
    // wait counted, or this wait sees CLOSING.
    IN_WAIT.fetch_add(1, Ordering::SeqCst);
    let _counted = Waiting;
    if CLOSING.load(Ordering::SeqCst) {
        return Err(exiting_err(py));
    }
    let mut fut = std::pin::pin!(fut);
    if !is_main_thread(py) {
        // No signals to check: one wait, woken early only by exit. (Slices
        // here would have every handler thread blocked in `recv()` take the
        // GIL 20 times a second.)
        let closing = closing_token();
        let waited = py.allow_threads(|| {
            tokio::task::block_in_place(|| {
                rt().block_on(async {
                    tokio::select! {
                        v = fut.as_mut() => Some(v),
                        _ = closing.cancelled() => None,
                    }
                })
            })
        });
        return waited.ok_or_else(|| exiting_err(py));
    }
    loop {
        let sliced = py.allow_threads(|| {
            tokio::task::block_in_place(|| {
                rt().block_on(async { tokio::time::timeout(SLICE, fut.as_mut()).await })
            })
        });
        match sliced {
            Ok(v) => return Ok(v),
            Err(_) => {
                py.check_signals()?;
                if CLOSING.load(Ordering::SeqCst) {
                    return Err(exiting_err(py));
                }
            }
        }
    }
}

fn to_duration(name: &str, secs: Option<f64>) -> PyResult<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_nan() || s < 0.0 => Err(PyValueError::new_err(format!("{name} must be a non-negative number of seconds, got {s}"))),
        Some(s) if s.is_infinite() || s > 1e9 => Ok(None),
        Some(s) => Ok(Some(Duration::from_secs_f64(s))),
    }
}

/// An operation started by an `*_async` method; `cancel()` abandons it (its
/// callback is then never called).
#[pyclass(frozen, module = "drpc._native")]
struct Task {
    abort: tokio::task::AbortHandle,
}

#[pymethods]
impl Task {
    /// Abandons the operation; a call in flight is cancelled on the wire.
    fn cancel(&self) {
        self.abort.abort();
    }

    fn done(&self) -> bool {
        self.abort.is_finished()
    }
}

type Convert<T> = fn(Python<'_>, T) -> PyResult<PyObject>;

/// A Python object held by runtime code and released with the GIL held.
///
/// Released without it, pyo3 defers the release to whichever thread next
/// takes the GIL, often the main thread between two slices of a blocking
/// wait; a finalizer run there (Python code) would swallow a pending Ctrl-C
/// as an "exception ignored" and the wait would never see it.
struct Held(Option<PyObject>);

impl Held {
    fn new(obj: PyObject) -> Held {
        Held(Some(obj))
    }

    fn get(&self) -> &PyObject {
        self.0.as_ref().expect("a Held object is present until dropped")
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(obj) = self.0.take() {
            // At exit (None) the object is left to pyo3's deferred release.
            enter_python(move |_py| drop(obj));
        }
    }
}

/// Spawns `fut` and reports its outcome to `callback(value, exc)`.
fn spawn_cb<T, F>(fut: F, callback: PyObject, convert: Convert<T>) -> Task
where
    F: Future<Output = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    let callback = Held::new(callback);
    let handle = rt().spawn(async move {
        let outcome = fut.await;
        enter_python(move |py| {
            let args = match outcome.map_err(|s| status_to_err(py, &s)).and_then(|v| convert(py, v)) {
                Ok(value) => (value, py.None()),
                Err(err) => (py.None(), err.into_value(py).into_any()),
            };
            if let Err(err) = callback.get().call1(py, args) {
                err.write_unraisable(py, None);
            }
            drop(callback);
        });
    });
    Task { abort: handle.abort_handle() }
}

fn conv_bytes(py: Python<'_>, b: Bytes) -> PyResult<PyObject> {
    Ok(PyBytes::new(py, &b).into_any().unbind())
}

fn conv_unit(py: Python<'_>, _: ()) -> PyResult<PyObject> {
    Ok(py.None())
}

fn conv_bool(py: Python<'_>, b: bool) -> PyResult<PyObject> {
    Ok(b.into_pyobject(py)?.to_owned().into_any().unbind())
}

fn conv_string(py: Python<'_>, s: String) -> PyResult<PyObject> {
    Ok(s.into_pyobject(py)?.into_any().unbind())
}

/// Zero-copy `Bytes` over a Python bytes object.
fn bytes_of(b: PyBackedBytes) -> Bytes {
    Bytes::from_owner(b)
}

// ---------------------------------------------------------------------------
// Client

/// A call's options. `parent`: the server call whose handler makes this
/// call (Python passes it from a context variable): the call ends by its
/// deadline too and carries its trace context, unless `traceparent` (a W3C
/// trace context, with the metadata's `tracestate` if any) is given.
fn call_options(
    metadata: Option<BTreeMap<String, String>>,
    timeout: Option<f64>,
    parent: Option<PyRef<'_, ServerContext>>,
    traceparent: Option<String>,
) -> PyResult<CallOptions> {
    let mut opts = CallOptions::new();
    if let Some(md) = metadata {
        opts.metadata = md;
    }
    opts.timeout = to_duration("timeout", timeout)?;
    if let Some(tp) = traceparent {
        let tracestate = opts.metadata.get(drpc_core::trace::TRACESTATE_KEY).map(String::as_str);
        let trace = drpc_core::trace::TraceContext::parse(&tp, tracestate).ok_or_else(|| {
            PyValueError::new_err(format!("traceparent must be a W3C trace context '00-<32 hex>-<16 hex>-<2 hex>', got {tp:?}"))
        })?;
        opts.trace = Some(trace);
    }
    if let Some(parent) = parent {
        if let Some(deadline) = parent.ctx.deadline() {
            opts.deadline = Some(opts.deadline.map_or(deadline, |own| own.min(deadline)));
        }
        if opts.trace.is_none() {
            opts.trace = parent.ctx.trace().cloned();
        }
    }
    Ok(opts)
}

/// One rpc's stats for Python: name, count, failed, bounds (us), counts, sum (us).
type RpcRow = (String, u64, u64, Vec<u64>, Vec<u64>, u64);

/// A metrics snapshot as the dict `drpc.Metrics` is made from.
fn metrics_dict<'py>(py: Python<'py>, m: &drpc_core::metrics::MetricsSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("bytes_sent", m.bytes_sent)?;
    d.set_item("bytes_received", m.bytes_received)?;
    d.set_item("streams_opened", m.streams_opened)?;
    d.set_item("streams_closed", m.streams_closed)?;
    d.set_item("streams_failed", m.streams_failed)?;
    d.set_item("failed_by_code", m.failed_by_code.clone())?;
    d.set_item("active_streams", m.active_streams)?;
    d.set_item("recv_blocked", m.recv_blocked)?;
    d.set_item("send_blocked", m.send_blocked)?;
    d.set_item("queued_bytes", m.queued_bytes)?;
    d.set_item("connections_opened", m.connections_opened)?;
    d.set_item("active_connections", m.active_connections)?;
    let rpcs: Vec<RpcRow> = m
        .rpcs
        .iter()
        .map(|r| (r.rpc.clone(), r.count, r.failed, r.latency.bounds_us.clone(), r.latency.counts.clone(), r.latency.sum_us))
        .collect();
    d.set_item("rpcs", rpcs)?;
    Ok(d)
}

/// Adds the counters of a connection that ended to `total` (gauges, which
/// are zero on a closed connection, are left as they are).
fn add_retired(total: &mut drpc_core::metrics::MetricsSnapshot, ended: &drpc_core::metrics::MetricsSnapshot) {
    total.bytes_sent += ended.bytes_sent;
    total.bytes_received += ended.bytes_received;
    total.streams_opened += ended.streams_opened;
    total.streams_closed += ended.streams_closed;
    total.streams_failed += ended.streams_failed;
    total.recv_blocked += ended.recv_blocked;
    total.send_blocked += ended.send_blocked;
    total.connections_opened += ended.connections_opened;
    let mut by_code: BTreeMap<u32, u64> = total.failed_by_code.iter().copied().collect();
    for &(code, n) in &ended.failed_by_code {
        *by_code.entry(code).or_default() += n;
    }
    total.failed_by_code = by_code.into_iter().collect();
    for r in &ended.rpcs {
        match total.rpcs.iter_mut().find(|t| t.rpc == r.rpc) {
            Some(t) => {
                t.count += r.count;
                t.failed += r.failed;
                for (a, b) in t.latency.counts.iter_mut().zip(&r.latency.counts) {
                    *a += b;
                }
                t.latency.sum_us += r.latency.sum_us;
            }
            None => total.rpcs.push(r.clone()),
        }
    }
    total.rpcs.sort_by(|a, b| a.rpc.cmp(&b.rpc));
}

/// `retired` (connections that ended) plus `current`.
fn combined(retired: &drpc_core::metrics::MetricsSnapshot, current: &drpc_core::metrics::MetricsSnapshot) -> drpc_core::metrics::MetricsSnapshot {
    let mut total = current.clone();
    add_retired(&mut total, retired);
    total
}

/// A PEM source from Python: `bytes` are the PEM itself, `str` a file path.
fn pem_arg(what: &str, value: &Bound<'_, PyAny>) -> PyResult<Vec<u8>> {
    if let Ok(b) = value.downcast::<PyBytes>() {
        return Ok(b.as_bytes().to_vec());
    }
    if let Ok(path) = value.extract::<String>() {
        return std::fs::read(&path).map_err(|e| PyOSError::new_err(format!("{what}: reading {path}: {e}")));
    }
    Err(PyTypeError::new_err(format!("{what} must be bytes (PEM) or str (a PEM file's path)")))
}

fn tls_err(e: drpc_tls::TlsError) -> PyErr {
    PyValueError::new_err(format!("TLS: {e}"))
}

/// A server TLS configuration from Python arguments (see `NativeServer.start_tls`).
fn server_tls(
    cert: &Bound<'_, PyAny>,
    key: &Bound<'_, PyAny>,
    client_ca: Option<&Bound<'_, PyAny>>,
    client_cert_required: bool,
) -> PyResult<drpc_tls::ServerTlsConfig> {
    let mut config = drpc_tls::ServerTlsConfig::from_pem(pem_arg("cert", cert)?, pem_arg("key", key)?);
    if let Some(ca) = client_ca {
        let auth = if client_cert_required { drpc_tls::ClientAuth::Required } else { drpc_tls::ClientAuth::Optional };
        config = config.client_ca_pem(pem_arg("client_ca", ca)?).client_auth(auth);
    }
    config.build().map_err(tls_err)?;
    Ok(config)
}

/// A TLS connector from Python arguments: `ca` None means the system roots.
fn client_tls(
    ca: Option<&Bound<'_, PyAny>>,
    server_name: Option<String>,
    cert: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
) -> PyResult<drpc_tls::Connector> {
    let mut config = match ca {
        Some(ca) => drpc_tls::ClientTlsConfig::ca_pem(pem_arg("ca", ca)?),
        None => drpc_tls::ClientTlsConfig::system_roots(),
    };
    if let Some(name) = server_name {
        config = config.server_name(name);
    }
    match (cert, key) {
        (Some(cert), Some(key)) => config = config.identity_pem(pem_arg("cert", cert)?, pem_arg("key", key)?),
        (None, None) => {}
        _ => return Err(PyValueError::new_err("TLS: cert and key go together")),
    }
    drpc_tls::Connector::tls(&config).map_err(tls_err)
}

fn conn_options(sequential: bool, max_message_size: Option<usize>, flow_control: bool) -> PyResult<ConnOptions> {
    let mut opts = ConnOptions { sequential, ..ConnOptions::default() };
    if flow_control {
        opts = opts.with_flow_control();
    }
    if let Some(max) = max_message_size {
        if max == 0 {
            return Err(PyValueError::new_err("max_message_size must be positive"));
        }
        opts.max_message_size = max;
    }
    Ok(opts)
}

/// A timeout in seconds as a `Duration`, zero disabling it (the core's
/// convention); None keeps `default`.
fn limit_duration(name: &str, secs: Option<f64>, default: Duration) -> PyResult<Duration> {
    match secs {
        None => Ok(default),
        Some(s) if !s.is_finite() || s < 0.0 => {
            Err(PyValueError::new_err(format!("{name} must be a finite, non-negative number of seconds (0 disables), got {s}")))
        }
        Some(s) if s > 1e9 => Err(PyValueError::new_err(format!("{name} is too large: {s} seconds"))),
        Some(s) => Ok(Duration::from_secs_f64(s)),
    }
}

/// The client-only limits: a memory budget of the connection's own (None:
/// the core's default, 256 MiB; 0: unlimited) and the per-frame read timeout.
fn client_limits(opts: &mut ConnOptions, memory_budget: Option<usize>, read_timeout: Option<f64>) -> PyResult<()> {
    if let Some(bytes) = memory_budget {
        opts.memory_budget = Some(drpc_core::MemoryBudget::new(bytes));
    }
    opts.read_timeout = limit_duration("read_timeout", read_timeout, opts.read_timeout)?;
    Ok(())
}

async fn connect_with(
    addr: &str,
    opts: ConnOptions,
    timeout: Option<Duration>,
    tls: Option<&drpc_tls::Connector>,
) -> Result<Conn, Status> {
    let connect = async {
        match tls {
            Some(connector) => connector.connect(addr, opts).await,
            None => Conn::connect(addr, opts).await,
        }
    };
    match timeout {
        None => connect.await,
        Some(t) => match tokio::time::timeout(t, connect).await {
            Ok(r) => r,
            Err(_) => Err(Status::unavailable(format!("connecting to {addr}: no answer within {:.3}s", t.as_secs_f64()))),
        },
    }
}

/// First wait after a failed redial; doubled per further failure.
const REDIAL_BACKOFF_INITIAL: Duration = Duration::from_millis(200);
/// Longest wait between redials.
const REDIAL_BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The wait before redial attempt number `failures + 1`: exponential, capped,
/// with ±20 % jitter so many clients of one restarted server spread out.
fn redial_backoff(failures: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let base = REDIAL_BACKOFF_INITIAL.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(REDIAL_BACKOFF_MAX);
    // RandomState is randomly keyed: a cheap jitter source without a crate.
    let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
    let factor = 0.8 + 0.4 * (random % 1024) as f64 / 1023.0;
    base.mul_f64(factor)
}

/// Redial state, behind an async lock so concurrent callers share one dial.
#[derive(Default)]
struct DialState {
    /// Failed redials in a row.
    failures: u32,
    /// No redial before this; calls fail fast with `last_error` until then.
    next_attempt: Option<tokio::time::Instant>,
    last_error: Option<Status>,
}

/// A client's connection to one address: redialled on the next use after it
/// was lost (when `reconnect`), with backoff between failed redials.
struct Dialer {
    addr: String,
    opts: ConnOptions,
    connect_timeout: Option<Duration>,
    reconnect: bool,
    tls: Option<drpc_tls::Connector>,
    current: Mutex<Conn>,
    closed_by_user: AtomicBool,
    dialing: tokio::sync::Mutex<DialState>,
    /// Connections dialled after the first one.
    redials: AtomicUsize,
    /// The counters of the connections redials replaced.
    retired: Mutex<drpc_core::metrics::MetricsSnapshot>,
}

impl Dialer {
    async fn connect(
        addr: String,
        opts: ConnOptions,
        connect_timeout: Option<Duration>,
        reconnect: bool,
        tls: Option<drpc_tls::Connector>,
    ) -> Result<Dialer, Status> {
        let conn = connect_with(&addr, opts.clone(), connect_timeout, tls.as_ref()).await?;
        Ok(Dialer {
            addr,
            opts,
            connect_timeout,
            reconnect,
            tls,
            current: Mutex::new(conn),
            closed_by_user: AtomicBool::new(false),
            dialing: tokio::sync::Mutex::new(DialState::default()),
            redials: AtomicUsize::new(0),
            retired: Mutex::default(),
        })
    }

    fn current(&self) -> Conn {
        self.current.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The connection to use for a new call: the current one while it is
    /// open (or when reconnecting is off, so the call fails as the lost
    /// connection fails), else a fresh one.
    async fn conn(&self) -> Result<Conn, Status> {
        if self.closed_by_user.load(Ordering::SeqCst) {
            return Err(Status::unavailable(format!("the client of {} is closed", self.addr)));
        }
        let conn = self.current();
        if !conn.is_closed() || !self.reconnect {
            return Ok(conn);
        }
        let mut st = self.dialing.lock().await;
        let conn = self.current();
        if !conn.is_closed() {
            return Ok(conn); // another caller redialled meanwhile
        }
        let now = tokio::time::Instant::now();
        if let Some(next) = st.next_attempt.filter(|next| *next > now) {
            let why = st.last_error.as_ref().map(|s| s.message().to_string()).unwrap_or_default();
            return Err(Status::unavailable(format!(
                "connection to {} lost; redialling in {:.1}s (last attempt: {why})",
                self.addr,
                (next - now).as_secs_f64()
            )));
        }
        match connect_with(&self.addr, self.opts.clone(), self.connect_timeout, self.tls.as_ref()).await {
            Ok(fresh) => {
                *st = DialState::default();
                let old = std::mem::replace(&mut *self.current.lock().unwrap_or_else(|e| e.into_inner()), fresh.clone());
                add_retired(&mut self.retired.lock().unwrap_or_else(|e| e.into_inner()), &old.metrics());
                self.redials.fetch_add(1, Ordering::Relaxed);
                // Ends the lost connection's tasks.
                rt().spawn(async move { old.close().await });
                if self.closed_by_user.load(Ordering::SeqCst) {
                    fresh.close().await; // close() ran while this dial was in flight
                    return Err(Status::unavailable(format!("the client of {} is closed", self.addr)));
                }
                Ok(fresh)
            }
            Err(status) => {
                st.failures = st.failures.saturating_add(1);
                st.next_attempt = Some(tokio::time::Instant::now() + redial_backoff(st.failures));
                st.last_error = Some(status.clone());
                Err(status)
            }
        }
    }

    async fn close(&self) {
        self.closed_by_user.store(true, Ordering::SeqCst);
        self.current().close().await;
    }
}

/// The connection for a call with `opts`, whose timeout starts now and so
/// also bounds a redial.
async fn call_conn(dialer: &Dialer, opts: &mut CallOptions) -> Result<Conn, Status> {
    if let Some(timeout) = opts.timeout.take() {
        let deadline = tokio::time::Instant::now() + timeout;
        opts.deadline = Some(opts.deadline.map_or(deadline, |d| d.min(deadline)));
    }
    match opts.deadline {
        None => dialer.conn().await,
        Some(deadline) => tokio::time::timeout_at(deadline, dialer.conn())
            .await
            .unwrap_or_else(|_| Err(Status::deadline_exceeded(format!("deadline exceeded redialling {}", dialer.addr)))),
    }
}

/// A client connection (multiplexing, or sequential: one stream at a time)
/// that redials on the next use after it was lost.
#[pyclass(frozen, module = "drpc._native")]
struct NativeConn {
    dialer: Arc<Dialer>,
}

fn conv_conn(py: Python<'_>, d: Dialer) -> PyResult<PyObject> {
    Ok(Py::new(py, NativeConn { dialer: Arc::new(d) })?.into_any())
}

fn conv_stream(py: Python<'_>, s: Stream) -> PyResult<PyObject> {
    Ok(Py::new(py, NativeStream::new(s))?.into_any())
}

#[pymethods]
impl NativeConn {
    /// Connects (blocking) to `host:port` or `unix:/path`; over TLS when
    /// `tls` (then `tls_ca` None trusts the system roots; PEM arguments are
    /// bytes or file paths).
    #[staticmethod]
    #[pyo3(signature = (addr, sequential=false, max_message_size=None, connect_timeout=None, flow_control=false, reconnect=true,
                        tls=false, tls_ca=None, tls_server_name=None, tls_cert=None, tls_key=None, memory_budget=None, read_timeout=None,
                        send_deadline=true))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        py: Python<'_>,
        addr: String,
        sequential: bool,
        max_message_size: Option<usize>,
        connect_timeout: Option<f64>,
        flow_control: bool,
        reconnect: bool,
        tls: bool,
        tls_ca: Option<&Bound<'_, PyAny>>,
        tls_server_name: Option<String>,
        tls_cert: Option<&Bound<'_, PyAny>>,
        tls_key: Option<&Bound<'_, PyAny>>,
        memory_budget: Option<usize>,
        read_timeout: Option<f64>,
        send_deadline: bool,
    ) -> PyResult<NativeConn> {
        let mut opts = conn_options(sequential, max_message_size, flow_control)?;
        opts.send_deadline = send_deadline;
        client_limits(&mut opts, memory_budget, read_timeout)?;
        let timeout = to_duration("connect_timeout", connect_timeout)?;
        let tls = if tls { Some(client_tls(tls_ca, tls_server_name, tls_cert, tls_key)?) } else { None };
        let dialer =
            wait(py, Dialer::connect(addr, opts, timeout, reconnect, tls))?.map_err(|s| status_to_err(py, &s))?;
        Ok(NativeConn { dialer: Arc::new(dialer) })
    }

    /// Connects in the background; `cb(NativeConn | None, exc | None)`.
    #[staticmethod]
    #[pyo3(signature = (addr, callback, sequential=false, max_message_size=None, connect_timeout=None, flow_control=false, reconnect=true,
                        tls=false, tls_ca=None, tls_server_name=None, tls_cert=None, tls_key=None, memory_budget=None, read_timeout=None,
                        send_deadline=true))]
    #[allow(clippy::too_many_arguments)]
    fn connect_async(
        addr: String,
        callback: PyObject,
        sequential: bool,
        max_message_size: Option<usize>,
        connect_timeout: Option<f64>,
        flow_control: bool,
        reconnect: bool,
        tls: bool,
        tls_ca: Option<&Bound<'_, PyAny>>,
        tls_server_name: Option<String>,
        tls_cert: Option<&Bound<'_, PyAny>>,
        tls_key: Option<&Bound<'_, PyAny>>,
        memory_budget: Option<usize>,
        read_timeout: Option<f64>,
        send_deadline: bool,
    ) -> PyResult<Task> {
        let mut opts = conn_options(sequential, max_message_size, flow_control)?;
        opts.send_deadline = send_deadline;
        client_limits(&mut opts, memory_budget, read_timeout)?;
        let timeout = to_duration("connect_timeout", connect_timeout)?;
        let tls = if tls { Some(client_tls(tls_ca, tls_server_name, tls_cert, tls_key)?) } else { None };
        Ok(spawn_cb(Dialer::connect(addr, opts, timeout, reconnect, tls), callback, conv_conn))
    }

    #[getter]
    fn address(&self) -> &str {
        &self.dialer.addr
    }

    #[getter]
    fn sequential(&self) -> bool {
        self.dialer.opts.sequential
    }

    /// Whether the connection is down: closed by `close()`, or lost and not
    /// redialled (yet).
    #[getter]
    fn closed(&self) -> bool {
        self.dialer.closed_by_user.load(Ordering::SeqCst) || self.dialer.current().is_closed()
    }

    /// Connections dialled after the first (successful redials).
    #[getter]
    fn redials(&self) -> usize {
        self.dialer.redials.load(Ordering::Relaxed)
    }

    fn active_streams(&self) -> usize {
        self.dialer.current().active_streams()
    }

    /// The connection's counters, the connections that redials replaced
    /// included, as a dict (see `drpc.Metrics`).
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let current = self.dialer.current().metrics();
        let total = combined(&self.dialer.retired.lock().unwrap_or_else(|e| e.into_inner()), &current);
        metrics_dict(py, &total)
    }

    /// A unary call on raw bytes (blocking). `parent`: the server call it
    /// is made from (its deadline and trace context are inherited);
    /// `traceparent`: an explicit W3C trace context.
    #[pyo3(signature = (rpc, request, metadata=None, timeout=None, parent=None, traceparent=None))]
    #[allow(clippy::too_many_arguments)]
    fn unary<'py>(
        &self,
        py: Python<'py>,
        rpc: String,
        request: PyBackedBytes,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let dialer = &*self.dialer;
        let result = wait(py, async {
            let mut opts = opts;
            call_conn(dialer, &mut opts).await?.unary(&rpc, &request, &opts).await
        })?;
        match result {
            Ok(b) => Ok(PyBytes::new(py, &b)),
            Err(s) => Err(status_to_err(py, &s)),
        }
    }

    /// A unary call in the background; `cb(bytes | None, exc | None)`.
    #[pyo3(signature = (rpc, request, callback, metadata=None, timeout=None, parent=None, traceparent=None))]
    #[allow(clippy::too_many_arguments)]
    fn unary_async(
        &self,
        rpc: String,
        request: PyBackedBytes,
        callback: PyObject,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<Task> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let dialer = self.dialer.clone();
        Ok(spawn_cb(
            async move {
                let mut opts = opts;
                call_conn(&dialer, &mut opts).await?.unary(&rpc, &request, &opts).await
            },
            callback,
            conv_bytes,
        ))
    }

    /// Opens a streaming call (blocking while a sequential connection is busy).
    #[pyo3(signature = (rpc, metadata=None, timeout=None, parent=None, traceparent=None))]
    fn stream(
        &self,
        py: Python<'_>,
        rpc: String,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<NativeStream> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let dialer = &*self.dialer;
        let opened = wait(py, async {
            let mut opts = opts;
            call_conn(dialer, &mut opts).await?.stream(&rpc, &opts).await
        })?;
        match opened {
            Ok(s) => Ok(NativeStream::new(s)),
            Err(s) => Err(status_to_err(py, &s)),
        }
    }

    /// Opens a streaming call in the background; `cb(NativeStream | None, exc | None)`.
    #[pyo3(signature = (rpc, callback, metadata=None, timeout=None, parent=None, traceparent=None))]
    fn stream_async(
        &self,
        rpc: String,
        callback: PyObject,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<Task> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let dialer = self.dialer.clone();
        Ok(spawn_cb(
            async move {
                let mut opts = opts;
                call_conn(&dialer, &mut opts).await?.stream(&rpc, &opts).await
            },
            callback,
            conv_stream,
        ))
    }

    /// Closes the connection (blocking until its tasks ended); calls on it
    /// fail with Unavailable and it is not redialled.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let dialer = self.dialer.clone();
        // Run the close on the runtime so an interrupt cannot leave it half done.
        let handle = rt().spawn(async move { dialer.close().await });
        wait(py, async move {
            let _ = handle.await;
        })
    }

    fn close_async(&self, callback: PyObject) -> Task {
        let dialer = self.dialer.clone();
        spawn_cb(
            async move {
                dialer.close().await;
                Ok(())
            },
            callback,
            conv_unit,
        )
    }
}

// ---------------------------------------------------------------------------
// Streams

/// What one receive produced: a message, the end (None), or the failure.
type Received = Result<Option<Bytes>, Status>;

/// A stream and the message its last interrupted receive took.
///
/// A receive only ever takes a message off the core's queue inside the poll
/// that completes it, and always with `held` locked, so the message is either
/// handed straight to the caller or parked in `held`, which every receive
/// empties first. A cancelled asyncio `recv()`, a sync `recv(timeout=...)`
/// that timed out, or an abandoned background wait therefore never loses a
/// message, and one reader at a time sees them in order.
struct StreamCore {
    stream: Stream,
    held: Mutex<Option<Received>>,
}

impl StreamCore {
    /// Polls the core queue once (registering `cx`'s waker when empty).
    fn poll_wire(&self, cx: &mut Context<'_>) -> Poll<Received> {
        let fut = self.stream.recv();
        let mut fut = std::pin::pin!(fut);
        fut.as_mut().poll(cx)
    }

    /// The next message: the parked one first, else the core's next.
    fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Received> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(r) = held.take() {
            return Poll::Ready(r);
        }
        self.poll_wire(cx)
    }

    /// Ready once a message (or the end, or a failure) is parked for the
    /// next receive; takes nothing from the caller's point of view.
    fn poll_park(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.is_some() {
            return Poll::Ready(());
        }
        match self.poll_wire(cx) {
            Poll::Ready(r) => {
                *held = Some(r);
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// One side of a streaming call: a client's call, or the stream a server's
/// streaming handler works on.
#[pyclass(frozen, module = "drpc._native")]
struct NativeStream {
    core: Arc<StreamCore>,
}

impl NativeStream {
    fn new(stream: Stream) -> NativeStream {
        NativeStream { core: Arc::new(StreamCore { stream, held: Mutex::new(None) }) }
    }
}

fn received_to_py<'py>(py: Python<'py>, r: Received) -> PyResult<Option<Bound<'py, PyBytes>>> {
    match r {
        Ok(m) => Ok(m.map(|b| PyBytes::new(py, &b))),
        Err(s) => Err(status_to_err(py, &s)),
    }
}

#[pymethods]
impl NativeStream {
    #[getter]
    fn id(&self) -> u64 {
        self.core.stream.id()
    }

    #[getter]
    fn finished(&self) -> bool {
        self.core.stream.is_finished()
    }

    #[getter]
    fn context(&self) -> ServerContext {
        ServerContext::new(self.core.stream.context().clone())
    }

    /// Sends one message.
    fn send(&self, py: Python<'_>, data: PyBackedBytes) -> PyResult<()> {
        let core = self.core.clone();
        let data = bytes_of(data);
        let mut fut = Box::pin(async move { core.stream.send(data).await });
        let result = match poll_once(fut.as_mut()) {
            Poll::Ready(r) => r,
            Poll::Pending => wait(py, fut)?,
        };
        result.map_err(|s| status_to_err(py, &s))
    }

    /// Sends one message without blocking: returns None when it was sent at
    /// once (or raises), else a Task that finishes the send in the background
    /// (waiting for flow-control credit) and then calls `cb(None, exc)`.
    fn send_nowait(&self, py: Python<'_>, data: PyBackedBytes, callback: PyObject) -> PyResult<Option<Task>> {
        let core = self.core.clone();
        let data = bytes_of(data);
        let mut fut = Box::pin(async move { core.stream.send(data).await });
        match poll_once(fut.as_mut()) {
            Poll::Ready(r) => r.map(|_| None).map_err(|s| status_to_err(py, &s)),
            Poll::Pending => Ok(Some(spawn_cb(fut, callback, conv_unit))),
        }
    }

    /// Tells the remote no more messages will be sent.
    fn close_send(&self, py: Python<'_>) -> PyResult<()> {
        let core = self.core.clone();
        let mut fut = Box::pin(async move { core.stream.close_send().await });
        let result = match poll_once(fut.as_mut()) {
            Poll::Ready(r) => r,
            Poll::Pending => wait(py, fut)?,
        };
        result.map_err(|s| status_to_err(py, &s))
    }

    /// The next message, or None once the remote finished sending (blocking).
    /// With `timeout`, raises TimeoutError when nothing arrived in time; the
    /// stream is unaffected and the next `recv()` gets the next message. An
    /// interrupt (Ctrl-C) while waiting cancels the stream.
    #[pyo3(signature = (timeout=None))]
    fn recv<'py>(&self, py: Python<'py>, timeout: Option<f64>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let timeout = to_duration("timeout", timeout)?;
        let core = &*self.core;
        if let Poll::Ready(r) = core.poll_take(&mut Context::from_waker(std::task::Waker::noop())) {
            return received_to_py(py, r);
        }
        let next = poll_fn(|cx| core.poll_take(cx));
        let waited = wait(py, async move {
            match timeout {
                None => Some(next.await),
                Some(t) => tokio::time::timeout(t, next).await.ok(),
            }
        });
        match waited {
            Ok(Some(r)) => received_to_py(py, r),
            Ok(None) => Err(PyTimeoutError::new_err("no message within the timeout")),
            Err(err) => {
                core.stream.cancel();
                Err(err)
            }
        }
    }

    /// Non-blocking receive: `(True, bytes | None)` when a message or the end
    /// is available, `(False, None)` otherwise; raises on failure.
    fn poll_recv(&self, py: Python<'_>) -> PyResult<(bool, PyObject)> {
        match self.core.poll_take(&mut Context::from_waker(std::task::Waker::noop())) {
            Poll::Ready(r) => {
                let value = match received_to_py(py, r)? {
                    Some(b) => b.into_any().unbind(),
                    None => py.None(),
                };
                Ok((true, value))
            }
            Poll::Pending => Ok((false, py.None())),
        }
    }

    /// Calls `cb(None, None)` once `poll_recv()` has something to return
    /// (a message, the end, or a failure). Cancelling the Task (or ignoring
    /// the callback) loses nothing: whatever arrived waits for the next
    /// `poll_recv()` / `recv()`.
    fn wait_recv_async(&self, callback: PyObject) -> Task {
        let core = self.core.clone();
        spawn_cb(
            async move {
                poll_fn(|cx| core.poll_park(cx)).await;
                Ok(())
            },
            callback,
            conv_unit,
        )
    }

    /// Cancels the call: the remote gets a Cancel frame; the connection is
    /// not affected.
    fn cancel(&self) {
        self.core.stream.cancel();
    }
}

// ---------------------------------------------------------------------------
// Server

/// What a server handler sees of its call besides the messages.
#[pyclass(frozen, module = "drpc._native")]
struct ServerContext {
    ctx: CallContext,
    /// The metadata dict, made on first use and then shared, so changes an
    /// interceptor makes are what the handler sees.
    metadata: GILOnceCell<Py<PyDict>>,
}

impl ServerContext {
    fn new(ctx: CallContext) -> ServerContext {
        ServerContext { ctx, metadata: GILOnceCell::new() }
    }
}

/// `time.monotonic`, to express deadlines on the clock Python programs use.
fn monotonic(py: Python<'_>) -> PyResult<f64> {
    static MONOTONIC: GILOnceCell<PyObject> = GILOnceCell::new();
    MONOTONIC
        .get_or_try_init(py, || py.import("time")?.getattr("monotonic").map(|f| f.unbind()))?
        .call0(py)?
        .extract(py)
}

#[pymethods]
impl ServerContext {
    /// The rpc name, e.g. `/pkg.Service/Method`.
    #[getter]
    fn rpc(&self) -> &str {
        self.ctx.rpc()
    }

    /// The invoke metadata as a dict, the same one on every access:
    /// interceptors may change it for the handler.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = self.metadata.get_or_try_init(py, || -> PyResult<Py<PyDict>> {
            let d = PyDict::new(py);
            for (k, v) in self.ctx.metadata() {
                d.set_item(k, v)?;
            }
            Ok(d.unbind())
        })?;
        Ok(d.bind(py).clone())
    }

    /// When the call must be done, on the `time.monotonic()` clock (None:
    /// no deadline): the client's `drpc-timeout`, capped by the server's
    /// `max_deadline`. When it passes the call is cancelled.
    #[getter]
    fn deadline(&self, py: Python<'_>) -> PyResult<Option<f64>> {
        let Some(deadline) = self.ctx.deadline() else { return Ok(None) };
        let now = tokio::time::Instant::now();
        let left = deadline.saturating_duration_since(now).as_secs_f64();
        let passed = now.saturating_duration_since(deadline).as_secs_f64();
        Ok(Some(monotonic(py)? + left - passed))
    }

    /// Seconds left until the deadline (0.0 once it passed), or None.
    fn time_remaining(&self) -> Option<f64> {
        self.ctx.time_remaining().map(|d| d.as_secs_f64())
    }

    /// The W3C trace context of this call's server span (a child of the
    /// caller's `traceparent`), or None when the caller sent none. Calls the
    /// handler makes carry it, so the next server's span is its child.
    #[getter]
    fn traceparent(&self) -> Option<String> {
        self.ctx.trace().map(|t| t.to_traceparent())
    }

    /// The trace id (32 hex digits) of `traceparent`, or None.
    #[getter]
    fn trace_id(&self) -> Option<String> {
        self.ctx.trace().map(|t| t.to_traceparent()[3..35].to_string())
    }

    /// The W3C `tracestate` carried along with `traceparent`, or None.
    #[getter]
    fn tracestate(&self) -> Option<String> {
        self.ctx.trace().and_then(|t| t.tracestate.clone())
    }

    #[getter]
    fn stream_id(&self) -> u64 {
        self.ctx.stream_id()
    }

    /// The peer: a dict with `address` (`ip:port`, `unix:...` or None) and
    /// `tls` (None on a plaintext connection, else a dict: `version`,
    /// `alpn`, `server_name`, the client certificate's `subject`,
    /// `dns_names`, `ip_addresses`, `uris`, `emails`, and `certificates`,
    /// the verified chain in DER, leaf first; empty without a client
    /// certificate).
    #[getter]
    fn peer<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let peer = self.ctx.peer();
        d.set_item("address", peer.and_then(|p| p.addr.clone()))?;
        match peer.and_then(|p| p.tls.as_ref()) {
            None => d.set_item("tls", py.None())?,
            Some(t) => {
                let tls = PyDict::new(py);
                tls.set_item("version", &t.version)?;
                tls.set_item("alpn", t.alpn.clone())?;
                tls.set_item("server_name", t.server_name.clone())?;
                tls.set_item("subject", t.subject.clone())?;
                tls.set_item("dns_names", t.dns_names.clone())?;
                tls.set_item("ip_addresses", t.ip_addresses.clone())?;
                tls.set_item("uris", t.uris.clone())?;
                tls.set_item("emails", t.emails.clone())?;
                let certs: Vec<Bound<'py, PyBytes>> = t.certificates.iter().map(|c| PyBytes::new(py, c)).collect();
                tls.set_item("certificates", certs)?;
                d.set_item("tls", tls)?;
            }
        }
        Ok(d)
    }

    /// Whether the call was cancelled (by the client, a deadline, or a lost
    /// connection).
    fn is_cancelled(&self) -> bool {
        self.ctx.is_cancelled()
    }

    /// Blocks (GIL released) until the call is cancelled or `timeout`
    /// seconds passed; returns whether it was cancelled.
    #[pyo3(signature = (timeout=None))]
    fn wait_cancelled(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let timeout = to_duration("timeout", timeout)?;
        let ctx = self.ctx.clone();
        wait(py, async move {
            match timeout {
                None => {
                    ctx.cancelled().await;
                    true
                }
                Some(t) => tokio::time::timeout(t, ctx.cancelled()).await.is_ok(),
            }
        })
    }

    /// Calls `cb(None, None)` when the call is cancelled.
    fn cancelled_async(&self, callback: PyObject) -> Task {
        let ctx = self.ctx.clone();
        spawn_cb(
            async move {
                ctx.cancelled().await;
                Ok(())
            },
            callback,
            conv_unit,
        )
    }

    fn __repr__(&self) -> String {
        format!("<ServerContext rpc={:?} stream={}>", self.ctx.rpc(), self.ctx.stream_id())
    }
}

/// Reports the outcome of an asynchronous handler: call it once as
/// `done(result, exc)`; later calls are ignored.
#[pyclass(frozen, module = "drpc._native")]
struct Completion {
    tx: Mutex<Option<oneshot::Sender<Result<Bytes, Status>>>>,
    /// Counts the handler as running until it reports (or this is dropped).
    running: Mutex<Option<RunningGuard>>,
}

#[pymethods]
impl Completion {
    #[pyo3(signature = (result=None, exc=None))]
    fn __call__(&self, py: Python<'_>, result: Option<Bound<'_, PyAny>>, exc: Option<Bound<'_, PyAny>>) -> PyResult<()> {
        let outcome = match (exc, result) {
            (Some(e), _) if !e.is_none() => Err(err_to_status(py, PyErr::from_value(e))),
            (_, Some(r)) if !r.is_none() => match r.extract::<PyBackedBytes>() {
                Ok(b) => Ok(bytes_of(b)),
                Err(_) => Err(Status::internal(format!(
                    "handler result must be bytes, got {}",
                    r.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                ))),
            },
            _ => Ok(Bytes::new()),
        };
        if let Some(tx) = self.tx.lock().unwrap().take() {
            let _ = tx.send(outcome);
        }
        self.running.lock().unwrap().take();
        Ok(())
    }
}

/// Counts one server's Python handler invocations that have not returned, so
/// `stop()` can wait for them: a handler still running Python code on a
/// runtime thread when the interpreter finalizes aborts the process.
#[derive(Default)]
struct Running {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// Held for as long as one handler invocation runs.
struct RunningGuard(Arc<Running>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Running {
    fn enter(self: &Arc<Self>) -> RunningGuard {
        self.count.fetch_add(1, Ordering::SeqCst);
        RunningGuard(self.clone())
    }

    fn len(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    /// Resolves once at most `allowed` invocations run.
    async fn at_most(&self, allowed: usize) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() <= allowed {
                return;
            }
            // notify_waiters fires only on reaching zero; re-check periodically
            // for `allowed > 0`.
            let _ = tokio::time::timeout(Duration::from_millis(20), notified).await;
        }
    }
}

/// The handler invocations of one server, by kind.
#[derive(Default)]
struct Handlers {
    /// Plain functions, each on a `drpc-handler` thread holding the GIL.
    sync: Arc<Running>,
    /// Coroutines on an asyncio loop (a Python thread).
    asynchronous: Arc<Running>,
}

impl Handlers {
    /// Sync handlers the calling thread may leave running: its own, when it
    /// is one of this server's sync handlers (it cannot wait for itself).
    fn own_sync_handlers(&self) -> usize {
        let me = Arc::as_ptr(&self.sync) as usize;
        IN_SYNC_HANDLER.with(|h| h.get() == me) as usize
    }

    /// Waits until the handlers have returned: the sync ones but `own_sync`,
    /// and, when `include_async`, the async ones but `own_async` (a handler
    /// stopping its own server cannot wait for itself).
    async fn idle(&self, own_sync: usize, include_async: bool, own_async: usize) {
        self.sync.at_most(own_sync).await;
        if include_async {
            self.asynchronous.at_most(own_async).await;
        }
    }
}

thread_local! {
    /// The `Running` (by address) whose sync handler this thread is running.
    static IN_SYNC_HANDLER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Runs a synchronous Python handler on the handler pool and waits for its
/// outcome; a full pool refuses the call with ResourceExhausted at once.
async fn run_sync<F>(running: &Arc<Running>, kind: JobKind, ctx: &CallContext, f: F) -> Result<Bytes, Status>
where
    F: FnOnce(Python<'_>) -> PyResult<Option<PyBackedBytes>> + Send + 'static,
{
    let guard = running.enter();
    let (tx, rx) = oneshot::channel();
    let spawned = handler_pool().spawn(
        kind,
        ctx.connection_id(),
        Box::new(move || {
            let me = Arc::as_ptr(&guard.0) as usize;
            IN_SYNC_HANDLER.with(|h| h.set(me));
            let outcome = enter_python(|py| match f(py) {
                Ok(Some(b)) => Ok(bytes_of(b)),
                Ok(None) => Ok(Bytes::new()),
                Err(err) => Err(err_to_status(py, err)),
            })
            .unwrap_or_else(|| Err(Status::unavailable("the Python interpreter is exiting")));
            IN_SYNC_HANDLER.with(|h| h.set(0));
            drop(guard);
            let _ = tx.send(outcome);
        }),
    );
    if let Err(why) = spawned {
        // Reaches Python's logging (drpc.python.server): an operator must
        // learn that calls are being turned away.
        tracing::warn!(
            rpc = ctx.rpc(),
            peer = ctx.peer().and_then(|p| p.addr.as_deref()).unwrap_or("-"),
            reason = %why,
            "refusing a call: no handler thread free"
        );
        return Err(Status::resource_exhausted(why));
    }
    rx.await.unwrap_or_else(|_| Err(Status::internal("the handler thread failed")))
}

/// Runs a synchronous Python handler right here, on the runtime thread that
/// read the request: no hand-off to a handler thread and back. Counted with
/// the sync handlers, so a stopping server waits for it.
fn run_inline<F>(running: &Arc<Running>, f: F) -> Result<Bytes, Status>
where
    F: FnOnce(Python<'_>) -> PyResult<Option<PyBackedBytes>>,
{
    let guard = running.enter();
    let me = Arc::as_ptr(&guard.0) as usize;
    let outer = IN_SYNC_HANDLER.with(|h| h.replace(me));
    let outcome = enter_python(|py| match f(py) {
        Ok(Some(b)) => Ok(bytes_of(b)),
        Ok(None) => Ok(Bytes::new()),
        Err(err) => Err(err_to_status(py, err)),
    })
    .unwrap_or_else(|| Err(Status::unavailable("the Python interpreter is exiting")));
    IN_SYNC_HANDLER.with(|h| h.set(outer));
    outcome
}

/// A running async handler's handle (its `cancel()` cancels the coroutine),
/// cancelled when dropped while armed: the server aborts a handler that
/// outlives its grace period by dropping this future.
struct CancelOnDrop {
    handle: Held,
    armed: bool,
}

impl CancelOnDrop {
    fn cancel(&mut self) {
        if std::mem::take(&mut self.armed) {
            let handle = self.handle.get();
            enter_python(|py| {
                if let Err(err) = handle.call_method0(py, "cancel") {
                    err.write_unraisable(py, None);
                }
            });
        }
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.cancel();
    }
}

/// Runs an asynchronous Python handler: `start(done)` schedules it and returns
/// a handle with `cancel()`, called when the RPC is cancelled.
async fn run_async<F>(running: &Arc<Running>, ctx: CallContext, start: F) -> Result<Bytes, Status>
where
    F: FnOnce(Python<'_>, Completion) -> PyResult<PyObject>,
{
    let (tx, mut rx) = oneshot::channel();
    let done = Completion { tx: Mutex::new(Some(tx)), running: Mutex::new(Some(running.enter())) };
    let handle = enter_python(|py| start(py, done).map_err(|e| err_to_status(py, e)))
        .unwrap_or_else(|| Err(Status::unavailable("the Python interpreter is exiting")))?;
    let mut handle = CancelOnDrop { handle: Held::new(handle), armed: true };
    let cancelled = ctx.cancelled();
    tokio::pin!(cancelled);
    let outcome = tokio::select! {
        // An outcome already reported wins: cancelling then is wasted work.
        biased;
        r = &mut rx => r,
        _ = &mut cancelled => {
            handle.cancel();
            rx.await
        }
    };
    handle.armed = false;
    outcome.unwrap_or_else(|_| Err(Status::internal("handler finished without a result")))
}

struct ServerState {
    router: Option<Router>,
    names: HashSet<String>,
    server: Option<Server>,
}

/// A server under construction (handlers registered) and then running.
#[pyclass(frozen, module = "drpc._native")]
struct NativeServer {
    state: Mutex<ServerState>,
    /// Deadline policy (drpc-core's `ServerOptions`).
    max_deadline: Option<Duration>,
    ignore_deadlines: bool,
    conn_options: ConnOptions,
    /// Bytes all connections together may hold (0: no limit).
    memory_budget: usize,
    handlers: Arc<Handlers>,
    /// The acceptor every TLS address shares (so one reload reaches all).
    tls: Mutex<Option<drpc_tls::TlsAcceptor>>,
}

impl NativeServer {
    /// The shared TLS acceptor: made from `config` on the first TLS
    /// address; a later `start_tls` replaces its configuration.
    fn tls_acceptor(&self, config: drpc_tls::ServerTlsConfig) -> PyResult<drpc_tls::TlsAcceptor> {
        let mut tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        match tls.as_ref() {
            Some(acceptor) => acceptor.reload(&config).map_err(tls_err)?,
            None => *tls = Some(drpc_tls::TlsAcceptor::new(&config).map_err(tls_err)?),
        }
        Ok(tls.clone().expect("just set"))
    }

    fn register(&self, name: &str, add: impl FnOnce(Router) -> Router) -> PyResult<()> {
        let mut st = self.state.lock().unwrap();
        if st.server.is_some() {
            return Err(PyRuntimeError::new_err("handlers must be registered before the server starts"));
        }
        if !st.names.insert(name.to_string()) {
            return Err(PyValueError::new_err(format!("rpc {name:?} is already registered")));
        }
        let router = st.router.take().unwrap_or_default();
        st.router = Some(add(router));
        Ok(())
    }

    fn server(&self) -> PyResult<Server> {
        let mut st = self.state.lock().unwrap();
        if let Some(s) = &st.server {
            return Ok(s.clone());
        }
        let router = st.router.take().unwrap_or_default();
        // The struct update keeps the core's other (and future) settings at their defaults.
        #[allow(clippy::needless_update)]
        let opts = drpc_core::ServerOptions {
            conn: self.conn_options.clone(),
            memory_budget: self.memory_budget,
            max_deadline: self.max_deadline,
            ignore_deadlines: self.ignore_deadlines,
            ..drpc_core::ServerOptions::default()
        };
        let server = Server::with_options(router, opts);
        st.server = Some(server.clone());
        Ok(server)
    }
}

#[pymethods]
impl NativeServer {
    /// `memory_budget`: bytes every connection together may hold (None: 256
    /// MiB; 0: no limit). `connection_memory`: one connection's share (None:
    /// 64 MiB). Timeouts in seconds, 0 disabling each (None: the defaults,
    /// 10 s, 300 s and 30 s).
    /// `max_deadline`: the longest deadline (seconds) a client's
    /// `drpc-timeout` may set (None: no cap); `ignore_deadlines`: ignore them.
    #[new]
    #[pyo3(signature = (max_message_size=None, flow_control=false, memory_budget=None, connection_memory=None, handshake_timeout=None, idle_timeout=None, read_timeout=None,
                        max_deadline=None, ignore_deadlines=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        max_message_size: Option<usize>,
        flow_control: bool,
        memory_budget: Option<usize>,
        connection_memory: Option<usize>,
        handshake_timeout: Option<f64>,
        idle_timeout: Option<f64>,
        read_timeout: Option<f64>,
        max_deadline: Option<f64>,
        ignore_deadlines: bool,
    ) -> PyResult<NativeServer> {
        let mut conn = conn_options(false, max_message_size, flow_control)?;
        if let Some(bytes) = connection_memory {
            if bytes == 0 {
                return Err(PyValueError::new_err("connection_memory must be positive"));
            }
            conn.connection_buffer_budget = bytes;
        }
        conn.handshake_timeout = limit_duration("handshake_timeout", handshake_timeout, conn.handshake_timeout)?;
        conn.idle_timeout = limit_duration("idle_timeout", idle_timeout, conn.idle_timeout)?;
        conn.read_timeout = limit_duration("read_timeout", read_timeout, conn.read_timeout)?;
        Ok(NativeServer {
            state: Mutex::new(ServerState { router: Some(Router::new()), names: HashSet::new(), server: None }),
            max_deadline: to_duration("max_deadline", max_deadline)?,
            ignore_deadlines,
            conn_options: conn,
            memory_budget: memory_budget.unwrap_or(drpc_core::DEFAULT_MEMORY_BUDGET),
            handlers: Arc::default(),
            tls: Mutex::default(),
        })
    }

    /// Registers a unary handler. Synchronous: `func(request: bytes, ctx) ->
    /// bytes | None`, run on a handler thread, or with `inline` on the
    /// runtime thread that read the request (no thread hand-off; for short
    /// handlers that do not block). Asynchronous: `func(request, ctx, done)
    /// -> handle`, which schedules the work, calls `done(result, exc)` when
    /// it ends and whose `handle.cancel()` is called if the RPC is cancelled.
    #[pyo3(signature = (name, func, is_async, inline=false))]
    fn add_unary(&self, name: &str, func: PyObject, is_async: bool, inline: bool) -> PyResult<()> {
        if !Python::with_gil(|py| func.bind(py).is_callable()) {
            return Err(PyTypeError::new_err("handler must be callable"));
        }
        if is_async && inline {
            return Err(PyValueError::new_err("inline is for plain-function handlers, not async ones"));
        }
        let func = Arc::new(func);
        let handlers = self.handlers.clone();
        self.register(name, move |router| {
            router.unary_raw(name, move |req: Request| {
                let func = func.clone();
                let handlers = handlers.clone();
                async move {
                    let ctx = req.context.clone();
                    if is_async {
                        run_async(&handlers.asynchronous, ctx.clone(), move |py, done| {
                            let data = PyBytes::new(py, &req.data);
                            func.call1(py, (data, ServerContext::new(ctx), done))
                        })
                        .await
                    } else {
                        let call = ctx.clone();
                        let handle = move |py: Python<'_>| {
                            let data = PyBytes::new(py, &req.data);
                            let out = func.call1(py, (data, ServerContext::new(ctx)))?;
                            let out = out.bind(py);
                            if out.is_none() {
                                return Ok(None);
                            }
                            out.extract::<PyBackedBytes>().map(Some).map_err(|_| {
                                PyTypeError::new_err(format!(
                                    "handler must return bytes, got {}",
                                    out.get_type().name().map(|n| n.to_string()).unwrap_or_default()
                                ))
                            })
                        };
                        if inline {
                            run_inline(&handlers.sync, handle)
                        } else {
                            run_sync(&handlers.sync, JobKind::Unary, &call, handle).await
                        }
                    }
                }
            })
        })
    }

    /// Registers a streaming handler: `func(stream: NativeStream)` (sync) or
    /// `func(stream, done) -> handle` (async, as for `add_unary`). Returning
    /// ends the call with CloseSend, raising with an Error frame.
    fn add_stream(&self, name: &str, func: PyObject, is_async: bool) -> PyResult<()> {
        if !Python::with_gil(|py| func.bind(py).is_callable()) {
            return Err(PyTypeError::new_err("handler must be callable"));
        }
        let func = Arc::new(func);
        let handlers = self.handlers.clone();
        self.register(name, move |router| {
            router.stream_raw(name, move |stream: Stream| {
                let func = func.clone();
                let handlers = handlers.clone();
                async move {
                    let ctx = stream.context().clone();
                    let stream = NativeStream::new(stream);
                    let result = if is_async {
                        run_async(&handlers.asynchronous, ctx, move |py, done| func.call1(py, (stream, done))).await
                    } else {
                        run_sync(&handlers.sync, JobKind::Stream, &ctx, move |py| func.call1(py, (stream,)).map(|_| None)).await
                    };
                    result.map(|_| ())
                }
            })
        })
    }

    /// Binds `addr` and serves it in the background (blocking until bound);
    /// returns the bound address. May be called more than once.
    fn start(&self, py: Python<'_>, addr: String) -> PyResult<String> {
        let server = self.server()?;
        let handle = rt().spawn(async move { server.listen(&addr).await });
        wait(py, handle)?
            .map_err(|e| PyRuntimeError::new_err(format!("listen task failed: {e}")))?
            .map_err(io_err)
    }

    /// `start` over TLS: certificate chain and key, and for mutual TLS a
    /// client CA (PEM bytes or file paths). Every TLS address shares one
    /// configuration, which `reload_tls` replaces for new connections.
    #[pyo3(signature = (addr, cert, key, client_ca=None, client_cert_required=true))]
    fn start_tls(
        &self,
        py: Python<'_>,
        addr: String,
        cert: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        client_ca: Option<&Bound<'_, PyAny>>,
        client_cert_required: bool,
    ) -> PyResult<String> {
        let acceptor = self.tls_acceptor(server_tls(cert, key, client_ca, client_cert_required)?)?;
        let server = self.server()?;
        let handle = rt().spawn(async move { drpc_tls::listen_tls(&server, &addr, acceptor).await });
        wait(py, handle)?
            .map_err(|e| PyRuntimeError::new_err(format!("listen task failed: {e}")))?
            .map_err(io_err)
    }

    #[pyo3(signature = (addr, callback, cert, key, client_ca=None, client_cert_required=true))]
    fn start_tls_async(
        &self,
        addr: String,
        callback: PyObject,
        cert: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        client_ca: Option<&Bound<'_, PyAny>>,
        client_cert_required: bool,
    ) -> PyResult<Task> {
        let acceptor = self.tls_acceptor(server_tls(cert, key, client_ca, client_cert_required)?)?;
        let server = self.server()?;
        Ok(spawn_cb(
            async move {
                drpc_tls::listen_tls(&server, &addr, acceptor).await.map_err(|e| Status::unavailable(e.to_string()))
            },
            callback,
            conv_string,
        ))
    }

    /// Takes a new certificate, key or client CA for the TLS connections
    /// accepted from now on; on error nothing changes.
    #[pyo3(signature = (cert, key, client_ca=None, client_cert_required=true))]
    fn reload_tls(
        &self,
        cert: &Bound<'_, PyAny>,
        key: &Bound<'_, PyAny>,
        client_ca: Option<&Bound<'_, PyAny>>,
        client_cert_required: bool,
    ) -> PyResult<()> {
        let config = server_tls(cert, key, client_ca, client_cert_required)?;
        let tls = self.tls.lock().unwrap_or_else(|e| e.into_inner());
        let acceptor = tls.as_ref().ok_or_else(|| PyRuntimeError::new_err("the server has no TLS address"))?;
        acceptor.reload(&config).map_err(tls_err)
    }

    fn start_async(&self, addr: String, callback: PyObject) -> PyResult<Task> {
        let server = self.server()?;
        Ok(spawn_cb(
            async move { server.listen(&addr).await.map_err(|e| Status::unavailable(e.to_string())) },
            callback,
            conv_string,
        ))
    }

    /// Stops accepting, lets in-flight RPCs finish for up to `grace` seconds,
    /// cancels the rest and closes every connection (blocking). Handlers
    /// that keep running Python code after that are waited for with
    /// `wait_handlers`.
    #[pyo3(signature = (grace=None))]
    fn stop(&self, py: Python<'_>, grace: Option<f64>) -> PyResult<()> {
        let grace = to_duration("grace", grace)?.unwrap_or(Duration::ZERO);
        let Some(server) = self.state.lock().unwrap().server.clone() else { return Ok(()) };
        let handle = rt().spawn(async move { server.shutdown(grace).await });
        wait(py, async move {
            let _ = handle.await;
        })
    }

    #[pyo3(signature = (callback, grace=None))]
    fn stop_async(&self, callback: PyObject, grace: Option<f64>) -> PyResult<Task> {
        let grace = to_duration("grace", grace)?.unwrap_or(Duration::ZERO);
        let server = self.state.lock().unwrap().server.clone();
        // Its own task: cancelling the returned Task abandons the wait, never
        // a shutdown half done.
        let shutdown = rt().spawn(async move {
            if let Some(server) = server {
                server.shutdown(grace).await;
            }
        });
        Ok(spawn_cb(
            async move {
                let _ = shutdown.await;
                Ok(())
            },
            callback,
            conv_unit,
        ))
    }

    /// Blocks (GIL released) until every sync handler (and every async one
    /// but `own_async`, with `include_async`) has returned, or `timeout`
    /// seconds passed; returns whether they all returned. Called from one of
    /// this server's sync handlers, it does not wait for that one.
    #[pyo3(signature = (timeout=None, include_async=true, own_async=0))]
    fn wait_handlers(&self, py: Python<'_>, timeout: Option<f64>, include_async: bool, own_async: usize) -> PyResult<bool> {
        let timeout = to_duration("timeout", timeout)?;
        let handlers = self.handlers.clone();
        let idle = handlers.idle(handlers.own_sync_handlers(), include_async, own_async);
        wait(py, async move {
            match timeout {
                None => {
                    idle.await;
                    true
                }
                Some(t) => tokio::time::timeout(t, idle).await.is_ok(),
            }
        })
    }

    /// `wait_handlers` in the background; `cb(bool, None)`. `own_async`:
    /// async handlers left running (the caller's own).
    #[pyo3(signature = (callback, timeout=None, include_async=true, own_async=0))]
    fn wait_handlers_async(
        &self,
        callback: PyObject,
        timeout: Option<f64>,
        include_async: bool,
        own_async: usize,
    ) -> PyResult<Task> {
        let timeout = to_duration("timeout", timeout)?;
        let handlers = self.handlers.clone();
        Ok(spawn_cb(
            async move {
                let idle = handlers.idle(0, include_async, own_async);
                Ok(match timeout {
                    None => {
                        idle.await;
                        true
                    }
                    Some(t) => tokio::time::timeout(t, idle).await.is_ok(),
                })
            },
            callback,
            conv_bool,
        ))
    }

    /// Python handler invocations (sync and async) that have not returned.
    fn running_handlers(&self) -> usize {
        self.handlers.sync.len() + self.handlers.asynchronous.len()
    }

    /// RPC handlers running now.
    fn active_rpcs(&self) -> usize {
        self.state.lock().unwrap().server.as_ref().map_or(0, |s| s.active_rpcs())
    }

    /// Open connections.
    fn connections(&self) -> usize {
        self.state.lock().unwrap().server.as_ref().map_or(0, |s| s.connections())
    }

    /// The server's counters (all connections, closed ones included) as a
    /// dict (see `drpc.Metrics`); zeros before it starts.
    fn metrics<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let snapshot = self.state.lock().unwrap().server.as_ref().map(|s| s.metrics()).unwrap_or_default();
        metrics_dict(py, &snapshot)
    }
}

/// Sets the runtime's thread counts before its first use (None keeps a
/// value): `worker_threads` run all network I/O and callbacks (default: the
/// number of cores, or `DRPC_WORKER_THREADS`), `handler_threads` is the most
/// plain-function handlers running at once (default 1024, or
/// `DRPC_HANDLER_THREADS`). RuntimeError once the runtime has started.
#[pyfunction]
#[pyo3(signature = (worker_threads=None, handler_threads=None))]
fn configure_runtime(worker_threads: Option<usize>, handler_threads: Option<usize>) -> PyResult<()> {
    for (name, value) in [("worker_threads", worker_threads), ("handler_threads", handler_threads)] {
        if value == Some(0) {
            return Err(PyValueError::new_err(format!("{name} must be positive")));
        }
    }
    pool::configure(worker_threads, handler_threads).map_err(PyRuntimeError::new_err)
}

/// `(worker_threads, handler_threads)` in effect; starts the runtime, which
/// fixes them.
#[pyfunction]
fn runtime_settings() -> (usize, usize) {
    pool::current_settings()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeConn>()?;
    m.add_class::<channel::NativeChannel>()?;
    m.add_class::<channel::NativeHealth>()?;
    m.add_class::<NativeStream>()?;
    m.add_class::<NativeServer>()?;
    m.add_class::<ServerContext>()?;
    m.add_class::<Completion>()?;
    m.add_class::<Task>()?;
    m.add_function(wrap_pyfunction!(_quiesce, m)?)?;
    m.add_function(wrap_pyfunction!(configure_runtime, m)?)?;
    m.add_function(wrap_pyfunction!(runtime_settings, m)?)?;
    m.add("DEFAULT_MEMORY_BUDGET", drpc_core::DEFAULT_MEMORY_BUDGET)?;
    m.add("DEFAULT_MAX_MESSAGE_SIZE", drpc_core::DEFAULT_MAX_MESSAGE_SIZE)?;
    log_bridge::install();
    Ok(())
}
