//! The connection's one writer, shared by every stream. Frames are appended whole
//! to a buffer, so streams interleave only at frame boundaries. The caller that
//! finds no write in progress writes the batch itself on the spot (no thread
//! hand-off); only when the transport is full does a writer task take over and
//! drain everything appended meanwhile in large writes.
//!
//! Data frames share a capped buffer (senders wait for room); control frames
//! (Cancel, WindowUpdate) bypass the cap and go out ahead of queued data.

use crate::budget::Account;
use crate::metrics::ConnMetrics;
use crate::status::Status;
use bytes::{Buf, BytesMut};
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use tokio::io::AsyncWrite;
use tokio::sync::Notify;

pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

pub(crate) struct Writer {
    queue: Mutex<Queue>,
    /// The transport and the bytes taken from the queue but not yet written.
    /// Only the holder of the flusher role touches it.
    io: Mutex<Io>,
    task_wake: Notify,
    drained: Notify,
    room: Notify,
    cap: usize,
    /// Every queued byte is charged here until it is written or dropped.
    account: Arc<Account>,
    /// The connection's counters (bytes written).
    metrics: Arc<ConnMetrics>,
}

struct Queue {
    data: BytesMut,
    control: BytesMut,
    /// Data bytes ever appended, and ever taken out for writing: a frame
    /// appended at position p has left the queue once `taken >= p`.
    appended: u64,
    taken: u64,
    /// Someone (a caller or the writer task) holds the flusher role.
    flushing: bool,
    /// Set once the transport failed or was closed; every later write fails.
    closed: Option<Status>,
}

struct Io {
    transport: Option<BoxWrite>,
    pending: BytesMut,
    /// What `pending` was charged when it was taken from the queue.
    batch: usize,
    /// Bytes were written since the last flush.
    unflushed: bool,
}

fn write_failed(e: std::io::Error) -> Status {
    Status::unavailable(format!("write failed: {e}"))
}

/// How a drain attempt ended.
enum Drain {
    Idle,
    Full,
    Failed(Status),
}

/// Where a frame goes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lane {
    Data,
    /// Ahead of queued data, unless a frame of the same stream appended at or
    /// before `after` (a data position) is still queued, so a stream's own
    /// frames never overtake each other.
    Control {
        after: u64,
    },
}

impl Writer {
    pub(crate) fn new(
        transport: BoxWrite,
        cap: usize,
        account: Arc<Account>,
        metrics: Arc<ConnMetrics>,
    ) -> Arc<Writer> {
        Arc::new(Writer {
            queue: Mutex::new(Queue {
                data: BytesMut::with_capacity(8 * 1024),
                control: BytesMut::new(),
                appended: 0,
                taken: 0,
                flushing: false,
                closed: None,
            }),
            io: Mutex::new(Io {
                transport: Some(transport),
                pending: BytesMut::new(),
                batch: 0,
                unflushed: false,
            }),
            task_wake: Notify::new(),
            drained: Notify::new(),
            room: Notify::new(),
            cap: cap.max(1),
            account,
            metrics,
        })
    }

    /// Appends frames with `encode` and makes sure they get written; returns
    /// the data position after them. Never waits: callers that must respect
    /// the cap wait in `room` first. A closed writer returns its failure.
    /// May write to the transport: callers holding a lock use `append`.
    pub(crate) fn write(
        &self,
        lane: Lane,
        encode: impl FnOnce(&mut BytesMut),
    ) -> Result<u64, Status> {
        let (position, flusher) = self.append(lane, encode)?;
        if flusher {
            self.flush_now()?;
        }
        Ok(position)
    }

    /// Appends frames with `encode` without writing anything: returns the
    /// data position after them, and whether the caller took the flusher
    /// role, in which case it must call `flush_now` once it holds no lock.
    pub(crate) fn append(
        &self,
        lane: Lane,
        encode: impl FnOnce(&mut BytesMut),
    ) -> Result<(u64, bool), Status> {
        let mut q = self.queue.lock().unwrap();
        if let Some(status) = &q.closed {
            return Err(status.clone());
        }
        let added = match lane {
            Lane::Control { after } if after <= q.taken => {
                let before = q.control.len();
                encode(&mut q.control);
                q.control.len() - before
            }
            _ => {
                let before = q.data.len();
                encode(&mut q.data);
                let added = q.data.len() - before;
                q.appended += added as u64;
                added
            }
        };
        self.account.charge(added);
        let flusher = !q.flushing;
        q.flushing = true;
        Ok((q.appended, flusher))
    }

