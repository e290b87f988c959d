//! A connection pool keyed by address: calls go to a connection with a free
//! stream slot, new connections are dialled up to a capacity limit, and idle
//! ones expire. With `max_streams_per_conn: 1` it makes concurrent calls to
//! sequential `storj.io/drpc` servers just work.

use crate::client::{CallOptions, Conn};
use crate::conn::ConnOptions;
use crate::status::Status;
use crate::stream::Stream;
use crate::metrics::{MetricsSnapshot, Totals};
use std::sync::atomic::{AtomicU64, Ordering};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Pool settings.
#[derive(Clone, Debug)]
pub struct PoolOptions {
    /// Options of every connection the pool dials (its stream limit is set
    /// from `max_streams_per_conn`). Its `memory_budget`, if unset, becomes
    /// one budget of the default size shared by all of them.
    pub conn: ConnOptions,
    /// Streams one connection carries at once; 1 for sequential peers.
    pub max_streams_per_conn: usize,
    /// Connections kept per address; beyond it calls queue for a free stream.
    pub max_conns_per_addr: usize,
    /// A connection with no stream for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        PoolOptions {
            conn: ConnOptions::default(),
            max_streams_per_conn: crate::conn::DEFAULT_MAX_CONCURRENT_STREAMS,
            max_conns_per_addr: 16,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl PoolOptions {
    /// A pool for sequential peers (`storj.io/drpc`): one stream per
    /// connection, concurrency from up to `max_conns` connections.
    pub fn sequential(max_conns: usize) -> PoolOptions {
        PoolOptions {
            max_streams_per_conn: 1,
            max_conns_per_addr: max_conns,
            ..PoolOptions::default()
        }
    }
}

/// A pool of client connections. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    opts: PoolOptions,
    addrs: Mutex<HashMap<String, Slots>>,
    dialled: tokio::sync::Notify,
    /// Counters of the connections the pool has let go of.
    retired: Mutex<Totals>,
    connections_opened: AtomicU64,
}

#[derive(Default)]
struct Slots {
    conns: Vec<Entry>,
    dialing: usize,
}

struct Entry {
    conn: Conn,
    last_used: Instant,
}

enum Pick {
    Use(Conn),
    Dial,
    /// At capacity with every connection still being dialled.
    Wait,
}

