//! The client: [`Conn`] multiplexes unary and streaming calls over one
//! connection (or runs them one at a time in sequential mode, for
//! storj.io/drpc peers), with per-call metadata, deadlines and cancellation.

use crate::compress::{self, Compression};
use crate::conn::{ConnOptions, ConnShared, Role};
use crate::metadata::{self, Metadata};
use crate::state::End;
use crate::status::Status;
use crate::stream::{CallContext, Stream, StreamShared};
use crate::transport;
use crate::wire::{put_packet, Kind};
use crate::CancelToken;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use crate::deadline::{encode_timeout, TIMEOUT_KEY};
use crate::metrics::{MetricsSnapshot, Totals};
use crate::trace::{TraceContext, TRACEPARENT_KEY, TRACESTATE_KEY};
use crate::interceptor::{observe_recv, observe_send, CallEnd, ClientCall, ClientNext, Observers, Reply};
use crate::stream::{record_end, ClientEnd};
use tracing::Instrument;

/// Per-call options: invoke metadata, a deadline and a cancellation token.
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    pub metadata: Metadata,
    /// Absolute deadline; the earlier of this and `timeout` applies.
    pub deadline: Option<Instant>,
    pub timeout: Option<Duration>,
    /// Cancelling it cancels the call.
    pub cancel: Option<CancelToken>,
    /// The trace context to send (`traceparent`, `tracestate`), as is. When
    /// unset, a call made inside a handler sends the handler's.
    pub trace: Option<TraceContext>,
}

impl CallOptions {
    pub fn new() -> CallOptions {
        CallOptions::default()
    }

    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    pub fn deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// Compresses the call's messages both ways (`snappy` or `minlz-fastest`);
    /// sets the `drpc-compression` invoke metadata.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.metadata
            .insert(compress::METADATA_KEY.to_string(), codec.name().to_string());
        self
    }

    pub fn cancel_token(mut self, token: CancelToken) -> Self {
        self.cancel = Some(token);
        self
    }

    /// Sends `trace` as the call's parent span context.
    pub fn trace(mut self, trace: TraceContext) -> Self {
        self.trace = Some(trace);
        self
    }

    /// The effective deadline and trace context, fixed when the call starts:
    /// the earliest of this call's deadline and timeout and the deadline of
    /// the handler it runs in, and this call's trace or else the handler's.
    fn start(&self, now: Instant) -> (Option<Instant>, Option<Arc<TraceContext>>) {
        let own = earliest(self.deadline, self.timeout.map(|t| now + t));
        let wants_trace = self.trace.is_none() && !self.metadata.contains_key(TRACEPARENT_KEY);
        // Shared (an allocation only when there is a trace), so the call's
        // future stays small.
        crate::context::with_current(|inherited| match inherited {
            None => (own, self.trace.clone().map(Arc::new)),
            Some(inherited) => {
                let trace = if wants_trace {
                    inherited.trace.clone()
                } else {
                    self.trace.clone()
                };
                (earliest(own, inherited.deadline), trace.map(Arc::new))
            }
        })
    }
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The invoke metadata payload of a call: the caller's entries plus, unless
/// the caller set them, the time left before `deadline` and the trace context.
fn invoke_metadata(
    opts: &CallOptions,
    conn: &ConnOptions,
    deadline: Option<Instant>,
    trace: Option<&TraceContext>,
) -> Result<Vec<u8>, Status> {
    let mut md = metadata::encode(&opts.metadata);
    let mut extra = false;
    if let Some(deadline) = deadline.filter(|_| conn.send_deadline) {
        if !opts.metadata.contains_key(TIMEOUT_KEY) {
            let left = deadline.saturating_duration_since(Instant::now());
            metadata::put_entry(&mut md, TIMEOUT_KEY, &encode_timeout(left));
            extra = true;
        }
    }
    if let Some(trace) = trace {
        if !opts.metadata.contains_key(TRACEPARENT_KEY) {
            metadata::put_entry(&mut md, TRACEPARENT_KEY, &trace.to_traceparent());
            extra = true;
            if let Some(state) = &trace.tracestate {
                if !opts.metadata.contains_key(TRACESTATE_KEY) {
                    metadata::put_entry(&mut md, TRACESTATE_KEY, state);
                }
            }
        }
    }
    if extra && md.len() > conn.max_metadata_size {
        return Err(Status::resource_exhausted(format!(
            "invoke metadata of {} bytes encoded is larger than the limit of {} bytes",
            md.len(),
            conn.max_metadata_size
        )));
    }
    Ok(md)
}