    /// Writes what is queued right here, without blocking, for the holder of
    /// the flusher role; hands the rest to the writer task if the transport
    /// is full.
    pub(crate) fn flush_now(&self) -> Result<(), Status> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.drain(&mut cx) {
            Drain::Idle => Ok(()),
            Drain::Full => {
                self.task_wake.notify_one();
                Ok(())
            }
            Drain::Failed(status) => Err(status),
        }
    }

    /// Waits until the data queue is under the cap (or the writer closed).
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = self.queue.lock().unwrap();
                if q.closed.is_some() || q.data.len() < self.cap {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Moves queued bytes to the transport until it is empty (Idle, role given
    /// up), the transport is full (Full, role kept) or it fails.
    fn drain(&self, cx: &mut Context<'_>) -> Drain {
        let mut io = self.io.lock().unwrap();
        let io = &mut *io;
        loop {
            if io.pending.is_empty() {
                self.account.release(std::mem::take(&mut io.batch));
                let mut q = self.queue.lock().unwrap();
                if q.closed.is_some()
                    || (q.data.is_empty() && q.control.is_empty() && !io.unflushed)
                {
                    q.flushing = false;
                    drop(q);
                    self.drained.notify_waiters();
                    return Drain::Idle;
                }
                // Control frames first, then all queued data in one batch.
                if q.control.is_empty() {
                    std::mem::swap(&mut io.pending, &mut q.data);
                } else {
                    std::mem::swap(&mut io.pending, &mut q.control);
                    io.pending.extend_from_slice(&q.data);
                    q.data.clear();
                }
                q.taken = q.appended;
                io.batch = io.pending.len();
                drop(q);
                self.room.notify_waiters();
            }
            let Some(transport) = io.transport.as_mut() else {
                return self.fail(Status::unavailable("connection closed"));
            };
            let transport = Pin::new(&mut **transport);
            if io.pending.is_empty() {
                // Transports with their own buffering need a flush; TCP's is free.
                match transport.poll_flush(cx) {
                    Poll::Ready(Ok(())) => io.unflushed = false,
                    Poll::Ready(Err(e)) => return self.fail(write_failed(e)),
                    Poll::Pending => return Drain::Full,
                }
                continue;
            }
            match transport.poll_write(cx, &io.pending) {
                Poll::Ready(Ok(0)) => {
                    return self.fail(Status::unavailable("connection closed while writing"))
                }
                Poll::Ready(Ok(n)) => {
                    io.pending.advance(n);
                    self.metrics.sent(n);
                    io.unflushed = true;
                }
                Poll::Ready(Err(e)) => return self.fail(write_failed(e)),
                Poll::Pending => return Drain::Full,
            }
        }
    }

    fn fail(&self, status: Status) -> Drain {
        let mut q = self.queue.lock().unwrap();
        q.closed.get_or_insert(status.clone());
        q.flushing = false;
        self.account.release(q.data.len() + q.control.len());
        q.data = BytesMut::new();
        q.control = BytesMut::new();
        drop(q);
        // The writer task reports the failure, which terminates the connection.
        self.task_wake.notify_one();
        self.drained.notify_waiters();
        self.room.notify_waiters();
        Drain::Failed(status)
    }

    /// The writer task: takes over the flusher role whenever a caller found the
    /// transport full. Returns the failure when the transport breaks.
    pub(crate) async fn run(self: Arc<Self>) -> Status {
        loop {
            self.task_wake.notified().await;
            let result = poll_fn(|cx| match self.drain(cx) {
                Drain::Idle => Poll::Ready(None),
                Drain::Full => Poll::Pending,
                Drain::Failed(status) => Poll::Ready(Some(status)),
            })
            .await;
            if let Some(status) = result {
                return status;
            }
            if let Some(status) = self.queue.lock().unwrap().closed.clone() {
                return status;
            }
        }
    }

    /// Waits until everything queued so far has been handed to the transport
    /// (or the writer failed).
    pub(crate) async fn flushed(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let q = self.queue.lock().unwrap();
                if q.closed.is_some() || (!q.flushing && q.data.is_empty() && q.control.is_empty())
                {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Fails every later write with `status`, drops queued bytes and closes
    /// the transport's write side (waiting for a drain in progress to let go).
    pub(crate) fn close(&self, status: Status) {
        let mut q = self.queue.lock().unwrap();
        q.closed.get_or_insert(status);
        self.account.release(q.data.len() + q.control.len());
        q.data = BytesMut::new();
        q.control = BytesMut::new();
        drop(q);
        let transport = {
            let mut io = self.io.lock().unwrap();
            self.account.release(std::mem::take(&mut io.batch));
            io.pending = BytesMut::new();
            io.transport.take()
        };
        drop(transport);
        self.task_wake.notify_one();
        self.drained.notify_waiters();
        self.room.notify_waiters();
    }

    /// The data position up to which frames have left the queue.
    pub(crate) fn taken(&self) -> u64 {
        self.queue.lock().unwrap().taken
    }

    /// Data bytes queued and not yet taken for writing.
    pub(crate) fn queued(&self) -> usize {
        self.queue.lock().unwrap().data.len()
    }
}
