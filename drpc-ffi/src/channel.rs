//! Channels (a client for the servers behind a target: resolution, lazy
//! connections with reconnect backoff, load balancing, retries, health
//! checks) and the health service a server runs. See drpc-channel.

use crate::client::{call_options, intercepted_unary, interceptors_of, outcome_parts, CallObj, ConnOptionsObj, SendPtr};
use crate::intercept::{begin_client, Chain};
use crate::stream::{Role, StreamObj};
use crate::*;
use ::drpc_channel::health::{HealthService, ServingStatus};
use ::drpc_channel::{Channel, EndpointState, ChannelOptions, LoadBalancing, RetryBudget, TcpKeepalive};
use drpc_core::CancelToken;
use std::ffi::c_void;
use std::sync::{Mutex, MutexGuard};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------
// Channel options.

/// Options for `drpc_channel_new`. Owned by the caller
/// (`drpc_channel_options_new` / `drpc_channel_options_free`); read only
/// during `drpc_channel_new`, so it may be freed right after.
pub struct drpc_channel_options {
    _opaque: [u8; 0],
}

pub(crate) struct ChannelOptionsObj {
    opts: Mutex<ChannelOptions>,
    /// The client interceptors of the conn options given.
    interceptors: Mutex<Chain>,
}

impl HandleType for ChannelOptionsObj {
    type C = drpc_channel_options;
    const NAME: &'static str = "drpc_channel_options";
}

fn with_channel_options(
    opts: *mut drpc_channel_options,
    f: impl FnOnce(&mut ChannelOptions) -> Res<()>,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let o = get::<ChannelOptionsObj>(opts, "opts")?;
        f(&mut lock(&o.opts))?;
        Ok(drpc_status::DRPC_OK)
    })
}

/// How a channel spreads calls over its endpoints.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drpc_load_balancing {
    /// Every call to the first endpoint (in resolver order) that connects.
    DRPC_LB_PICK_FIRST = 0,
    /// Each call to the next ready endpoint in turn (the default).
    DRPC_LB_ROUND_ROBIN = 1,
    /// Two ready endpoints at random; the one with fewer open streams.
    DRPC_LB_POWER_OF_TWO_CHOICES = 2,
}

/// Per call: wait for a ready endpoint until the call's timeout, or fail at
/// once with `DRPC_UNAVAILABLE` when none can be reached.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drpc_wait_for_ready {
    /// The channel's setting (`drpc_channel_options_set_wait_for_ready`).
    DRPC_WAIT_DEFAULT = 0,
    DRPC_WAIT_FOR_READY = 1,
    DRPC_FAIL_FAST = 2,
}

/// Default channel options: round-robin, gRPC's connection backoff (1 s
/// growing 1.6x to 120 s, ±20 % jitter), up to 3 attempts for calls failing
/// with `DRPC_UNAVAILABLE` under a retry budget of 10 tokens (ratio 0.1),
/// fail-fast calls, no health checking, re-resolution every 30 s, idle
/// connections closed after 30 min, TCP keepalive after 60 s. Never returns
/// NULL. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_channel_options_new() -> *mut drpc_channel_options {
    guard(std::ptr::null_mut(), || {
        new_handle(Arc::new(ChannelOptionsObj {
            opts: Mutex::new(ChannelOptions::default()),
            interceptors: Mutex::new(Vec::new().into()),
        }))
    })
}

/// Uses a copy of `conn` (sequential mode, message size, flow control,
/// memory, timeouts, client interceptors) for every connection the channel
/// makes; the interceptors run once per channel call (not per retry).
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_conn_options(
    opts: *mut drpc_channel_options,
    conn: *const drpc_conn_options,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let o = get::<ChannelOptionsObj>(opts, "opts")?;
        let c = get::<ConnOptionsObj>(conn, "conn")?;
        lock(&o.opts).conn = lock(&c.opts).clone();
        *lock(&o.interceptors) = interceptors_of(&c);
        Ok(drpc_status::DRPC_OK)
    })
}

