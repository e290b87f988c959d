//! One stream as the async layer sees it: the state machine (`state`) and the
//! packet assembler behind one lock, the wakers of tasks waiting on it, and the
//! user-facing [`Stream`] and [`CallContext`] handles.

use crate::conn::{ConnShared, Role};
use crate::metadata::Metadata;
use crate::packet::{Assembled, Assembler};
use crate::state::{End, Incoming, Recv, StreamState};
use crate::status::Status;
use crate::wire::{encode_error, put_packet, Frame, Kind};
use bytes::Bytes;
use std::future::poll_fn;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use tokio::sync::{Notify, OwnedSemaphorePermit};

pub(crate) struct StreamShared {
    pub(crate) id: u64,
    pub(crate) conn: Arc<ConnShared>,
    inner: Mutex<Inner>,
    ended: Notify,
}

pub(crate) struct Inner {
    pub(crate) state: StreamState,
    assembler: Assembler,
    recv_wakers: Vec<Waker>,
    retired: bool,
    /// Sequential mode: the connection's single stream slot, freed on finish.
    permit: Option<OwnedSemaphorePermit>,
}

impl StreamShared {
    pub(crate) fn new(
        id: u64,
        conn: Arc<ConnShared>,
        first_message_id: u64,
        recv_after: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Arc<StreamShared> {
        let max = conn.opts.max_message_size;
        Arc::new(StreamShared {
            id,
            conn,
            inner: Mutex::new(Inner {
                state: StreamState::new(first_message_id),
                assembler: Assembler::new(recv_after, max),
                recv_wakers: Vec::new(),
                retired: false,
                permit,
            }),
            ended: Notify::new(),
        })
    }

    /// Runs `f` under the stream lock; if the stream finished in it, takes the
    /// stream out of the registry and wakes everyone waiting on it.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut Inner, &mut Writing) -> R) -> R {
        let mut wake = Vec::new();
        let (result, retire, permit) = {
            let mut inner = self.inner.lock().unwrap();
            let mut writing = Writing { stream: self, wrote_error: None };
            let result = f(&mut inner, &mut writing);
            if let Some(status) = writing.wrote_error {
                tracing::debug!(stream = self.id, %status, "write failed");
            }
            let retire = inner.state.is_finished() && !inner.retired;
            let mut permit = None;
            if retire {
                inner.retired = true;
                permit = inner.permit.take();
                wake = std::mem::take(&mut inner.recv_wakers);
            }
            (result, retire, permit)
        };
        drop(permit);
        if retire {
            for w in wake {
                w.wake();
            }
            self.conn.forget(self.id);
            self.ended.notify_waiters();
        }
        result
    }

    /// Feeds a frame read for this stream. `Err` is a connection-scoped
    /// protocol error.
    pub(crate) fn on_frame(&self, frame: Frame) -> Result<(), String> {
        let mut wake = false;
        let result = self.update(|inner, writing| {
            let state = &mut inner.state;
            match inner.assembler.push(frame).map_err(|e| e.to_string())? {
                Assembled::Partial => Ok(()),
                Assembled::TooLarge { kind, .. } if kind == Kind::MESSAGE => {
                    let status = Status::resource_exhausted(format!(
                        "message larger than the maximum of {} bytes",
                        writing.stream.conn.opts.max_message_size
                    ));
                    writing.send_error(state, &status);
                    state.finish(End::Local(status));
                    wake = true;
                    Ok(())
                }
                Assembled::TooLarge { kind, .. } => Err(format!("{kind} packet larger than the maximum message size")),
                Assembled::Packet(pkt) => match state.on_packet(pkt) {
                    Incoming::Ignored => Ok(()),
                    Incoming::Queued | Incoming::RecvClosed | Incoming::Ended => {
                        wake = true;
                        Ok(())
                    }
                    Incoming::ProtocolError(e) => Err(e),
                },
            }
        });
        if wake {
            let wakers = std::mem::take(&mut self.inner.lock().unwrap().recv_wakers);
            for w in wakers {
                w.wake();
            }
        }
        result
    }

