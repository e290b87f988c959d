//! One endpoint of a channel: its connections, the task that (re)connects
//! with backoff, and its optional health watch.

use crate::health;
use crate::ChannelOptions;
use drpc_core::{Conn, Status};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointState {
    /// Not connected and not trying (before the first call, or after the idle timeout).
    Idle,
    Connecting,
    /// Connected (and, with health checking, reported SERVING).
    Ready,
    /// Connected, but its health service reports it is not serving.
    NotServing,
    /// The last connection attempt failed; the next one is after a backoff.
    TransientFailure,
}

pub(crate) struct Subchannel {
    pub(crate) addr: String,
    opts: Arc<ChannelOptions>,
    /// Wakes calls waiting for a ready endpoint.
    changed: Arc<Notify>,
    /// Asks the channel to re-resolve (after a connection failure).
    resolve_now: Arc<Notify>,
    state: Mutex<SubState>,
    /// Connections this endpoint has established (for tests and stats).
    pub(crate) connects: AtomicU64,
}

struct SubState {
    conns: Vec<Conn>,
    connecting: bool,
    /// Extra connections being dialled on demand (sequential peers).
    dialing_extra: usize,
    failures: u32,
    last_error: Option<Status>,
    /// The health watch's last answer; `None` until the first one.
    serving: Option<bool>,
    last_used: Instant,
    shut_down: bool,
    /// The connector, per-connection watchers and health watches; aborting
    /// them drops their connection handles.
    tasks: Vec<AbortHandle>,
}

impl Subchannel {
    pub(crate) fn new(addr: String, opts: Arc<ChannelOptions>, changed: Arc<Notify>, resolve_now: Arc<Notify>) -> Arc<Subchannel> {
        Arc::new(Subchannel {
            addr,
            opts,
            changed,
            resolve_now,
            connects: AtomicU64::new(0),
            state: Mutex::new(SubState {
                conns: Vec::new(),
                connecting: false,
                dialing_extra: 0,
                failures: 0,
                last_error: None,
                serving: Some(true),
                last_used: Instant::now(),
                shut_down: false,
                tasks: Vec::new(),
            }),
        })
    }

    pub(crate) fn state(&self) -> EndpointState {
        let s = self.state.lock().unwrap();
        if s.conns.iter().any(|c| !c.is_closed()) {
            match s.serving {
                Some(true) => EndpointState::Ready,
                Some(false) => EndpointState::NotServing,
                None => EndpointState::Connecting,
            }
        } else if s.connecting && s.failures == 0 {
            EndpointState::Connecting
        } else if s.failures > 0 {
            EndpointState::TransientFailure
        } else {
            EndpointState::Idle
        }
    }

    pub(crate) fn last_error(&self) -> Option<Status> {
        self.state.lock().unwrap().last_error.clone()
    }

    /// Streams open on this endpoint's connections: its load for
    /// power-of-two-choices.
    pub(crate) fn load(&self) -> usize {
        self.state.lock().unwrap().conns.iter().map(|c| c.active_streams()).sum()
    }

    /// Starts connecting unless connected, connecting or shut down.
    pub(crate) fn request_connect(self: &Arc<Self>) {
        let mut s = self.state.lock().unwrap();
        if s.shut_down || s.connecting || s.conns.iter().any(|c| !c.is_closed()) {
            return;
        }
        s.connecting = true;
        let sub = self.clone();
        let task = tokio::spawn(async move { sub.connect_loop().await });
        s.tasks.push(task.abort_handle());
        s.tasks.retain(|t| !t.is_finished());
    }

