//! A connection's shared core, the same for clients and servers: the registry of
//! live streams, the reader task that routes frames to them by stream id (and,
//! on a server, assembles invokes of new streams), the shared writer, and
//! connection-scoped termination.

use crate::budget::{Account, MemoryBudget, CONNECTION_OVERHEAD, PENDING_INVOKE_OVERHEAD};
use crate::metadata::{self, Metadata};
use crate::metrics::ConnMetrics;
use crate::packet::{Assembled, Assembler};
use crate::state::End;
use crate::status::Status;
use crate::stream::StreamShared;
use crate::wire::{encode_error, parse_header, put_packet, Frame, Kind};
use crate::writer::{BoxWrite, Lane, Writer};
use bytes::{Buf, BytesMut};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;

/// Default limit on one received message (and frame), like storj.io/drpc.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 4 << 20;

/// Settings of one connection, client or server side.
#[derive(Clone, Debug)]
pub struct ConnOptions {
    /// Largest message accepted or sent; a larger one fails that stream with
    /// ResourceExhausted (default 4 MiB). A single frame longer than this (or
    /// than 64 KiB, if larger) closes the connection.
    pub max_message_size: usize,
    /// Payload size at which outgoing messages are split into frames (64 KiB).
    pub split_size: usize,
    /// Client only: at most one stream at a time, for storj.io/drpc peers.
    pub sequential: bool,
    /// Server only: incomplete invokes (InvokeMetadata without its Invoke)
    /// a peer may leave pending before the connection is closed.
    pub max_pending_invokes: usize,
    /// Largest InvokeMetadata payload or rpc name (default 4 MiB, what
    /// storj.io/drpc accepts). A client refuses to send more; a server fails
    /// that stream with ResourceExhausted (8) naming the limit, and the
    /// connection lives on.
    pub max_metadata_size: usize,
    /// Concurrent streams per connection. A server refuses more with
    /// Unavailable; a client queues further calls until a stream finishes.
    pub max_concurrent_streams: usize,
    /// Per-stream flow control (DESIGN.md section 4). Off by default: it is not
    /// negotiated, and both peers must have it on.
    pub flow_control: Option<FlowControl>,
    /// This connection's share of the memory budget: everything the peer
    /// makes it hold (unread messages, packets being assembled, pending
    /// invokes, queued writes, the read buffer). Past it the reader stops
    /// reading (TCP back-pressure) until the application reads. While it is
    /// stopped, a peer's disconnect is only seen once the application reads
    /// and frees memory (the FIN waits behind unread data).
    pub connection_buffer_budget: usize,
    /// Bytes of data frames queued for writing beyond which senders wait,
    /// and the reader stops producing frames (errors, refusals) until the
    /// peer reads. Control frames (Cancel, WindowUpdate) are never held back.
    pub writer_buffer_cap: usize,
    /// The budget this connection's memory is counted in. `None`: a budget
    /// of its own of [`DEFAULT_MEMORY_BUDGET`](crate::DEFAULT_MEMORY_BUDGET).
    /// A `Server` and a `Pool` set one shared by all their connections.
    pub memory_budget: Option<MemoryBudget>,
    /// A frame that takes longer than this to arrive, from its first byte to
    /// its last, closes the connection (default 30 s; zero disables).
    pub read_timeout: Duration,
    /// Server connections: closed if no complete frame arrives this soon
    /// after accepting (default 10 s; zero disables).
    pub handshake_timeout: Duration,
    /// Server connections: closed after holding no stream and receiving
    /// nothing for this long (default 5 minutes; zero disables).
    pub idle_timeout: Duration,
    /// Client: a call with a deadline (its own or the one it inherits from
    /// the handler it runs in) tells the server the time left, in the
    /// `drpc-timeout` invoke metadata (see [`crate::deadline`]). Default on;
    /// peers that do not know the key ignore it.
    pub send_deadline: bool,
    /// Client: interceptors every call runs through, the first added
    /// outermost (see [`crate::interceptor`]).
    pub interceptors: crate::interceptor::ClientInterceptors,
}

/// Per-stream flow-control settings, compatible with cockroachdb/drpc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowControl {
    /// Initial send credit of every stream, in Message payload bytes.
    pub window: u64,
    /// Consumed bytes that trigger a WindowUpdate back to the sender.
    pub grant_threshold: u64,
}

impl Default for FlowControl {
    fn default() -> Self {
        FlowControl {
            window: 2 << 20,
            grant_threshold: 512 << 10,
        }
    }
}

/// Default limit on invoke metadata (and rpc names), as storj.io/drpc's reader.
pub const DEFAULT_MAX_METADATA_SIZE: usize = 4 << 20;

/// Default per-frame read timeout.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default time a new server connection has to send its first frame.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle timeout of server connections.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Default cap on concurrent streams per connection.
pub const DEFAULT_MAX_CONCURRENT_STREAMS: usize = 10_000;

