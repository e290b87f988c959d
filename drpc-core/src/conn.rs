//! A connection's shared core, the same for clients and servers: the registry of
//! live streams, the reader task that routes frames to them by stream id (and,
//! on a server, assembles invokes of new streams), the shared writer, and
//! connection-scoped termination.

use crate::metadata::{self, Metadata};
use crate::packet::{Assembled, Assembler};
use crate::state::End;
use crate::status::Status;
use crate::stream::StreamShared;
use crate::wire::{encode_error, parse_header, put_packet, Frame, Kind};
use crate::writer::{BoxWrite, Lane, Writer};
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

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
    /// Largest InvokeMetadata payload or rpc name (default 64 KiB). A client
    /// refuses to send more (ResourceExhausted); a server receiving more
    /// closes the connection.
    pub max_metadata_size: usize,
    /// Concurrent streams per connection. A server refuses more with
    /// Unavailable; a client queues further calls until a stream finishes.
    pub max_concurrent_streams: usize,
    /// Per-stream flow control (DESIGN.md section 4). Off by default: it is not
    /// negotiated, and both peers must have it on.
    pub flow_control: Option<FlowControl>,
    /// Without flow control: received messages not yet read, summed over all
    /// streams, beyond which the reader stops reading (TCP back-pressure).
    /// While it is stopped, a peer's disconnect is only seen once the
    /// application reads and frees budget (the FIN waits behind unread data).
    pub connection_buffer_budget: usize,
    /// Bytes of data frames queued for writing beyond which senders wait.
    /// Control frames (Cancel, WindowUpdate) are never held back.
    pub writer_buffer_cap: usize,
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
        FlowControl { window: 2 << 20, grant_threshold: 512 << 10 }
    }
}

/// Default limit on invoke metadata (and rpc names).
pub const DEFAULT_MAX_METADATA_SIZE: usize = 64 << 10;

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
        }
    }
}

impl ConnOptions {
    /// These options with flow control on at its default window.
    pub fn with_flow_control(mut self) -> ConnOptions {
        self.flow_control = Some(FlowControl::default());
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
    fn accept(&self, stream: Arc<StreamShared>, rpc: String, metadata: Metadata);
}

pub(crate) struct ConnShared {
    pub(crate) role: Role,
    pub(crate) opts: ConnOptions,
    pub(crate) writer: Arc<Writer>,
    registry: Mutex<Registry>,
    closed: Notify,
    /// Received message bytes not yet read by the application.
    buffered: AtomicUsize,
    budget_freed: Notify,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// Per-stream timers (deadlines, cancel tokens); `close` waits for them.
    pub(crate) watchdogs: Arc<crate::tasks::TaskSet>,
    acceptor: Option<Arc<dyn Acceptor>>,
}

struct Registry {
    streams: HashMap<u64, Arc<StreamShared>>,
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
        let conn = Arc::new(ConnShared {
            opts: opts.clone(),
            role,
            writer: Writer::new(wr, opts.writer_buffer_cap),
            registry: Mutex::new(Registry { streams: HashMap::new(), next_stream_id: 1, closed: None }),
            closed: Notify::new(),
            buffered: AtomicUsize::new(0),
            budget_freed: Notify::new(),
            tasks: Mutex::new(Vec::new()),
            watchdogs: Arc::default(),
            acceptor,
        });
        let reader = tokio::spawn(read_loop(conn.clone(), rd));
        let writer = {
            let conn = conn.clone();
            tokio::spawn(async move {
                let status = conn.writer.clone().run().await;
                conn.terminate(status);
            })
        };
        conn.tasks.lock().unwrap().extend([reader, writer]);
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

    /// Follows a stream's queued bytes going from `before` to `after`.
    pub(crate) fn account_buffered(&self, before: usize, after: usize) {
        if after > before {
            self.buffered.fetch_add(after - before, Ordering::Relaxed);
        } else if before > after {
            self.buffered.fetch_sub(before - after, Ordering::Relaxed);
            self.budget_freed.notify_one();
        }
    }

    /// Waits until the writer's data queue is under its cap.
    pub(crate) async fn writer_room(&self) {
        if self.writer.queued() >= self.opts.writer_buffer_cap {
            self.writer.room().await;
        }
    }

    /// Without flow control, waits while the buffered bytes exceed the budget.
    async fn within_budget(&self) {
        if self.opts.flow_control.is_some() {
            return; // windows bound every stream; the reader never stops
        }
        while self.buffered() > self.opts.connection_buffer_budget && self.closed_status().is_none() {
            self.budget_freed.notified().await;
        }
    }

    fn lookup(&self, id: u64) -> Option<Arc<StreamShared>> {
        self.registry.lock().unwrap().streams.get(&id).cloned()
    }