/// The span of a client call (fields filled as the call goes).
fn client_span(rpc: &str) -> tracing::Span {
    tracing::info_span!(
        "drpc.client",
        rpc,
        stream_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        code = tracing::field::Empty,
        duration_us = tracing::field::Empty,
        messages_sent = tracing::field::Empty,
        messages_received = tracing::field::Empty,
        bytes_sent = tracing::field::Empty,
        bytes_received = tracing::field::Empty,
        error = tracing::field::Empty,
    )
}

/// Records the trace a call carries on its span (the current one).
fn record_trace(trace: Option<&TraceContext>) {
    if let Some(trace) = trace {
        let span = tracing::Span::current();
        if !span.is_disabled() {
            span.record("trace_id", tracing::field::display(trace.trace_id_hex()));
        }
    }
}

fn deadline_exceeded() -> Status {
    Status::deadline_exceeded("deadline exceeded")
}

fn canceled() -> Status {
    Status::canceled("call canceled")
}

/// A client connection. Cheap to clone; clones share the connection, which
/// closes when the last clone and the last stream opened on it are dropped,
/// or at once on [`Conn::close`].
#[derive(Clone)]
pub struct Conn {
    owner: Arc<Owner>,
}

struct Owner {
    shared: Arc<ConnShared>,
    /// One permit per stream that may be open at once (one in sequential mode).
    slots: Arc<Semaphore>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared
            .terminate(Status::unavailable("connection closed"));
    }
}

impl Conn {
    /// Connects to `host:port` over TCP, or to `unix:/path` over a Unix socket.
    pub async fn connect(addr: &str, opts: ConnOptions) -> Result<Conn, Status> {
        let (rd, wr) = transport::connect(addr)
            .await
            .map_err(|e| Status::unavailable(format!("connecting to {addr}: {e}")))?;
        Ok(Conn::from_parts(rd, wr, opts))
    }

