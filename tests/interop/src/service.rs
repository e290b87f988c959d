//! The TestService server: every handler of `test.proto` plus the counters
//! GetStats reports.

use crate::pb::*;
use crate::rpc;
use drpc_core::{CallContext, Router, Status, Stream};
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

async fn answer(req: &StreamingOutputCallRequest, stream: &Stream, stats: &Stats) -> Result<(), Status> {
    for p in &req.response_parameters {
        sleep_or_cancel(p.interval_ms, stream.context(), stats).await?;
        stream.send_msg(&StreamingOutputCallResponse { payload: zeros(p.size) }).await?;
    }
    echo_status(&req.response_status)
}

/// The TestService router; `stats` is what GetStats reports.
pub fn router(stats: Arc<Stats>) -> Router {
    let s = stats.clone();
    let empty = move |_: Empty, _: CallContext| {
        let active = Active::start(&s);
        async move {
            drop(active);
            Ok(Empty {})
        }
    };
    let s = stats.clone();
    let unary = move |req: SimpleRequest, ctx: CallContext| {
        let stats = s.clone();
        async move {
            let _a = Active::start(&stats);
            sleep_or_cancel(req.sleep_ms, &ctx, &stats).await?;
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
    };
    let s = stats.clone();
    let output = move |req: StreamingOutputCallRequest, stream: Stream| {
        let stats = s.clone();
        async move {
            let _a = Active::start(&stats);
            answer(&req, &stream, &stats).await
        }
    };
    let s = stats.clone();
    let input = move |stream: Stream| {
        let stats = s.clone();
        async move {
            let _a = Active::start(&stats);
            let mut total = 0i64;
            while let Some(req) = stream.recv_msg::<StreamingInputCallRequest>().await? {
                total += req.payload.map_or(0, |p| p.body.len() as i64);
            }
            Ok(StreamingInputCallResponse { aggregated_payload_size: total })
        }
    };
    let s = stats.clone();
    let full = move |stream: Stream| {
        let stats = s.clone();
        async move {
            let _a = Active::start(&stats);
            while let Some(req) = stream.recv_msg::<StreamingOutputCallRequest>().await? {
                answer(&req, &stream, &stats).await?;
            }
            Ok(())
        }
    };
    let s = stats.clone();
    let half = move |stream: Stream| {
        let stats = s.clone();
        async move {
            let _a = Active::start(&stats);
            let mut requests = Vec::new();
            while let Some(req) = stream.recv_msg::<StreamingOutputCallRequest>().await? {
                requests.push(req);
            }
            for req in &requests {
                answer(req, &stream, &stats).await?;
            }
            Ok(())
        }
    };
    let s = stats;
    let get_stats = move |_: Empty, _: CallContext| {
        let stats = s.clone();
        async move {
            let _a = Active::start(&stats);
            Ok(stats.snapshot())
        }
    };
    Router::new()
        .unary(rpc::EMPTY_CALL, empty)
        .unary(rpc::UNARY_CALL, unary)
        .server_streaming(rpc::STREAMING_OUTPUT_CALL, output)
        .client_streaming(rpc::STREAMING_INPUT_CALL, input)
        .bidi(rpc::FULL_DUPLEX_CALL, full)
        .bidi(rpc::HALF_DUPLEX_CALL, half)
        .unary(rpc::GET_STATS, get_stats)
}
