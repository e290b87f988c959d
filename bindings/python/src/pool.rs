//! The runtime's configuration (worker threads, handler threads) and the
//! bounded pool of threads that run plain-function (synchronous) Python
//! handlers, as drpc-ffi does for blocking C handlers.
//!
//! tokio's own blocking pool would do, but it queues without bound behind
//! its 512 threads: 512 long-lived streaming handlers (idle Watch-style
//! streams blocked in `recv()`) would make every new unary call wait until
//! its deadline. This pool refuses at once instead, and keeps a quarter of
//! its threads for unary handlers.

use std::collections::VecDeque;
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
/// of the threads, so unary handlers always find the rest.
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
    queue: VecDeque<Job>,
}

/// Gives a streaming job's slot back when the job ends (or is dropped unrun).
struct StreamSlot(&'static HandlerPool);

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.lock().busy_streams -= 1;
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

    /// Runs `job` on a pool thread, or refuses it (returning why) when the
    /// pool, or its share for streaming handlers, is exhausted.
    pub(crate) fn spawn(&'static self, kind: JobKind, job: Job) -> Result<(), String> {
        let mut st = self.lock();
        let job: Job = if kind == JobKind::Stream {
            if st.busy_streams >= self.max_streams {
                return Err(format!(
                    "all {} handler threads for streaming calls are busy (see drpc.configure_runtime)",
                    self.max_streams
                ));
            }
            st.busy_streams += 1;
            let slot = StreamSlot(self);
            Box::new(move || {
                let _slot = slot;
                job()
            })
        } else {
            job
        };
        if st.idle > st.queue.len() {
            st.queue.push_back(job);
            self.work.notify_one();
            return Ok(());
        }
        if st.threads >= self.max {
            drop(st);
            // Dropping `job` here gives a stream's slot back (it takes the lock).
            drop(job);
            return Err(format!("all {} handler threads are busy (see drpc.configure_runtime)", self.max));
        }
        st.threads += 1;
        drop(st);
        let spawned = std::thread::Builder::new().name("drpc-handler".into()).spawn(move || self.worker(job));
        match spawned {
            Ok(_) => Ok(()),
            Err(e) => {
                // The job moved into the failed spawn and was dropped there.
                self.lock().threads -= 1;
                Err(format!("starting a handler thread failed: {e}"))
            }
        }
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
