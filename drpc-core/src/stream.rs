//! One stream as the async layer sees it: the state machine (`state`) and the
//! packet assembler behind one lock, the wakers of tasks waiting on it, and the
//! user-facing [`Stream`] and [`CallContext`] handles.

use crate::compress::Compression;
use crate::conn::{ConnShared, Role};
use crate::metadata::Metadata;
use crate::packet::{Assembled, Assembler};
use crate::state::{End, Flow, Incoming, Recv, StreamState};
use crate::status::Status;
use crate::wire::{encode_error, put_frame, put_frame_header, put_packet, put_varint, Frame, FrameHeader, Kind};
use crate::writer::{Lane, Out};
use bytes::Bytes;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use tokio::sync::OwnedSemaphorePermit;

pub(crate) struct StreamShared {
    pub(crate) id: u64,
    pub(crate) conn: Arc<ConnShared>,
    /// Message compression negotiated in the invoke metadata.
    pub(crate) codec: Option<Compression>,
    inner: Mutex<Inner>,
    /// Cancelled once the stream has finished (for any reason).
    ended: tokio_util::sync::CancellationToken,
    /// A client stream's span and observers, told when it ends; unset on the
    /// plain path (no interceptor, no tracing subscriber).
    pub(crate) on_end: std::sync::OnceLock<Box<ClientEnd>>,
}

/// What a client stream reports when it ends.
pub(crate) struct ClientEnd {
    pub(crate) rpc: Arc<str>,
    pub(crate) span: tracing::Span,
    pub(crate) started: tokio::time::Instant,
    pub(crate) observers: Option<crate::interceptor::Observers>,
    /// Set by the first report; later ones do nothing.
    pub(crate) reported: std::sync::atomic::AtomicBool,
}

impl ClientEnd {
    pub(crate) fn report(&self, status: Option<Status>, stats: crate::interceptor::StreamStats) {
        if self.reported.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return;
        }
        let end = crate::interceptor::CallEnd {
            rpc: self.rpc.clone(),
            code: status.as_ref().map_or(crate::status::Code::Ok, Status::code),
            status,
            duration: self.started.elapsed(),
            stats,
        };
        record_end(&self.span, &end);
        for o in self.observers.iter().flat_map(|o| o.iter()) {
            o.on_end(&end);
        }
    }
}

/// Fills a call span's outcome fields.
pub(crate) fn record_end(span: &tracing::Span, end: &crate::interceptor::CallEnd) {
    if span.is_disabled() {
        return;
    }
    span.record("code", end.code as u32);
    span.record("duration_us", end.duration.as_micros() as u64);
    span.record("messages_sent", end.stats.messages_sent);
    span.record("messages_received", end.stats.messages_received);
    span.record("bytes_sent", end.stats.bytes_sent);
    span.record("bytes_received", end.stats.bytes_received);
    if let Some(status) = &end.status {
        span.record("error", tracing::field::display(status));
    }
}

pub(crate) struct Inner {
    pub(crate) state: StreamState,
    assembler: Assembler,
    recv_wakers: Vec<Waker>,
    send_wakers: Vec<Waker>,
    /// Writer data position after this stream's latest data frame.
    pub(crate) last_pos: u64,
    retired: bool,
    /// The last thing done on this stream was sending a message.
    sent_last: bool,
    /// The connection's stream slot (client side), freed on finish.
    permit: Option<OwnedSemaphorePermit>,
    /// The code of the Error frame this side sent, if it sent one (a stream
    /// can end `Done` after answering with an error).
    sent_error: Option<crate::status::Code>,
    /// Messages and payload bytes both ways.
    stats: crate::interceptor::StreamStats,
}

fn register(wakers: &mut Vec<Waker>, waker: &Waker) {
    if !wakers.iter().any(|w| w.will_wake(waker)) {
        wakers.push(waker.clone());
    }
}

fn wake_all(wakers: Vec<Waker>) {
    for w in wakers {
        w.wake();
    }
}

