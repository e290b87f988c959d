//! The shared runtime (tokio workers for I/O and callbacks), the pool of
//! threads for blocking handlers, their configuration, and the rules about
//! which threads may block.

use crate::{Fail, Res};
use drpc_core::Code;
use std::cell::Cell;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

/// Environment variables read when the runtime starts (unless
/// `drpc_runtime_configure` set the value).
pub(crate) const ENV_WORKER_THREADS: &str = "DRPC_WORKER_THREADS";
pub(crate) const ENV_HANDLER_THREADS: &str = "DRPC_HANDLER_THREADS";

/// Default size of the blocking-handler pool. Threads are started on demand
/// and stop after `POOL_IDLE` unused, so an idle server holds none.
pub(crate) const DEFAULT_HANDLER_THREADS: usize = 1024;
const POOL_IDLE: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Config {
    worker_threads: Option<usize>,
    handler_threads: Option<usize>,
    /// Set, under the lock, when the runtime reads the configuration.
    started: bool,
}

static CONFIG: Mutex<Config> = Mutex::new(Config {
    worker_threads: None,
    handler_threads: None,
    started: false,
});
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static POOL: OnceLock<HandlerPool> = OnceLock::new();

/// Sets the configuration (0 keeps a value as it is); fails once the
/// runtime has started.
pub(crate) fn configure(worker_threads: usize, handler_threads: usize) -> Res<()> {
    let mut c = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    if c.started {
        return Err(Fail::code(
            Code::FailedPrecondition,
            "the drpc runtime has already started (configure it before any other drpc call)",
        ));
    }
    if worker_threads > 0 {
        c.worker_threads = Some(worker_threads);
    }
    if handler_threads > 0 {
        c.handler_threads = Some(handler_threads);
    }
    Ok(())
}

fn env_count(name: &str) -> Option<usize> {
    let raw = std::env::var(name).ok()?;
    match raw.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            eprintln!("libdrpc: ignoring {name}={raw:?} (want a positive integer)");
            None
        }
    }
}

/// The effective configuration, fixed from the first call on.
fn settings() -> (usize, usize) {
    let mut c = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    c.started = true;
    let workers = c
        .worker_threads
        .or_else(|| env_count(ENV_WORKER_THREADS))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let handlers = c
        .handler_threads
        .or_else(|| env_count(ENV_HANDLER_THREADS))
        .unwrap_or(DEFAULT_HANDLER_THREADS);
    // Remember what was chosen, so both pools agree and it can be read back.
    c.worker_threads = Some(workers);
    c.handler_threads = Some(handlers);
    (workers, handlers)
}

/// (worker threads, handler threads), starting the runtime if needed.
pub(crate) fn current_settings() -> (usize, usize) {
    runtime();
    let c = CONFIG.lock().unwrap_or_else(|e| e.into_inner());
    (c.worker_threads.unwrap_or(0), c.handler_threads.unwrap_or(0))
}

thread_local! {
    /// Set on the runtime's own threads (workers and tokio's blocking pool).
    static OUR_THREAD: Cell<bool> = const { Cell::new(false) };
    /// Set while a C callback runs on a runtime worker thread, where
    /// blocking would stall the runtime (and could deadlock it).
    static NO_BLOCK: Cell<bool> = const { Cell::new(false) };
    /// Set while a server handler runs on this thread.
    static IN_HANDLER: Cell<bool> = const { Cell::new(false) };
}

pub(crate) fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        let (workers, handlers) = settings();
        let _ = POOL.set(HandlerPool::new(handlers));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("drpc-worker")
            .on_thread_start(|| OUR_THREAD.with(|t| t.set(true)))
            .enable_all()
            .build()
            .expect("creating the drpc runtime")
    })
}

fn with_flag<R>(
    flag: &'static std::thread::LocalKey<Cell<bool>>,
    f: impl FnOnce() -> R,
) -> R {
    struct Reset(&'static std::thread::LocalKey<Cell<bool>>, bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            self.0.with(|b| b.set(self.1));
        }
    }
    let _reset = Reset(flag, flag.with(|b| b.replace(true)));
    f()
}

/// Runs `f` (a C callback on a runtime worker) with the no-blocking mark set.
pub(crate) fn without_blocking<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&NO_BLOCK, f)
}

/// Runs a C handler with the in-handler mark set.
pub(crate) fn in_handler<R>(f: impl FnOnce() -> R) -> R {
    with_flag(&IN_HANDLER, f)
}

pub(crate) fn is_in_handler() -> bool {
    IN_HANDLER.with(|h| h.get())
}

/// Whether the calling thread may block on the runtime.
pub(crate) fn check_may_block() -> Res<()> {
    if NO_BLOCK.with(|b| b.get()) {
        return Err(Fail::code(
            Code::FailedPrecondition,
            "a blocking drpc function was called from a callback or non-blocking handler running on a drpc runtime thread",
        ));
    }
    if !OUR_THREAD.with(|t| t.get()) && tokio::runtime::Handle::try_current().is_ok() {
        return Err(Fail::code(
            Code::FailedPrecondition,
            "a blocking drpc function was called from inside another tokio runtime",
        ));
    }
    Ok(())
}

/// Blocks the calling (non-runtime) thread until `fut` completes.
///
/// (Spinning a while before parking, so a quick answer needs no wake-up,
/// was tried: on two cores the spinning caller takes the CPU the runtime
/// thread needs to read that answer, and calls got slower under load.)
pub(crate) fn block_on<F: Future>(fut: F) -> Res<F::Output> {
    check_may_block()?;
    Ok(runtime().handle().block_on(fut))
}