/// `policy` is a `drpc_load_balancing` value.
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_load_balancing(
    opts: *mut drpc_channel_options,
    policy: u32,
) -> drpc_status {
    with_channel_options(opts, |o| {
        o.load_balancing = match policy {
            0 => LoadBalancing::PickFirst,
            1 => LoadBalancing::RoundRobin,
            2 => LoadBalancing::PowerOfTwoChoices,
            other => return Err(Fail::bad(format!("unknown load balancing policy {other}"))),
        };
        Ok(())
    })
}

/// The retry policy for calls failing with `DRPC_UNAVAILABLE` (unary calls;
/// streams only while opening): up to `max_attempts` attempts in all (1 = no
/// retries; at most 10), waiting a random time up to
/// `initial_backoff_ms * 2^(n-1)`, capped at `max_backoff_ms`, before retry n.
/// Every attempt runs within the call's one timeout.
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_retry(
    opts: *mut drpc_channel_options,
    max_attempts: u32,
    initial_backoff_ms: u64,
    max_backoff_ms: u64,
) -> drpc_status {
    with_channel_options(opts, |o| {
        if !(1..=10).contains(&max_attempts) {
            return Err(Fail::bad("max_attempts must be 1..=10"));
        }
        o.retry.max_attempts = max_attempts;
        o.retry.initial_backoff = millis(initial_backoff_ms);
        o.retry.max_backoff = millis(max_backoff_ms.max(initial_backoff_ms));
        Ok(())
    })
}

/// Retry throttling (gRPC's): each retryable failure takes a token, each
/// success gives back `token_ratio`; retries stop while half of `max_tokens`
/// or fewer remain. `max_tokens` 0 turns throttling off.
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_retry_budget(
    opts: *mut drpc_channel_options,
    max_tokens: u32,
    token_ratio: f64,
) -> drpc_status {
    with_channel_options(opts, |o| {
        if !(token_ratio.is_finite() && token_ratio > 0.0) && max_tokens > 0 {
            return Err(Fail::bad("token_ratio must be > 0"));
        }
        o.retry_budget = (max_tokens > 0).then_some(RetryBudget { max_tokens: max_tokens as f64, token_ratio });
        Ok(())
    })
}

/// The default of calls made with `DRPC_WAIT_DEFAULT`: wait for a ready
/// endpoint until the call's timeout (true), or fail fast (false, default).
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_wait_for_ready(opts: *mut drpc_channel_options, wait: bool) -> drpc_status {
    with_channel_options(opts, |o| {
        o.wait_for_ready = wait;
        Ok(())
    })
}

/// Watches `service` ("" for the whole server) with the health service on
/// every connection, and sends calls only to endpoints reporting SERVING
/// (servers without the health service count as serving). NULL turns it off
/// (the default).
#[no_mangle]
pub unsafe extern "C" fn drpc_channel_options_set_health_check(
    opts: *mut drpc_channel_options,
    service: *const c_char,
) -> drpc_status {
    // SAFETY: NULL or a NUL-terminated string, per the contract.
    let service = if service.is_null() { Ok(None) } else { unsafe { arg_str(service, "service") }.map(Some) };
    with_channel_options(opts, |o| {
        o.health_check = service?.map(str::to_string);
        Ok(())
    })
}

/// The wait between connection attempts to one endpoint: `initial_ms`,
/// growing 1.6x per failure up to `max_ms`, ±20 % jitter.
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_connect_backoff(
    opts: *mut drpc_channel_options,
    initial_ms: u64,
    max_ms: u64,
) -> drpc_status {
    with_channel_options(opts, |o| {
        if initial_ms == 0 {
            return Err(Fail::bad("initial_ms must be > 0"));
        }
        o.connect_backoff.initial = millis(initial_ms);
        o.connect_backoff.max = millis(max_ms.max(initial_ms));
        Ok(())
    })
}

/// Connections without a call for `idle_ms` are closed (reopened on demand).
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_idle_timeout(opts: *mut drpc_channel_options, idle_ms: u64) -> drpc_status {
    with_channel_options(opts, |o| {
        if idle_ms == 0 {
            return Err(Fail::bad("idle_ms must be > 0"));
        }
        o.idle_timeout = millis(idle_ms);
        Ok(())
    })
}