impl StreamShared {
    pub(crate) fn new(
        id: u64,
        conn: Arc<ConnShared>,
        recv_after: u64,
        permit: Option<OwnedSemaphorePermit>,
        codec: Option<Compression>,
    ) -> Arc<StreamShared> {
        let max = conn.opts.max_message_size;
        conn.account.charge(crate::budget::STREAM_OVERHEAD);
        conn.metrics.stream_opened();
        let mut state = StreamState::new(1);
        if let Some(fc) = &conn.opts.flow_control {
            state = state.with_flow(Flow::new(fc.window, fc.grant_threshold, max as u64));
        }
        Arc::new(StreamShared {
            id,
            conn,
            codec,
            inner: Mutex::new(Inner {
                state,
                assembler: Assembler::new(recv_after, max),
                recv_wakers: Vec::new(),
                send_wakers: Vec::new(),
                last_pos: 0,
                retired: false,
                sent_last: false,
                permit,
                sent_error: None,
                stats: Default::default(),
            }),
            ended: Default::default(),
            on_end: std::sync::OnceLock::new(),
        })
    }

    /// Runs `f` under the stream lock, keeps the connection's count of
    /// buffered bytes in step, and if the stream finished in `f`, takes it out
    /// of the registry and wakes everyone waiting on it.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Inner, &mut Writing) -> R) -> R {
        let mut wake = Vec::new();
        let flusher;
        let (result, retire, outcome, stats, permit, (before, held_before), (after, held_after)) = {
            let mut inner = self.inner.lock().unwrap();
            let before = inner.held();
            let mut writing = Writing {
                stream: self,
                flusher: false,
                defer: false,
            };
            let result = f(&mut inner, &mut writing);
            flusher = writing.flusher.then_some(writing.defer);
            let after = inner.held();
            let retire = inner.state.is_finished() && !inner.retired;
            let mut permit = None;
            let mut outcome = None;
            let mut stats = None;
            if retire {
                outcome = inner.outcome();
                stats = Some(inner.stats);
                inner.retired = true;
                permit = inner.permit.take();
                wake = std::mem::take(&mut inner.recv_wakers);
                wake.append(&mut inner.send_wakers);
            }
            (result, retire, outcome, stats, permit, before, after)
        };
        // Frames were queued under the lock; the syscall happens outside it.
        // A failed write terminates the connection through the writer task.
        match flusher {
            Some(false) => {
                let _ = self.conn.writer.flush_now();
            }
            Some(true) => self.conn.writer.defer_flush(),
            None => {}
        }
        self.conn.account_buffered(before, after);
        self.conn.account.adjust(held_before, held_after);
        drop(permit);
        if retire {
            self.conn.metrics.stream_closed(outcome);
            if let (Some(end), Some(stats)) = (self.on_end.get(), stats) {
                end.report(self.failure_or_sent(outcome), stats);
            }
            wake_all(wake);
            self.conn.forget(self.id);
            self.ended.cancel();
        }
        result
    }

    /// Feeds frames read for this stream (consecutive in the read buffer)
    /// under one lock, and wakes its waiters once: a batch of small messages
    /// costs one lock and one wake-up, not one per message. `Err` is a
    /// connection-scoped protocol error.
    /// `next` gives the frames; it is not called again once the stream has
    /// finished (what follows is routed as for a finished stream).
    pub(crate) fn on_frames(&self, mut next: impl FnMut() -> Option<Frame>) -> Result<(), String> {
        let mut wake = Vec::new();
        let result = self.update(|inner, w| {
            while let Some(frame) = next() {
                if Self::take_frame(inner, w, frame)? {
                    // Takes the registered wakers' Vec itself when it can (no
                    // allocation on the common path: one waiting receiver).
                    if wake.is_empty() {
                        std::mem::swap(&mut wake, &mut inner.recv_wakers);
                    } else {
                        wake.append(&mut inner.recv_wakers);
                    }
                    wake.append(&mut inner.send_wakers);
                }
                if inner.state.is_finished() {
                    break;
                }
            }
            Ok(())
        });
        wake_all(wake);
        result
    }

    /// One frame under the lock; whether waiters must be woken.
    fn take_frame(inner: &mut Inner, w: &mut Writing, frame: Frame) -> Result<bool, String> {
        let pkt = match inner.assembler.push(frame).map_err(|e| e.to_string())? {
            Assembled::Partial => return Ok(false),
            Assembled::TooLarge { kind, .. } if kind == Kind::MESSAGE => {
                let max = w.stream.conn.opts.max_message_size;
                w.fail(
                    inner,
                    Status::resource_exhausted(format!(
                        "message larger than the maximum of {max} bytes"
                    )),
                );
                return Ok(false);
            }
            Assembled::TooLarge { kind, .. } => {
                return Err(format!("{kind} packet larger than the maximum message size"))
            }
            Assembled::Packet(pkt) => pkt,
        };
        let message_len = (pkt.kind == Kind::MESSAGE).then_some(pkt.data.len());
        let incoming = inner.state.on_packet(pkt);
        if let (Incoming::Queued, Some(len)) = (&incoming, message_len) {
            // Counted on arrival: a stream can end with messages unread.
            inner.stats.messages_received += 1;
            inner.stats.bytes_received += len as u64;
        }
        match incoming {
            Incoming::Ignored => Ok(false),
            Incoming::Queued | Incoming::RecvClosed | Incoming::Ended => Ok(true),
            Incoming::Overrun => {
                w.fail(
                    inner,
                    Status::resource_exhausted("the remote sent more than its flow-control window"),
                );
                Ok(false)
            }
            Incoming::ProtocolError(e) => Err(e),
        }
    }

    /// Credit from a WindowUpdate: wakes senders blocked on it.
    pub(crate) fn on_window_update(&self, delta: u64) {
        let wake = {
            let mut inner = self.inner.lock().unwrap();
            if inner.state.on_window_update(delta) {
                std::mem::take(&mut inner.send_wakers)
            } else {
                Vec::new()
            }
        };
        wake_all(wake);
    }

    pub(crate) async fn recv(&self) -> Result<Option<Bytes>, Status> {
        let received = self.recv_wire().await?;
        match (received, self.codec) {
            (Some(data), Some(codec)) => {
                match codec.decompress(&data, self.conn.opts.max_message_size) {
                    Ok(plain) => Ok(Some(Bytes::from(plain))),
                    Err(status) => {
                        self.update(|inner, w| w.fail(inner, status.clone()));
                        Err(status)
                    }
                }
            }
            (received, _) => Ok(received),
        }
    }

    /// The next message as it came off the wire (still compressed).
    async fn recv_wire(&self) -> Result<Option<Bytes>, Status> {
        let mut blocked = false;
        poll_fn(|cx| {
            self.update(|inner, w| {
                let result = match inner.state.recv() {
                    Recv::Message(m) => {
                        inner.sent_last = false;
                        Poll::Ready(Ok(Some(m)))
                    }
                    Recv::End => Poll::Ready(Ok(None)),
                    Recv::Failed(s) => Poll::Ready(Err(s)),
                    Recv::Empty => {
                        if !blocked {
                            blocked = true;
                            w.stream.conn.metrics.recv_blocked();
                        }
                        register(&mut inner.recv_wakers, cx.waker());
                        Poll::Pending
                    }
                };
                if let Some(grant) = inner.state.take_grant() {
                    w.window_update(inner, grant);
                }
                result
            })
        })
        .await
    }

    fn check_size(&self, len: usize) -> Result<(), Status> {
        let max = self.conn.opts.max_message_size;
        if len > max {
            return Err(Status::resource_exhausted(format!(
                "message of {len} bytes exceeds the maximum of {max} bytes"
            )));
        }
        Ok(())
    }

    /// Waits, if it must, until a message may go (see `ready_to_send`). The
    /// wait is boxed: it is rare, and every future that sends (a handler
    /// holding a stream, a task per open stream) would otherwise carry its
    /// few hundred bytes.
    async fn wait_to_send(&self, len: usize) -> Result<(), Status> {
        let ready = self.conn.writer.queued() < self.conn.opts.writer_buffer_cap
            && self.conn.account.budget_has_room(len)
            && {
                let inner = self.inner.lock().unwrap();
                inner.state.end().is_some() || inner.state.has_send_credit()
            };
        if ready {
            return Ok(());
        }
        Box::pin(self.ready_to_send(len)).await
    }

    /// Waits until a message may go: room in the writer and flow-control
    /// credit. Ends early (with the reason) if the stream ends.
    async fn ready_to_send(&self, len: usize) -> Result<(), Status> {
        if self.conn.writer.queued() >= self.conn.opts.writer_buffer_cap {
            self.conn.metrics.send_blocked();
            tokio::select! {
                _ = self.conn.writer.room() => {}
                _ = self.ended() => {}
            }
        }
        if !self.conn.account.budget_has_room(len) {
            tokio::select! {
                _ = self.conn.account.budget_room(len) => {}
                _ = self.ended() => {}
            }
        }
        poll_fn(|cx| {
            let mut inner = self.inner.lock().unwrap();
            if inner.state.end().is_some() || inner.state.has_send_credit() {
                return Poll::Ready(());
            }
            register(&mut inner.send_wakers, cx.waker());
            Poll::Pending
        })
        .await;
        Ok(())
    }

    /// The payload to put on the wire for `data`.
    fn encode<'a>(&self, data: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>, Status> {
        match self.codec {
            None => Ok(std::borrow::Cow::Borrowed(data)),
            Some(codec) => codec.compress(data).map(std::borrow::Cow::Owned),
        }
    }

    pub(crate) async fn send(&self, data: &[u8]) -> Result<(), Status> {
        if let Err(status) = self.check_size(data.len()) {
            self.cancel(status.clone());
            return Err(status);
        }
        let data = &*self.encode(data)?;
        self.wait_to_send(data.len()).await?;
        self.update(|inner, w| {
            let mid = inner.state.begin_send()?;
            inner.state.debit(data.len());
            w.streaming(inner);
            inner.stats.messages_sent += 1;
            inner.stats.bytes_sent += data.len() as u64;
            w.packet(inner, mid, Kind::MESSAGE, data)
        })
    }

    /// `send` of an owned buffer: a large one goes to the socket without
    /// being copied.
    pub(crate) async fn send_bytes(&self, data: Bytes) -> Result<(), Status> {
        if let Err(status) = self.check_size(data.len()) {
            self.cancel(status.clone());
            return Err(status);
        }
        let data = self.encode_owned(data)?;
        self.wait_to_send(data.len()).await?;
        self.update(|inner, w| {
            let mid = inner.state.begin_send()?;
            inner.state.debit(data.len());
            w.streaming(inner);
            w.packet_bytes(inner, mid, Kind::MESSAGE, data)
        })
    }

    fn encode_owned(&self, data: Bytes) -> Result<Bytes, Status> {
        match self.codec {
            None => Ok(data),
            Some(codec) => codec.compress(&data).map(Bytes::from),
        }
    }

    /// Sends a final message followed by CloseSend in one write.
    pub(crate) async fn send_last(&self, data: Bytes) -> Result<(), Status> {
        self.check_size(data.len())?;
        let data = self.encode_owned(data)?;
        self.wait_to_send(data.len()).await?;
        self.update(|inner, w| {
            let mid = inner.state.begin_send()?;
            inner.state.debit(data.len());
            inner.stats.messages_sent += 1;
            inner.stats.bytes_sent += data.len() as u64;
            let close = inner.state.close_send().expect("send side was open");
            let (sid, split) = (w.stream.id, w.stream.conn.opts.split_size);
            w.write_data(inner, |out| {
                put_packet_bytes(out, sid, mid, Kind::MESSAGE, data, split);
                put_packet(out.buf(), sid, close, Kind::CLOSE_SEND, false, &[], split);
            })
        })
    }

    pub(crate) fn close_send(&self) -> Result<(), Status> {
        self.update(|inner, w| match inner.state.close_send() {
            Some(mid) => w.packet(inner, mid, Kind::CLOSE_SEND, &[]),
            None => Ok(()),
        })
    }

    /// Ends the stream here and tells the remote with a Cancel frame.
    pub(crate) fn cancel(&self, status: Status) {
        self.update(|inner, w| {
            if let Some(mid) = inner.state.cancel(status) {
                let sid = w.stream.id;
                let lane = if w.stream.conn.opts.sequential {
                    Lane::Data // a sequential peer rejects frames out of id order
                } else {
                    Lane::Control {
                        after: inner.last_pos,
                    }
                };
                let _ = w.write(inner, lane, |buf| {
                    put_packet(buf, sid, mid, Kind::CANCEL, true, &[], 1)
                });
            }
        })
    }

    /// Fails the stream on both sides: an Error frame carrying `status` to
    /// the remote, `status` to local callers (a server call whose deadline
    /// passed). Does nothing once the stream has finished.
    pub(crate) fn fail(&self, status: Status) {
        self.update(|inner, w| {
            if !inner.state.is_finished() {
                w.error(inner, &status);
                inner.state.finish(End::Local(status));
            }
        })
    }

    /// Ends the stream by sending an Error frame carrying `status`.
    pub(crate) fn send_error(&self, status: &Status) {
        self.update(|inner, w| {
            if !inner.state.is_finished() {
                w.error(inner, status);
                inner.state.finish(End::Done);
            }
        })
    }

    /// Refuses a stream the reader just started (an unknown rpc): an Error
    /// frame the reader itself produced.
    pub(crate) fn refuse(&self, status: &Status) {
        self.send_error(status);
        let position = self.inner.lock().unwrap().last_pos;
        self.conn.reader_wrote(position);
    }

    /// Ends the stream without telling the remote.
    pub(crate) fn finish(&self, end: End) {
        self.update(|inner, _| {
            inner.state.finish(end);
        })
    }

    /// Counts a message written without `send` (a unary request).
    pub(crate) fn count_sent(&self, len: usize) {
        let mut inner = self.inner.lock().unwrap();
        inner.stats.messages_sent += 1;
        inner.stats.bytes_sent += len as u64;
    }

    /// Messages and bytes so far.
    pub(crate) fn stats(&self) -> crate::interceptor::StreamStats {
        self.inner.lock().unwrap().stats
    }

    /// The error a finished stream ended with: its failure, or else the
    /// error this side sent (`code`, from the metrics' outcome).
    fn failure_or_sent(&self, code: Option<crate::status::Code>) -> Option<Status> {
        self.failure().or_else(|| {
            code.filter(|c| *c != crate::status::Code::Ok)
                .map(|c| Status::new(c, "sent as an error"))
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.inner.lock().unwrap().state.is_finished()
    }

    /// The end reason, once the stream ended for any reason but success.
    pub(crate) fn failure(&self) -> Option<Status> {
        failure_of(self.inner.lock().unwrap().state.end())
    }

    /// A handler's successful end, in one step: CloseSend unless the stream
    /// already ended, then finished. Returns how it had ended, if it had
    /// failed before (cancelled, deadline passed).
    pub(crate) fn finish_ok(&self) -> Option<Status> {
        self.update(|inner, w| {
            let failure = failure_of(inner.state.end());
            if let Some(mid) = inner.state.close_send() {
                let _ = w.packet(inner, mid, Kind::CLOSE_SEND, &[]);
            }
            inner.state.finish(End::Done);
            failure
        })
    }

    /// Send credit left, when flow control is on (for tests and diagnostics).
    pub(crate) fn send_credit(&self) -> Option<i64> {
        self.inner.lock().unwrap().state.send_credit()
    }

    /// Resolves when the stream has finished (for any reason).
    pub(crate) async fn ended(&self) {
        self.ended.cancelled().await
    }
}

fn failure_of(end: Option<&End>) -> Option<Status> {
    match end {
        Some(End::Local(s)) | Some(End::Remote(s)) | Some(End::Connection(s)) => Some(s.clone()),
        Some(End::RemoteClosed) => Some(Status::canceled("the remote closed the stream")),
        _ => None,
    }
}

impl Inner {
    /// How the finished stream ended, for the metrics: `None` or OK for a
    /// success, else the failure's code.
    fn outcome(&self) -> Option<crate::status::Code> {
        if self.sent_error.is_some() {
            return self.sent_error;
        }
        match self.state.end()? {
            End::Done | End::RemoteClosed => None,
            End::Local(s) | End::Remote(s) | End::Connection(s) => Some(s.code()),
        }
    }

    /// (unread message bytes, all memory held: those plus a packet being
    /// assembled). Messages sliced from a large read batch are also charged
    /// by the batch (`budget::charged`) until it is freed: counted twice
    /// while unread, never less than held.
    fn held(&self) -> (usize, usize) {
        let queued = self.state.queued_bytes();
        (queued, queued + self.assembler.held())
    }
}

impl Drop for StreamShared {
    fn drop(&mut self) {
        let (queued, held) = self.inner.get_mut().map(|i| i.held()).unwrap_or((0, 0));
        self.conn.account_buffered(queued, 0);
        self.conn
            .account
            .release(held + crate::budget::STREAM_OVERHEAD);
    }
}

/// Writes done on behalf of one stream while its lock is held, so the frames
/// of a stream reach the writer in message-id order. They are only queued
/// under the lock; `update` writes them to the transport after releasing it.
pub(crate) struct Writing<'a> {
    stream: &'a StreamShared,
    /// This update took the writer's flusher role and must flush.
    flusher: bool,
    /// ... through the writer task rather than on the spot (see `streaming`).
    defer: bool,
}

