//! The client side of `shared/interop/CASES.md`: each case by name, run against
//! any server of the test service.

use crate::pb::*;
use drpc_core::deadline::{parse_timeout, TIMEOUT_KEY};
use drpc_core::trace::TRACEPARENT_KEY;
use drpc_core::{CallOptions, CancelToken, Code, Conn, Status, TraceContext};
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

/// Cases every peer (sequential or multiplexing) must pass, in running order.
pub const EVERY_PEER: &[&str] = &[
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "half_duplex",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "server_cancel_propagation",
];

/// Cases for multiplexing peers only, run after `EVERY_PEER`.
pub const MUX_ONLY: &[&str] = &[
    "concurrent_unary",
    "interleaved_streams",
    "large_interleaved",
    "cancel_one_of_many",
    "slow_reader_isolation",
];

/// Project cases (issue 16), for our implementations only (storj.io/drpc
/// servers know neither deadlines nor trace context): part of `all`, never
/// in the shared lists the matrix sends storj peers.
pub const PROJECT: &[&str] = &["deadline_propagation", "trace_context"];

/// Run only by the chain script, through forwarding servers.
pub const CHAIN_ONLY: &[&str] = &["trace_chain"];

/// The traceparent the project cases send (W3C's example).
pub const SAMPLE_TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The cases `--case all` runs, in order: connection_reuse and no_leaks last.
pub fn all_cases(mux: bool, flow_control: bool) -> Vec<&'static str> {
    let mut cases: Vec<&str> = EVERY_PEER.to_vec();
    if mux {
        cases.extend(MUX_ONLY.iter().filter(|c| flow_control || **c != "slow_reader_isolation"));
    }
    cases.extend(PROJECT);
    cases.push("connection_reuse");
    if mux {
        cases.push("no_leaks");
    }
    cases
}

pub fn is_known(name: &str) -> bool {
    EVERY_PEER.contains(&name)
        || MUX_ONLY.contains(&name)
        || PROJECT.contains(&name)
        || CHAIN_ONLY.contains(&name)
        || name == "connection_reuse"
        || name == "no_leaks"
}

type CaseResult = Result<(), String>;

fn check(cond: bool, what: impl FnOnce() -> String) -> CaseResult {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn payload(size: usize) -> Option<Payload> {
    Some(Payload { body: vec![0; size] })
}

fn body_len(p: &Option<Payload>) -> usize {
    p.as_ref().map_or(0, |p| p.body.len())
}

fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> CaseResult {
    match result {
        Ok(v) => Err(format!("expected code {} ({code}), got success {v:?}", code.as_u64())),
        Err(s) if s.code() == code => Ok(()),
        Err(s) => Err(format!("expected code {} ({code}), got {s}", code.as_u64())),
    }
}

fn output_request(sizes: &[i32]) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: sizes.iter().map(|&size| ResponseParameters { size, interval_ms: 0 }).collect(),
        ..Default::default()
    }
}

const SIZES: [i32; 4] = [31415, 9, 2653, 58979];

pub struct Client {
    pub conn: Conn,
    /// Options every call starts from (e.g. compression).
    pub base: CallOptions,
    test: TestServiceClient,
}

impl Client {
    pub fn new(conn: Conn) -> Client {
        Client { test: TestServiceClient::new(conn.clone()), conn, base: CallOptions::new() }
    }

    fn opts(&self) -> CallOptions {
        self.base.clone()
    }

    async fn unary(&self, req: &SimpleRequest, opts: &CallOptions) -> Result<SimpleResponse, Status> {
        self.test.unary_call(req, opts).await
    }

    async fn stats(&self) -> Result<ServerStats, String> {
        self.test.get_stats(&Empty {}, &self.opts()).await.map_err(|e| format!("GetStats: {e}"))
    }