/// TCP keepalive probes after `time_ms` idle, every `interval_ms`, giving up
/// after `retries`; `time_ms` 0 turns them off.
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_tcp_keepalive(
    opts: *mut drpc_channel_options,
    time_ms: u64,
    interval_ms: u64,
    retries: u32,
) -> drpc_status {
    with_channel_options(opts, |o| {
        o.tcp_keepalive = match time_ms {
            0 => None,
            _ if interval_ms < 1000 || time_ms < 1000 || retries == 0 => {
                return Err(Fail::bad("keepalive times are whole seconds (>= 1000 ms) and retries > 0"))
            }
            _ => Some(TcpKeepalive { time: millis(time_ms), interval: millis(interval_ms), retries }),
        };
        Ok(())
    })
}

/// Connections per endpoint: 1 for multiplexing peers (the default); for
/// sequential peers up to this many are opened as concurrent calls need.
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_max_conns_per_endpoint(opts: *mut drpc_channel_options, n: usize) -> drpc_status {
    with_channel_options(opts, |o| {
        if n == 0 {
            return Err(Fail::bad("n must be > 0"));
        }
        o.max_conns_per_endpoint = n;
        Ok(())
    })
}

/// How often DNS names are re-resolved (also after connection failures).
#[no_mangle]
pub extern "C" fn drpc_channel_options_set_resolve_interval(opts: *mut drpc_channel_options, interval_ms: u64) -> drpc_status {
    with_channel_options(opts, |o| {
        if interval_ms == 0 {
            return Err(Fail::bad("interval_ms must be > 0"));
        }
        o.resolve_interval = millis(interval_ms);
        o.min_resolve_interval = o.min_resolve_interval.min(o.resolve_interval);
        Ok(())
    })
}

/// NULL (or a handle of another kind) is a no-op.
#[no_mangle]
pub extern "C" fn drpc_channel_options_free(opts: *mut drpc_channel_options) {
    guard((), || drop(take::<ChannelOptionsObj>(opts)))
}

// ---------------------------------------------------------------------------
// Channels.

/// A client for the servers behind a target. Thread-safe. Released with
/// `drpc_channel_free`.
pub struct drpc_channel {
    _opaque: [u8; 0],
}

pub(crate) struct ChannelObj {
    channel: std::mem::ManuallyDrop<Channel>,
    interceptors: Chain,
    /// The target, shown to interceptors as the peer.
    target: String,
}

impl Drop for ChannelObj {
    /// Released inside the runtime's context, whichever thread drops it last.
    fn drop(&mut self) {
        let _rt = runtime().enter();
        // SAFETY: dropped once, here, and never used again.
        unsafe { std::mem::ManuallyDrop::drop(&mut self.channel) }
    }
}

impl HandleType for ChannelObj {
    type C = drpc_channel;
    const NAME: &'static str = "drpc_channel";
}

impl ChannelObj {
    fn with_wait(&self, wait: u32) -> Res<Channel> {
        Ok(match wait {
            0 => (*self.channel).clone(),
            1 => self.channel.wait_for_ready(true),
            2 => self.channel.wait_for_ready(false),
            other => return Err(Fail::bad(format!("unknown wait_for_ready value {other}"))),
        })
    }
}

