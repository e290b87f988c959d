//! Channels (drpc-channel: resolution, lazy connections with reconnect
//! backoff, load balancing, retries, health checks) and the health service.

use super::*;
use drpc_channel::health::{HealthService, ServingStatus};
use drpc_channel::{Channel, ChannelOptions, ConnectBackoff, EndpointState, LoadBalancing, RetryBudget, RetryPolicy, TcpKeepalive};
use pyo3::types::PyList;

/// A client for the servers behind a target.
#[pyclass(frozen, module = "drpc._native")]
pub(crate) struct NativeChannel {
    channel: Channel,
}

fn seconds(name: &str, secs: f64) -> PyResult<Duration> {
    to_duration(name, Some(secs))?.ok_or_else(|| PyValueError::new_err(format!("{name} must be finite")))
}

impl NativeChannel {
    /// This channel with the call's wait-for-ready choice (None: its default).
    fn with_wait(&self, wait_for_ready: Option<bool>) -> Channel {
        match wait_for_ready {
            Some(wait) => self.channel.wait_for_ready(wait),
            None => self.channel.clone(),
        }
    }
}

fn state_name(state: EndpointState) -> &'static str {
    match state {
        EndpointState::Idle => "idle",
        EndpointState::Connecting => "connecting",
        EndpointState::Ready => "ready",
        EndpointState::NotServing => "not_serving",
        EndpointState::TransientFailure => "transient_failure",
    }
}

