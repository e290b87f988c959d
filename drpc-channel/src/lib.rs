//! drpc-channel: a DRPC client for many servers.
//!
//! A [`Channel`] resolves a target (`dns:///host:port`, `unix:/path`,
//! `ipv4:1.2.3.4:5,...`, or any [`Resolver`]) into endpoints, connects to
//! them lazily (on the first call) and reconnects with exponential backoff
//! and jitter, spreads calls over them ([`LoadBalancing`]: pick-first,
//! round-robin, power-of-two-choices on open streams), retries calls that
//! can be replayed ([`RetryPolicy`], throttled by a [`RetryBudget`]), can
//! take endpoints whose health service reports NOT_SERVING out of rotation,
//! and drains endpoints the resolver removes. It is the way to call a
//! service; a bare [`drpc_core::Conn`] is one connection to one address.
//!
//! Not to be confused with [`drpc_core::call::Channel`], the trait generated
//! clients call through: this `Channel` implements it, so
//! `FooClient::new(channel)` works.
//!
//! ```no_run
//! # async fn demo() -> Result<(), drpc_core::Status> {
//! use drpc_channel::{Channel, ChannelOptions, LoadBalancing};
//! let channel = Channel::new("dns:///kv.internal:9000", ChannelOptions {
//!     load_balancing: LoadBalancing::RoundRobin,
//!     ..ChannelOptions::default()
//! })?;
//! let reply = channel.unary("/kv.KV/Get", b"...", &Default::default()).await?;
//! # Ok(()) }
//! ```

mod resolver;
mod retry;
mod subchannel;

pub mod health;

pub use resolver::{
    parse_target, BoxFuture, DnsResolver, HostLookup, ManualResolver, Resolver, StaticResolver, SystemLookup,
};
pub use retry::{ConnectBackoff, RetryBudget, RetryPolicy};
pub use subchannel::EndpointState;

use bytes::Bytes;
use drpc_core::{CallOptions, Code, Conn, ConnOptions, Status, Stream};
use retry::Throttle;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use subchannel::Subchannel;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How calls are spread over the ready endpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoadBalancing {
    /// The first endpoint (in resolver order) that connects takes every call;
    /// the next ones are tried when it fails.
    PickFirst,
    /// Each call goes to the next ready endpoint in turn.
    #[default]
    RoundRobin,
    /// Two ready endpoints at random; the one with fewer open streams.
    PowerOfTwoChoices,
}

/// TCP keepalive probes: after `time` without traffic, a probe every
/// `interval`, the connection dropped after `retries` unanswered ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpKeepalive {
    pub time: Duration,
    pub interval: Duration,
    pub retries: u32,
}

impl Default for TcpKeepalive {
    fn default() -> Self {
        TcpKeepalive { time: Duration::from_secs(60), interval: Duration::from_secs(15), retries: 4 }
    }
}

impl TcpKeepalive {
    /// Applies these probes to a TCP socket.
    pub fn apply(&self, tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
        let ka = socket2::TcpKeepalive::new().with_time(self.time).with_interval(self.interval).with_retries(self.retries);
        socket2::SockRef::from(tcp).set_tcp_keepalive(&ka)
    }
}