/// A channel for `target`: `"dns:///host:port"` (or plain `"host:port"`;
/// every A/AAAA address, re-resolved periodically and on failure),
/// `"unix:/path"`, `"ipv4:1.2.3.4:5,6.7.8.9:10"` or `"ipv6:[::1]:5,..."`.
/// `opts` may be NULL for defaults. Nothing connects until the first call
/// (or `drpc_channel_ready`). On success `*channel_out` is a new channel
/// owned by the caller (`drpc_channel_free`); a malformed target is
/// `DRPC_INVALID_ARGUMENT`. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_channel_new(
    target: *const c_char,
    opts: *const drpc_channel_options,
    channel_out: *mut *mut drpc_channel,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(channel_out, "channel_out")?;
        // SAFETY: valid out pointer.
        unsafe { *channel_out = std::ptr::null_mut() };
        // SAFETY: NUL-terminated string.
        let target = unsafe { arg_str(target, "target")? };
        let (opts, interceptors) = if opts.is_null() {
            (ChannelOptions::default(), Chain::from(Vec::new()))
        } else {
            let o = get::<ChannelOptionsObj>(opts, "opts")?;
            let opts = lock(&o.opts).clone();
            let interceptors = lock(&o.interceptors).clone();
            (opts, interceptors)
        };
        let channel = Channel::new(target, opts)?;
        let obj = ChannelObj {
            channel: std::mem::ManuallyDrop::new(channel),
            interceptors,
            target: target.to_string(),
        };
        // SAFETY: valid out pointer.
        unsafe { *channel_out = new_handle(Arc::new(obj)) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Starts connecting and waits until some endpoint is ready, at most
/// `timeout_ms` (then `DRPC_DEADLINE_EXCEEDED`, naming each endpoint's
/// state). Blocks the calling thread; not from a callback.
#[no_mangle]
pub unsafe extern "C" fn drpc_channel_ready(
    channel: *const drpc_channel,
    timeout_ms: u64,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let c = get::<ChannelObj>(channel, "channel")?;
        {
            let _rt = runtime().enter();
            c.channel.connect();
        }
        block_on(c.channel.ready(millis(timeout_ms)))??;
        Ok(drpc_status::DRPC_OK)
    })
}

/// A blocking unary call, like `drpc_conn_unary`, on a ready endpoint of the
/// channel, retried per the retry policy within the one `timeout_ms`;
/// `wait` (a `drpc_wait_for_ready` value) chooses wait-for-ready or
/// fail-fast for this call. Blocks the
/// calling thread; not from a callback.
#[no_mangle]
pub unsafe extern "C" fn drpc_channel_unary(
    channel: *const drpc_channel,
    rpc: *const c_char,
    request: *const u8,
    request_len: usize,
    md: *const drpc_metadata,
    timeout_ms: u64,
    wait: u32,
    response_out: *mut *mut drpc_buffer,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(response_out, "response_out")?;
        // SAFETY: valid out pointer.
        unsafe { *response_out = std::ptr::null_mut() };
        let c = get::<ChannelObj>(channel, "channel")?;
        // SAFETY: arguments per the contract.
        let (rpc, req) = unsafe { (arg_str(rpc, "rpc")?, arg_bytes(request, request_len, "request")?) };
        let mut opts = call_options(md, timeout_ms)?;
        let channel = c.with_wait(wait)?;
        let intercepted = begin_client(&c.interceptors, rpc, Some(&c.target), &mut opts)?;
        let resp = block_on(intercepted_unary(intercepted, req, channel.unary(rpc, req, &opts)))??;
        // SAFETY: valid out pointer.
        unsafe { *response_out = drpc_buffer::into_raw(resp) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Starts a unary call like `drpc_channel_unary` without blocking; the
/// completion, the callback and the call handle work exactly as with
/// `drpc_conn_unary_async` (`drpc_call_cancel`, `drpc_call_wait`,
/// `drpc_call_free`). Never blocks; fine from a callback.
#[no_mangle]
pub unsafe extern "C" fn drpc_channel_unary_async(
    channel: *const drpc_channel,
    rpc: *const c_char,
    request: *const u8,
    request_len: usize,
    md: *const drpc_metadata,
    timeout_ms: u64,
    wait: u32,
    callback: drpc_unary_callback,
    userdata: *mut c_void,
    call_out: *mut *mut drpc_call,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        if !call_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *call_out = std::ptr::null_mut() };
        }
        let callback = callback.ok_or_else(|| Fail::bad("callback is NULL"))?;
        let c = get::<ChannelObj>(channel, "channel")?;
        // SAFETY: arguments per the contract.
        let (rpc, req) =
            unsafe { (arg_str(rpc, "rpc")?.to_string(), arg_bytes(request, request_len, "request")?.to_vec()) };
        let mut opts = call_options(md, timeout_ms)?;
        let channel = c.with_wait(wait)?;
        // A rejection is the call's outcome, reported through the callback.
        let intercepted = begin_client(&c.interceptors, &rpc, Some(&c.target), &mut opts);
        drop(c);
        let call = Arc::new(CallObj::new(CancelToken::new()));
        opts.cancel = Some(call.cancel.clone());
        let handle = SendPtr(if call_out.is_null() { std::ptr::null_mut() } else { new_handle(call.clone()) });
        let userdata = SendPtr(userdata);
        runtime().spawn(async move {
            let result = match intercepted {
                Ok(intercepted) => {
                    if let Some(i) = &intercepted {
                        i.set_non_blocking();
                    }
                    intercepted_unary(intercepted, &req, channel.unary(&rpc, &req, &opts)).await
                }
                Err(status) => Err(status),
            };
            drop(channel);
            let (userdata, handle) = (userdata, handle);
            let _ = catch_unwind(AssertUnwindSafe(|| {
                let (status, buf, err) = outcome_parts(result.map(Some), drpc_status::DRPC_OK);
                // SAFETY: the C callback per its contract.
                without_blocking(|| unsafe { callback(userdata.0, handle.0, status, buf, err) });
            }));
            call.mark_done();
        });
        if !call_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *call_out = handle.0 };
        }
        Ok(drpc_status::DRPC_OK)
    })
}