    pub(crate) async fn recv(&self) -> Result<Option<Bytes>, Status> {
        poll_fn(|cx| {
            let mut inner = self.inner.lock().unwrap();
            match inner.state.recv() {
                Recv::Message(m) => Poll::Ready(Ok(Some(m))),
                Recv::End => Poll::Ready(Ok(None)),
                Recv::Failed(s) => Poll::Ready(Err(s)),
                Recv::Empty => {
                    if !inner.recv_wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        inner.recv_wakers.push(cx.waker().clone());
                    }
                    Poll::Pending
                }
            }
        })
        .await
    }

    pub(crate) fn send(&self, data: &[u8]) -> Result<(), Status> {
        let max = self.conn.opts.max_message_size;
        if data.len() > max {
            let status = Status::resource_exhausted(format!(
                "message of {} bytes exceeds the maximum of {max} bytes",
                data.len()
            ));
            self.cancel(status.clone());
            return Err(status);
        }
        self.update(|inner, w| {
            let mid = inner.state.begin_send()?;
            w.write_packet(&mut inner.state, mid, Kind::MESSAGE, data)
        })
    }

    /// Sends a final message followed by CloseSend in one write.
    pub(crate) fn send_last(&self, data: &[u8]) -> Result<(), Status> {
        if data.len() > self.conn.opts.max_message_size {
            return Err(Status::resource_exhausted(format!(
                "response of {} bytes exceeds the maximum of {} bytes",
                data.len(),
                self.conn.opts.max_message_size
            )));
        }
        self.update(|inner, w| {
            let state = &mut inner.state;
            let mid = state.begin_send()?;
            let close = state.close_send().expect("send side was open");
            let split = w.stream.conn.opts.split_size;
            let sid = w.stream.id;
            w.write(state, |buf| {
                put_packet(buf, sid, mid, Kind::MESSAGE, false, data, split);
                put_packet(buf, sid, close, Kind::CLOSE_SEND, false, &[], split);
            })
        })
    }

    pub(crate) fn close_send(&self) -> Result<(), Status> {
        self.update(|inner, w| match inner.state.close_send() {
            Some(mid) => w.write_packet(&mut inner.state, mid, Kind::CLOSE_SEND, &[]),
            None => Ok(()),
        })
    }

    /// Ends the stream here and tells the remote with a Cancel frame.
    pub(crate) fn cancel(&self, status: Status) {
        self.update(|inner, w| {
            if let Some(mid) = inner.state.cancel(status) {
                let sid = w.stream.id;
                let _ = w.write(&mut inner.state, |buf| put_packet(buf, sid, mid, Kind::CANCEL, true, &[], 1));
            }
        })
    }

    /// Ends the stream by sending an Error frame carrying `status`.
    pub(crate) fn send_error(&self, status: &Status) {
        self.update(|inner, w| {
            if !inner.state.is_finished() {
                w.send_error(&mut inner.state, status);
                inner.state.finish(End::Done);
            }
        })
    }

    /// Ends the stream without telling the remote.
    pub(crate) fn finish(&self, end: End) {
        self.update(|inner, _| {
            inner.state.finish(end);
        })
    }

    pub(crate) fn is_finished(&self) -> bool {
        self.inner.lock().unwrap().state.is_finished()
    }

    /// The end reason, once the stream ended for any reason but success.
    pub(crate) fn failure(&self) -> Option<Status> {
        match self.inner.lock().unwrap().state.end() {
            Some(End::Local(s)) | Some(End::Remote(s)) | Some(End::Connection(s)) => Some(s.clone()),
            Some(End::RemoteClosed) => Some(Status::canceled("the remote closed the stream")),
            _ => None,
        }
    }

    /// Resolves when the stream has finished (for any reason).
    pub(crate) async fn ended(&self) {
        loop {
            let notified = self.ended.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.lock().unwrap().retired {
                return;
            }
            notified.await;
        }
    }
}

/// Writes done on behalf of one stream while its lock is held, so the frames
/// of a stream reach the writer in message-id order.
pub(crate) struct Writing<'a> {
    stream: &'a StreamShared,
    wrote_error: Option<Status>,
}

impl Writing<'_> {
    fn write(&mut self, state: &mut StreamState, encode: impl FnOnce(&mut bytes::BytesMut)) -> Result<(), Status> {
        match self.stream.conn.writer.write(encode) {
            Ok(()) => Ok(()),
            Err(status) => {
                let status = self.stream.conn.stream_failure(status);
                state.finish(End::Connection(status.clone()));
                self.wrote_error = Some(status.clone());
                Err(status)
            }
        }
    }

    fn write_packet(&mut self, state: &mut StreamState, mid: u64, kind: Kind, data: &[u8]) -> Result<(), Status> {
        let (sid, split) = (self.stream.id, self.stream.conn.opts.split_size);
        self.write(state, |buf| put_packet(buf, sid, mid, kind, false, data, split))
    }

    fn send_error(&mut self, state: &mut StreamState, status: &Status) {
        let mid = state.take_message_id();
        let payload = encode_error(status.wire_code(), status.message());
        let _ = self.write_packet(state, mid, Kind::ERROR, &payload);
    }
}

/// What a server handler or a client sees of its call besides the messages:
/// the rpc name, the invoke metadata and whether the call was cancelled.
#[derive(Clone)]
pub struct CallContext {
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) rpc: Arc<str>,
    pub(crate) metadata: Arc<Metadata>,
}

impl CallContext {
    pub fn rpc(&self) -> &str {
        &self.rpc
    }

    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    pub fn stream_id(&self) -> u64 {
        self.shared.id
    }

    /// Whether the call ended other than by completing: cancelled by either
    /// side, failed, or its connection lost.
    pub fn is_cancelled(&self) -> bool {
        self.shared.failure().is_some()
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
    /// Client streams keep their connection open and cancel on drop.
    pub(crate) client: Option<crate::client::Conn>,
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
    pub async fn send(&self, data: impl AsRef<[u8]>) -> Result<(), Status> {
        self.ctx.shared.send(data.as_ref())
    }

    pub async fn send_msg<M: prost::Message>(&self, msg: &M) -> Result<(), Status> {
        self.ctx.shared.send(&msg.encode_to_vec())
    }

    /// The next message, or `None` once the remote finished sending.
    pub async fn recv(&self) -> Result<Option<Bytes>, Status> {
        self.ctx.shared.recv().await
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
}

impl Drop for Stream {
    fn drop(&mut self) {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if self.client.is_some() && self.ctx.shared.conn.role == Role::Client {
            self.ctx.shared.cancel(Status::canceled("stream dropped before it finished"));
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream").field("id", &self.id()).field("rpc", &self.ctx.rpc()).finish()
    }
}

