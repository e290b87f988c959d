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
//! they are synchronous (run on tokio's blocking pool with the GIL) or
//! asynchronous (the callable schedules the work on an asyncio loop and reports
//! through a [`Completion`]).

use bytes::Bytes;
use drpc_core::{CallContext, CallOptions, Conn, ConnOptions, Request, Router, Server, Status, Stream};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use pyo3::sync::GILOnceCell;
use pyo3::types::{PyBytes, PyDict, PyType};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// How long a blocking wait runs before it checks for signals.
const SLICE: Duration = Duration::from_millis(50);

static RUNTIME: OnceLock<Runtime> = OnceLock::new();

fn rt() -> &'static Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("drpc-runtime")
            .enable_all()
            .build()
            .expect("building the drpc tokio runtime")
    })
}

// ---------------------------------------------------------------------------
// Entering Python from runtime threads

/// Runtime threads inside (or about to enter) Python right now.
static IN_PYTHON: AtomicUsize = AtomicUsize::new(0);
/// Set at interpreter exit: runtime threads no longer call into Python.
static CLOSING: AtomicBool = AtomicBool::new(false);

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
    Some(Python::with_gil(f))
}

/// Called at interpreter exit (atexit, after servers and clients were
/// stopped): stops runtime threads from entering Python and waits up to
/// `timeout` seconds for those inside to leave. Returns whether they all left.
#[pyfunction]
#[pyo3(signature = (timeout=2.0))]
fn _quiesce(py: Python<'_>, timeout: f64) -> bool {
    CLOSING.store(true, Ordering::SeqCst);
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(timeout.max(0.0));
    py.allow_threads(|| loop {
        if IN_PYTHON.load(Ordering::SeqCst) == 0 {
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

/// Drives `fut` on the calling thread with the GIL released, in slices,
/// checking for signals (KeyboardInterrupt) between them. On a signal the
/// future is dropped, which cancels the call it stands for.
fn wait<F>(py: Python<'_>, fut: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut fut = std::pin::pin!(fut);
    loop {
        let sliced = py.allow_threads(|| {
            tokio::task::block_in_place(|| {
                rt().block_on(async { tokio::time::timeout(SLICE, fut.as_mut()).await })
            })
        });
        match sliced {
            Ok(v) => return Ok(v),
            Err(_) => py.check_signals()?,
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

/// Spawns `fut` and reports its outcome to `callback(value, exc)`.
fn spawn_cb<T, F>(fut: F, callback: PyObject, convert: Convert<T>) -> Task
where
    F: Future<Output = Result<T, Status>> + Send + 'static,
    T: Send + 'static,
{
    let handle = rt().spawn(async move {
        let outcome = fut.await;
        enter_python(|py| {
            let args = match outcome.map_err(|s| status_to_err(py, &s)).and_then(|v| convert(py, v)) {
                Ok(value) => (value, py.None()),
                Err(err) => (py.None(), err.into_value(py).into_any()),
            };
            if let Err(err) = callback.call1(py, args) {
                err.write_unraisable(py, None);
            }
        });
    });
    Task { abort: handle.abort_handle() }
}

fn conv_bytes(py: Python<'_>, b: Bytes) -> PyResult<PyObject> {
    Ok(PyBytes::new(py, &b).into_any().unbind())
}

fn conv_opt_bytes(py: Python<'_>, b: Option<Bytes>) -> PyResult<PyObject> {
    Ok(match b {
        Some(b) => PyBytes::new(py, &b).into_any().unbind(),
        None => py.None(),
    })
}

fn conv_unit(py: Python<'_>, _: ()) -> PyResult<PyObject> {
    Ok(py.None())
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

fn call_options(metadata: Option<BTreeMap<String, String>>, timeout: Option<f64>) -> PyResult<CallOptions> {
    let mut opts = CallOptions::new();
    if let Some(md) = metadata {
        opts.metadata = md;
    }
    opts.timeout = to_duration("timeout", timeout)?;
    Ok(opts)
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

async fn connect_with(addr: String, opts: ConnOptions, timeout: Option<Duration>) -> Result<Conn, Status> {
    let connect = Conn::connect(&addr, opts);
    match timeout {
        None => connect.await,
        Some(t) => match tokio::time::timeout(t, connect).await {
            Ok(r) => r,
            Err(_) => Err(Status::deadline_exceeded(format!("connecting to {addr}: timed out"))),
        },
    }
}

/// A client connection (multiplexing, or sequential: one stream at a time).
#[pyclass(frozen, module = "drpc._native")]
struct NativeConn {
    conn: Conn,
    addr: String,
}

fn conv_conn(py: Python<'_>, c: (Conn, String)) -> PyResult<PyObject> {
    Ok(Py::new(py, NativeConn { conn: c.0, addr: c.1 })?.into_any())
}

fn conv_stream(py: Python<'_>, s: Stream) -> PyResult<PyObject> {
    Ok(Py::new(py, NativeStream::new(s))?.into_any())
}

#[pymethods]
impl NativeConn {
    /// Connects (blocking) to `host:port` or `unix:/path`.
    #[staticmethod]
    #[pyo3(signature = (addr, sequential=false, max_message_size=None, connect_timeout=None, flow_control=false))]
    fn connect(
        py: Python<'_>,
        addr: String,
        sequential: bool,
        max_message_size: Option<usize>,
        connect_timeout: Option<f64>,
        flow_control: bool,
    ) -> PyResult<NativeConn> {
        let opts = conn_options(sequential, max_message_size, flow_control)?;
        let timeout = to_duration("connect_timeout", connect_timeout)?;
        let conn = wait(py, connect_with(addr.clone(), opts, timeout))?.map_err(|s| status_to_err(py, &s))?;
        Ok(NativeConn { conn, addr })
    }

    /// Connects in the background; `cb(NativeConn | None, exc | None)`.
    #[staticmethod]
    #[pyo3(signature = (addr, callback, sequential=false, max_message_size=None, connect_timeout=None, flow_control=false))]
    fn connect_async(
        addr: String,
        callback: PyObject,
        sequential: bool,
        max_message_size: Option<usize>,
        connect_timeout: Option<f64>,
        flow_control: bool,
    ) -> PyResult<Task> {
        let opts = conn_options(sequential, max_message_size, flow_control)?;
        let timeout = to_duration("connect_timeout", connect_timeout)?;
        Ok(spawn_cb(
            async move { connect_with(addr.clone(), opts, timeout).await.map(|c| (c, addr)) },
            callback,
            conv_conn,
        ))
    }

    #[getter]
    fn address(&self) -> &str {
        &self.addr
    }

    #[getter]
    fn sequential(&self) -> bool {
        self.conn.is_sequential()
    }

    #[getter]
    fn closed(&self) -> bool {
        self.conn.is_closed()
    }

    fn active_streams(&self) -> usize {
        self.conn.active_streams()
    }

    /// A unary call on raw bytes (blocking).
    #[pyo3(signature = (rpc, request, metadata=None, timeout=None))]
    fn unary<'py>(
        &self,
        py: Python<'py>,
        rpc: String,
        request: PyBackedBytes,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let opts = call_options(metadata, timeout)?;
        let conn = &self.conn;
        let result = wait(py, async { conn.unary(&rpc, &request, &opts).await })?;
        match result {
            Ok(b) => Ok(PyBytes::new(py, &b)),
            Err(s) => Err(status_to_err(py, &s)),
        }
    }

    /// A unary call in the background; `cb(bytes | None, exc | None)`.
    #[pyo3(signature = (rpc, request, callback, metadata=None, timeout=None))]
    fn unary_async(
        &self,
        rpc: String,
        request: PyBackedBytes,
        callback: PyObject,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
    ) -> PyResult<Task> {
        let opts = call_options(metadata, timeout)?;
        let conn = self.conn.clone();
        Ok(spawn_cb(async move { conn.unary(&rpc, &request, &opts).await }, callback, conv_bytes))
    }

    /// Opens a streaming call (blocking while a sequential connection is busy).
    #[pyo3(signature = (rpc, metadata=None, timeout=None))]
    fn stream(
        &self,
        py: Python<'_>,
        rpc: String,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
    ) -> PyResult<NativeStream> {
        let opts = call_options(metadata, timeout)?;
        let conn = &self.conn;
        match wait(py, async { conn.stream(&rpc, &opts).await })? {
            Ok(s) => Ok(NativeStream::new(s)),
            Err(s) => Err(status_to_err(py, &s)),
        }
    }

    /// Opens a streaming call in the background; `cb(NativeStream | None, exc | None)`.
    #[pyo3(signature = (rpc, callback, metadata=None, timeout=None))]
    fn stream_async(
        &self,
        rpc: String,
        callback: PyObject,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
    ) -> PyResult<Task> {
        let opts = call_options(metadata, timeout)?;
        let conn = self.conn.clone();
        Ok(spawn_cb(async move { conn.stream(&rpc, &opts).await }, callback, conv_stream))
    }

    /// Closes the connection (blocking until its tasks ended); calls on it fail
    /// with Unavailable.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let conn = self.conn.clone();
        // Run the close on the runtime so an interrupt cannot leave it half done.
        let handle = rt().spawn(async move { conn.close().await });
        wait(py, async move {
            let _ = handle.await;
        })
    }

    fn close_async(&self, callback: PyObject) -> Task {
        let conn = self.conn.clone();
        spawn_cb(
            async move {
                conn.close().await;
                Ok(())
            },
            callback,
            conv_unit,
        )
    }
}

// ---------------------------------------------------------------------------
// Streams

/// One side of a streaming call: a client's call, or the stream a server's
/// streaming handler works on.
#[pyclass(frozen, module = "drpc._native")]
struct NativeStream {
    stream: Arc<Stream>,
}

impl NativeStream {
    fn new(stream: Stream) -> NativeStream {
        NativeStream { stream: Arc::new(stream) }
    }
}

#[pymethods]
impl NativeStream {
    #[getter]
    fn id(&self) -> u64 {
        self.stream.id()
    }

    #[getter]
    fn finished(&self) -> bool {
        self.stream.is_finished()
    }

    #[getter]
    fn context(&self) -> ServerContext {
        ServerContext { ctx: self.stream.context().clone() }
    }

    /// Sends one message.
    fn send(&self, py: Python<'_>, data: PyBackedBytes) -> PyResult<()> {
        let stream = self.stream.clone();
        let data = bytes_of(data);
        let mut fut = Box::pin(async move { stream.send(data).await });
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
        let stream = self.stream.clone();
        let data = bytes_of(data);
        let mut fut = Box::pin(async move { stream.send(data).await });
        match poll_once(fut.as_mut()) {
            Poll::Ready(r) => r.map(|_| None).map_err(|s| status_to_err(py, &s)),
            Poll::Pending => Ok(Some(spawn_cb(fut, callback, conv_unit))),
        }
    }

    /// Tells the remote no more messages will be sent.
    fn close_send(&self, py: Python<'_>) -> PyResult<()> {
        let stream = self.stream.clone();
        let mut fut = Box::pin(async move { stream.close_send().await });
        let result = match poll_once(fut.as_mut()) {
            Poll::Ready(r) => r,
            Poll::Pending => wait(py, fut)?,
        };
        result.map_err(|s| status_to_err(py, &s))
    }

    /// The next message, or None once the remote finished sending (blocking).
    /// An interrupt while waiting cancels the stream.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let stream = self.stream.clone();
        let mut fut = Box::pin(async move { stream.recv().await });
        let result = match poll_once(fut.as_mut()) {
            Poll::Ready(r) => r,
            Poll::Pending => match wait(py, fut) {
                Ok(r) => r,
                Err(err) => {
                    self.stream.cancel();
                    return Err(err);
                }
            },
        };
        match result {
            Ok(m) => Ok(m.map(|b| PyBytes::new(py, &b))),
            Err(s) => Err(status_to_err(py, &s)),
        }
    }

    /// Non-blocking receive: `(True, bytes | None)` when a message or the end
    /// is available, `(False, None)` otherwise; raises on failure.
    fn poll_recv(&self, py: Python<'_>) -> PyResult<(bool, PyObject)> {
        let stream = self.stream.clone();
        let mut fut = Box::pin(async move { stream.recv().await });
        match poll_once(fut.as_mut()) {
            Poll::Ready(Ok(m)) => Ok((true, conv_opt_bytes(py, m)?)),
            Poll::Ready(Err(s)) => Err(status_to_err(py, &s)),
            Poll::Pending => Ok((false, py.None())),
        }
    }

    /// Receives in the background; `cb(bytes | None, exc | None)`.
    fn recv_async(&self, callback: PyObject) -> Task {
        let stream = self.stream.clone();
        spawn_cb(async move { stream.recv().await }, callback, conv_opt_bytes)
    }

    /// Cancels the call: the remote gets a Cancel frame; the connection is
    /// not affected.
    fn cancel(&self) {
        self.stream.cancel();
    }
}

// ---------------------------------------------------------------------------
// Server

/// What a server handler sees of its call besides the messages.
#[pyclass(frozen, module = "drpc._native")]
struct ServerContext {
    ctx: CallContext,
}

#[pymethods]
impl ServerContext {
    /// The rpc name, e.g. `/pkg.Service/Method`.
    #[getter]
    fn rpc(&self) -> &str {
        self.ctx.rpc()
    }

    /// The invoke metadata, as a new dict.
    #[getter]
    fn metadata<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for (k, v) in self.ctx.metadata() {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    #[getter]
    fn stream_id(&self) -> u64 {
        self.ctx.stream_id()
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
        Ok(())
    }
}

/// Runs a synchronous Python handler on the blocking pool.
async fn run_sync<F>(f: F) -> Result<Bytes, Status>
where
    F: FnOnce(Python<'_>) -> PyResult<Option<PyBackedBytes>> + Send + 'static,
{
    let joined = tokio::task::spawn_blocking(move || {
        enter_python(|py| match f(py) {
            Ok(Some(b)) => Ok(bytes_of(b)),
            Ok(None) => Ok(Bytes::new()),
            Err(err) => Err(err_to_status(py, err)),
        })
        .unwrap_or_else(|| Err(Status::unavailable("the Python interpreter is exiting")))
    })
    .await;
    joined.unwrap_or_else(|e| Err(Status::internal(format!("handler failed: {e}"))))
}

/// Runs an asynchronous Python handler: `start(done)` schedules it and returns
/// a handle with `cancel()`, called when the RPC is cancelled.
async fn run_async<F>(ctx: CallContext, start: F) -> Result<Bytes, Status>
where
    F: FnOnce(Python<'_>, Completion) -> PyResult<PyObject>,
{
    let (tx, mut rx) = oneshot::channel();
    let done = Completion { tx: Mutex::new(Some(tx)) };
    let handle = enter_python(|py| start(py, done).map_err(|e| err_to_status(py, e)))
        .unwrap_or_else(|| Err(Status::unavailable("the Python interpreter is exiting")))?;
    let cancelled = ctx.cancelled();
    tokio::pin!(cancelled);
    let outcome = tokio::select! {
        r = &mut rx => r,
        _ = &mut cancelled => {
            enter_python(|py| {
                if let Err(err) = handle.call_method0(py, "cancel") {
                    err.write_unraisable(py, None);
                }
            });
            rx.await
        }
    };
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
    max_message_size: Option<usize>,
    flow_control: bool,
}

impl NativeServer {
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
        let mut opts = drpc_core::ServerOptions::default();
        if let Some(max) = self.max_message_size {
            opts.conn.max_message_size = max;
        }
        if self.flow_control {
            opts.conn = opts.conn.with_flow_control();
        }
        let server = Server::with_options(router, opts);
        st.server = Some(server.clone());
        Ok(server)
    }
}

#[pymethods]
impl NativeServer {
    #[new]
    #[pyo3(signature = (max_message_size=None, flow_control=false))]
    fn new(max_message_size: Option<usize>, flow_control: bool) -> PyResult<NativeServer> {
        if max_message_size == Some(0) {
            return Err(PyValueError::new_err("max_message_size must be positive"));
        }
        Ok(NativeServer {
            state: Mutex::new(ServerState { router: Some(Router::new()), names: HashSet::new(), server: None }),
            max_message_size,
            flow_control,
        })
    }

    /// Registers a unary handler. Synchronous: `func(request: bytes, ctx) ->
    /// bytes | None`, run on a worker thread. Asynchronous: `func(request,
    /// ctx, done) -> handle`, which schedules the work, calls `done(result,
    /// exc)` when it ends and whose `handle.cancel()` is called if the RPC is
    /// cancelled.
    fn add_unary(&self, name: &str, func: PyObject, is_async: bool) -> PyResult<()> {
        if !Python::with_gil(|py| func.bind(py).is_callable()) {
            return Err(PyTypeError::new_err("handler must be callable"));
        }
        let func = Arc::new(func);
        self.register(name, move |router| {
            router.unary_raw(name, move |req: Request| {
                let func = func.clone();
                async move {
                    let ctx = req.context.clone();
                    if is_async {
                        run_async(ctx.clone(), move |py, done| {
                            let data = PyBytes::new(py, &req.data);
                            func.call1(py, (data, ServerContext { ctx }, done))
                        })
                        .await
                    } else {
                        run_sync(move |py| {
                            let data = PyBytes::new(py, &req.data);
                            let out = func.call1(py, (data, ServerContext { ctx }))?;
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
                        })
                        .await
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
        self.register(name, move |router| {
            router.stream_raw(name, move |stream: Stream| {
                let func = func.clone();
                async move {
                    let ctx = stream.context().clone();
                    let stream = NativeStream { stream: Arc::new(stream) };
                    let result = if is_async {
                        run_async(ctx, move |py, done| func.call1(py, (stream, done))).await
                    } else {
                        run_sync(move |py| func.call1(py, (stream,)).map(|_| None)).await
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

    fn start_async(&self, addr: String, callback: PyObject) -> PyResult<Task> {
        let server = self.server()?;
        Ok(spawn_cb(
            async move { server.listen(&addr).await.map_err(|e| Status::unavailable(e.to_string())) },
            callback,
            conv_string,
        ))
    }

    /// Stops accepting, lets in-flight RPCs finish for up to `grace` seconds,
    /// cancels the rest and closes every connection (blocking).
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
        Ok(spawn_cb(
            async move {
                if let Some(server) = server {
                    server.shutdown(grace).await;
                }
                Ok(())
            },
            callback,
            conv_unit,
        ))
    }

    /// RPC handlers running now.
    fn active_rpcs(&self) -> usize {
        self.state.lock().unwrap().server.as_ref().map_or(0, |s| s.active_rpcs())
    }

    /// Open connections.
    fn connections(&self) -> usize {
        self.state.lock().unwrap().server.as_ref().map_or(0, |s| s.connections())
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<NativeConn>()?;
    m.add_class::<NativeStream>()?;
    m.add_class::<NativeServer>()?;
    m.add_class::<ServerContext>()?;
    m.add_class::<Completion>()?;
    m.add_class::<Task>()?;
    m.add_function(wrap_pyfunction!(_quiesce, m)?)?;
    m.add("DEFAULT_MAX_MESSAGE_SIZE", drpc_core::DEFAULT_MAX_MESSAGE_SIZE)?;
    Ok(())
}