impl Pool {
    /// Creates a pool; a background task closes idle connections (it ends
    /// when the pool is dropped). Must be called inside a tokio runtime.
    pub fn new(mut opts: PoolOptions) -> Pool {
        // One budget for every connection the pool dials, unless given one.
        opts.conn
            .memory_budget
            .get_or_insert_with(crate::MemoryBudget::default);
        let inner = Arc::new(PoolInner {
            opts,
            addrs: Mutex::default(),
            dialled: tokio::sync::Notify::new(),
            retired: Mutex::default(),
            connections_opened: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&inner);
        let period = (inner.opts.idle_timeout / 2).max(Duration::from_millis(10));
        tokio::spawn(reap(weak, period));
        Pool { inner }
    }

    fn conn_options(&self) -> ConnOptions {
        let mut opts = self.inner.opts.conn.clone();
        opts.max_concurrent_streams = self.inner.opts.max_streams_per_conn.max(1);
        opts.sequential = self.inner.opts.max_streams_per_conn <= 1;
        opts
    }

    /// A connection to `addr` with a free stream slot if there is one, else a
    /// new connection (under the capacity limit), else the least busy one
    /// (where the call will queue for a slot).
    pub async fn get(&self, addr: &str) -> Result<Conn, Status> {
        loop {
            let dialled = self.inner.dialled.notified();
            match self.pick(addr) {
                Pick::Use(conn) => return Ok(conn),
                Pick::Wait => dialled.await,
                Pick::Dial => {
                    let result = Conn::connect(addr, self.conn_options()).await;
                    let mut addrs = self.inner.addrs.lock().unwrap();
                    let slots = addrs.entry(addr.to_string()).or_default();
                    slots.dialing -= 1;
                    if let Ok(conn) = &result {
                        self.inner.connections_opened.fetch_add(1, Ordering::Relaxed);
                        slots.conns.push(Entry {
                            conn: conn.clone(),
                            last_used: Instant::now(),
                        });
                    }
                    drop(addrs);
                    self.inner.dialled.notify_waiters();
                    return result;
                }
            }
        }
    }

    fn pick(&self, addr: &str) -> Pick {
        let mut addrs = self.inner.addrs.lock().unwrap();
        let slots = addrs.entry(addr.to_string()).or_default();
        self.inner.drop_closed(slots);
        let best = slots
            .conns
            .iter_mut()
            .max_by_key(|e| e.conn.available_streams());
        if let Some(entry) = best {
            if entry.conn.available_streams() > 0 {
                entry.last_used = Instant::now();
                return Pick::Use(entry.conn.clone());
            }
        }
        if slots.conns.len() + slots.dialing < self.inner.opts.max_conns_per_addr.max(1) {
            slots.dialing += 1;
            return Pick::Dial;
        }
        match slots
            .conns
            .iter_mut()
            .max_by_key(|e| e.conn.available_streams())
        {
            Some(entry) => {
                entry.last_used = Instant::now();
                Pick::Use(entry.conn.clone())
            }
            None => Pick::Wait,
        }
    }

    pub async fn unary(
        &self,
        addr: &str,
        rpc: &str,
        request: &[u8],
        opts: &CallOptions,
    ) -> Result<Bytes, Status> {
        self.get(addr).await?.unary(rpc, request, opts).await
    }

    pub async fn invoke<Req, Resp>(
        &self,
        addr: &str,
        rpc: &str,
        request: &Req,
        opts: &CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        self.get(addr).await?.invoke(rpc, request, opts).await
    }

    pub async fn stream(
        &self,
        addr: &str,
        rpc: &str,
        opts: &CallOptions,
    ) -> Result<Stream, Status> {
        self.get(addr).await?.stream(rpc, opts).await
    }

    /// Open connections to `addr`.
    pub fn connections(&self, addr: &str) -> usize {
        let mut addrs = self.inner.addrs.lock().unwrap();
        addrs.get_mut(addr).map_or(0, |s| {
            self.inner.drop_closed(s);
            s.conns.len()
        })
    }

    /// Closes connections idle for longer than the idle timeout now.
    pub fn close_idle(&self) {
        self.inner.close_idle();
    }

    /// Closes every connection; later calls dial anew.
    pub async fn close(&self) {
        let conns: Vec<Conn> = {
            let mut addrs = self.inner.addrs.lock().unwrap();
            addrs
                .drain()
                .flat_map(|(_, s)| s.conns.into_iter().map(|e| e.conn))
                .collect()
        };
        for conn in &conns {
            conn.close().await;
        }
        let mut retired = self.inner.retired.lock().unwrap();
        for conn in &conns {
            retired.add(&conn.shared().metrics);
        }
    }

    /// Counters over every connection the pool dialled: those it holds
    /// now, and those it closed or dropped (as they were when it let go).
    pub fn metrics(&self) -> MetricsSnapshot {
        let addrs = self.inner.addrs.lock().unwrap();
        let mut totals = self.inner.retired.lock().unwrap().clone();
        let (mut queued, mut active) = (0, 0);
        for entry in addrs.values().flat_map(|s| &s.conns) {
            let shared = entry.conn.shared();
            totals.add(&shared.metrics);
            queued += shared.writer.queued() as u64;
            active += u64::from(!entry.conn.is_closed());
        }
        drop(addrs);
        let mut snapshot = totals.snapshot();
        snapshot.queued_bytes = queued;
        snapshot.active_connections = active;
        snapshot.connections_opened = self.inner.connections_opened.load(Ordering::Relaxed);
        snapshot
    }
}

impl PoolInner {
    /// Forgets closed connections, keeping their counters.
    fn drop_closed(&self, slots: &mut Slots) {
        slots.conns.retain(|e| {
            let closed = e.conn.is_closed();
            if closed {
                self.retired.lock().unwrap().add(&e.conn.shared().metrics);
            }
            !closed
        });
    }

    fn close_idle(&self) {
        let now = Instant::now();
        let mut idle = Vec::new();
        let mut addrs = self.addrs.lock().unwrap();
        for slots in addrs.values_mut() {
            slots.conns.retain(|e| {
                let expired = e.conn.active_streams() == 0
                    && now.duration_since(e.last_used) >= self.opts.idle_timeout;
                if expired || e.conn.is_closed() {
                    self.retired.lock().unwrap().add(&e.conn.shared().metrics);
                    idle.push(e.conn.clone());
                    false
                } else {
                    true
                }
            });
        }
        addrs.retain(|_, s| !s.conns.is_empty() || s.dialing > 0);
        drop(addrs);
        // Dropping the pool's handle closes a connection once no call holds it.
        drop(idle);
    }
}

async fn reap(pool: Weak<PoolInner>, period: Duration) {
    loop {
        tokio::time::sleep(period).await;
        match pool.upgrade() {
            Some(pool) => pool.close_idle(),
            None => return,
        }
    }
}