/// Channel settings. The defaults follow gRPC where it has one.
#[derive(Clone, Debug)]
pub struct ChannelOptions {
    /// Options of every connection; `sequential: true` for `storj.io/drpc` peers.
    pub conn: ConnOptions,
    pub load_balancing: LoadBalancing,
    /// Connections kept per endpoint: multiplexing peers need one (the
    /// default); for sequential peers, each connection carries one call at a
    /// time, and up to this many are dialled as calls need them.
    pub max_conns_per_endpoint: usize,
    pub connect_backoff: ConnectBackoff,
    pub retry: RetryPolicy,
    /// Retry throttling; `None` leaves retries unthrottled.
    pub retry_budget: Option<RetryBudget>,
    /// The default for calls: wait for a ready endpoint until the deadline
    /// (true) or fail at once with Unavailable when none can be reached
    /// (false, gRPC's default). Per call: [`Channel::wait_for_ready`].
    pub wait_for_ready: bool,
    /// Watch this service name (`""`: the whole server) with the
    /// `grpc.health.v1.Health/Watch` rpc on every connection, and send
    /// calls only to endpoints reporting SERVING. A server without the
    /// health service counts as serving.
    pub health_check: Option<String>,
    /// Re-resolve this often (also after connection failures, at most once
    /// per `min_resolve_interval`).
    pub resolve_interval: Duration,
    pub min_resolve_interval: Duration,
    /// Connections without a call for this long are closed; the endpoint
    /// reconnects on the next call.
    pub idle_timeout: Duration,
    /// `None` turns keepalive probes off.
    pub tcp_keepalive: Option<TcpKeepalive>,
    /// Looks up DNS names of `dns:` targets (default: the system resolver).
    pub host_lookup: Arc<dyn HostLookup>,
}

impl Default for ChannelOptions {
    fn default() -> Self {
        ChannelOptions {
            conn: ConnOptions::default(),
            load_balancing: LoadBalancing::default(),
            max_conns_per_endpoint: 1,
            connect_backoff: ConnectBackoff::default(),
            retry: RetryPolicy::default(),
            retry_budget: Some(RetryBudget::default()),
            wait_for_ready: false,
            health_check: None,
            resolve_interval: Duration::from_secs(30),
            min_resolve_interval: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(30 * 60),
            tcp_keepalive: Some(TcpKeepalive::default()),
            host_lookup: Arc::new(SystemLookup),
        }
    }
}

impl std::fmt::Debug for dyn HostLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostLookup")
    }
}

/// Binds `addr` (`host:port`, port 0 allowed) with TCP keepalive probes on
/// every accepted connection, and serves it on `server` until its shutdown;
/// returns the bound address. (Accepted sockets inherit the listening
/// socket's keepalive settings on Linux and the BSDs.)
pub async fn listen_with_keepalive(server: &drpc_core::Server, addr: &str, keepalive: TcpKeepalive) -> std::io::Result<String> {
    let listener = keepalive_listener(addr, &keepalive).await?;
    let local = listener.local_addr()?.to_string();
    server.serve(drpc_core::Listener::Tcp(listener));
    Ok(local)
}

async fn keepalive_listener(addr: &str, keepalive: &TcpKeepalive) -> std::io::Result<tokio::net::TcpListener> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let ka = socket2::TcpKeepalive::new()
        .with_time(keepalive.time)
        .with_interval(keepalive.interval)
        .with_retries(keepalive.retries);
    socket2::SockRef::from(&listener).set_tcp_keepalive(&ka)?;
    Ok(listener)
}

/// Connects to one endpoint with the channel's socket options.
pub(crate) async fn dial(addr: &str, opts: &ChannelOptions) -> Result<Conn, Status> {
    let fail = |e: std::io::Error| Status::unavailable(format!("connecting to {addr}: {e}"));
    if addr.starts_with("unix:") {
        return Conn::connect(addr, opts.conn.clone()).await;
    }
    let tcp = connect_tcp(addr, opts.tcp_keepalive.as_ref()).await.map_err(fail)?;
    Ok(Conn::from_tcp(tcp, opts.conn.clone()))
}