impl Writing<'_> {
    fn write(
        &mut self,
        inner: &mut Inner,
        lane: Lane,
        encode: impl FnOnce(&mut bytes::BytesMut),
    ) -> Result<(), Status> {
        let appended = self.stream.conn.writer.append(lane, encode);
        self.appended(inner, lane, appended)
    }

    /// `write` for data frames with payloads queued by reference.
    fn write_data(&mut self, inner: &mut Inner, encode: impl FnOnce(&mut Out<'_>)) -> Result<(), Status> {
        let appended = self.stream.conn.writer.append_data(encode);
        self.appended(inner, Lane::Data, appended)
    }

    fn appended(&mut self, inner: &mut Inner, lane: Lane, appended: Result<(u64, bool), Status>) -> Result<(), Status> {
        match appended {
            Ok((position, flusher)) => {
                self.flusher |= flusher;
                if lane == Lane::Data {
                    inner.last_pos = position;
                }
                Ok(())
            }
            Err(status) => {
                let status = self.stream.conn.stream_failure(status);
                tracing::debug!(stream = self.stream.id, %status, "write failed");
                inner.state.finish(End::Connection(status.clone()));
                Err(status)
            }
        }
    }

    fn packet(
        &mut self,
        inner: &mut Inner,
        mid: u64,
        kind: Kind,
        data: &[u8],
    ) -> Result<(), Status> {
        let (sid, split) = (self.stream.id, self.stream.conn.opts.split_size);
        self.write(inner, Lane::Data, |buf| {
            put_packet(buf, sid, mid, kind, false, data, split)
        })
    }

    /// A message sent right after another one on this stream (no message
    /// received in between) is written by the writer task, which runs once
    /// the sender yields: a sender in a loop gets its messages written in
    /// batches instead of one syscall each. The first message after a
    /// receive (request/response, ping-pong) is written at once.
    fn streaming(&mut self, inner: &mut Inner) {
        self.defer = inner.sent_last;
        inner.sent_last = true;
    }

    /// A packet whose payload is queued without a copy when it is large.
    fn packet_bytes(&mut self, inner: &mut Inner, mid: u64, kind: Kind, data: Bytes) -> Result<(), Status> {
        let (sid, split) = (self.stream.id, self.stream.conn.opts.split_size);
        self.write_data(inner, |out| put_packet_bytes(out, sid, mid, kind, data, split))
    }

    fn error(&mut self, inner: &mut Inner, status: &Status) {
        inner.sent_error.get_or_insert(status.code());
        let mid = inner.state.take_message_id();
        let payload = encode_error(status.wire_code(), status.message());
        let _ = self.packet(inner, mid, Kind::ERROR, &payload);
    }

    /// Fails the stream on both sides: an Error frame to the remote, `status`
    /// to local callers.
    fn fail(&mut self, inner: &mut Inner, status: Status) {
        if !inner.state.is_finished() {
            self.error(inner, &status);
            inner.state.finish(End::Local(status));
            self.stream.conn.reader_wrote(inner.last_pos);
        }
    }

    fn window_update(&mut self, inner: &mut Inner, delta: u64) {
        let sid = self.stream.id;
        let mut payload = Vec::with_capacity(10);
        put_varint(&mut payload, delta);
        let _ = self.write(inner, Lane::Control { after: 0 }, |buf| {
            put_frame(
                buf,
                &FrameHeader {
                    stream_id: sid,
                    message_id: 0,
                    kind: Kind::WINDOW_UPDATE,
                    control: true,
                    done: true,
                },
                &payload,
            )
        });
    }
}