impl Default for ConnOptions {
    fn default() -> Self {
        ConnOptions {
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            split_size: crate::wire::DEFAULT_SPLIT_SIZE,
            sequential: false,
            max_pending_invokes: 1024,
            max_metadata_size: DEFAULT_MAX_METADATA_SIZE,
            max_concurrent_streams: DEFAULT_MAX_CONCURRENT_STREAMS,
            flow_control: None,
            connection_buffer_budget: 64 << 20,
            writer_buffer_cap: 1 << 20,
            memory_budget: None,
            read_timeout: DEFAULT_READ_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            send_deadline: true,
            interceptors: Default::default(),
        }
    }
}

impl ConnOptions {
    /// These options with flow control on at its default window.
    pub fn with_flow_control(mut self) -> ConnOptions {
        self.flow_control = Some(FlowControl::default());
        self
    }

    /// These options with `interceptor` added to the client's chain,
    /// innermost.
    pub fn intercept(mut self, interceptor: impl crate::interceptor::ClientInterceptor) -> ConnOptions {
        self.interceptors = self.interceptors.with(interceptor);
        self
    }

    /// These options in sequential mode (one stream at a time).
    pub fn sequential(mut self) -> ConnOptions {
        self.sequential = true;
        self
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Client,
    Server,
}

/// What a server does with a stream whose Invoke arrived.
pub(crate) trait Acceptor: Send + Sync {
    /// Returns false to refuse new streams (the server is shutting down).
    fn accepting(&self) -> bool;
    fn accept(&self, stream: Arc<StreamShared>, rpc: &str, metadata: Metadata);
    /// The remote's address, for logs.
    fn peer_addr(&self) -> Option<&str>;
}

pub(crate) struct ConnShared {
    /// Unique in the process, for per-connection fairness in handler pools.
    pub(crate) id: u64,
    pub(crate) role: Role,
    pub(crate) opts: ConnOptions,
    pub(crate) writer: Arc<Writer>,
    registry: Mutex<Registry>,
    /// Cancelled once the connection has terminated.
    closed: tokio_util::sync::CancellationToken,
    /// Received message bytes not yet read by the application.
    buffered: AtomicUsize,
    /// Everything this connection holds, inside its (maybe shared) budget.
    pub(crate) account: Arc<Account>,
    /// What the reader publishes for the watchdog (timeouts).
    clock: Clock,
    /// Data position after the last frame the reader itself wrote (errors,
    /// refusals): while it is queued behind a full writer, the reader waits.
    reader_output: std::sync::atomic::AtomicU64,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Per-stream timers (deadlines, cancel tokens); `close` waits for them.
    pub(crate) watchdogs: Arc<crate::tasks::TaskSet>,
    acceptor: Option<Arc<dyn Acceptor>>,
    /// Counters of this connection (bytes, streams, blocked operations).
    pub(crate) metrics: Arc<ConnMetrics>,
}

struct Registry {
    // A B-tree, not a hash map: the keys come from the peer (no hash to
    // flood), and lookups of small integers are cheaper than SipHash.
    streams: BTreeMap<u64, Arc<StreamShared>>,
    next_stream_id: u64,
    closed: Option<Status>,
}

impl ConnShared {
    /// Starts the reader and writer tasks of a connection.
    pub(crate) fn start_split(
        rd: BoxRead,
        wr: BoxWrite,
        role: Role,
        opts: ConnOptions,
        acceptor: Option<Arc<dyn Acceptor>>,
    ) -> Arc<ConnShared> {
        let budget = opts.memory_budget.clone().unwrap_or_default();
        let account = Arc::new(Account::new(budget, opts.connection_buffer_budget));
        account.charge(CONNECTION_OVERHEAD);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let side = match role {
            Role::Client => crate::metrics::Side::Client,
            Role::Server => crate::metrics::Side::Server,
        };
        let metrics = Arc::new(ConnMetrics::new(side));
        let conn = Arc::new(ConnShared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            opts: opts.clone(),
            role,
            writer: Writer::new(wr, opts.writer_buffer_cap, account.clone(), metrics.clone()),
            registry: Mutex::new(Registry {
                streams: BTreeMap::new(),
                next_stream_id: 1,
                closed: None,
            }),
            closed: Default::default(),
            buffered: AtomicUsize::new(0),
            account,
            clock: Clock::default(),
            reader_output: Default::default(),
            tasks: Mutex::new(Vec::new()),
            watchdogs: Arc::default(),
            acceptor,
            metrics,
        });
        let reader = tokio::spawn(read_loop(conn.clone(), rd));
        let watchdog = tokio::spawn(watchdog(conn.clone()));
        let writer = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let status = conn.writer.clone().run().await;
                conn.terminate(status);
            })
        };
        conn.tasks
            .lock()
            .unwrap()
            .extend([reader, writer, watchdog]);
        if conn.closed_status().is_some() {
            // Terminated before its tasks were listed: stop them now.
            for task in conn.tasks.lock().unwrap().iter() {
                task.abort();
            }
        }
        conn
    }

    /// The error a stream sees when its connection fails with `status`: a
    /// client call sees Unavailable, a server handler sees Canceled.
    pub(crate) fn stream_failure(&self, status: Status) -> Status {
        match self.role {
            Role::Client => Status::unavailable(status.message().to_string()),
            Role::Server => Status::canceled(format!("connection lost: {}", status.message())),
        }
    }

    pub(crate) fn closed_status(&self) -> Option<Status> {
        self.registry.lock().unwrap().closed.clone()
    }

    pub(crate) fn active_streams(&self) -> usize {
        self.registry.lock().unwrap().streams.len()
    }

    /// Received message bytes waiting to be read, over all streams.
    pub(crate) fn buffered(&self) -> usize {
        self.buffered.load(Ordering::Relaxed)
    }

    /// Follows a stream's queued message bytes going from `before` to `after`
    /// (the statistic; the memory itself is charged to the account).
    pub(crate) fn account_buffered(&self, before: usize, after: usize) {
        if after > before {
            self.buffered.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.buffered.fetch_sub(before - after, Ordering::Relaxed);
        }
    }

    /// Records that the reader (not a handler) wrote frames ending at `position`.
    pub(crate) fn reader_wrote(&self, position: u64) {
        self.reader_output.fetch_max(position, Ordering::Relaxed);
    }

    /// Whether frames the reader produced are still queued behind a full writer.
    fn reader_output_stuck(&self) -> bool {
        let produced = self.reader_output.load(Ordering::Relaxed);
        produced != 0
            && self.writer.taken() < produced
            && self.writer.queued() >= self.opts.writer_buffer_cap
    }

    /// Waits until the writer's data queue is under its cap.
    pub(crate) async fn writer_room(&self) {
        if self.writer.queued() >= self.opts.writer_buffer_cap {
            self.writer.room().await;
        }
    }

    /// The reader's gate before it takes in `n` more bytes: waits while the
    /// connection is over its share or the budget is full, and on a server
    /// while its writer is over its cap (the peer is not reading what we
    /// answer, and frames the reader itself produces, such as errors and
    /// refusals, must not pile up). A client keeps reading then: its peer's
    /// answers are what drains the server's writer.
    /// On success the `n` bytes are charged to the account; the caller hands
    /// the charge to the bytes it reads (`budget::charged`).
    /// Returns false once the connection has terminated.
    async fn admit(&self, n: usize) -> bool {
        let mut waited = false;
        loop {
            if waited && self.closed_status().is_some() {
                return false;
            }
            if self.role == Role::Server && self.reader_output_stuck() {
                waited = true;
                tokio::select! {
                    _ = self.writer.room() => {}
                    // `room` wakes on every drain, but only when under the cap;
                    // our own frames may have left before that.
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                continue;
            }
            if self.account.try_charge(n) {
                if waited {
                    Clock::bump(&self.clock.frames);
                }
                return true;
            }
            waited = true;
            tokio::select! {
                _ = self.account.room(n) => {}
                _ = self.closed() => return false,
            }
        }
    }

    fn lookup(&self, id: u64) -> Option<Arc<StreamShared>> {
        self.registry.lock().unwrap().streams.get(&id).cloned()
    }

    /// Removes a finished stream; later frames for its id are dropped.
    pub(crate) fn forget(&self, id: u64) {
        let mut reg = self.registry.lock().unwrap();
        if reg.streams.remove(&id).is_some() && reg.streams.is_empty() {
            drop(reg);
            Clock::bump(&self.clock.went_idle);
        }
    }

    /// Client: creates the next stream and writes its opening frames with
    /// `open` under the registry lock, so invokes reach the wire in stream-id
    /// order and nothing (not even a cancel) can come between them.
    pub(crate) fn open_stream(
        self: &Arc<Self>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        codec: Option<crate::compress::Compression>,
        open: impl FnOnce(&mut BytesMut, u64, &mut crate::state::StreamState),
    ) -> Result<Arc<StreamShared>, Status> {
        let mut reg = self.registry.lock().unwrap();
        if let Some(status) = &reg.closed {
            return Err(self.stream_failure(status.clone()));
        }
        let id = reg.next_stream_id;
        reg.next_stream_id += 1;
        let stream = StreamShared::new(id, self.clone(), 0, permit, codec);
        reg.streams.insert(id, stream.clone());
        let result = stream.update(|inner, _| {
            let state = &mut inner.state;
            self.writer
                .append(Lane::Data, |buf| open(buf, id, state))
                .map(|(pos, flusher)| {
                    inner.last_pos = pos;
                    flusher
                })
        });
        drop(reg);
        // Written outside the registry lock; a failed write terminates the
        // connection through the writer task.
        if let Ok(true) = result {
            let _ = self.writer.flush_now();
        }
        if let Err(status) = result {
            let status = self.stream_failure(status);
            stream.finish(End::Connection(status.clone()));
            return Err(status);
        }
        Ok(stream)
    }

    /// Connection-scoped end: every stream fails, the transport is closed.
    /// Idempotent; the first reason wins.
    pub(crate) fn terminate(&self, status: Status) {
        let streams: Vec<Arc<StreamShared>> = {
            let mut reg = self.registry.lock().unwrap();
            if reg.closed.is_some() {
                return;
            }
            reg.closed = Some(status.clone());
            std::mem::take(&mut reg.streams).into_values().collect()
        };
        tracing::debug!(role = ?self.role, %status, "connection terminated");
        self.metrics.connection_closed();
        self.writer.close(status.clone());
        let failure = self.stream_failure(status);
        for s in streams {
            s.finish(End::Connection(failure.clone()));
        }
        self.closed.cancel();
        for task in self.tasks.lock().unwrap().iter() {
            task.abort();
        }
    }

    /// Resolves once the connection has terminated.
    pub(crate) async fn closed(&self) {
        self.closed.cancelled().await
    }

    /// Terminates and waits for the connection's own tasks to end.
    pub(crate) async fn close(&self, status: Status) {
        self.terminate(status);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.tasks.lock().unwrap());
        for t in tasks {
            let _ = t.await;
        }
        self.watchdogs.abort_all();
        self.watchdogs.idle().await;
    }

    /// Waits (at most `limit`) until queued frames were handed to the transport.
    pub(crate) async fn flush(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.writer.flushed()).await;
    }

    /// Routes the complete frames of one read (`frames`: header, header
    /// length, payload length, back to back in `batch`). Consecutive frames
    /// of one open stream go to it together, under one lock and one wake-up.
    fn route_batch(
        self: &Arc<Self>,
        frames: &[(crate::wire::FrameHeader, usize, usize)],
        mut batch: bytes::Bytes,
        invokes: &mut Invokes,
    ) -> Result<(), String> {
        let for_stream = |h: &crate::wire::FrameHeader| {
            h.kind.is_known() && h.kind != Kind::WINDOW_UPDATE && h.stream_id != 0
        };
        let mut i = 0;
        while let Some(&(header, at, len)) = frames.get(i) {
            i += 1;
            batch.advance(at);
            let frame = Frame { header, payload: batch.split_to(len) };
            let stream = if for_stream(&header) { self.lookup(header.stream_id) } else { None };
            let Some(stream) = stream else {
                self.route(frame, invokes)?;
                continue;
            };
            let mut first = Some(frame);
            stream.on_frames(|| {
                if let Some(frame) = first.take() {
                    return Some(frame);
                }
                match frames.get(i) {
                    Some(&(next, at, len)) if next.stream_id == header.stream_id && for_stream(&next) => {
                        i += 1;
                        batch.advance(at);
                        Some(Frame { header: next, payload: batch.split_to(len) })
                    }
                    _ => None,
                }
            })?;
        }
        Ok(())
    }

    /// Routes one frame. `Err` is a connection-scoped protocol error.
    fn route(self: &Arc<Self>, frame: Frame, invokes: &mut Invokes) -> Result<(), String> {
        let h = frame.header;
        if !h.kind.is_known() {
            return if h.control {
                Ok(())
            } else {
                Err(format!("unknown frame kind {}", h.kind.0))
            };
        }
        if h.kind == Kind::WINDOW_UPDATE {
            // A malformed update is dropped, never fatal.
            if let (Some(delta), Some(stream)) = (window_delta(&frame), self.lookup(h.stream_id)) {
                stream.on_window_update(delta);
            }
            return Ok(());
        }
        if h.stream_id == 0 {
            return Ok(()); // no stream can have id 0: an unknown stream, dropped
        }
        if let Some(stream) = self.lookup(h.stream_id) {
            let mut frame = Some(frame);
            return stream.on_frames(|| frame.take());
        }
        if self.role == Role::Client {
            return Ok(()); // late frame of a finished stream
        }
        match h.kind {
            Kind::INVOKE | Kind::INVOKE_METADATA => self.assemble_invoke(frame, invokes),
            Kind::CANCEL | Kind::CLOSE | Kind::ERROR => {
                invokes.remove(h.stream_id, &self.account); // the peer gave up before invoking
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Writes an Error frame for a stream id that never became a stream.
    fn refuse(&self, sid: u64, status: &Status) {
        self.metrics.stream_refused(status.code());
        let payload = encode_error(status.code().as_u64(), status.message());
        let written = self.writer.write(Lane::Data, |buf| {
            put_packet(buf, sid, 1, Kind::ERROR, false, &payload, usize::MAX)
        });
        if let Ok(position) = written {
            self.reader_wrote(position);
        }
    }

    /// Server: collects InvokeMetadata and Invoke of a new stream id; a
    /// complete Invoke starts the stream. An oversized or over-costly invoke
    /// fails that stream only.
    fn assemble_invoke(
        self: &Arc<Self>,
        frame: Frame,
        invokes: &mut Invokes,
    ) -> Result<(), String> {
        let sid = frame.header.stream_id;
        if !invokes.map.contains_key(&sid) && invokes.map.len() >= self.opts.max_pending_invokes {
            return Err(format!(
                "more than {} incomplete invokes",
                self.opts.max_pending_invokes
            ));
        }
        let limit = self.opts.max_metadata_size;
        let pending = invokes.map.entry(sid).or_insert_with(|| {
            self.account.charge(PENDING_INVOKE_OVERHEAD);
            PendingInvoke {
                assembler: Assembler::new(0, limit),
                metadata: None,
                refused: None,
                charged: PENDING_INVOKE_OVERHEAD,
            }
        });
        let assembled = pending.assembler.push(frame).map_err(|e| e.to_string());
        let pkt = match assembled {
            Err(e) => {
                invokes.remove(sid, &self.account);
                return Err(e);
            }
            Ok(Assembled::Partial) => {
                pending.recharge(&self.account);
                if pending.refused.is_some() && !pending.assembler.in_progress() {
                    invokes.remove(sid, &self.account); // refused and its last frame arrived
                }
                return Ok(());
            }
            Ok(Assembled::TooLarge { kind, .. }) => {
                let what = if kind == Kind::INVOKE {
                    "rpc name"
                } else {
                    "invoke metadata"
                };
                let status = Status::resource_exhausted(format!(
                    "{what} larger than the limit of {limit} bytes"
                ));
                pending.metadata = None;
                if kind == Kind::INVOKE {
                    // The stream is over: tell the peer now, drop the rest of the name.
                    self.refuse(sid, &status);
                    pending.refused = Some(status);
                    pending.recharge(&self.account);
                    if !pending.assembler.in_progress() {
                        invokes.remove(sid, &self.account);
                    }
                } else {
                    // Answered when the Invoke comes, so the stream id is not reused meanwhile.
                    pending.refused.get_or_insert(status);
                    pending.recharge(&self.account);
                }
                return Ok(());
            }
            Ok(Assembled::Packet(pkt)) => pkt,
        };
        if pkt.kind == Kind::INVOKE_METADATA {
            if pending.refused.is_none() {
                match metadata::decode_limited(&pkt.data, metadata_cost_limit(limit))
                    .map_err(|e| e.to_string())
                {
                    Ok(Some(md)) => pending.metadata = Some(md),
                    Ok(None) => {
                        pending.refused = Some(Status::resource_exhausted(format!(
                            "invoke metadata larger than the limit of {limit} bytes once decoded"
                        )))
                    }
                    Err(e) => {
                        invokes.remove(sid, &self.account);
                        return Err(e);
                    }
                }
            }
            pending.recharge(&self.account);
            return Ok(());
        }
        let pending = invokes.remove(sid, &self.account).expect("entry exists");
        if let Some(status) = pending.refused {
            self.refuse(sid, &status);
            return Ok(());
        }
        let rpc = std::str::from_utf8(&pkt.data)
            .map_err(|_| "rpc name is not UTF-8".to_string())?;
        let acceptor = self.acceptor.as_ref().expect("servers have an acceptor");
        if !acceptor.accepting() {
            self.refuse(sid, &Status::unavailable(crate::server::SHUTTING_DOWN));
            return Ok(());
        }
        let metadata = pending.metadata.unwrap_or_default();
        let codec = match crate::compress::Compression::from_metadata(&metadata) {
            Ok(codec) => codec,
            Err(status) => {
                self.refuse(sid, &status);
                return Ok(());
            }
        };
        if !self.account.has_room(crate::budget::STREAM_OVERHEAD) {
            self.refuse(
                sid,
                &Status::resource_exhausted("server memory budget exhausted; try again later"),
            );
            return Ok(());
        }
        let stream = StreamShared::new(sid, self.clone(), pkt.message_id, None, codec);
        {
            let mut reg = self.registry.lock().unwrap();
            if reg.closed.is_some() {
                return Ok(());
            }
            let limit = self.opts.max_concurrent_streams;
            if reg.streams.len() >= limit {
                drop(reg);
                let message =
                    format!("too many concurrent streams: the limit is {limit} per connection");
                self.refuse(sid, &Status::unavailable(message));
                return Ok(());
            }
            reg.streams.insert(sid, stream.clone());
        }
        acceptor.accept(stream, rpc, metadata);
        Ok(())
    }
}

/// What decoded metadata may cost in memory: its map overhead can be many
/// times its encoded size when it has many tiny entries.
fn metadata_cost_limit(max_metadata_size: usize) -> usize {
    max_metadata_size.saturating_mul(2).saturating_add(64 << 10)
}

/// The credit a well-formed WindowUpdate grants: control and done set,
/// message id 0, a payload of exactly one varint greater than zero.
fn window_delta(frame: &Frame) -> Option<u64> {
    let h = &frame.header;
    if !h.control || !h.done || h.message_id != 0 {
        return None;
    }
    match crate::wire::read_varint(&frame.payload) {
        Ok(Some((delta, n))) if n == frame.payload.len() && delta > 0 => Some(delta),
        _ => None,
    }
}

/// Invokes of stream ids not yet started (server side), with their charges.
#[derive(Default)]
pub(crate) struct Invokes {
    map: BTreeMap<u64, PendingInvoke>,
}

impl Invokes {
    fn remove(&mut self, sid: u64, account: &Account) -> Option<PendingInvoke> {
        let pending = self.map.remove(&sid)?;
        account.release(pending.charged);
        Some(pending)
    }

    fn release_all(&mut self, account: &Account) {
        for pending in std::mem::take(&mut self.map).into_values() {
            account.release(pending.charged);
        }
    }
}

struct PendingInvoke {
    assembler: Assembler,
    metadata: Option<Metadata>,
    /// Set when the invoke is refused (too large); answered once its Invoke arrives.
    refused: Option<Status>,
    /// Bytes charged to the account for this entry.
    charged: usize,
}

impl PendingInvoke {
    fn recharge(&mut self, account: &Account) {
        let now = PENDING_INVOKE_OVERHEAD
            + self.assembler.held()
            + self.metadata.as_ref().map_or(0, metadata::cost);
        account.adjust(self.charged, now);
        self.charged = now;
    }
}

/// The read buffer's first size; it grows to `READ_CHUNK` once a read fills it.
const FIRST_READ_BUFFER: usize = 8 * 1024;
const READ_CHUNK: usize = 64 * 1024;
/// A frame at least this long that is not yet fully in the read buffer is
/// read straight into a buffer of its own, sized once.
const DEDICATED_FRAME: usize = 16 * 1024;

/// Why a read ended without data.
enum ReadEnd {
    Eof,
    Failed(std::io::Error),
}

/// What the reader publishes for the connection's watchdog: counters and
/// flags only (relaxed atomics, no clock reads on the read path).
#[derive(Default)]
pub(crate) struct Clock {
    got_frame: std::sync::atomic::AtomicBool,
    /// Reads that returned data.
    reads: std::sync::atomic::AtomicU64,
    /// Frames completed, or waits on our own limits (the frame in progress
    /// is not the peer's to finish while we wait).
    frames: std::sync::atomic::AtomicU64,
    /// A frame has started and not finished.
    mid_frame: std::sync::atomic::AtomicBool,
    /// Times the connection stopped holding streams.
    went_idle: std::sync::atomic::AtomicU64,
}

impl Clock {
    fn bump(counter: &std::sync::atomic::AtomicU64) {
        counter.store(
            counter.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
    }
}

/// The longest a connection waits between publishing its metrics.
const METRICS_PERIOD: Duration = Duration::from_secs(5);

/// The connection's timeouts, enforced from outside the read path so reads
/// carry no timer: it wakes every quarter of the shortest timeout, notes
/// what changed since, and terminates the connection once a deadline has
/// passed (within a quarter of its timeout).
async fn watchdog(conn: Arc<ConnShared>) {
    let o = &conn.opts;
    let server = conn.role == Role::Server;
    let enabled: Vec<Duration> = [
        Some(o.read_timeout),
        server.then_some(o.handshake_timeout),
        server.then_some(o.idle_timeout),
    ]
    .into_iter()
    .flatten()
    .filter(|t| !t.is_zero())
    .collect();
    // With every timeout off it still wakes, to publish the metrics.
    let shortest = enabled.iter().min().copied().unwrap_or(4 * METRICS_PERIOD);
    let recheck = (shortest / 4).clamp(Duration::from_millis(5), METRICS_PERIOD);
    let clock = &conn.clock;
    let started = Instant::now();
    let (mut seen_reads, mut seen_idle) = (0, 0);
    let mut active_at = started;
    // When the frame in progress was first seen, and the frame count then.
    let mut frame_seen: Option<(Instant, u64)> = None;
    loop {
        let now = Instant::now();
        let reads = clock.reads.load(Ordering::Relaxed);
        let idled = clock.went_idle.load(Ordering::Relaxed);
        if reads != seen_reads || idled != seen_idle {
            (seen_reads, seen_idle, active_at) = (reads, idled, now);
        }
        let frames = clock.frames.load(Ordering::Relaxed);
        let mid_frame = clock.mid_frame.load(Ordering::Relaxed);
        frame_seen = match frame_seen {
            Some((at, f)) if mid_frame && f == frames => Some((at, f)),
            _ if mid_frame => Some((now, frames)),
            _ => None,
        };
        let got_frame = clock.got_frame.load(Ordering::Relaxed);
        let mut passed = None;
        if server
            && !got_frame
            && !o.handshake_timeout.is_zero()
            && now >= started + o.handshake_timeout
        {
            passed = Some("no frame within the handshake timeout");
        }
        if let Some((at, _)) = frame_seen {
            if !o.read_timeout.is_zero() && now >= at + o.read_timeout {
                passed = Some("a frame took longer than the read timeout to arrive");
            }
        }
        if server
            && got_frame
            && !mid_frame
            && !o.idle_timeout.is_zero()
            && now >= active_at + o.idle_timeout
            && conn.active_streams() == 0
        {
            passed = Some("idle timeout");
        }
        conn.metrics.publish();
        if let Some(why) = passed {
            let status = Status::unavailable(format!("connection closed: {why}"));
            let peer = conn.acceptor.as_ref().and_then(|a| a.peer_addr()).unwrap_or("-");
            tracing::warn!(role = ?conn.role, peer, %status, "closing connection");
            conn.terminate(status);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(recheck) => {}
            _ = conn.closed() => return,
        }
    }
}

async fn read_once<B: bytes::BufMut + ?Sized>(
    rd: &mut BoxRead,
    dst: &mut B,
) -> Result<usize, ReadEnd> {
    match rd.read_buf(dst).await {
        Ok(0) => Err(ReadEnd::Eof),
        Ok(n) => Ok(n),
        Err(e) => Err(ReadEnd::Failed(e)),
    }
}

/// The reader task: the single authority on transport health.
async fn read_loop(conn: Arc<ConnShared>, mut rd: BoxRead) {
    let mut invokes = Invokes::default();
    let mut input = Input {
        buf: Vec::with_capacity(FIRST_READ_BUFFER),
        start: 0,
        charged: FIRST_READ_BUFFER,
    };
    conn.account.charge(input.charged);
    let status = read_frames(&conn, &mut rd, &mut invokes, &mut input).await;
    invokes.release_all(&conn.account);
    conn.account.release(input.charged);
    drop(input);
    if status.message().starts_with("protocol error") {
        let peer = conn.acceptor.as_ref().and_then(|a| a.peer_addr()).unwrap_or("-");
        tracing::warn!(role = ?conn.role, peer, %status, "closing connection");
    }
    conn.terminate(status);
}

/// The read buffer and what it is charged. Bytes before `start` were taken
/// out already.
struct Input {
    buf: Vec<u8>,
    start: usize,
    charged: usize,
}

impl Input {
    /// The bytes read and not yet taken out.
    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Room for the next read: the partial frame moves to the front, and the
    /// buffer grows to `READ_CHUNK` (a recycled one if it must be replaced).
    fn make_room(&mut self) {
        let pending = self.buf.len() - self.start;
        if self.start > 0 {
            self.buf.copy_within(self.start.., 0);
            self.buf.truncate(pending);
            self.start = 0;
        }
        let want = pending + READ_CHUNK - pending.min(READ_CHUNK / 2);
        if self.buf.capacity() < want {
            let mut bigger = crate::recycle::take(want);
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger;
        }
    }
}

async fn read_frames(
    conn: &Arc<ConnShared>,
    rd: &mut BoxRead,
    invokes: &mut Invokes,
    input: &mut Input,
) -> Status {
    // One frame may carry a whole small message; beyond this, buffering it
    // would be unbounded, so a longer frame is a connection-scoped error.
    let max_frame = conn
        .opts
        .max_message_size
        .max(crate::wire::DEFAULT_SPLIT_SIZE);
    let clock = &conn.clock;
    let protocol_error = |e: String| Status::unavailable(format!("protocol error: {e}"));
    let gone = || {
        conn.closed_status()
            .unwrap_or_else(|| Status::unavailable("connection closed"))
    };
    let mut frames: Vec<(crate::wire::FrameHeader, usize, usize)> = Vec::new();
    loop {
        // The complete frames in the buffer, taken out in one piece.
        frames.clear();
        let (complete, pending) = complete_frames(input.pending(), max_frame, &mut frames);
        if complete > 0 {
            let batch = match take_batch(conn, input, complete).await {
                Some(batch) => batch,
                None => return gone(),
            };
            if let Err(e) = conn.route_batch(&frames, batch, invokes) {
                return protocol_error(e);
            }
            if !clock.got_frame.load(Ordering::Relaxed) {
                clock.got_frame.store(true, Ordering::Relaxed);
            }
            Clock::bump(&clock.frames);
        }
        match pending {
            Err(e) => return protocol_error(e),
            Ok(Some((header, at, len))) if len >= DEDICATED_FRAME => {
                // A large frame not yet fully here: read it into a buffer of
                // its own, charged while it is read; once routed, where it
                // went (a stream's queue, an assembler) holds the charge.
                if !conn.admit(len).await {
                    return gone();
                }
                clock.mid_frame.store(true, Ordering::Relaxed);
                input.start += at;
                let read = read_dedicated(&conn.metrics, rd, input, len).await;
                let routed = read.map(|payload| conn.route(Frame { header, payload }, invokes));
                conn.account.release(len);
                match routed {
                    Err(end) => return read_failure(end, false),
                    Ok(Err(e)) => return protocol_error(e),
                    Ok(Ok(())) => {}
                }
                clock.got_frame.store(true, Ordering::Relaxed);
                Clock::bump(&clock.frames);
                clock.mid_frame.store(false, Ordering::Relaxed);
                continue;
            }
            Ok(_) => {}
        }
        clock.mid_frame.store(!input.pending().is_empty(), Ordering::Relaxed);
        if input.buf.capacity() - input.buf.len() < 1024 {
            if input.charged < READ_CHUNK {
                conn.account.charge(READ_CHUNK - input.charged);
                input.charged = READ_CHUNK;
            }
            input.make_room();
        }
        match read_once(rd, &mut input.buf).await {
            Ok(n) => {
                conn.metrics.received(n);
                Clock::bump(&clock.reads);
            }
            Err(end) => return read_failure(end, input.pending().is_empty()),
        }
    }
}

/// The header of an incomplete frame, or why the buffer cannot be parsed.
type Pending = Result<Option<(crate::wire::FrameHeader, usize, usize)>, String>;

/// The length of the complete frames at the start of `buf` (their headers,
/// header lengths and payload lengths pushed to `frames`), and what follows.
fn complete_frames(
    buf: &[u8],
    max_frame: usize,
    frames: &mut Vec<(crate::wire::FrameHeader, usize, usize)>,
) -> (usize, Pending) {
    let mut at = 0;
    loop {
        match parse_header(&buf[at..], max_frame) {
            Ok(Some((header, hlen, len))) if buf.len() - at >= hlen + len => {
                frames.push((header, hlen, len));
                at += hlen + len;
            }
            Ok(parsed) => return (at, Ok(parsed)),
            Err(e) => return (at, Err(e.to_string())),
        }
    }
}

/// Takes the first `len` bytes of the read buffer as one batch, once the
/// budget admits them. A batch filling half the buffer or more takes the
/// buffer itself, without a copy: it stays charged as the whole buffer until
/// its last message is freed (`budget::charged`), and the reader charges a
/// new buffer. A smaller batch is copied out, so no message pins the larger
/// buffer; its admission only gates the reader, and what the frames become
/// (queued messages, assembled packets) is charged where it is kept.
async fn take_batch(conn: &ConnShared, input: &mut Input, len: usize) -> Option<bytes::Bytes> {
    let whole = len >= READ_CHUNK / 2 && input.charged >= READ_CHUNK;
    let charge = if whole { input.charged } else { len };
    if !conn.admit(charge).await {
        return None;
    }
    if whole {
        // The batch holds the buffer now, charged above; the buffer's own
        // charge goes, and the next read buffer is charged when reserved.
        conn.account.release(std::mem::take(&mut input.charged));
        // What follows the batch (a partial frame) moves to a recycled
        // buffer; the batch keeps this one, and gives it back to the pool
        // once its last message is dropped (a fresh buffer per batch would
        // page-fault on every 4 KiB).
        let end = input.start + len;
        let mut next = crate::recycle::take(READ_CHUNK.max(input.buf.len() - end));
        next.extend_from_slice(&input.buf[end..]);
        let mut full = std::mem::replace(&mut input.buf, next);
        full.truncate(end);
        let start = std::mem::take(&mut input.start);
        let bytes = crate::recycle::freeze(full).slice(start..);
        return Some(crate::budget::charged(bytes, charge, &conn.account));
    }
    let copy = bytes::Bytes::copy_from_slice(&input.pending()[..len]);
    input.start += len;
    if input.start == input.buf.len() {
        input.buf.clear();
        input.start = 0;
    }
    // Held only while routing; the destinations charge what they keep.
    conn.account.release(charge);
    Some(copy)
}

/// Reads the rest of a `len`-byte payload whose start is pending in `input`
/// into a buffer of its own (no copy of the bulk).
async fn read_dedicated(
    metrics: &ConnMetrics,
    rd: &mut BoxRead,
    input: &mut Input,
    len: usize,
) -> Result<bytes::Bytes, ReadEnd> {
    // A recycled buffer: a fresh one would page-fault on every 4 KiB.
    let mut payload = crate::recycle::take(len);
    payload.extend_from_slice(input.pending());
    input.buf.clear();
    input.start = 0;
    while payload.len() < len {
        let want = len - payload.len();
        let mut limited = bytes::BufMut::limit(&mut payload, want);
        let n = read_once(rd, &mut limited).await?;
        metrics.received(n);
    }
    Ok(crate::recycle::freeze(payload))
}

fn read_failure(end: ReadEnd, at_frame_boundary: bool) -> Status {
    match end {
        ReadEnd::Eof if at_frame_boundary => Status::unavailable("connection closed by the remote"),
        ReadEnd::Eof => {
            Status::unavailable("connection closed by the remote in the middle of a frame")
        }
        ReadEnd::Failed(e) => Status::unavailable(format!("read failed: {e}")),
    }
}