async fn connect_tcp(addr: &str, keepalive: Option<&TcpKeepalive>) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    if let Some(ka) = keepalive {
        ka.apply(&tcp)?;
    }
    Ok(tcp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn channel_sockets_get_the_keepalive_options() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let ka = TcpKeepalive { time: Duration::from_secs(7), interval: Duration::from_secs(3), retries: 2 };
        let tcp = connect_tcp(&addr, Some(&ka)).await.unwrap();
        let sock = socket2::SockRef::from(&tcp);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(7));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(3));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 2);
        let plain = connect_tcp(&addr, None).await.unwrap();
        assert!(!socket2::SockRef::from(&plain).keepalive().unwrap());
    }

    #[tokio::test]
    async fn accepted_sockets_inherit_the_listeners_keepalive() {
        let ka = TcpKeepalive { time: Duration::from_secs(9), interval: Duration::from_secs(4), retries: 3 };
        let listener = keepalive_listener("127.0.0.1:0", &ka).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(9));
        assert_eq!(sock.tcp_keepalive_interval().unwrap(), Duration::from_secs(4));
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 3);
    }

    #[tokio::test]
    async fn a_keepalive_server_serves_channels() {
        let server = drpc_core::Server::new(drpc_core::Router::new().unary_raw("/t/Ping", |_r| async { Ok(Bytes::from_static(b"pong")) }));
        let addr = listen_with_keepalive(&server, "127.0.0.1:0", TcpKeepalive::default()).await.unwrap();
        let channel = Channel::new(&addr, ChannelOptions::default()).unwrap();
        assert_eq!(&channel.unary("/t/Ping", b"", &CallOptions::new()).await.unwrap()[..], b"pong");
        server.shutdown(Duration::from_secs(1)).await;
    }
}

/// Counters of what a channel did, for monitoring and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChannelStats {
    /// Attempts made (first tries and retries).
    pub attempts: u64,
    pub retries: u64,
    /// Retries refused by the retry budget.
    pub throttled: u64,
    /// Resolutions run.
    pub resolutions: u64,
}

/// A client for the endpoints behind one target. Cheap to clone; clones
/// share endpoints and connections. Background work stops when the last
/// clone is dropped; connections then close as their calls finish.
#[derive(Clone)]
pub struct Channel {
    shared: Arc<Shared>,
    wait_for_ready: bool,
}

struct Shared {
    target: String,
    opts: Arc<ChannelOptions>,
    resolver: Arc<dyn Resolver>,
    endpoints: Mutex<Endpoints>,
    /// Endpoint or resolution state changed: waiting calls look again.
    changed: Arc<Notify>,
    resolve_now: Arc<Notify>,
    started: AtomicBool,
    /// A call or `connect` asked for connections: resolver updates connect
    /// new endpoints right away.
    in_use: AtomicBool,
    stopped: drpc_core::CancelToken,
    next_rr: AtomicUsize,
    throttle: Throttle,
    attempts: AtomicU64,
    retries: AtomicU64,
    throttled: AtomicU64,
    resolutions: AtomicU64,
}

#[derive(Default)]
struct Endpoints {
    list: Vec<Arc<Subchannel>>,
    resolved: bool,
    resolve_error: Option<Status>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.stopped.cancel();
        for sub in self.endpoints.get_mut().unwrap().list.drain(..) {
            sub.shut_down();
        }
    }
}

enum Pick {
    Ready(Arc<Subchannel>),
    /// Nothing ready yet, but something is connecting (or resolving).
    Queue,
    /// Nothing ready and nothing about to be: why.
    Fail(Status),
}

impl Channel {
    /// A channel for a gRPC-style target (see [`parse_target`]). Nothing
    /// connects until the first call.
    pub fn new(target: &str, opts: ChannelOptions) -> Result<Channel, Status> {
        let resolver = parse_target(target, opts.host_lookup.clone())?;
        Ok(Channel::with_resolver(target, resolver, opts))
    }

    /// A channel whose endpoints come from `resolver`; `name` is for messages.
    pub fn with_resolver(name: &str, resolver: Arc<dyn Resolver>, opts: ChannelOptions) -> Channel {
        let wait_for_ready = opts.wait_for_ready;
        Channel {
            shared: Arc::new(Shared {
                target: name.to_string(),
                throttle: Throttle::new(opts.retry_budget.clone()),
                opts: Arc::new(opts),
                resolver,
                endpoints: Mutex::default(),
                changed: Arc::new(Notify::new()),
                resolve_now: Arc::new(Notify::new()),
                started: AtomicBool::new(false),
                in_use: AtomicBool::new(false),
                stopped: drpc_core::CancelToken::new(),
                next_rr: AtomicUsize::new(0),
                attempts: AtomicU64::new(0),
                retries: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
                resolutions: AtomicU64::new(0),
            }),
            wait_for_ready,
        }
    }