/// Polls `fut` once, without blocking and from any thread: `Some` if it
/// completed. For operations that are immediately ready or may be retried.
pub(crate) fn poll_once<F: Future>(fut: F) -> Option<F::Output> {
    let _rt = runtime().enter();
    let mut fut = std::pin::pin!(fut);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => Some(v),
        std::task::Poll::Pending => None,
    }
}

// ---------------------------------------------------------------------------
// The pool of threads for blocking handlers.

type Job = Box<dyn FnOnce() + Send>;

/// What a job is, for the reservation below.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    Unary,
    Stream,
}

/// A bounded pool of threads that run blocking C handlers, one handler per
/// thread. Threads start on demand and stop when idle. When every thread is
/// busy a new handler is refused at once (the call fails with
/// ResourceExhausted) instead of waiting behind handlers that may never
/// return. Streaming handlers, which may run for the life of a stream, can
/// hold at most three quarters of the threads, so unary handlers always
/// find the rest.
pub(crate) struct HandlerPool {
    max: usize,
    max_streams: usize,
    state: Mutex<PoolState>,
    work: Condvar,
}

#[derive(Default)]
struct PoolState {
    threads: usize,
    idle: usize,
    busy_streams: usize,
    /// Jobs queued or running.
    in_use: usize,
    /// Jobs queued or running per connection. A BTreeMap, not a HashMap:
    /// this pool is a static that outlives `main`, and a BTreeMap frees its
    /// nodes once emptied where a hashbrown table keeps its allocation,
    /// reachable only through an interior pointer (valgrind: "possibly lost").
    per_conn: std::collections::BTreeMap<u64, usize>,
    queue: VecDeque<Job>,
}

/// One job's place in the pool's counts.
struct Slot {
    pool: &'static HandlerPool,
    kind: JobKind,
    conn: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut st = self.pool.lock();
        st.in_use -= 1;
        if self.kind == JobKind::Stream {
            st.busy_streams -= 1;
        }
        if let Some(n) = st.per_conn.get_mut(&self.conn) {
            *n -= 1;
            if *n == 0 {
                st.per_conn.remove(&self.conn);
            }
        }
    }
}

impl HandlerPool {
    fn new(max: usize) -> HandlerPool {
        HandlerPool {
            max,
            // At least one thread for streams, and one kept for unary when
            // there are two or more.
            max_streams: if max == 1 { 1 } else { (max - max / 4).min(max - 1) },
            state: Mutex::default(),
            work: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `job` (a handler of a call on connection `conn`) on a pool
    /// thread, or refuses it (returning why) when the pool, its share for
    /// streams, or the connection's fair share is exhausted.
    pub(crate) fn spawn(&'static self, kind: JobKind, conn: u64, job: Job) -> Result<(), String> {
        let mut st = self.lock();
        if kind == JobKind::Stream && st.busy_streams >= self.max_streams {
            return Err(format!(
                "all {} handler threads for streaming calls are busy (see drpc_runtime_configure)",
                self.max_streams
            ));
        }
        // The last quarter of the pool is kept for connections holding few
        // threads, shared fairly, so a few connections flooding slow calls
        // cannot take every thread from the others. (A lone connection may
        // use it all: there is no one to be fair to.)
        let held = st.per_conn.get(&conn).copied().unwrap_or(0);
        let others = st.per_conn.len() - usize::from(held > 0);
        if st.in_use >= self.max - self.max / 4 && others > 0 {
            let connections = st.per_conn.len() + usize::from(held == 0);
            let guaranteed = ((self.max / 4) / (2 * connections.max(1))).max(1);
            if held >= guaranteed {
                return Err(format!(
                    "this connection holds its share of the {} handler threads (see drpc_runtime_configure)",
                    self.max
                ));
            }
        }
        st.in_use += 1;
        *st.per_conn.entry(conn).or_insert(0) += 1;
        if kind == JobKind::Stream {
            st.busy_streams += 1;
        }
        // Released when the job ends or, if it never runs, when it is dropped.
        let slot = Slot { pool: self, kind, conn };
        let job: Job = Box::new(move || {
            let _slot = slot;
            job()
        });
        if st.idle > st.queue.len() {
            st.queue.push_back(job);
            self.work.notify_one();
            return Ok(());
        }
        if st.threads >= self.max {
            drop(st);
            // `job` (and its Done guard, never run) is dropped here.
            return Err(format!(
                "all {} handler threads are busy (see drpc_runtime_configure)",
                self.max
            ));
        }
        st.threads += 1;
        drop(st);
        let spawned = std::thread::Builder::new()
            .name("drpc-handler".into())
            .spawn(move || self.worker(job));
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                self.lock().threads -= 1;
                Err(format!("starting a handler thread failed: {e}"))
            }
        }
    }

    fn worker(&'static self, first: Job) {
        OUR_THREAD.with(|t| t.set(true));
        let mut job = first;
        loop {
            // Jobs catch their own panics; this keeps the count right anyway.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let mut st = self.lock();
            st.idle += 1;
            loop {
                if let Some(next) = st.queue.pop_front() {
                    st.idle -= 1;
                    job = next;
                    break;
                }
                let (guard, timeout) = self
                    .work
                    .wait_timeout(st, POOL_IDLE)
                    .unwrap_or_else(|e| e.into_inner());
                st = guard;
                if timeout.timed_out() && st.queue.is_empty() {
                    st.idle -= 1;
                    st.threads -= 1;
                    return;
                }
            }
        }
    }
}

pub(crate) fn handler_pool() -> &'static HandlerPool {
    runtime();
    POOL.get().expect("the pool is created with the runtime")
}