/// `put_packet` for an owned payload: the frame headers are copied, the
/// payload's pieces are queued by reference when large.
fn put_packet_bytes(out: &mut Out<'_>, stream_id: u64, message_id: u64, kind: Kind, payload: Bytes, split: usize) {
    let split = split.max(1);
    let mut at = 0;
    loop {
        let n = (payload.len() - at).min(split);
        let done = at + n == payload.len();
        let header = FrameHeader { stream_id, message_id, kind, control: false, done };
        put_frame_header(out.buf(), &header, n);
        out.put_bytes(payload.slice(at..at + n));
        if done {
            return;
        }
        at += n;
    }
}

/// What a server handler or a client sees of its call besides the messages:
/// the rpc name, the invoke metadata and whether the call was cancelled.
#[derive(Clone)]
pub struct CallContext {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) rpc: Arc<str>,
    pub(crate) metadata: Arc<Metadata>,
    pub(crate) peer: Option<Arc<crate::peer::Peer>>,
    pub(crate) deadline: Option<tokio::time::Instant>,
    pub(crate) trace: Option<Arc<crate::trace::TraceContext>>,
    /// What interceptors installed to see the messages; `None` on the
    /// plain path.
    pub(crate) observers: Option<crate::interceptor::Observers>,
}

/// `data` as the observers leave it: the same buffer (or a slice of it)
/// unless one of them replaced it.
fn observed(observers: &[Arc<dyn crate::interceptor::MessageObserver>], data: Bytes) -> Result<Bytes, Status> {
    Ok(match crate::interceptor::observe_send(observers, std::borrow::Cow::Borrowed(&data[..]))? {
        std::borrow::Cow::Borrowed(kept) => data.slice_ref(kept),
        std::borrow::Cow::Owned(changed) => Bytes::from(changed),
    })
}