    /// This channel with calls waiting for a ready endpoint until their
    /// deadline (`true`), or failing fast with Unavailable when none can be
    /// reached (`false`). Shares everything with `self`; use it per call:
    /// `channel.wait_for_ready(true).unary(...)`.
    pub fn wait_for_ready(&self, wait: bool) -> Channel {
        Channel { shared: self.shared.clone(), wait_for_ready: wait }
    }

    pub fn target(&self) -> &str {
        &self.shared.target
    }

    pub fn options(&self) -> &ChannelOptions {
        &self.shared.opts
    }

    pub fn stats(&self) -> ChannelStats {
        let s = &self.shared;
        ChannelStats {
            attempts: s.attempts.load(Ordering::Relaxed),
            retries: s.retries.load(Ordering::Relaxed),
            throttled: s.throttled.load(Ordering::Relaxed),
            resolutions: s.resolutions.load(Ordering::Relaxed),
        }
    }

    /// Each current endpoint with its state, in resolver order.
    pub fn endpoints(&self) -> Vec<(String, EndpointState)> {
        let list = self.shared.endpoints.lock().unwrap().list.clone();
        list.iter().map(|s| (s.addr.clone(), s.state())).collect()
    }

    /// Resolves and starts connecting now instead of on the first call.
    /// Must be called within a tokio runtime.
    pub fn connect(&self) {
        self.shared.in_use.store(true, Ordering::Release);
        self.start();
        self.shared.connect_wanted();
    }

    /// Waits until some endpoint is ready or `timeout` passes.
    pub async fn ready(&self, timeout: Duration) -> Result<(), Status> {
        let deadline = Instant::now() + timeout;
        self.pick(Some(deadline), true, None).await.map(|_| ())
    }

    /// Starts the resolver task once, on first use.
    fn start(&self) {
        if self.shared.started.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        let resolver = self.shared.resolver.clone();
        let resolve_now = self.shared.resolve_now.clone();
        let stopped = self.shared.stopped.clone();
        let (interval, min_interval) = (self.shared.opts.resolve_interval, self.shared.opts.min_resolve_interval);
        let idle_check = (self.shared.opts.idle_timeout / 4).clamp(Duration::from_millis(10), Duration::from_secs(60));
        tokio::spawn(async move {
            let work = async {
                let mut next_idle_check = Instant::now() + idle_check;
                loop {
                    // Created before resolving, so a change reported while
                    // the resolution runs is not missed.
                    let mut changed = resolver.changed();
                    let result = resolver.resolve().await;
                    let last = Instant::now();
                    match weak.upgrade() {
                        Some(shared) => shared.apply_resolution(result),
                        None => return,
                    }
                    // Wait for the interval, a push from the resolver, or a
                    // failure report (rate-limited); close idle connections meanwhile.
                    loop {
                        let wake = tokio::select! {
                            _ = tokio::time::sleep_until(last + interval) => true,
                            _ = &mut changed => true,
                            _ = resolve_now.notified() => {
                                tokio::time::sleep_until(last + min_interval).await;
                                true
                            }
                            _ = tokio::time::sleep_until(next_idle_check) => false,
                        };
                        if wake {
                            break;
                        }
                        next_idle_check = Instant::now() + idle_check;
                        match weak.upgrade() {
                            Some(shared) => shared.close_idle(),
                            None => return,
                        }
                    }
                }
            };
            tokio::select! {
                _ = stopped.cancelled() => {}
                _ = work => {}
            }
        });
    }

