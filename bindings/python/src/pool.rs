//! The runtime's configuration (worker threads, handler threads) and the
//! bounded pool of threads that run plain-function (synchronous) Python
//! handlers, as drpc-ffi does for blocking C handlers.
//!
//! tokio's own blocking pool would do, but it queues without bound behind
//! its 512 threads: 512 long-lived streaming handlers (idle Watch-style
//! streams blocked in `recv()`) would make every new unary call wait until
//! its deadline. This pool refuses at once instead, keeps a quarter of its
//! threads for unary handlers, and shares the last quarter fairly between
//! connections (as drpc-ffi's pool does).

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Environment variables read when the runtime starts, unless
/// `configure()` set the value first.
pub(crate) const ENV_WORKER_THREADS: &str = "DRPC_WORKER_THREADS";
pub(crate) const ENV_HANDLER_THREADS: &str = "DRPC_HANDLER_THREADS";

/// Default size of the handler pool. Threads start on demand and stop after
/// `POOL_IDLE` unused, so an idle server holds none.
pub(crate) const DEFAULT_HANDLER_THREADS: usize = 1024;
const POOL_IDLE: Duration = Duration::from_secs(10);

struct Config {
    worker_threads: Option<usize>,
    handler_threads: Option<usize>,
    /// Set, under the lock, when the runtime reads the configuration.
    started: bool,
}

static CONFIG: Mutex<Config> = Mutex::new(Config { worker_threads: None, handler_threads: None, started: false });
static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static POOL: OnceLock<HandlerPool> = OnceLock::new();

fn config() -> MutexGuard<'static, Config> {
    CONFIG.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the thread counts (None keeps a value as it is); fails (Err with the
/// reason) once the runtime has started.
pub(crate) fn configure(worker_threads: Option<usize>, handler_threads: Option<usize>) -> Result<(), &'static str> {
    let mut c = config();
    if c.started {
        return Err("the drpc runtime has already started; configure it before the first Client or Server");
    }
    if worker_threads.is_some() {
        c.worker_threads = worker_threads;
    }
    if handler_threads.is_some() {
        c.handler_threads = handler_threads;
    }
    Ok(())
}

/// A positive count from the environment; anything else is ignored with a
/// warning on stderr (the runtime starts from deep inside some call, where
/// raising is not an option).
fn env_count(name: &str) -> Option<usize> {
    let raw = std::env::var(name).ok()?;
    match raw.trim().parse::<usize>() {
        Ok(n) if n > 0 => Some(n),
        _ => {
            eprintln!("drpc: ignoring {name}={raw:?} (want a positive integer)");
            None
        }
    }
}

/// The effective configuration, fixed from the first call on.
fn settings() -> (usize, usize) {
    let mut c = config();
    c.started = true;
    let workers = c
        .worker_threads
        .or_else(|| env_count(ENV_WORKER_THREADS))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let handlers = c.handler_threads.or_else(|| env_count(ENV_HANDLER_THREADS)).unwrap_or(DEFAULT_HANDLER_THREADS);
    c.worker_threads = Some(workers);
    c.handler_threads = Some(handlers);
    (workers, handlers)
}

/// (worker threads, handler threads), starting the runtime if needed.
pub(crate) fn current_settings() -> (usize, usize) {
    rt();
    let c = config();
    (c.worker_threads.unwrap_or(0), c.handler_threads.unwrap_or(0))
}

/// The runtime that runs all network I/O and the `*_async` callbacks.
pub(crate) fn rt() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        let (workers, handlers) = settings();
        let _ = POOL.set(HandlerPool::new(handlers));
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(workers)
            .thread_name("drpc-worker")
            .enable_all()
            .build()
            .expect("building the drpc tokio runtime")
    })
}

pub(crate) fn handler_pool() -> &'static HandlerPool {
    rt();
    POOL.get().expect("the pool is created with the runtime")
}

type Job = Box<dyn FnOnce() + Send>;

/// What a job is, for the streams' share of the pool.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobKind {
    Unary,
    Stream,
}

/// A bounded pool of threads named `drpc-handler`, one handler per thread.
/// When every thread is busy a new handler is refused at once (the caller
/// fails the call with ResourceExhausted) instead of waiting behind handlers
/// that may never return. Streaming handlers may hold at most three quarters
/// of the threads, so unary handlers always find the rest; and the last
/// quarter is shared fairly between connections, so a few connections
/// flooding slow calls cannot take every thread from the others.
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
    /// Jobs queued or running per connection (by `CallContext::connection_id`).
    per_conn: HashMap<u64, usize>,
    queue: VecDeque<Job>,
}

/// One job's place in the pool's counts, given back when the job ends (or is
/// dropped unrun).
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
            // At least one thread for streams, and one kept for unary
            // handlers when there are two or more.
            max_streams: if max == 1 { 1 } else { (max - max / 4).min(max - 1) },
            state: Mutex::default(),
            work: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `job` (a handler of a call on connection `conn`) on a pool
    /// thread, or refuses it (returning why) when the pool, its share for
    /// streaming handlers, or the connection's fair share is exhausted.
    pub(crate) fn spawn(&'static self, kind: JobKind, conn: u64, job: Job) -> Result<(), String> {
        let mut st = self.lock();
        if kind == JobKind::Stream && st.busy_streams >= self.max_streams {
            return Err(format!(
                "all {} handler threads for streaming calls are busy (see drpc.configure_runtime)",
                self.max_streams
            ));
        }
        if let Some(why) = self.over_fair_share(&st, conn) {
            return Err(why);
        }
        st.in_use += 1;
        *st.per_conn.entry(conn).or_insert(0) += 1;
        if kind == JobKind::Stream {
            st.busy_streams += 1;
        }
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
            // Dropping `job` here gives its slot back (that takes the lock).
            drop(job);
            return Err(format!("all {} handler threads are busy (see drpc.configure_runtime)", self.max));
        }
        st.threads += 1;
        drop(st);
        let spawned = std::thread::Builder::new().name("drpc-handler".into()).spawn(move || self.worker(job));
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                // The job (and its slot) moved into the failed spawn and was dropped there.
                self.lock().threads -= 1;
                Err(format!("starting a handler thread failed: {e}"))
            }
        }
    }

    /// Why connection `conn` may not take another thread now, if it may not:
    /// once three quarters of the pool are in use, the last quarter is kept
    /// for connections holding few threads, each guaranteed an equal part of
    /// half of it. A lone connection may use it all (there is no one to be
    /// fair to).
    fn over_fair_share(&self, st: &PoolState, conn: u64) -> Option<String> {
        let held = st.per_conn.get(&conn).copied().unwrap_or(0);
        let others = st.per_conn.len() - usize::from(held > 0);
        if st.in_use < self.max - self.max / 4 || others == 0 {
            return None;
        }
        let connections = st.per_conn.len() + usize::from(held == 0);
        let guaranteed = ((self.max / 4) / (2 * connections)).max(1);
        (held >= guaranteed).then(|| {
            format!("this connection holds its share of the {} handler threads (see drpc.configure_runtime)", self.max)
        })
    }

    fn worker(&'static self, first: Job) {
        // Handlers use tokio types (timers, spawns) through the runtime.
        let _entered = rt().enter();
        let mut job = first;
        loop {
            // Jobs report their own failures; this keeps the counts right
            // should one panic anyway.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let mut st = self.lock();
            st.idle += 1;
            loop {
                if let Some(next) = st.queue.pop_front() {
                    st.idle -= 1;
                    job = next;
                    break;
                }
                let (guard, timeout) = self.work.wait_timeout(st, POOL_IDLE).unwrap_or_else(|e| e.into_inner());
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
