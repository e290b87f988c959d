//! The health service, `grpc.health.v1.Health` (Check and Watch) served over
//! DRPC: the application sets a status per service name (`""` is the whole
//! server), and [`graceful_shutdown`] reports NOT_SERVING for everything
//! before the server drains, so health-checking channels stop sending it
//! new calls. Channels with `health_check` set watch it (see
//! [`crate::ChannelOptions::health_check`]).

use drpc_core::{CallContext, CallOptions, Conn, Router, Server, Status, Stream};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

pub const CHECK_RPC: &str = "/grpc.health.v1.Health/Check";
pub const WATCH_RPC: &str = "/grpc.health.v1.Health/Watch";

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(enumeration = "ServingStatus", tag = "1")]
    pub status: i32,
}

/// `grpc.health.v1.HealthCheckResponse.ServingStatus`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ServingStatus {
    Unknown = 0,
    Serving = 1,
    NotServing = 2,
    /// Only from Watch: the service is not known (yet).
    ServiceUnknown = 3,
}

/// The per-service statuses a server reports. Cheap to clone; clones share
/// them. A new one reports the server as a whole (`""`) SERVING.
#[derive(Clone)]
pub struct HealthService {
    inner: Arc<HealthInner>,
}

struct HealthInner {
    state: Mutex<HealthState>,
    /// Bumped on every change; watchers wake and re-read their service.
    changed: watch::Sender<u64>,
}

struct HealthState {
    statuses: HashMap<String, ServingStatus>,
    shutting_down: bool,
}

impl Default for HealthService {
    fn default() -> Self {
        HealthService::new()
    }
}

impl HealthService {
    pub fn new() -> HealthService {
        let statuses = HashMap::from([(String::new(), ServingStatus::Serving)]);
        HealthService {
            inner: Arc::new(HealthInner {
                state: Mutex::new(HealthState { statuses, shutting_down: false }),
                changed: watch::channel(0).0,
            }),
        }
    }

    /// Sets the status of `service` (`""`: the whole server). Ignored once
    /// [`HealthService::shutdown`] ran: a draining server stays NOT_SERVING.
    pub fn set_status(&self, service: &str, status: ServingStatus) {
        let mut state = self.inner.state.lock().unwrap();
        if state.shutting_down {
            return;
        }
        state.statuses.insert(service.to_string(), status);
        drop(state);
        self.inner.changed.send_modify(|g| *g += 1);
    }

    /// Forgets `service`: Check answers NotFound, Watch SERVICE_UNKNOWN.
    pub fn clear_status(&self, service: &str) {
        self.inner.state.lock().unwrap().statuses.remove(service);
        self.inner.changed.send_modify(|g| *g += 1);
    }

    pub fn status(&self, service: &str) -> Option<ServingStatus> {
        self.inner.state.lock().unwrap().statuses.get(service).copied()
    }

    /// Reports every service NOT_SERVING from now on (graceful shutdown).
    pub fn shutdown(&self) {
        let mut state = self.inner.state.lock().unwrap();
        state.shutting_down = true;
        for status in state.statuses.values_mut() {
            *status = ServingStatus::NotServing;
        }
        drop(state);
        self.inner.changed.send_modify(|g| *g += 1);
    }

    /// Adds the Check and Watch handlers to `router`.
    pub fn register(&self, router: Router) -> Router {
        self.register_watch(self.register_check(router))
    }

    /// Adds the Check handler only.
    pub fn register_check(&self, router: Router) -> Router {
        let check = self.clone();
        router.unary(CHECK_RPC, move |req: HealthCheckRequest, _ctx: CallContext| {
                let status = check.status(&req.service);
                async move {
                    match status {
                        Some(status) => Ok(HealthCheckResponse { status: status as i32 }),
                        None => Err(Status::new(drpc_core::Code::NotFound, format!("unknown service {:?}", req.service))),
                    }
                }
            })
    }

    /// Adds the Watch handler only.
    pub fn register_watch(&self, router: Router) -> Router {
        let watcher = self.clone();
        router.server_streaming(WATCH_RPC, move |req: HealthCheckRequest, stream: Stream| {
                let health = watcher.clone();
                async move { health.watch(&req.service, stream).await }
            })
    }

    /// Sends the current status, then every change, until the client goes
    /// or the server shuts down (NOT_SERVING is sent, then the stream ends,
    /// so watches do not hold a graceful shutdown up).
    async fn watch(&self, service: &str, stream: Stream) -> Result<(), Status> {
        let mut changes = self.inner.changed.subscribe();
        let mut last = None;
        loop {
            changes.borrow_and_update();
            // One snapshot: the status sent is the one the shutdown check
            // saw, so the last message before the end is NOT_SERVING.
            let (status, shutting_down) = {
                let state = self.inner.state.lock().unwrap();
                (state.statuses.get(service).copied().unwrap_or(ServingStatus::ServiceUnknown), state.shutting_down)
            };
            if last != Some(status) {
                stream.send_msg(&HealthCheckResponse { status: status as i32 }).await?;
                last = Some(status);
            }
            if shutting_down {
                return Ok(());
            }
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return Ok(()) },
                _ = stream.context().cancelled() => return Err(Status::canceled("watch ended by the client")),
            }
        }
    }
}

/// Graceful shutdown that health-checking clients see coming: reports
/// NOT_SERVING, waits `drain_delay` for clients to take the server out of
/// rotation, then shuts the server down with `grace` for calls in flight.
pub async fn graceful_shutdown(server: &Server, health: &HealthService, drain_delay: Duration, grace: Duration) {
    health.shutdown();
    tokio::time::sleep(drain_delay).await;
    server.shutdown(grace).await;
}

/// Asks a server for the status of `service` (Check).
pub async fn check(conn: &Conn, service: &str, opts: &CallOptions) -> Result<ServingStatus, Status> {
    let resp: HealthCheckResponse = conn.invoke(CHECK_RPC, &HealthCheckRequest { service: service.into() }, opts).await?;
    Ok(ServingStatus::try_from(resp.status).unwrap_or(ServingStatus::Unknown))
}

/// Watches `service` on `conn`, calling `report` with whether it serves,
/// until the stream ends. A server without the health service counts as
/// serving (as in gRPC); any other failure ends the watch with its status.
pub(crate) async fn watch_serving(conn: &Conn, service: &str, mut report: impl FnMut(bool)) -> Status {
    let stream = match conn.stream(WATCH_RPC, &CallOptions::new()).await {
        Ok(stream) => stream,
        Err(status) => {
            report(false);
            return status;
        }
    };
    let request = HealthCheckRequest { service: service.into() };
    if let Err(status) = stream.send_msg(&request).await {
        return status;
    }
    if let Err(status) = stream.close_send().await {
        return status;
    }
    loop {
        match stream.recv_msg::<HealthCheckResponse>().await {
            Ok(Some(resp)) => report(resp.status == ServingStatus::Serving as i32),
            // Servers end the watch when they shut down: stop sending there.
            Ok(None) => {
                report(false);
                return Status::unavailable("health watch ended");
            }
            Err(status) if status.code() == drpc_core::Code::Unimplemented => {
                tracing::warn!("server has no health service; treating it as serving");
                report(true);
                return status;
            }
            Err(status) => {
                // Unknown until a new watch answers: out of rotation meanwhile.
                report(false);
                return status;
            }
        }
    }
}