    /// Waits for a ready endpoint (see [`ChannelOptions::wait_for_ready`]).
    async fn pick(
        &self,
        deadline: Option<Instant>,
        wait_for_ready: bool,
        cancel: Option<&drpc_core::CancelToken>,
    ) -> Result<(Arc<Subchannel>, Conn), Status> {
        self.shared.in_use.store(true, Ordering::Release);
        self.start();
        // Fast path: something is ready, no need to register for wake-ups.
        if let Pick::Ready(sub) = self.shared.try_pick() {
            if let Some(conn) = sub.conn().await {
                return Ok((sub, conn));
            }
        }
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            match self.shared.try_pick() {
                Pick::Ready(sub) => {
                    if let Some(conn) = sub.conn().await {
                        return Ok((sub, conn));
                    }
                    continue;
                }
                Pick::Fail(status) if !wait_for_ready => return Err(status),
                Pick::Fail(_) | Pick::Queue => {}
            }
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            let cancelled = async {
                match cancel {
                    Some(c) => c.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = changed => {}
                _ = cancelled => return Err(Status::canceled("call canceled")),
                _ = sleep => {
                    let why = self.shared.why_not_ready();
                    return Err(Status::deadline_exceeded(format!("deadline exceeded waiting for a ready endpoint of {}: {why}", self.shared.target)));
                }
            }
        }
    }

    /// A unary call with raw message bytes, retried per the retry policy.
    pub async fn unary(&self, rpc: &str, request: &[u8], opts: &CallOptions) -> Result<Bytes, Status> {
        let (attempt_opts, deadline) = fix_deadline(opts);
        self.with_retries(deadline, opts, |conn| {
            let attempt_opts = &*attempt_opts;
            async move { conn.unary(rpc, request, attempt_opts).await }
        })
        .await
    }

    /// A unary call with protobuf messages.
    pub async fn invoke<Req, Resp>(&self, rpc: &str, request: &Req, opts: &CallOptions) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let response = self.unary(rpc, &request.encode_to_vec(), opts).await?;
        Ok(Resp::decode(response)?)
    }

    /// Opens a streaming call on a ready endpoint. Opening is retried (no
    /// request has been sent yet); once open, the stream is the caller's,
    /// so later failures are not. For server-streaming calls that should be
    /// retried until the first response, use [`Channel::server_streaming`].
    pub async fn stream(&self, rpc: &str, opts: &CallOptions) -> Result<Stream, Status> {
        let (attempt_opts, deadline) = fix_deadline(opts);
        self.with_retries(deadline, opts, |conn| {
            let attempt_opts = &*attempt_opts;
            async move { conn.stream(rpc, attempt_opts).await }
        })
        .await
    }

    /// A server-streaming call: sends `request`, and retries (per the
    /// policy) until the first response message or the end arrives; from
    /// then on failures are the caller's, since responses were delivered.
    pub async fn server_streaming(&self, rpc: &str, request: &[u8], opts: &CallOptions) -> Result<ServerStreaming, Status> {
        let (attempt_opts, deadline) = fix_deadline(opts);
        self.with_retries(deadline, opts, |conn| {
            let attempt_opts = &*attempt_opts;
            async move {
                let stream = conn.stream(rpc, attempt_opts).await?;
                stream.send(request).await?;
                stream.close_send().await?;
                let first = stream.recv().await?;
                Ok(ServerStreaming { stream, first: Some(first) })
            }
        })
        .await
    }

    /// Runs `attempt` on picked connections until it succeeds, fails with a
    /// code the policy does not retry, runs out of attempts or budget, or
    /// the deadline passes.
    async fn with_retries<T, F, Fut>(&self, deadline: Option<Instant>, opts: &CallOptions, attempt: F) -> Result<T, Status>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let policy = &self.shared.opts.retry;
        let mut tries = 0u32;
        loop {
            tries += 1;
            self.shared.attempts.fetch_add(1, Ordering::Relaxed);
            let (_sub, conn) = self.pick(deadline, self.wait_for_ready, opts.cancel.as_ref()).await?;
            let status = match attempt(conn).await {
                Ok(value) => {
                    self.shared.throttle.success();
                    return Ok(value);
                }
                Err(status) => status,
            };
            if !policy.retries(status.code()) {
                return Err(status);
            }
            if status.code() == Code::Unavailable {
                self.shared.resolve_now.notify_one();
            }
            if !self.shared.throttle.failure_allows_retry() {
                self.shared.throttled.fetch_add(1, Ordering::Relaxed);
                return Err(status);
            }
            if tries >= policy.max_attempts.max(1) {
                return Err(status);
            }
            let wake = Instant::now() + policy.backoff(tries);
            if deadline.is_some_and(|d| wake >= d) {
                return Err(status);
            }
            if opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
                return Err(Status::canceled("call canceled"));
            }
            tokio::time::sleep_until(wake).await;
            self.shared.retries.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The per-call options every attempt runs with: one absolute deadline,