    /// Polls GetStats until `pred` holds or `limit` passes.
    async fn wait_stats(&self, limit: Duration, pred: impl Fn(&ServerStats) -> bool) -> Result<ServerStats, String> {
        let start = Instant::now();
        loop {
            let s = self.stats().await?;
            if pred(&s) {
                return Ok(s);
            }
            if start.elapsed() > limit {
                return Err(format!("stats never matched within {limit:?}: {s:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs one case by name.
    pub fn run<'a>(&'a self, name: &'a str) -> Pin<Box<dyn Future<Output = CaseResult> + Send + 'a>> {
        Box::pin(async move {
            match name {
                "empty_unary" => self.empty_unary().await,
                "large_unary" => self.large_unary().await,
                "client_streaming" => self.client_streaming().await,
                "server_streaming" => self.server_streaming().await,
                "ping_pong" => self.ping_pong().await,
                "half_duplex" => self.half_duplex().await,
                "empty_stream" => self.empty_stream().await,
                "custom_metadata" => self.custom_metadata().await,
                "status_code_and_message" => self.status(2, "test status message").await,
                "special_status_message" => {
                    self.status(2, "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n").await
                }
                "unimplemented_method" => self.unimplemented_method().await,
                "cancel_after_begin" => self.cancel_after_begin().await,
                "cancel_after_first_response" => self.cancel_after_first_response().await,
                "timeout_on_sleeping_server" => self.timeout_on_sleeping_server().await,
                "server_cancel_propagation" => self.server_cancel_propagation().await,
                "connection_reuse" => self.empty_unary().await,
                "concurrent_unary" => self.concurrent_unary().await,
                "interleaved_streams" => self.interleaved_streams().await,
                "large_interleaved" => self.large_interleaved().await,
                "cancel_one_of_many" => self.cancel_one_of_many().await,
                "slow_reader_isolation" => self.slow_reader_isolation().await,
                "no_leaks" => self.no_leaks().await,
                "deadline_propagation" => self.deadline_propagation().await,
                "trace_context" => self.trace_context().await,
                "trace_chain" => self.trace_chain().await,
                other => Err(format!("unknown case {other}")),
            }
        })
    }

    async fn empty_unary(&self) -> CaseResult {
        self.test.empty_call(&Empty {}, &self.opts()).await.map_err(|e| e.to_string())?;
        Ok(())
    }

    async fn large_unary(&self) -> CaseResult {
        let req = SimpleRequest { response_size: 314159, payload: payload(271828), ..Default::default() };
        let resp = self.unary(&req, &self.opts()).await.map_err(|e| e.to_string())?;
        let body = resp.payload.map(|p| p.body).unwrap_or_default();
        check(body.len() == 314159 && body.iter().all(|&b| b == 0), || format!("response body of {} bytes", body.len()))?;
        check(resp.request_payload_size == 271828, || format!("request_payload_size {}", resp.request_payload_size))
    }

    async fn client_streaming(&self) -> CaseResult {
        let (requests, response) = self.test.streaming_input_call(&self.opts()).await.map_err(|e| e.to_string())?;
        for size in [27182, 8, 1828, 45904] {
            requests.send(&StreamingInputCallRequest { payload: payload(size) }).await.map_err(|e| e.to_string())?;
        }
        requests.close_send().await.map_err(|e| e.to_string())?;
        // The one response, then a clean end (anything else is an error).
        let resp = response.recv().await.map_err(|e| e.to_string())?;
        check(resp.aggregated_payload_size == 74922, || format!("aggregated_payload_size {}", resp.aggregated_payload_size))
    }

    async fn server_streaming(&self) -> CaseResult {
        let stream = self.test.streaming_output_call(&output_request(&SIZES), &self.opts()).await.map_err(|e| e.to_string())?;
        for want in SIZES {
            let resp = stream.recv().await.map_err(|e| e.to_string())?;
            let resp = resp.ok_or_else(|| format!("stream ended before the response of size {want}"))?;
            check(body_len(&resp.payload) == want as usize, || format!("response of {} bytes, want {want}", body_len(&resp.payload)))?;
        }
        match stream.recv().await {
            Ok(None) => Ok(()),
            other => Err(format!("expected a clean end after four responses, got {other:?}")),
        }
    }

    async fn ping_pong(&self) -> CaseResult {
        let (requests, stream) = self.test.full_duplex_call(&self.opts()).await.map_err(|e| e.to_string())?;
        for want in SIZES {
            let mut req = output_request(&[want]);
            req.payload = payload(want as usize);
            requests.send(&req).await.map_err(|e| e.to_string())?;
            let resp = stream.recv().await.map_err(|e| e.to_string())?;
            let resp = resp.ok_or("stream ended early")?;
            check(body_len(&resp.payload) == want as usize, || format!("response of {} bytes, want {want}", body_len(&resp.payload)))?;
        }
        requests.close_send().await.map_err(|e| e.to_string())?;
        match stream.recv().await {
            Ok(None) => Ok(()),
            other => Err(format!("expected a clean end, got {other:?}")),
        }
    }

    async fn half_duplex(&self) -> CaseResult {
        let (requests, stream) = self.test.half_duplex_call(&self.opts()).await.map_err(|e| e.to_string())?;
        for size in SIZES {
            requests.send(&output_request(&[size])).await.map_err(|e| e.to_string())?;
        }
        requests.close_send().await.map_err(|e| e.to_string())?;
        for want in SIZES {
            let resp = stream.recv().await.map_err(|e| e.to_string())?;
            let resp = resp.ok_or("stream ended early")?;
            check(body_len(&resp.payload) == want as usize, || format!("response of {} bytes, want {want}", body_len(&resp.payload)))?;
        }
        match stream.recv().await {
            Ok(None) => Ok(()),
            other => Err(format!("expected a clean end, got {other:?}")),
        }
    }

    async fn empty_stream(&self) -> CaseResult {
        let (requests, stream) = self.test.full_duplex_call(&self.opts()).await.map_err(|e| e.to_string())?;
        requests.close_send().await.map_err(|e| e.to_string())?;
        match stream.recv().await {
            Ok(None) => Ok(()),
            other => Err(format!("expected no responses and a clean end, got {other:?}")),
        }
    }

    async fn custom_metadata(&self) -> CaseResult {
        let value = "hello/世界";
        let opts = self.opts().metadata("x-drpc-test", value);
        let req = SimpleRequest { echo_metadata_key: "x-drpc-test".into(), ..Default::default() };
        let resp = self.unary(&req, &opts).await.map_err(|e| e.to_string())?;
        check(resp.metadata_value == value, || format!("metadata_value {:?}", resp.metadata_value))
    }

    async fn status(&self, code: u64, message: &str) -> CaseResult {
        let want = |r: Result<(), Status>, via: &str| match r {
            Err(s) if s.wire_code() == code && s.message() == message => Ok(()),
            Err(s) => Err(format!("{via}: got code {} message {:?}", s.wire_code(), s.message())),
            Ok(()) => Err(format!("{via}: call succeeded")),
        };
        let status = Some(EchoStatus { code, message: message.to_string() });
        let req = SimpleRequest { response_status: status.clone(), ..Default::default() };
        want(self.unary(&req, &self.opts()).await.map(drop), "UnaryCall")?;
        let (requests, stream) = self.test.full_duplex_call(&self.opts()).await.map_err(|e| e.to_string())?;
        let req = StreamingOutputCallRequest { response_status: status, ..Default::default() };
        requests.send(&req).await.map_err(|e| e.to_string())?;
        requests.close_send().await.map_err(|e| e.to_string())?;
        let result = async {
            while stream.recv().await?.is_some() {}
            Ok(())
        };
        want(result.await, "FullDuplexCall")
    }

    async fn unimplemented_method(&self) -> CaseResult {
        let r = self.test.unimplemented_call(&Empty {}, &self.opts()).await;
        expect_code(r, Code::Unimplemented)
    }

    async fn cancel_after_begin(&self) -> CaseResult {
        let (requests, response) = self.test.streaming_input_call(&self.opts()).await.map_err(|e| e.to_string())?;
        requests.cancel();
        expect_code(response.recv().await, Code::Canceled)
    }

    async fn cancel_after_first_response(&self) -> CaseResult {
        let (requests, stream) = self.test.full_duplex_call(&self.opts()).await.map_err(|e| e.to_string())?;
        let mut req = output_request(&[31415]);
        req.payload = payload(27182);
        requests.send(&req).await.map_err(|e| e.to_string())?;
        let first = stream.recv().await.map_err(|e| e.to_string())?;
        check(first.is_some(), || "no first response".into())?;
        stream.cancel();
        expect_code(stream.recv().await, Code::Canceled)
    }

    async fn timeout_on_sleeping_server(&self) -> CaseResult {
        let start = Instant::now();
        let req = SimpleRequest { sleep_ms: 5000, ..Default::default() };
        let r = self.unary(&req, &self.opts().timeout(Duration::from_millis(100))).await;
        expect_code(r, Code::DeadlineExceeded)?;
        check(start.elapsed() < Duration::from_secs(1), || format!("took {:?}", start.elapsed()))
    }

    async fn server_cancel_propagation(&self) -> CaseResult {
        let before = self.stats().await?.cancelled_rpcs;
        let token = CancelToken::new();
        let canceller = {
            let token = token.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                token.cancel();
            })
        };
        let req = SimpleRequest { sleep_ms: 10000, ..Default::default() };
        let r = self.unary(&req, &self.opts().cancel_token(token)).await;
        let _ = canceller.await;
        expect_code(r, Code::Canceled)?;
        self.wait_stats(Duration::from_secs(2), |s| s.cancelled_rpcs > before).await.map(drop)
    }

    /// (a) A hand-set `drpc-timeout: 100m` and no client deadline: the
    /// server ends the call with DeadlineExceeded and cancels its handler.
    /// (b) A 5 s client deadline arrives as a `drpc-timeout` in (3 s, 5 s].
    async fn deadline_propagation(&self) -> CaseResult {
        let before = self.stats().await?.cancelled_rpcs;
        let start = Instant::now();
        let req = SimpleRequest { sleep_ms: 5000, ..Default::default() };
        let r = self.unary(&req, &self.opts().metadata(TIMEOUT_KEY, "100m")).await;
        expect_code(r, Code::DeadlineExceeded).map_err(|e| format!("(a) {e}"))?;
        check(start.elapsed() < Duration::from_secs(1), || format!("(a) took {:?}", start.elapsed()))?;
        self.wait_stats(Duration::from_secs(2), |s| s.cancelled_rpcs > before)
            .await
            .map_err(|e| format!("(a) the server did not cancel its handler: {e}"))?;

        let req = SimpleRequest { echo_metadata_key: TIMEOUT_KEY.into(), ..Default::default() };
        let resp = self
            .unary(&req, &self.opts().timeout(Duration::from_secs(5)))
            .await
            .map_err(|e| format!("(b) {e}"))?;
        let sent = parse_timeout(&resp.metadata_value)
            .ok_or_else(|| format!("(b) echoed drpc-timeout {:?} does not parse", resp.metadata_value))?;
        check(sent > Duration::from_secs(3) && sent <= Duration::from_secs(5), || {
            format!("(b) echoed drpc-timeout {:?} is {sent:?}, not in (3 s, 5 s]", resp.metadata_value)
        })
    }

    /// A hand-set traceparent reaches the server unchanged.
    async fn trace_context(&self) -> CaseResult {
        let opts = self.opts().metadata(TRACEPARENT_KEY, SAMPLE_TRACEPARENT);
        let req = SimpleRequest { echo_metadata_key: TRACEPARENT_KEY.into(), ..Default::default() };
        let resp = self.unary(&req, &opts).await.map_err(|e| e.to_string())?;
        check(resp.metadata_value == SAMPLE_TRACEPARENT, || format!("echoed traceparent {:?}", resp.metadata_value))
    }

    /// Through forwarding servers: the trace id survives every hop with a
    /// new parent span each time, and the deadline shrinks on the way.
    async fn trace_chain(&self) -> CaseResult {
        let sent = TraceContext::parse(SAMPLE_TRACEPARENT, None).expect("a valid sample");
        let opts = self.opts().timeout(Duration::from_secs(5)).trace(sent.clone());
        let req = SimpleRequest { echo_metadata_key: TRACEPARENT_KEY.into(), ..Default::default() };
        let resp = self.unary(&req, &opts).await.map_err(|e| e.to_string())?;
        let echoed = TraceContext::parse(&resp.metadata_value, None)
            .ok_or_else(|| format!("echoed traceparent {:?} does not parse", resp.metadata_value))?;
        check(echoed.trace_id == sent.trace_id, || format!("trace id changed: {}", resp.metadata_value))?;
        check(echoed.span_id != sent.span_id, || format!("parent span unchanged: {}", resp.metadata_value))?;

        let req = SimpleRequest { echo_metadata_key: TIMEOUT_KEY.into(), ..Default::default() };
        let resp = self.unary(&req, &opts).await.map_err(|e| e.to_string())?;
        let left = parse_timeout(&resp.metadata_value)
            .ok_or_else(|| format!("echoed drpc-timeout {:?} does not parse", resp.metadata_value))?;
        check(left < Duration::from_secs(5), || format!("drpc-timeout {:?} did not shrink", resp.metadata_value))
    }

    async fn concurrent_unary(&self) -> CaseResult {
        let calls = (0..200).map(|i| async move {
            let req = SimpleRequest {
                response_size: 100 + i,
                payload: payload(1000 + i as usize),
                sleep_ms: (i % 51) as i64,
                ..Default::default()
            };
            let resp = self.unary(&req, &self.opts()).await.map_err(|e| format!("call {i}: {e}"))?;
            check(
                body_len(&resp.payload) == 100 + i as usize && resp.request_payload_size == 1000 + i as i64,
                || format!("call {i}: response {} bytes, request size {}", body_len(&resp.payload), resp.request_payload_size),
            )
        });
        for r in join_all(calls).await {
            r?;
        }
        let stats = self.stats().await?;
        check(stats.peak_active_rpcs >= 2, || format!("peak_active_rpcs {}", stats.peak_active_rpcs))
    }

    async fn interleaved_streams(&self) -> CaseResult {
        let streams = (0..16).map(|s| async move {
            let (requests, stream) = self.test.full_duplex_call(&self.opts()).await.map_err(|e| e.to_string())?;
            for round in 0..50 {
                let size = 1 + s * 997 + round * 13;
                requests.send(&output_request(&[size])).await.map_err(|e| e.to_string())?;
                let resp = stream.recv().await.map_err(|e| e.to_string())?;
                let got = resp.map(|r| body_len(&r.payload));
                check(got == Some(size as usize), || format!("stream {s} round {round}: got {got:?}, want {size}"))?;
            }
            requests.close_send().await.map_err(|e| e.to_string())?;
            match stream.recv().await {
                Ok(None) => Ok(()),
                other => Err(format!("stream {s}: expected a clean end, got {other:?}")),
            }
        });
        join_all(streams).await.into_iter().collect()
    }

    async fn large_interleaved(&self) -> CaseResult {
        const SIZE: usize = 3 << 20;
        let calls = (0..4u8).map(|i| async move {
            let mut body = vec![0u8; SIZE];
            for (j, b) in body.iter_mut().enumerate() {
                *b = (j as u8).wrapping_mul(31).wrapping_add(i);
            }
            let req = SimpleRequest { response_size: SIZE as i32, payload: Some(Payload { body }), ..Default::default() };
            let resp = self.unary(&req, &self.opts()).await.map_err(|e| format!("call {i}: {e}"))?;
            let ok = resp.request_payload_size == SIZE as i64
                && resp.payload.as_ref().is_some_and(|p| p.body.len() == SIZE && p.body.iter().all(|&b| b == 0));
            check(ok, || format!("call {i}: request_payload_size {} response {} bytes", resp.request_payload_size, body_len(&resp.payload)))
        });
        join_all(calls).await.into_iter().collect()
    }

    async fn cancel_one_of_many(&self) -> CaseResult {
        let token = CancelToken::new();
        let calls = (0..10).map(|i| {
            let opts = if i == 3 { self.opts().cancel_token(token.clone()) } else { self.opts() };
            async move {
                let req = SimpleRequest { sleep_ms: 500, ..Default::default() };
                (i, self.unary(&req, &opts).await)
            }
        });
        let cancel = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        };
        let (results, ()) = tokio::join!(join_all(calls), cancel);
        for (i, r) in results {
            if i == 3 {
                expect_code(r, Code::Canceled).map_err(|e| format!("cancelled call: {e}"))?;
            } else {
                r.map_err(|e| format!("call {i}: {e}"))?;
            }
        }
        self.empty_unary().await.map_err(|e| format!("connection not usable afterwards: {e}"))
    }

    async fn slow_reader_isolation(&self) -> CaseResult {
        let req = StreamingOutputCallRequest {
            response_parameters: (0..4096).map(|_| ResponseParameters { size: 64 << 10, interval_ms: 0 }).collect(),
            ..Default::default()
        };
        let a = self.test.streaming_output_call(&req, &self.opts()).await.map_err(|e| e.to_string())?;
        let start = Instant::now();
        let calls = (0..500).map(|i| async move {
            let r = self.test.empty_call(&Empty {}, &self.opts().timeout(Duration::from_secs(10))).await;
            r.map(drop).map_err(|e| format!("EmptyCall {i}: {e}"))
        });
        let results: CaseResult = join_all(calls).await.into_iter().collect();
        a.cancel();
        results?;
        check(start.elapsed() < Duration::from_secs(10), || format!("500 EmptyCalls took {:?}", start.elapsed()))
    }

    async fn no_leaks(&self) -> CaseResult {
        self.wait_stats(Duration::from_secs(2), |s| s.active_rpcs == 1).await.map(drop)
    }
}

/// Runs futures concurrently on the current task and collects their outputs in order.
pub async fn join_all<F: Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut set: Vec<Pin<Box<F>>> = futures.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = set.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in set.iter_mut().enumerate() {
            if out[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => out[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future finished")).collect()
}