    /// Runs the protocol over any byte stream (TLS, in-memory pipes, ...).
    pub fn new<T>(io: T, opts: ConnOptions) -> Conn
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        Conn::from_parts(Box::new(rd), Box::new(wr), opts)
    }

    /// Runs the protocol over a TCP socket the caller connected (and set
    /// up: keepalive and the like). Turns Nagle off, like [`Conn::connect`].
    pub fn from_tcp(tcp: tokio::net::TcpStream, opts: ConnOptions) -> Conn {
        // Nagle would hold small frames back; failing to turn it off only costs latency.
        let _ = tcp.set_nodelay(true);
        let (rd, wr) = tcp.into_split();
        Conn::from_parts(Box::new(rd), Box::new(wr), opts)
    }

    fn from_parts(
        rd: crate::conn::BoxRead,
        wr: crate::writer::BoxWrite,
        opts: ConnOptions,
    ) -> Conn {
        let limit = if opts.sequential {
            1
        } else {
            opts.max_concurrent_streams.max(1)
        };
        let slots = Arc::new(Semaphore::new(limit));
        let shared = ConnShared::start_split(rd, wr, Role::Client, opts, None);
        Conn {
            owner: Arc::new(Owner { shared, slots }),
        }
    }

    pub(crate) fn shared(&self) -> &Arc<ConnShared> {
        &self.owner.shared
    }

    /// A unary call with raw message bytes.
    pub async fn unary(
        &self,
        rpc: &str,
        request: &[u8],
        opts: &CallOptions,
    ) -> Result<Bytes, Status> {
        if !self.shared().opts.interceptors.is_empty() {
            let call = ClientCall {
                rpc: rpc.into(),
                options: opts.clone(),
                request: Some(Bytes::copy_from_slice(request)),
                observers: Vec::new(),
            };
            return match ClientNext::start(self.clone()).run(call).await? {
                Reply::Unary(response) => Ok(response),
                Reply::Stream(_) => Err(Status::internal(
                    "a client interceptor answered a unary call with a stream",
                )),
            };
        }
        self.unary_observed(rpc, request, opts, None).await
    }

    /// A unary call past the interceptors: its span, and its observers'
    /// view of the messages and the end.
    pub(crate) async fn unary_observed(
        &self,
        rpc: &str,
        request: &[u8],
        opts: &CallOptions,
        observers: Option<Observers>,
    ) -> Result<Bytes, Status> {
        let span = client_span(rpc);
        if span.is_disabled() && observers.is_none() {
            return self.unary_inner(rpc, request, opts, None).await;
        }
        let started = Instant::now();
        let observed = match &observers {
            Some(o) => observe_send(o, request.into())?,
            None => request.into(),
        };
        let mut opened = None;
        let result = self
            .unary_inner(rpc, &observed, opts, Some(&mut opened))
            .instrument(span.clone())
            .await;
        let result = match (&observers, result) {
            (Some(o), Ok(response)) => observe_recv(o, response),
            (_, result) => result,
        };
        let stats = opened.as_ref().map(|s| s.stats()).unwrap_or_default();
        if let Some(stream) = &opened {
            span.record("stream_id", stream.id);
        }
        let status = result.as_ref().err().cloned();
        let end = CallEnd {
            rpc: rpc.into(),
            code: status.as_ref().map_or(crate::status::Code::Ok, Status::code),
            status,
            duration: started.elapsed(),
            stats,
        };
        record_end(&span, &end);
        for o in observers.iter().flat_map(|o| o.iter()) {
            o.on_end(&end);
        }
        result
    }

    /// The unary call itself; `opened` receives its stream once open.
    async fn unary_inner(
        &self,
        rpc: &str,
        request: &[u8],
        opts: &CallOptions,
        mut opened: Option<&mut Option<Arc<StreamShared>>>,
    ) -> Result<Bytes, Status> {
        let (deadline, trace) = opts.start(Instant::now());
        record_trace(trace.as_deref());
        self.check_start(rpc, opts, deadline)?;
        let max = self.shared().opts.max_message_size;
        if request.len() > max {
            return Err(Status::resource_exhausted(format!(
                "request of {} bytes exceeds the maximum of {max} bytes",
                request.len()
            )));
        }
        let codec = Compression::from_metadata(&opts.metadata)?;
        let compressed = codec.map(|c| c.compress(request)).transpose()?;
        let request = compressed.as_deref().unwrap_or(request);
        let call = async {
            let permit = self.acquire_slot().await?;
            self.shared().writer_room().await;
            let md = invoke_metadata(opts, &self.shared().opts, deadline, trace.as_deref())?;
            let split = self.shared().opts.split_size;
            let stream = self
                .shared()
                .open_stream(permit, codec, |buf, sid, state| {
                    if !md.is_empty() {
                        put_packet(
                            buf,
                            sid,
                            state.take_message_id(),
                            Kind::INVOKE_METADATA,
                            false,
                            &md,
                            split,
                        );
                    }
                    put_packet(
                        buf,
                        sid,
                        state.take_message_id(),
                        Kind::INVOKE,
                        false,
                        rpc.as_bytes(),
                        split,
                    );
                    let mid = state.begin_send().expect("a new stream can send");
                    put_packet(buf, sid, mid, Kind::MESSAGE, false, request, split);
                    let close = state.close_send().expect("a new stream can close");
                    put_packet(buf, sid, close, Kind::CLOSE_SEND, false, &[], split);
                })?;
            if let Some(opened) = opened.as_mut() {
                // The request went out with the invoke, past `send`'s count.
                stream.count_sent(request.len());
                **opened = Some(stream.clone());
            }
            let guard = CancelOnDrop(&stream, deadline);
            let result = match stream.recv().await {
                Ok(Some(response)) => Ok(response),
                Ok(None) => Err(Status::internal(
                    "the server ended the call without a response",
                )),
                Err(status) => Err(status),
            };
            // Done either way; frames still in flight for it are dropped.
            stream.finish(End::Done);
            std::mem::forget(guard);
            result
        };
        with_limits(call, deadline, opts.cancel.as_ref()).await
    }

    /// A unary call with protobuf messages.
    pub async fn invoke<Req, Resp>(
        &self,
        rpc: &str,
        request: &Req,
        opts: &CallOptions,
    ) -> Result<Resp, Status>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let response = self.unary(rpc, &request.encode_to_vec(), opts).await?;
        Ok(Resp::decode(response)?)
    }

    /// Opens a streaming call (client-, server- or bidi-streaming). The deadline
    /// and cancel token of `opts` apply to the whole stream.
    pub async fn stream(&self, rpc: &str, opts: &CallOptions) -> Result<Stream, Status> {
        if !self.shared().opts.interceptors.is_empty() {
            let call = ClientCall {
                rpc: rpc.into(),
                options: opts.clone(),
                request: None,
                observers: Vec::new(),
            };
            return match ClientNext::start(self.clone()).run(call).await? {
                Reply::Stream(stream) => Ok(stream),
                Reply::Unary(_) => Err(Status::internal(
                    "a client interceptor answered a stream with a unary response",
                )),
            };
        }
        self.stream_observed(rpc, opts, None).await
    }

    /// Opens a stream past the interceptors: its span, and its observers,
    /// which see its messages and, when it ends, its end.
    pub(crate) async fn stream_observed(
        &self,
        rpc: &str,
        opts: &CallOptions,
        observers: Option<Observers>,
    ) -> Result<Stream, Status> {
        let span = client_span(rpc);
        if span.is_disabled() && observers.is_none() {
            return self.stream_inner(rpc, opts).await;
        }
        let started = Instant::now();
        let end = ClientEnd {
            rpc: rpc.into(),
            span: span.clone(),
            started,
            observers: observers.clone(),
            reported: Default::default(),
        };
        match self.stream_inner(rpc, opts).instrument(span.clone()).await {
            Err(status) => {
                end.report(Some(status.clone()), Default::default());
                Err(status)
            }
            Ok(mut stream) => {
                span.record("stream_id", stream.id());
                stream.ctx.observers = observers;
                let shared = stream.ctx.shared.clone();
                let _ = shared.on_end.set(Box::new(end));
                if shared.is_finished() {
                    // It ended before it could be told: report it here
                    // (`report` runs once either way).
                    if let Some(end) = shared.on_end.get() {
                        end.report(shared.failure(), shared.stats());
                    }
                }
                Ok(stream)
            }
        }
    }

    async fn stream_inner(&self, rpc: &str, opts: &CallOptions) -> Result<Stream, Status> {
        let (deadline, trace) = opts.start(Instant::now());
        record_trace(trace.as_deref());
        self.check_start(rpc, opts, deadline)?;
        let codec = Compression::from_metadata(&opts.metadata)?;
        let open = async {
            let permit = self.acquire_slot().await?;
            let md = invoke_metadata(opts, &self.shared().opts, deadline, trace.as_deref())?;
            let split = self.shared().opts.split_size;
            self.shared().open_stream(permit, codec, |buf, sid, state| {
                if !md.is_empty() {
                    put_packet(
                        buf,
                        sid,
                        state.take_message_id(),
                        Kind::INVOKE_METADATA,
                        false,
                        &md,
                        split,
                    );
                }
                put_packet(
                    buf,
                    sid,
                    state.take_message_id(),
                    Kind::INVOKE,
                    false,
                    rpc.as_bytes(),
                    split,
                );
            })
        };
        let shared = with_limits(open, deadline, opts.cancel.as_ref()).await?;
        let watchdog = (deadline.is_some() || opts.cancel.is_some())
            .then(|| spawn_watchdog(self.shared(), shared.clone(), deadline, opts.cancel.clone()));
        Ok(Stream {
            ctx: CallContext {
                shared,
                rpc: rpc.into(),
                metadata: Arc::new(opts.metadata.clone()),
                peer: None,
                deadline,
                trace,
                observers: None,
            },
            keep_alive: Some(self.owner.clone()),
            watchdog,
        })
    }

    /// A call whose deadline or cancellation is already done fails before it
    /// uses a stream id.
    fn check_start(
        &self,
        rpc: &str,
        opts: &CallOptions,
        deadline: Option<Instant>,
    ) -> Result<(), Status> {
        if opts.cancel.as_ref().is_some_and(|c| c.is_cancelled()) {
            return Err(canceled());
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            return Err(deadline_exceeded());
        }
        if let Some(status) = self.shared().closed_status() {
            return Err(self.shared().stream_failure(status));
        }
        let limit = self.shared().opts.max_metadata_size;
        let md_len = metadata::encoded_len(&opts.metadata);
        if md_len > limit {
            return Err(Status::resource_exhausted(format!(
                "invoke metadata of {md_len} bytes encoded is larger than the limit of {limit} bytes"
            )));
        }
        if rpc.len() > limit {
            return Err(Status::resource_exhausted(format!(
                "rpc name of {} bytes is larger than the limit of {limit} bytes",
                rpc.len()
            )));
        }
        Ok(())
    }

    /// Waits for a free stream slot (the connection's stream limit; one in
    /// sequential mode).
    async fn acquire_slot(&self) -> Result<Option<OwnedSemaphorePermit>, Status> {
        if let Ok(permit) = self.owner.slots.clone().try_acquire_owned() {
            return Ok(Some(permit));
        }
        let closed = self.shared().closed();
        tokio::select! {
            permit = self.owner.slots.clone().acquire_owned() => Ok(Some(permit.expect("never closed"))),
            _ = closed => Err(self.shared().stream_failure(
                self.shared().closed_status().unwrap_or_else(|| Status::unavailable("connection closed")),
            )),
        }
    }

    /// Closes the connection: every call on it fails with Unavailable, and the
    /// connection's tasks have ended when this returns.
    pub async fn close(&self) {
        self.shared()
            .close(Status::unavailable("connection closed"))
            .await;
    }

    /// Whether this is the only handle left: no clone, and no stream opened
    /// on the connection is alive.
    pub fn is_last_handle(&self) -> bool {
        Arc::strong_count(&self.owner) == 1
    }

    /// Whether the connection has terminated (closed here, by the peer, or by
    /// an error).
    pub fn is_closed(&self) -> bool {
        self.shared().closed_status().is_some()
    }

    /// Resolves when the connection terminates; returns why.
    pub async fn closed(&self) -> Status {
        self.shared().closed().await;
        self.shared().closed_status().expect("closed")
    }

    /// Streams currently open on this connection.
    pub fn active_streams(&self) -> usize {
        self.shared().active_streams()
    }

    /// Whether calls run one at a time (sequential mode).
    pub fn is_sequential(&self) -> bool {
        self.shared().opts.sequential
    }

    /// Stream slots free right now (streams that could open without waiting).
    pub fn available_streams(&self) -> usize {
        self.owner.slots.available_permits()
    }

    /// Received message bytes buffered on this connection and not yet read.
    pub fn buffered_bytes(&self) -> usize {
        self.shared().buffered()
    }

    /// The options the connection runs with.
    pub fn options(&self) -> &ConnOptions {
        &self.shared().opts
    }

    /// This connection's counters: bytes, streams (opened, closed, failed
    /// by code, active), blocked receives and sends, queued bytes.
    pub fn metrics(&self) -> MetricsSnapshot {
        let mut totals = Totals::default();
        totals.add(&self.shared().metrics);
        let mut snapshot = totals.snapshot();
        snapshot.queued_bytes = self.shared().writer.queued() as u64;
        snapshot.connections_opened = 1;
        snapshot.active_connections = u64::from(!self.is_closed());
        snapshot
    }
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("active_streams", &self.active_streams())
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Cancels an unfinished unary stream when its call future is dropped (by a
/// deadline, a cancel token, or the caller), with DeadlineExceeded once the
/// call's deadline has passed.
struct CancelOnDrop<'a>(&'a Arc<StreamShared>, Option<Instant>);

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        let expired = self.1.is_some_and(|d| d <= Instant::now());
        self.0
            .cancel(if expired { deadline_exceeded() } else { canceled() });
    }
}

/// Runs `call` until it finishes, the deadline passes or the token is cancelled;
/// the losing call future is dropped, which cancels its stream.
async fn with_limits<T>(
    call: impl std::future::Future<Output = Result<T, Status>>,
    deadline: Option<Instant>,
    cancel: Option<&CancelToken>,
) -> Result<T, Status> {
    if deadline.is_none() && cancel.is_none() {
        return call.await;
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
        biased;
        _ = cancelled => Err(canceled()),
        _ = sleep => Err(deadline_exceeded()),
        result = call => result,
    }
}

/// Cancels a stream when its deadline passes or its token is cancelled; ends
/// with the stream.
fn spawn_watchdog(
    conn: &ConnShared,
    stream: Arc<StreamShared>,
    deadline: Option<Instant>,
    cancel: Option<CancelToken>,
) -> tokio::task::AbortHandle {
    conn.watchdogs.spawn(async move {
        let ended = async {
            stream.ended().await;
            Ok::<(), Status>(())
        };
        let status = with_limits(ended, deadline, cancel.as_ref()).await;
        if let Err(status) = status {
            stream.cancel(status);
        }
    })
}