/// fixed when the call starts. Waiting for an endpoint and retrying also
/// stop at the deadline of the handler the call is made in, if earlier
/// (each attempt inherits it in `Conn` itself).
fn fix_deadline(opts: &CallOptions) -> (std::borrow::Cow<'_, CallOptions>, Option<Instant>) {
    let inherited = drpc_core::context::current().and_then(|c| c.deadline);
    let earliest = |own: Option<Instant>| match (own, inherited) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let Some(timeout) = opts.timeout else {
        return (std::borrow::Cow::Borrowed(opts), earliest(opts.deadline));
    };
    let by_timeout = Instant::now() + timeout;
    let deadline = Some(opts.deadline.map_or(by_timeout, |d| d.min(by_timeout)));
    let mut fixed = opts.clone();
    fixed.deadline = deadline;
    fixed.timeout = None;
    (std::borrow::Cow::Owned(fixed), earliest(deadline))
}

impl Shared {
    fn apply_resolution(&self, result: Result<Vec<String>, Status>) {
        self.resolutions.fetch_add(1, Ordering::Relaxed);
        let mut eps = self.endpoints.lock().unwrap();
        eps.resolved = true;
        let addrs = match result {
            Ok(addrs) => addrs,
            Err(status) => {
                // Keep the endpoints we had: a failed lookup says nothing about them.
                tracing::warn!(target = %self.target, %status, "resolution failed");
                eps.resolve_error = Some(status);
                drop(eps);
                self.changed.notify_waiters();
                return;
            }
        };
        eps.resolve_error = None;
        let mut old: HashMap<String, Arc<Subchannel>> = eps.list.drain(..).map(|s| (s.addr.clone(), s)).collect();
        for addr in addrs {
            if eps.list.iter().any(|s| s.addr == addr) {
                continue;
            }
            let sub = old.remove(&addr).unwrap_or_else(|| {
                Subchannel::new(addr, self.opts.clone(), self.changed.clone(), self.resolve_now.clone())
            });
            eps.list.push(sub);
        }
        // Endpoints the resolver dropped: drained (in-flight calls keep their connection).
        for (addr, sub) in old {
            tracing::debug!(target = %self.target, endpoint = %addr, "endpoint removed; draining");
            sub.shut_down();
        }
        drop(eps);
        if self.in_use.load(Ordering::Acquire) {
            self.connect_wanted();
        }
        self.changed.notify_waiters();
    }

    /// Connects what the balancer uses: every endpoint, or for pick-first
    /// the first one (the picker moves on when it fails).
    fn connect_wanted(&self) {
        let list = self.endpoints.lock().unwrap().list.clone();
        let wanted = match self.opts.load_balancing {
            LoadBalancing::PickFirst => &list[..list.len().min(1)],
            _ => &list[..],
        };
        for sub in wanted {
            sub.request_connect();
        }
    }

    fn close_idle(&self) {
        let list = self.endpoints.lock().unwrap().list.clone();
        for sub in list {
            sub.close_if_idle();
        }
    }