    async fn connect_loop(self: Arc<Self>) {
        loop {
            let backoff = &self.opts.connect_backoff;
            let attempt = tokio::time::timeout(backoff.min_connect_timeout, crate::dial(&self.addr, &self.opts)).await;
            let result = attempt.unwrap_or_else(|_| Err(Status::unavailable(format!("connecting to {}: timed out", self.addr))));
            match result {
                Ok(conn) => {
                    self.connects.fetch_add(1, Ordering::Relaxed);
                    let mut s = self.state.lock().unwrap();
                    s.connecting = false;
                    if s.shut_down {
                        return;
                    }
                    s.failures = 0;
                    s.last_error = None;
                    s.last_used = Instant::now();
                    s.serving = if self.opts.health_check.is_some() { None } else { Some(true) };
                    self.adopt(&mut s, conn);
                    drop(s);
                    self.changed.notify_waiters();
                    return;
                }
                Err(status) => {
                    let delay = {
                        let mut s = self.state.lock().unwrap();
                        if s.shut_down {
                            return;
                        }
                        s.failures += 1;
                        tracing::debug!(endpoint = %self.addr, %status, failures = s.failures, "connect failed");
                        s.last_error = Some(status);
                        backoff.delay(s.failures)
                    };
                    self.changed.notify_waiters();
                    self.resolve_now.notify_one();
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }

    /// Takes `conn` into the endpoint: a watcher reconnects when it closes,
    /// and the health watch (if configured) tracks its serving status.
    fn adopt(self: &Arc<Self>, s: &mut SubState, conn: Conn) {
        let sub = self.clone();
        let watched = conn.clone();
        let watcher = tokio::spawn(async move {
            let why = watched.closed().await;
            drop(watched);
            sub.on_conn_closed(why);
        });
        s.tasks.push(watcher.abort_handle());
        if let Some(service) = self.opts.health_check.clone() {
            let sub = self.clone();
            let watched = conn.clone();
            let health = tokio::spawn(async move {
                // A watch that fails while the connection lives (a transient
                // refusal) is tried again; meanwhile the endpoint is out of
                // rotation, never stuck as "connecting".
                let mut failures = 0u32;
                loop {
                    let end = health::watch_serving(&watched, &service, |serving| {
                        let changed = {
                            let mut s = sub.state.lock().unwrap();
                            s.serving.replace(serving) != Some(serving)
                        };
                        if changed {
                            tracing::debug!(endpoint = %sub.addr, serving, "health changed");
                            sub.changed.notify_waiters();
                        }
                    })
                    .await;
                    tracing::debug!(endpoint = %sub.addr, status = %end, "health watch ended");
                    if end.code() == drpc_core::Code::Unimplemented || watched.is_closed() {
                        return;
                    }
                    failures += 1;
                    tokio::time::sleep(sub.opts.connect_backoff.delay(failures)).await;
                }
            });
            s.tasks.push(health.abort_handle());
        }
        s.tasks.retain(|t| !t.is_finished());
        s.conns.push(conn);
    }

    fn on_conn_closed(self: &Arc<Self>, why: Status) {
        let reconnect = {
            let mut s = self.state.lock().unwrap();
            s.conns.retain(|c| !c.is_closed());
            tracing::debug!(endpoint = %self.addr, %why, "connection closed");
            !s.shut_down && s.conns.is_empty()
        };
        self.changed.notify_waiters();
        if reconnect {
            // Lost the endpoint: maybe it moved; ask the resolver and reconnect.
            self.resolve_now.notify_one();
            self.request_connect();
        }
    }

    /// A connection for one call: the one with the most free stream slots;
    /// when all are busy and fewer than `max_conns_per_endpoint` exist, a new
    /// one is dialled (sequential peers get their concurrency this way).
    pub(crate) async fn conn(self: &Arc<Self>) -> Option<Conn> {
        let dial_extra = {
            let mut s = self.state.lock().unwrap();
            s.last_used = Instant::now();
            let best = s.conns.iter().filter(|c| !c.is_closed()).max_by_key(|c| c.available_streams())?.clone();
            if best.available_streams() > 0 || s.conns.len() + s.dialing_extra >= self.opts.max_conns_per_endpoint.max(1) {
                return Some(best);
            }
            s.dialing_extra += 1;
            best
        };
        let dialled = crate::dial(&self.addr, &self.opts).await;
        let mut s = self.state.lock().unwrap();
        s.dialing_extra -= 1;
        match dialled {
            Ok(conn) if !s.shut_down => {
                self.connects.fetch_add(1, Ordering::Relaxed);
                self.adopt(&mut s, conn.clone());
                Some(conn)
            }
            // The call queues for a slot on the busy connection instead.
            _ => Some(dial_extra),
        }
    }

    /// `conn`'s server is shutting down gracefully: the connection takes no
    /// new calls (those on it finish; the server closes it after them), and
    /// the endpoint reconnects, which fails while the server is down (the
    /// endpoint then backs off out of rotation) and succeeds once it is back.
    pub(crate) fn draining(self: &Arc<Self>, conn: &Conn) {
        let reconnect = {
            let mut s = self.state.lock().unwrap();
            let before = s.conns.len();
            s.conns.retain(|c| !c.same_connection(conn) && !c.is_closed());
            if s.conns.len() == before {
                return;
            }
            tracing::debug!(endpoint = %self.addr, "server is shutting down: draining its connection");
            !s.shut_down && s.conns.is_empty()
        };
        self.changed.notify_waiters();
        if reconnect {
            self.request_connect();
        }
    }

    /// Closes connections nobody used for `idle_timeout`; the endpoint goes
    /// idle and reconnects on the next call that needs it.
    pub(crate) fn close_if_idle(&self) {
        let mut s = self.state.lock().unwrap();
        let busy = s.conns.iter().any(|c| c.active_streams() > 0);
        if s.conns.is_empty() || busy || s.last_used.elapsed() < self.opts.idle_timeout {
            return;
        }
        tracing::debug!(endpoint = %self.addr, "closing idle connections");
        for task in s.tasks.drain(..) {
            task.abort();
        }
        s.conns.clear();
        s.connecting = false;
        drop(s);
        self.changed.notify_waiters();
    }

    /// Takes the endpoint out of service (the resolver dropped it, or the
    /// channel is gone): no reconnects; each connection closes once the
    /// calls still running on it finish.
    pub(crate) fn shut_down(&self) {
        let mut s = self.state.lock().unwrap();
        s.shut_down = true;
        for task in s.tasks.drain(..) {
            task.abort();
        }
        s.conns.clear();
    }
}