impl CallContext {
    /// The next message, through the observers.
    pub(crate) async fn recv(&self) -> Result<Option<Bytes>, Status> {
        let message = self.shared.recv().await?;
        match (&self.observers, message) {
            (Some(observers), Some(message)) => {
                match crate::interceptor::observe_recv(observers, message) {
                    Ok(message) => Ok(Some(message)),
                    Err(status) => {
                        self.shared.fail(status.clone());
                        Err(status)
                    }
                }
            }
            (_, message) => Ok(message),
        }
    }

    /// Sends one message, through the observers.
    pub(crate) async fn send(&self, data: &[u8]) -> Result<(), Status> {
        match &self.observers {
            None => self.shared.send(data).await,
            Some(observers) => {
                let data = crate::interceptor::observe_send(observers, data.into())?;
                self.shared.send(&data).await
            }
        }
    }

    /// `send` of an owned buffer (queued without a copy when large).
    pub(crate) async fn send_bytes(&self, data: Bytes) -> Result<(), Status> {
        match &self.observers {
            None => self.shared.send_bytes(data).await,
            Some(observers) => {
                let data = observed(observers, data)?;
                self.shared.send_bytes(data).await
            }
        }
    }

    /// Sends the last message and CloseSend, through the observers.
    pub(crate) async fn send_last(&self, data: Bytes) -> Result<(), Status> {
        match &self.observers {
            None => self.shared.send_last(data).await,
            Some(observers) => {
                let data = observed(observers, data)?;
                self.shared.send_last(data).await
            }
        }
    }