#[pymethods]
impl NativeChannel {
    #[new]
    #[pyo3(signature = (
        target, load_balancing="round_robin", max_attempts=3, initial_backoff=0.05, max_backoff=1.0,
        retry_budget=Some((10.0, 0.1)), wait_for_ready=false, health_check=None,
        connect_backoff=(1.0, 120.0), idle_timeout=1800.0, tcp_keepalive=Some(60.0),
        sequential=false, max_message_size=None, flow_control=false, max_conns_per_endpoint=1,
        resolve_interval=30.0,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        target: &str,
        load_balancing: &str,
        max_attempts: u32,
        initial_backoff: f64,
        max_backoff: f64,
        retry_budget: Option<(f64, f64)>,
        wait_for_ready: bool,
        health_check: Option<String>,
        connect_backoff: (f64, f64),
        idle_timeout: f64,
        tcp_keepalive: Option<f64>,
        sequential: bool,
        max_message_size: Option<usize>,
        flow_control: bool,
        max_conns_per_endpoint: usize,
        resolve_interval: f64,
    ) -> PyResult<NativeChannel> {
        let load_balancing = match load_balancing {
            "pick_first" => LoadBalancing::PickFirst,
            "round_robin" => LoadBalancing::RoundRobin,
            "power_of_two_choices" => LoadBalancing::PowerOfTwoChoices,
            other => {
                return Err(PyValueError::new_err(format!(
                    "load_balancing must be 'pick_first', 'round_robin' or 'power_of_two_choices', got {other:?}"
                )))
            }
        };
        if max_attempts == 0 {
            return Err(PyValueError::new_err("max_attempts must be at least 1"));
        }
        if max_conns_per_endpoint == 0 {
            return Err(PyValueError::new_err("max_conns_per_endpoint must be at least 1"));
        }
        let retry_budget = match retry_budget {
            None => None,
            Some((tokens, ratio)) if tokens > 0.0 && ratio > 0.0 && tokens.is_finite() && ratio.is_finite() => {
                Some(RetryBudget { max_tokens: tokens, token_ratio: ratio })
            }
            Some(_) => return Err(PyValueError::new_err("retry_budget must be (max_tokens > 0, token_ratio > 0) or None")),
        };
        let (initial, max) = (seconds("connect_backoff", connect_backoff.0)?, seconds("connect_backoff", connect_backoff.1)?);
        if initial.is_zero() {
            return Err(PyValueError::new_err("connect_backoff's initial delay must be positive"));
        }
        let keepalive = match tcp_keepalive {
            None => None,
            Some(t) => {
                let time = seconds("tcp_keepalive", t)?;
                if time < Duration::from_secs(1) {
                    return Err(PyValueError::new_err("tcp_keepalive must be at least 1 second, or None"));
                }
                Some(TcpKeepalive { time, ..TcpKeepalive::default() })
            }
        };
        let idle_timeout = seconds("idle_timeout", idle_timeout)?;
        let resolve_interval = seconds("resolve_interval", resolve_interval)?;
        if idle_timeout.is_zero() || resolve_interval.is_zero() {
            return Err(PyValueError::new_err("idle_timeout and resolve_interval must be positive"));
        }
        let opts = ChannelOptions {
            conn: conn_options(sequential, max_message_size, flow_control)?,
            load_balancing,
            max_conns_per_endpoint,
            connect_backoff: ConnectBackoff { initial, max: max.max(initial), ..ConnectBackoff::default() },
            retry: RetryPolicy {
                max_attempts,
                initial_backoff: seconds("initial_backoff", initial_backoff)?,
                max_backoff: seconds("max_backoff", max_backoff)?,
                ..RetryPolicy::default()
            },
            retry_budget,
            wait_for_ready,
            health_check,
            resolve_interval,
            min_resolve_interval: resolve_interval.min(Duration::from_secs(1)),
            idle_timeout,
            tcp_keepalive: keepalive,
            ..ChannelOptions::default()
        };
        let channel = Channel::new(target, opts).map_err(|s| status_to_err(py, &s))?;
        Ok(NativeChannel { channel })
    }

    #[getter]
    fn target(&self) -> &str {
        self.channel.target()
    }

    /// Starts connecting and waits (blocking) until an endpoint is ready.
    fn ready(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let timeout = seconds("timeout", timeout)?;
        let channel = self.channel.clone();
        wait(py, async move {
            channel.connect();
            channel.ready(timeout).await
        })?
        .map_err(|s| status_to_err(py, &s))
    }

    /// `{"attempts", "retries", "throttled", "resolutions"}`.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.channel.stats();
        let d = PyDict::new(py);
        d.set_item("attempts", s.attempts)?;
        d.set_item("retries", s.retries)?;
        d.set_item("throttled", s.throttled)?;
        d.set_item("resolutions", s.resolutions)?;
        Ok(d)
    }

    /// `[(address, state)]` in resolver order.
    fn endpoints<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let items: Vec<(String, &str)> = self.channel.endpoints().into_iter().map(|(a, s)| (a, state_name(s))).collect();
        PyList::new(py, items)
    }

    #[pyo3(signature = (rpc, request, metadata=None, timeout=None, wait_for_ready=None, parent=None, traceparent=None))]
    #[allow(clippy::too_many_arguments)]
    fn unary<'py>(
        &self,
        py: Python<'py>,
        rpc: String,
        request: PyBackedBytes,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        wait_for_ready: Option<bool>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let channel = self.with_wait(wait_for_ready);
        match wait(py, async move { channel.unary(&rpc, &request, &opts).await })? {
            Ok(b) => Ok(PyBytes::new(py, &b)),
            Err(s) => Err(status_to_err(py, &s)),
        }
    }

    #[pyo3(signature = (rpc, request, callback, metadata=None, timeout=None, wait_for_ready=None, parent=None, traceparent=None))]
    #[allow(clippy::too_many_arguments)]
    fn unary_async(
        &self,
        rpc: String,
        request: PyBackedBytes,
        callback: PyObject,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        wait_for_ready: Option<bool>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<Task> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let channel = self.with_wait(wait_for_ready);
        Ok(spawn_cb(async move { channel.unary(&rpc, &request, &opts).await }, callback, conv_bytes))
    }

    #[pyo3(signature = (rpc, metadata=None, timeout=None, wait_for_ready=None, parent=None, traceparent=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream(
        &self,
        py: Python<'_>,
        rpc: String,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        wait_for_ready: Option<bool>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<NativeStream> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let channel = self.with_wait(wait_for_ready);
        match wait(py, async move { channel.stream(&rpc, &opts).await })? {
            Ok(s) => Ok(NativeStream::new(s)),
            Err(s) => Err(status_to_err(py, &s)),
        }
    }

    #[pyo3(signature = (rpc, callback, metadata=None, timeout=None, wait_for_ready=None, parent=None, traceparent=None))]
    #[allow(clippy::too_many_arguments)]
    fn stream_async(
        &self,
        rpc: String,
        callback: PyObject,
        metadata: Option<BTreeMap<String, String>>,
        timeout: Option<f64>,
        wait_for_ready: Option<bool>,
        parent: Option<PyRef<'_, ServerContext>>,
        traceparent: Option<String>,
    ) -> PyResult<Task> {
        let opts = call_options(metadata, timeout, parent, traceparent)?;
        let channel = self.with_wait(wait_for_ready);
        Ok(spawn_cb(async move { channel.stream(&rpc, &opts).await }, callback, conv_stream))
    }
}

/// Per-service health statuses served as `grpc.health.v1.Health`.
#[pyclass(frozen, module = "drpc._native")]
pub(crate) struct NativeHealth {
    health: HealthService,
}

#[pymethods]
impl NativeHealth {
    #[new]
    fn new() -> NativeHealth {
        NativeHealth { health: HealthService::new() }
    }

    /// `status`: 0 UNKNOWN, 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN.
    fn set_status(&self, service: &str, status: i32) -> PyResult<()> {
        let status = ServingStatus::try_from(status).map_err(|_| PyValueError::new_err(format!("unknown serving status {status}")))?;
        self.health.set_status(service, status);
        Ok(())
    }

    /// The status of `service`, or None when unknown.
    fn status(&self, service: &str) -> Option<i32> {
        self.health.status(service).map(|s| s as i32)
    }

    /// Every service NOT_SERVING from now on (graceful shutdown).
    fn shutdown(&self) {
        self.health.shutdown();
    }

    /// Serves these statuses on `server` (before it starts).
    fn register(&self, server: &NativeServer) -> PyResult<()> {
        let check = self.health.clone();
        server.register(drpc_channel::health::CHECK_RPC, move |router| check.register_check(router))?;
        let watch = self.health.clone();
        server.register(drpc_channel::health::WATCH_RPC, move |router| watch.register_watch(router))
    }
}