/// Opens a streaming call on a ready endpoint, like `drpc_conn_stream`
/// (opening is retried; once open, failures are the caller's). Blocks the
/// calling thread until the stream is open; not from a callback.
#[no_mangle]
pub unsafe extern "C" fn drpc_channel_stream(
    channel: *const drpc_channel,
    rpc: *const c_char,
    md: *const drpc_metadata,
    timeout_ms: u64,
    wait: u32,
    stream_out: *mut *mut drpc_stream,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(stream_out, "stream_out")?;
        // SAFETY: valid out pointer.
        unsafe { *stream_out = std::ptr::null_mut() };
        let c = get::<ChannelObj>(channel, "channel")?;
        // SAFETY: NUL-terminated string per the contract.
        let rpc = unsafe { arg_str(rpc, "rpc")? };
        let mut opts = call_options(md, timeout_ms)?;
        let channel = c.with_wait(wait)?;
        let intercepted = begin_client(&c.interceptors, rpc, Some(&c.target), &mut opts)?.map(Arc::new);
        let deadline = crate::intercept::options_deadline(&opts);
        let traceparent = crate::intercept::options_traceparent(&opts);
        let stream = match block_on(channel.stream(rpc, &opts))? {
            Ok(stream) => stream,
            Err(status) => {
                if let Some(i) = &intercepted {
                    i.finish(status.wire_code());
                }
                return Err(status.into());
            }
        };
        let mut s = StreamObj::new(stream, &opts.metadata, Role::Client, None);
        s.intercepted = intercepted;
        s.deadline = deadline;
        s.traceparent = traceparent.as_deref().map(cstring_lossy);
        // SAFETY: valid out pointer.
        unsafe { *stream_out = new_handle(Arc::new(s)) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// What a channel did so far.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct drpc_channel_stats {
    /// Attempts made (first tries and retries).
    pub attempts: u64,
    pub retries: u64,
    /// Retries refused by the retry budget.
    pub throttled: u64,
    /// Endpoints the channel knows now.
    pub endpoints: u64,
    /// Of which ready for calls.
    pub ready_endpoints: u64,
}

/// Fills `*stats_out`. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_channel_get_stats(
    channel: *const drpc_channel,
    stats_out: *mut drpc_channel_stats,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        arg_out(stats_out, "stats_out")?;
        let c = get::<ChannelObj>(channel, "channel")?;
        let stats = c.channel.stats();
        let endpoints = c.channel.endpoints();
        let ready = endpoints.iter().filter(|(_, s)| *s == EndpointState::Ready).count();
        // SAFETY: valid out pointer.
        unsafe {
            *stats_out = drpc_channel_stats {
                attempts: stats.attempts,
                retries: stats.retries,
                throttled: stats.throttled,
                endpoints: endpoints.len() as u64,
                ready_endpoints: ready as u64,
            }
        };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases the channel. Calls in flight (blocking, asynchronous, open
/// streams) complete normally; connections close once they are done.
/// Never blocks. NULL (or a handle of another kind) is a no-op.
#[no_mangle]
pub extern "C" fn drpc_channel_free(channel: *mut drpc_channel) {
    guard((), || {
        let handle = take::<ChannelObj>(channel);
        let _rt = runtime().enter();
        drop(handle);
    })
}

// ---------------------------------------------------------------------------
// The health service.

/// The per-service statuses a server reports through the
/// `grpc.health.v1.Health` Check and Watch rpcs. Thread-safe. Released with
/// `drpc_health_free` (the server keeps what it registered).
pub struct drpc_health {
    _opaque: [u8; 0],
}

pub(crate) struct HealthObj {
    health: HealthService,
}

impl HandleType for HealthObj {
    type C = drpc_health;
    const NAME: &'static str = "drpc_health";
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drpc_serving_status {
    DRPC_SERVING_UNKNOWN = 0,
    DRPC_SERVING = 1,
    DRPC_NOT_SERVING = 2,
    DRPC_SERVICE_UNKNOWN = 3,
}

/// Health statuses with the server as a whole ("") SERVING. Never returns
/// NULL. Never blocks.
#[no_mangle]
pub extern "C" fn drpc_health_new() -> *mut drpc_health {
    guard(std::ptr::null_mut(), || new_handle(Arc::new(HealthObj { health: HealthService::new() })))
}

/// Sets the status of `service` ("" = the whole server) to `status`, a
/// `drpc_serving_status` value; watchers are told.
/// Ignored after `drpc_health_shutdown`.
#[no_mangle]
pub unsafe extern "C" fn drpc_health_set_status(
    health: *const drpc_health,
    service: *const c_char,
    status: u32,
) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        let h = get::<HealthObj>(health, "health")?;
        // SAFETY: NUL-terminated string.
        let service = unsafe { arg_str(service, "service")? };
        let status = match status {
            0 => ServingStatus::Unknown,
            1 => ServingStatus::Serving,
            2 => ServingStatus::NotServing,
            3 => ServingStatus::ServiceUnknown,
            other => return Err(Fail::bad(format!("unknown serving status {other}"))),
        };
        h.health.set_status(service, status);
        Ok(drpc_status::DRPC_OK)
    })
}