    /// Messages and payload bytes the call carried so far.
    pub fn stats(&self) -> crate::interceptor::StreamStats {
        self.shared.stats()
    }

    /// When the call must be done: on a server, the deadline the client
    /// sent (`drpc-timeout`, capped by `ServerOptions::max_deadline`), at
    /// which the call is cancelled and the client answered
    /// DeadlineExceeded; on a client, the call's own deadline.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    /// Time left until [`CallContext::deadline`] (zero once it passed).
    pub fn time_remaining(&self) -> Option<std::time::Duration> {
        self.deadline
            .map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// The call's span context: on a server, a child of the `traceparent`
    /// the client sent (none if it sent none); on a client, what was sent.
    pub fn trace(&self) -> Option<&crate::trace::TraceContext> {
        self.trace.as_deref()
    }

    /// What calls made on behalf of this one inherit (its deadline and
    /// trace); pass it to [`crate::context::scope`] around a spawned task.
    pub fn inherited(&self) -> crate::context::Inherited {
        crate::context::Inherited {
            deadline: self.deadline,
            trace: self.trace.as_deref().cloned(),
        }
    }

    pub fn rpc(&self) -> &str {
        &self.rpc
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn stream_id(&self) -> u64 {
        self.shared.id
    }

    /// An id of the call's connection, unique in this process: calls with
    /// the same id share a connection (for per-connection fairness and logs).
    pub fn connection_id(&self) -> u64 {
        self.shared.conn.id
    }

    /// Whether the call ended other than by completing: cancelled by either
    /// side, failed, or its connection lost.
    pub fn is_cancelled(&self) -> bool {
        self.shared.failure().is_some()
    }

    /// Why the call ended, if it ended other than by completing.
    pub fn failure(&self) -> Option<Status> {
        self.shared.failure()
    }

    /// Resolves when the call is cancelled (see `is_cancelled`); never resolves
    /// for a call that completes normally.
    pub async fn cancelled(&self) {
        loop {
            if self.is_cancelled() {
                return;
            }
            self.shared.ended().await;
            if self.is_cancelled() {
                return;
            }
            std::future::pending::<()>().await;
        }
    }
}

/// A bidirectional stream of messages: a client's streaming call, or the
/// stream a server's streaming handler works on. Methods take `&self`, so one
/// task may send while another receives.
///
/// Dropping a client stream that has not finished cancels it (a Cancel frame
/// tells the server).
pub struct Stream {
    pub(crate) ctx: CallContext,
    /// Client streams keep their connection open (this holds it) and cancel
    /// on drop.
    pub(crate) keep_alive: Option<Arc<dyn std::any::Any + Send + Sync>>,
    pub(crate) watchdog: Option<tokio::task::AbortHandle>,
}

impl Stream {
    pub fn context(&self) -> &CallContext {
        &self.ctx
    }

    pub fn id(&self) -> u64 {
        self.ctx.shared.id
    }

    /// Sends one message.
    /// Waits while the writer is full or, with flow control, while the
    /// stream has no credit; a cancel ends the wait.
    pub async fn send(&self, data: impl AsRef<[u8]>) -> Result<(), Status> {
        self.ctx.send(data.as_ref()).await
    }

    /// `send` of an owned buffer: a large one (16 KiB or more) goes to the
    /// socket without being copied (a vectored write).
    pub async fn send_bytes(&self, data: impl Into<Bytes>) -> Result<(), Status> {
        self.ctx.send_bytes(data.into()).await
    }

    pub async fn send_msg<M: prost::Message>(&self, msg: &M) -> Result<(), Status> {
        self.ctx.send_bytes(Bytes::from(msg.encode_to_vec())).await
    }

    /// The next message, or `None` once the remote finished sending.
    pub async fn recv(&self) -> Result<Option<Bytes>, Status> {
        self.ctx.recv().await
    }

    pub async fn recv_msg<M: prost::Message + Default>(&self) -> Result<Option<M>, Status> {
        match self.recv().await? {
            Some(data) => Ok(Some(M::decode(data)?)),
            None => Ok(None),
        }
    }

    /// Tells the remote no more messages will be sent.
    pub async fn close_send(&self) -> Result<(), Status> {
        self.ctx.shared.close_send()
    }

    /// Cancels the call: the remote gets a Cancel frame, blocked and later
    /// operations fail with Canceled. The connection is not affected.
    pub fn cancel(&self) {
        self.ctx.shared.cancel(Status::canceled("stream canceled"));
    }

    /// Whether the stream has finished (completed, failed or cancelled).
    pub fn is_finished(&self) -> bool {
        self.ctx.shared.is_finished()
    }

    /// Flow-control credit left for sending, when flow control is on.
    pub fn send_credit(&self) -> Option<i64> {
        self.ctx.shared.send_credit()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if self.keep_alive.is_some() && self.ctx.shared.conn.role == Role::Client {
            self.ctx
                .shared
                .cancel(Status::canceled("stream dropped before it finished"));
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("id", &self.id())
            .field("rpc", &self.ctx.rpc())
            .finish()
    }
}