    fn try_pick(&self) -> Pick {
        let eps = self.endpoints.lock().unwrap();
        if !eps.resolved {
            return Pick::Queue;
        }
        if eps.list.is_empty() {
            let why = eps.resolve_error.clone().map_or("the resolver returned no endpoints".to_string(), |s| s.message().to_string());
            return Pick::Fail(Status::unavailable(format!("{}: {why}", self.target)));
        }
        // The common case, one endpoint ready: no allocation.
        if eps.list.len() == 1 && eps.list[0].state() == EndpointState::Ready {
            return Pick::Ready(eps.list[0].clone());
        }
        let list = eps.list.clone();
        drop(eps);
        let states: Vec<EndpointState> = list.iter().map(|s| s.state()).collect();
        if self.opts.load_balancing == LoadBalancing::PickFirst {
            for (sub, state) in list.iter().zip(&states) {
                match state {
                    EndpointState::Ready => return Pick::Ready(sub.clone()),
                    EndpointState::Idle => {
                        sub.request_connect();
                        return Pick::Queue;
                    }
                    EndpointState::Connecting => return Pick::Queue,
                    EndpointState::TransientFailure | EndpointState::NotServing => {}
                }
            }
            return Pick::Fail(self.unavailable(&list));
        }
        let mut ready = Vec::with_capacity(list.len());
        let mut pending = false;
        for (sub, state) in list.iter().zip(&states) {
            match state {
                EndpointState::Ready => ready.push(sub),
                EndpointState::Idle => {
                    sub.request_connect();
                    pending = true;
                }
                EndpointState::Connecting => pending = true,
                EndpointState::TransientFailure | EndpointState::NotServing => {}
            }
        }
        match ready.len() {
            0 if pending => Pick::Queue,
            0 => Pick::Fail(self.unavailable(&list)),
            1 => Pick::Ready(ready[0].clone()),
            n => match self.opts.load_balancing {
                LoadBalancing::PowerOfTwoChoices => {
                    let a = fastrand::usize(..n);
                    let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                    let pick = if ready[b].load() < ready[a].load() { b } else { a };
                    Pick::Ready(ready[pick].clone())
                }
                _ => Pick::Ready(ready[self.next_rr.fetch_add(1, Ordering::Relaxed) % n].clone()),
            },
        }
    }

    fn unavailable(&self, list: &[Arc<Subchannel>]) -> Status {
        let why = list.iter().find_map(|s| s.last_error()).map_or_else(
            || "no endpoint is serving".to_string(),
            |s| s.message().to_string(),
        );
        Status::unavailable(format!("no ready endpoint for {}: {why}", self.target))
    }

    fn why_not_ready(&self) -> String {
        let eps = self.endpoints.lock().unwrap();
        if !eps.resolved {
            return "still resolving".into();
        }
        if let Some(e) = &eps.resolve_error {
            return e.message().to_string();
        }
        let parts: Vec<String> = eps.list.iter().map(|s| format!("{} {:?}", s.addr, s.state())).collect();
        if parts.is_empty() {
            "no endpoints".into()
        } else {
            parts.join(", ")
        }
    }
}

/// A server-streaming call opened by [`Channel::server_streaming`]: the first
/// response was already read (that is what ended the retry window).
pub struct ServerStreaming {
    stream: Stream,
    first: Option<Option<Bytes>>,
}

impl ServerStreaming {
    /// The next response, or `None` once the server finished.
    pub async fn recv(&mut self) -> Result<Option<Bytes>, Status> {
        match self.first.take() {
            Some(first) => Ok(first),
            None => self.stream.recv().await,
        }
    }

    pub async fn recv_msg<M: prost::Message + Default>(&mut self) -> Result<Option<M>, Status> {
        match self.recv().await? {
            Some(data) => Ok(Some(M::decode(data)?)),
            None => Ok(None),
        }
    }

    /// Cancels the call.
    pub fn cancel(&self) {
        self.stream.cancel();
    }

    pub fn into_stream(self) -> Stream {
        self.stream
    }
}

impl drpc_core::call::Channel for Channel {
    fn unary(&self, rpc: &str, request: &[u8], opts: &CallOptions) -> impl Future<Output = Result<Bytes, Status>> + Send {
        Channel::unary(self, rpc, request, opts)
    }

    fn stream(&self, rpc: &str, opts: &CallOptions) -> impl Future<Output = Result<Stream, Status>> + Send {
        Channel::stream(self, rpc, opts)
    }
}

impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel").field("target", &self.shared.target).field("endpoints", &self.endpoints()).finish()
    }
}