    /// Removes a finished stream; later frames for its id are dropped.
    pub(crate) fn forget(&self, id: u64) {
        self.registry.lock().unwrap().streams.remove(&id);
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
            self.writer.write(Lane::Data, |buf| open(buf, id, state)).map(|pos| inner.last_pos = pos)
        });
        drop(reg);
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
            reg.streams.drain().map(|(_, s)| s).collect()
        };
        tracing::debug!(role = ?self.role, %status, "connection terminated");
        self.writer.close(status.clone());
        let failure = self.stream_failure(status);
        for s in streams {
            s.finish(End::Connection(failure.clone()));
        }
        self.closed.notify_waiters();
        self.budget_freed.notify_one();
        for task in self.tasks.lock().unwrap().iter() {
            task.abort();
        }
    }

    /// Resolves once the connection has terminated.
    pub(crate) async fn closed(&self) {
        loop {
            let notified = self.closed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed_status().is_some() {
                return;
            }
            notified.await;
        }
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

    /// Routes one frame. `Err` is a connection-scoped protocol error.
    fn route(self: &Arc<Self>, frame: Frame, invokes: &mut HashMap<u64, PendingInvoke>) -> Result<(), String> {
        let h = frame.header;
        if !h.kind.is_known() {
            return if h.control { Ok(()) } else { Err(format!("unknown frame kind {}", h.kind.0)) };
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
            return stream.on_frame(frame);
        }
        if self.role == Role::Client {
            return Ok(()); // late frame of a finished stream
        }
        match h.kind {
            Kind::INVOKE | Kind::INVOKE_METADATA => self.assemble_invoke(frame, invokes),
            Kind::CANCEL | Kind::CLOSE | Kind::ERROR => {
                invokes.remove(&h.stream_id); // the peer gave up before invoking
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Server: collects InvokeMetadata and Invoke of a new stream id; a
    /// complete Invoke starts the stream.
    fn assemble_invoke(self: &Arc<Self>, frame: Frame, invokes: &mut HashMap<u64, PendingInvoke>) -> Result<(), String> {
        let sid = frame.header.stream_id;
        if !invokes.contains_key(&sid) && invokes.len() >= self.opts.max_pending_invokes {
            return Err(format!("more than {} incomplete invokes", self.opts.max_pending_invokes));
        }
        let pending = invokes.entry(sid).or_insert_with(|| PendingInvoke {
            assembler: Assembler::new(0, self.opts.max_metadata_size),
            metadata: None,
        });
        let pkt = match pending.assembler.push(frame).map_err(|e| e.to_string())? {
            Assembled::Partial => return Ok(()),
            Assembled::TooLarge { kind, .. } => {
                return Err(format!("{kind} larger than the maximum of {} bytes", self.opts.max_metadata_size))
            }
            Assembled::Packet(pkt) => pkt,
        };
        if pkt.kind == Kind::INVOKE_METADATA {
            pending.metadata = Some(metadata::decode(&pkt.data).map_err(|e| e.to_string())?);
            return Ok(());
        }
        let pending = invokes.remove(&sid).expect("entry exists");
        let rpc = String::from_utf8(pkt.data.to_vec()).map_err(|_| "rpc name is not UTF-8".to_string())?;
        let acceptor = self.acceptor.as_ref().expect("servers have an acceptor");
        let refuse = |code: crate::status::Code, message: &str| {
            let payload = encode_error(code.as_u64(), message);
            let _ = self.writer.write(Lane::Data, |buf| put_packet(buf, sid, 1, Kind::ERROR, false, &payload, usize::MAX));
        };
        if !acceptor.accepting() {
            refuse(crate::status::Code::Unavailable, "server is shutting down");
            return Ok(());
        }
        let metadata = pending.metadata.unwrap_or_default();
        let codec = match crate::compress::Compression::from_metadata(&metadata) {
            Ok(codec) => codec,
            Err(status) => {
                refuse(status.code(), status.message());
                return Ok(());
            }
        };
        let stream = StreamShared::new(sid, self.clone(), pkt.message_id, None, codec);
        {
            let mut reg = self.registry.lock().unwrap();
            if reg.closed.is_some() {
                return Ok(());
            }
            let limit = self.opts.max_concurrent_streams;
            if reg.streams.len() >= limit {
                drop(reg);
                refuse(crate::status::Code::Unavailable, &format!("too many concurrent streams: the limit is {limit} per connection"));
                return Ok(());
            }
            reg.streams.insert(sid, stream.clone());
        }
        acceptor.accept(stream, rpc, metadata);
        Ok(())
    }
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

struct PendingInvoke {
    assembler: Assembler,
    metadata: Option<Metadata>,
}

const READ_CHUNK: usize = 64 * 1024;

/// The reader task: the single authority on transport health.
async fn read_loop(conn: Arc<ConnShared>, mut rd: BoxRead) {
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut invokes = HashMap::new();
    // One frame may carry a whole small message; beyond this, buffering it
    // would be unbounded, so a longer frame is a connection-scoped error.
    let max_frame = conn.opts.max_message_size.max(crate::wire::DEFAULT_SPLIT_SIZE);
    let status = 'read: loop {
        loop {
            let (header, at, len) = match parse_header(&buf, max_frame) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => break,
                Err(e) => break 'read Status::unavailable(format!("protocol error: {e}")),
            };
            if buf.len() < at + len {
                buf.reserve(at + len - buf.len());
                break;
            }
            buf.advance(at);
            let payload = buf.split_to(len).freeze();
            if let Err(e) = conn.route(Frame { header, payload }, &mut invokes) {
                break 'read Status::unavailable(format!("protocol error: {e}"));
            }
            conn.within_budget().await;
        }
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(READ_CHUNK);
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) if buf.is_empty() => break Status::unavailable("connection closed by the remote"),
            Ok(0) => break Status::unavailable("connection closed by the remote in the middle of a frame"),
            Ok(_) => {}
            Err(e) => break Status::unavailable(format!("read failed: {e}")),
        }
    };
    if status.message().starts_with("protocol error") {
        tracing::warn!(role = ?conn.role, %status, "closing connection");
    }
    conn.terminate(status);
}
