//! The TestService server: every handler of `test.proto` plus the counters
//! GetStats reports.

use crate::pb::*;
use drpc_core::call::{RecvStream, ResponseSender};
use drpc_core::{CallContext, CallOptions, Pool, Router, Status};
use prost::Message;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
pub struct Stats {
    total: AtomicI64,
    active: AtomicI64,
    cancelled: AtomicI64,
    peak: AtomicI64,
}

/// Counts a handler as active for as long as it lives.
struct Active(Arc<Stats>);

impl Active {
    fn start(stats: &Arc<Stats>) -> Active {
        stats.total.fetch_add(1, Ordering::SeqCst);
        let now = stats.active.fetch_add(1, Ordering::SeqCst) + 1;
        stats.peak.fetch_max(now, Ordering::SeqCst);
        Active(stats.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Stats {
    pub fn snapshot(&self) -> ServerStats {
        ServerStats {
            total_rpcs: self.total.load(Ordering::SeqCst),
            active_rpcs: self.active.load(Ordering::SeqCst),
            cancelled_rpcs: self.cancelled.load(Ordering::SeqCst),
            peak_active_rpcs: self.peak.load(Ordering::SeqCst),
        }
    }
}

fn zeros(size: i32) -> Option<Payload> {
    Some(Payload { body: vec![0; size.max(0) as usize] })
}

fn echo_status(status: &Option<EchoStatus>) -> Result<(), Status> {
    match status {
        Some(s) if s.code != 0 => Err(Status::from_wire(s.code, s.message.clone())),
        _ => Ok(()),
    }
}

/// Sleeps for `ms`, ending early (and counting a cancellation) if the call is
/// cancelled.
async fn sleep_or_cancel(ms: i64, ctx: &CallContext, stats: &Stats) -> Result<(), Status> {
    if ms <= 0 {
        return Ok(());
    }
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(ms as u64)) => Ok(()),
        _ = ctx.cancelled() => {
            stats.cancelled.fetch_add(1, Ordering::SeqCst);
            Err(Status::canceled("call canceled while the server slept"))
        }
    }
}

async fn answer(
    req: &StreamingOutputCallRequest,
    responses: &ResponseSender<StreamingOutputCallResponse>,
    stats: &Stats,
) -> Result<(), Status> {
    for p in &req.response_parameters {
        sleep_or_cancel(p.interval_ms, responses.context(), stats).await?;
        responses.send(&StreamingOutputCallResponse { payload: zeros(p.size) }).await?;
    }
    echo_status(&req.response_status)
}

/// Where UnaryCalls that echo metadata are forwarded (`--forward`).
#[derive(Clone)]
pub struct Forward {
    pub pool: Pool,
    pub addr: String,
}

/// The TestService handlers; `stats` is what GetStats reports.
pub struct TestServiceImpl {
    stats: Arc<Stats>,
    forward: Option<Forward>,
}

impl TestServiceImpl {
    pub fn new(stats: Arc<Stats>) -> TestServiceImpl {
        TestServiceImpl { stats, forward: None }
    }

    /// UnaryCalls with an `echo_metadata_key` go on to `forward`, from
    /// inside the handler, so the call there inherits this call's deadline
    /// and trace context.
    pub fn forwarding(stats: Arc<Stats>, forward: Forward) -> TestServiceImpl {
        TestServiceImpl { stats, forward: Some(forward) }
    }
}

impl TestService for TestServiceImpl {
    async fn empty_call(&self, _request: Empty, _ctx: CallContext) -> Result<Empty, Status> {
        let _a = Active::start(&self.stats);
        Ok(Empty {})
    }

    async fn unary_call(&self, req: SimpleRequest, ctx: CallContext) -> Result<SimpleResponse, Status> {
        let _a = Active::start(&self.stats);
        if let Some(forward) = self.forward.as_ref().filter(|_| !req.echo_metadata_key.is_empty()) {
            // The same request bytes; the deadline and trace are inherited,
            // not copied.
            let response = forward
                .pool
                .unary(&forward.addr, test_service_rpc::UNARY_CALL, &req.encode_to_vec(), &CallOptions::new())
                .await?;
            return Ok(SimpleResponse::decode(response)?);
        }
        sleep_or_cancel(req.sleep_ms, &ctx, &self.stats).await?;
        echo_status(&req.response_status)?;
        let metadata_value = if req.echo_metadata_key.is_empty() {
            String::new()
        } else {
            ctx.metadata().get(&req.echo_metadata_key).cloned().unwrap_or_default()
        };
        Ok(SimpleResponse {
            payload: zeros(req.response_size),
            metadata_value,
            request_payload_size: req.payload.map_or(0, |p| p.body.len() as i64),
        })
    }

    async fn streaming_output_call(
        &self,
        req: StreamingOutputCallRequest,
        responses: ResponseSender<StreamingOutputCallResponse>,
        _ctx: CallContext,
    ) -> Result<(), Status> {
        let _a = Active::start(&self.stats);
        answer(&req, &responses, &self.stats).await
    }

    async fn streaming_input_call(
        &self,
        requests: RecvStream<StreamingInputCallRequest>,
        _ctx: CallContext,
    ) -> Result<StreamingInputCallResponse, Status> {
        let _a = Active::start(&self.stats);
        let mut total = 0i64;
        while let Some(req) = requests.recv().await? {
            total += req.payload.map_or(0, |p| p.body.len() as i64);
        }
        Ok(StreamingInputCallResponse { aggregated_payload_size: total })
    }

    async fn full_duplex_call(
        &self,
        requests: RecvStream<StreamingOutputCallRequest>,
        responses: ResponseSender<StreamingOutputCallResponse>,
        _ctx: CallContext,
    ) -> Result<(), Status> {
        let _a = Active::start(&self.stats);
        while let Some(req) = requests.recv().await? {
            answer(&req, &responses, &self.stats).await?;
        }
        Ok(())
    }

    async fn half_duplex_call(
        &self,
        requests: RecvStream<StreamingOutputCallRequest>,
        responses: ResponseSender<StreamingOutputCallResponse>,
        _ctx: CallContext,
    ) -> Result<(), Status> {
        let _a = Active::start(&self.stats);
        let mut buffered = Vec::new();
        while let Some(req) = requests.recv().await? {
            buffered.push(req);
        }
        for req in &buffered {
            answer(req, &responses, &self.stats).await?;
        }
        Ok(())
    }

    /// test.proto declares it for no server to implement: answered exactly as
    /// an rpc the router does not know.
    async fn unimplemented_call(&self, _request: Empty, ctx: CallContext) -> Result<Empty, Status> {
        Err(Status::unimplemented(format!("unknown rpc: {}", ctx.rpc())))
    }

    async fn get_stats(&self, _request: Empty, _ctx: CallContext) -> Result<ServerStats, Status> {
        let _a = Active::start(&self.stats);
        Ok(self.stats.snapshot())
    }
}

/// The TestService router; `stats` is what GetStats reports.
pub fn router(stats: Arc<Stats>) -> Router {
    Router::new().service(TestServiceServer::new(TestServiceImpl::new(stats)))
}

/// The TestService router of a server that forwards (see `--forward`).
pub fn forwarding_router(stats: Arc<Stats>, forward: Forward) -> Router {
    Router::new().service(TestServiceServer::new(TestServiceImpl::forwarding(stats, forward)))
}