/// Reports every service NOT_SERVING from now on. Call it before
/// `drpc_server_shutdown`, and give health-checking clients a moment
/// (a few hundred ms) to move their calls elsewhere.
#[no_mangle]
pub extern "C" fn drpc_health_shutdown(health: *const drpc_health) -> drpc_status {
    ffi(std::ptr::null_mut(), || {
        get::<HealthObj>(health, "health")?.health.shutdown();
        Ok(drpc_status::DRPC_OK)
    })
}

/// Serves `health` on `server` (`/grpc.health.v1.Health/Check` and `/Watch`).
/// Like handler registration, before `drpc_server_listen`.
#[no_mangle]
pub unsafe extern "C" fn drpc_server_register_health(
    server: *const drpc_server,
    health: *const drpc_health,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    let h = match get::<HealthObj>(health, "health") {
        Ok(h) => h.health.clone(),
        Err(_) => return ffi(err_out, || Err(Fail::bad("health is not a live drpc_health"))),
    };
    let (check, watch) = (h.clone(), h);
    let status = crate::server::register_with(server, cstr!("/grpc.health.v1.Health/Check"), err_out, move |router| {
        check.register_check(router)
    });
    if status != drpc_status::DRPC_OK {
        return status;
    }
    crate::server::register_with(server, cstr!("/grpc.health.v1.Health/Watch"), err_out, move |router| {
        watch.register_watch(router)
    })
}

/// NULL (or a handle of another kind) is a no-op.
#[no_mangle]
pub extern "C" fn drpc_health_free(health: *mut drpc_health) {
    guard((), || drop(take::<HealthObj>(health)))
}
