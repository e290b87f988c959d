//! The per-stream state machine of DESIGN.md section 3, free of I/O: what a
//! received packet or a local operation does to one stream, and which frame (if
//! any) the caller must write. The async layer (`stream`) wraps it in a lock.

use crate::packet::Packet;
use crate::status::{Code, Status};
use crate::wire::{decode_error, Kind};
use bytes::Bytes;
use std::collections::VecDeque;

/// Received messages not yet read. Most streams hold at most one at a time
/// (a unary request or response, a ping-pong): that one needs no
/// allocation of its own.
#[derive(Debug, Default)]
struct Queue {
    /// The oldest message, if any...
    first: Option<Bytes>,
    /// ...and the ones after it.
    rest: VecDeque<Bytes>,
}

impl Queue {
    fn push_back(&mut self, msg: Bytes) {
        if self.first.is_none() {
            self.first = Some(msg);
        } else {
            self.rest.push_back(msg);
        }
    }

    fn pop_front(&mut self) -> Option<Bytes> {
        let msg = self.first.take()?;
        self.first = self.rest.pop_front();
        Some(msg)
    }
}

/// Why a stream ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// Both sides sent CloseSend, or the local side finished its part (a unary
    /// response received, a handler returned).
    Done,
    /// The remote sent Close: receiving ends cleanly, sending fails.
    RemoteClosed,
    /// Cancelled here (explicitly, by a deadline, or by dropping the handle).
    Local(Status),
    /// The remote sent Error or Cancel.
    Remote(Status),
    /// The connection went away.
    Connection(Status),
}

/// The effect of a received packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Nothing changed that anyone waits for.
    Ignored,
    /// A message was queued for the receiver.
    Queued,
    /// The remote closed its sending side.
    RecvClosed,
    /// The stream ended.
    Ended,
    /// A connection-scoped protocol violation.
    ProtocolError(String),
    /// The remote sent more than its flow-control window allows: the stream
    /// must fail with ResourceExhausted (stream-scoped).
    Overrun,
}

/// Per-stream flow-control accounting (DESIGN.md section 4), both directions.
#[derive(Debug, Clone)]
pub struct Flow {
    /// What we may still send; may go negative by one message.
    send_credit: i64,
    /// Message bytes received and not yet granted back.
    recv_outstanding: u64,
    /// Message bytes the application consumed and we have not granted yet.
    consumed_ungranted: u64,
    window: u64,
    threshold: u64,
    /// Most the remote may have outstanding: the window plus one message of overdraw.
    recv_limit: u64,
}

impl Flow {
    pub fn new(window: u64, threshold: u64, max_message: u64) -> Flow {
        Flow {
            send_credit: window as i64,
            recv_outstanding: 0,
            consumed_ungranted: 0,
            window,
            threshold,
            recv_limit: window + max_message,
        }
    }
}

/// What a receive attempt found.
#[derive(Debug, PartialEq, Eq)]
pub enum Recv {
    Message(Bytes),
    /// The remote finished sending (clean end of stream).
    End,
    Failed(Status),
    /// Nothing yet: wait for the next packet.
    Empty,
}

#[derive(Debug)]
pub struct StreamState {
    next_message_id: u64,
    queue: Queue,
    queued_bytes: usize,
    send_closed: bool,
    recv_closed: bool,
    end: Option<End>,
    flow: Option<Flow>,
}

impl StreamState {
    /// A stream whose next outgoing packet gets `first_message_id`.
    pub fn new(first_message_id: u64) -> StreamState {
        StreamState {
            next_message_id: first_message_id,
            queue: Queue::default(),
            queued_bytes: 0,
            send_closed: false,
            recv_closed: false,
            end: None,
            flow: None,
        }
    }

    /// Turns on per-stream flow control.
    pub fn with_flow(mut self, flow: Flow) -> StreamState {
        self.flow = Some(flow);
        self
    }

    /// Whether a new message may start now: without flow control always; with
    /// it while the send credit is not negative.
    pub fn has_send_credit(&self) -> bool {
        self.flow.as_ref().is_none_or(|f| f.send_credit >= 0)
    }

    /// Debits a message's payload from the send credit.
    pub fn debit(&mut self, len: usize) {
        if let Some(f) = &mut self.flow {
            f.send_credit -= len as i64;
        }
    }

    /// Credit granted by a WindowUpdate. Returns whether a blocked sender may
    /// now proceed.
    pub fn on_window_update(&mut self, delta: u64) -> bool {
        match &mut self.flow {
            Some(f) => {
                f.send_credit = f
                    .send_credit
                    .saturating_add(delta.min(i64::MAX as u64) as i64);
                f.send_credit >= 0
            }
            None => false,
        }
    }

    /// The credit to grant back now, if the consumed bytes reached the
    /// threshold and the remote may still send.
    pub fn take_grant(&mut self) -> Option<u64> {
        let open = !self.recv_closed && self.end.is_none();
        let f = self.flow.as_mut()?;
        if !open || f.consumed_ungranted < f.threshold {
            return None;
        }
        let grant = f.consumed_ungranted;
        f.consumed_ungranted = 0;
        f.recv_outstanding = f.recv_outstanding.saturating_sub(grant);
        Some(grant)
    }

    pub fn send_credit(&self) -> Option<i64> {
        self.flow.as_ref().map(|f| f.send_credit)
    }

    pub fn flow_window(&self) -> Option<u64> {
        self.flow.as_ref().map(|f| f.window)
    }

    /// Finished streams are removed from the registry; later frames are dropped.
    pub fn is_finished(&self) -> bool {
        self.end.is_some() || (self.send_closed && self.recv_closed)
    }

    pub fn end(&self) -> Option<&End> {
        self.end.as_ref()
    }

    pub fn is_send_closed(&self) -> bool {
        self.send_closed || self.end.is_some()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Applies a packet the reader assembled for this stream.
    pub fn on_packet(&mut self, pkt: Packet) -> Incoming {
        if self.is_finished() {
            return Incoming::Ignored;
        }
        match pkt.kind {
            Kind::MESSAGE if self.recv_closed => Incoming::Ignored,
            Kind::MESSAGE => {
                if let Some(f) = &mut self.flow {
                    f.recv_outstanding += pkt.data.len() as u64;
                    if f.recv_outstanding > f.recv_limit {
                        return Incoming::Overrun;
                    }
                }
                self.queued_bytes += pkt.data.len();
                self.queue.push_back(pkt.data);
                Incoming::Queued
            }
            Kind::ERROR => {
                let (code, message) = decode_error(&pkt.data);
                self.end = Some(End::Remote(Status::from_wire(code, message)));
                Incoming::Ended
            }
            Kind::CANCEL => {
                self.end = Some(End::Remote(Status::canceled(
                    "stream canceled by the remote",
                )));
                Incoming::Ended
            }
            Kind::CLOSE => {
                self.end = Some(End::RemoteClosed);
                Incoming::Ended
            }
            Kind::CLOSE_SEND => {
                self.recv_closed = true;
                if self.is_finished() {
                    self.end = Some(End::Done);
                    Incoming::Ended
                } else {
                    Incoming::RecvClosed
                }
            }
            Kind::INVOKE | Kind::INVOKE_METADATA => {
                Incoming::ProtocolError(format!("{} on an existing stream", pkt.kind))
            }
            _ if pkt.control => Incoming::Ignored,
            other => Incoming::ProtocolError(format!("unknown frame kind {}", other.0)),
        }
    }

    /// Takes the next message, the end of stream, or the failure that ended it.
    /// Messages that arrived before a remote error or a connection loss are still
    /// delivered; a local cancel drops them.
    pub fn recv(&mut self) -> Recv {
        if let Some(End::Local(status)) = &self.end {
            return Recv::Failed(status.clone());
        }
        if let Some(msg) = self.queue.pop_front() {
            self.queued_bytes -= msg.len();
            if let Some(f) = &mut self.flow {
                f.consumed_ungranted += msg.len() as u64;
            }
            return Recv::Message(msg);
        }
        match &self.end {
            Some(End::Remote(s)) | Some(End::Connection(s)) => Recv::Failed(s.clone()),
            Some(End::Done) | Some(End::RemoteClosed) => Recv::End,
            Some(End::Local(_)) => unreachable!("handled above"),
            None if self.recv_closed => Recv::End,
            None => Recv::Empty,
        }
    }

    /// Checks that a message may be sent and takes its message id.
    pub fn begin_send(&mut self) -> Result<u64, Status> {
        match &self.end {
            Some(End::Local(s)) | Some(End::Remote(s)) | Some(End::Connection(s)) => Err(s.clone()),
            Some(End::RemoteClosed) => Err(Status::canceled("the remote closed the stream")),
            Some(End::Done) => Err(Status::new(
                Code::FailedPrecondition,
                "the stream is finished",
            )),
            None if self.send_closed => Err(Status::new(
                Code::FailedPrecondition,
                "send after close_send",
            )),
            None => Ok(self.take_message_id()),
        }
    }

    /// Closes the sending side; returns the CloseSend message id, or `None` when
    /// there is nothing to send (already closed or ended).
    pub fn close_send(&mut self) -> Option<u64> {
        if self.is_send_closed() {
            return None;
        }
        self.send_closed = true;
        if self.recv_closed {
            self.end = Some(End::Done);
        }
        Some(self.take_message_id())
    }

    /// Ends the stream here with `status`; returns the message id for the Cancel
    /// frame to send, or `None` if the stream had already ended.
    pub fn cancel(&mut self, status: Status) -> Option<u64> {
        if self.is_finished() {
            return None;
        }
        self.end = Some(End::Local(status));
        self.queue = Queue::default();
        self.queued_bytes = 0;
        Some(self.take_message_id())
    }

    /// Ends an unfinished stream with `end` without sending anything (a finished
    /// unary call, a returned handler, a lost connection, an Error we sent).
    /// Returns whether it ended now.
    pub fn finish(&mut self, end: End) -> bool {
        if self.is_finished() {
            return false;
        }
        self.end = Some(end);
        true
    }

    /// Takes a message id for a packet the caller writes itself (an Error).
    pub fn take_message_id(&mut self) -> u64 {
        let id = self.next_message_id;
        self.next_message_id += 1;
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::encode_error;

    fn pkt(kind: Kind, data: &[u8]) -> Packet {
        Packet {
            message_id: 1,
            kind,
            control: kind == Kind::CANCEL,
            data: Bytes::copy_from_slice(data),
        }
    }

    #[test]
    fn unary_exchange_finishes_after_both_close_sends() {
        let mut s = StreamState::new(3);
        assert_eq!(s.begin_send(), Ok(3));
        assert_eq!(s.close_send(), Some(4));
        assert_eq!(s.close_send(), None);
        assert_eq!(s.on_packet(pkt(Kind::MESSAGE, b"resp")), Incoming::Queued);
        assert!(!s.is_finished());
        assert_eq!(s.on_packet(pkt(Kind::CLOSE_SEND, b"")), Incoming::Ended);
        assert!(s.is_finished());
        assert_eq!(s.recv(), Recv::Message(Bytes::from_static(b"resp")));
        assert_eq!(s.recv(), Recv::End);
    }

    #[test]
    fn remote_error_is_delivered_after_queued_messages() {
        let mut s = StreamState::new(1);
        s.on_packet(pkt(Kind::MESSAGE, b"a"));
        assert_eq!(
            s.on_packet(pkt(Kind::ERROR, &encode_error(5, "nope"))),
            Incoming::Ended
        );
        assert_eq!(s.recv(), Recv::Message(Bytes::from_static(b"a")));
        assert_eq!(s.recv(), Recv::Failed(Status::new(Code::NotFound, "nope")));
        assert_eq!(s.begin_send().unwrap_err().code(), Code::NotFound);
        assert_eq!(s.on_packet(pkt(Kind::MESSAGE, b"late")), Incoming::Ignored);
    }

    #[test]
    fn local_cancel_drops_queue_and_sends_cancel_once() {
        let mut s = StreamState::new(1);
        s.on_packet(pkt(Kind::MESSAGE, b"a"));
        assert_eq!(s.cancel(Status::canceled("bye")), Some(1));
        assert_eq!(s.cancel(Status::canceled("again")), None);
        assert_eq!(s.queued_bytes(), 0);
        assert_eq!(s.recv(), Recv::Failed(Status::canceled("bye")));
        assert_eq!(s.close_send(), None);
    }

    #[test]
    fn remote_cancel_and_close() {
        let mut s = StreamState::new(1);
        assert_eq!(s.on_packet(pkt(Kind::CANCEL, b"")), Incoming::Ended);
        assert_eq!(
            s.recv(),
            Recv::Failed(Status::canceled("stream canceled by the remote"))
        );
        let mut s = StreamState::new(1);
        s.on_packet(pkt(Kind::MESSAGE, b"x"));
        assert_eq!(s.on_packet(pkt(Kind::CLOSE, b"")), Incoming::Ended);
        assert_eq!(s.recv(), Recv::Message(Bytes::from_static(b"x")));
        assert_eq!(s.recv(), Recv::End);
        assert_eq!(s.begin_send().unwrap_err().code(), Code::Canceled);
    }

    #[test]
    fn protocol_errors_and_control_kinds() {
        let mut s = StreamState::new(1);
        assert!(matches!(
            s.on_packet(pkt(Kind::INVOKE, b"/x")),
            Incoming::ProtocolError(_)
        ));
        assert!(matches!(
            s.on_packet(pkt(Kind(30), b"")),
            Incoming::ProtocolError(_)
        ));
        let mut control = pkt(Kind(30), b"");
        control.control = true;
        assert_eq!(s.on_packet(control), Incoming::Ignored);
    }

    #[test]
    fn flow_control_credit_and_grants() {
        let mut s = StreamState::new(1).with_flow(Flow::new(100, 40, 1000));
        assert!(s.has_send_credit());
        s.debit(150); // one message may overdraw
        assert!(!s.has_send_credit());
        assert_eq!(s.send_credit(), Some(-50));
        assert!(!s.on_window_update(20));
        assert!(s.on_window_update(30));
        assert!(s.has_send_credit());

        for _ in 0..3 {
            assert_eq!(s.on_packet(pkt(Kind::MESSAGE, &[0; 15])), Incoming::Queued);
        }
        assert!(matches!(s.recv(), Recv::Message(_)));
        assert!(matches!(s.recv(), Recv::Message(_)));
        assert_eq!(
            s.take_grant(),
            None,
            "30 consumed is under the threshold of 40"
        );
        assert!(matches!(s.recv(), Recv::Message(_)));
        assert_eq!(s.take_grant(), Some(45));
        assert_eq!(s.take_grant(), None);
    }

    #[test]
    fn flow_control_overrun_is_detected() {
        let mut s = StreamState::new(1).with_flow(Flow::new(100, 40, 50));
        assert_eq!(s.on_packet(pkt(Kind::MESSAGE, &[0; 99])), Incoming::Queued);
        assert_eq!(
            s.on_packet(pkt(Kind::MESSAGE, &[0; 50])),
            Incoming::Queued,
            "window + one message"
        );
        assert_eq!(s.on_packet(pkt(Kind::MESSAGE, &[0; 2])), Incoming::Overrun);
    }

    #[test]
    fn no_grants_after_the_remote_finished_sending() {
        let mut s = StreamState::new(1).with_flow(Flow::new(100, 10, 100));
        s.on_packet(pkt(Kind::MESSAGE, &[0; 20]));
        s.on_packet(pkt(Kind::CLOSE_SEND, b""));
        assert!(matches!(s.recv(), Recv::Message(_)));
        assert_eq!(s.take_grant(), None);
    }

    #[test]
    fn half_close_then_recv_end() {
        let mut s = StreamState::new(1);
        assert_eq!(
            s.on_packet(pkt(Kind::CLOSE_SEND, b"")),
            Incoming::RecvClosed
        );
        assert_eq!(s.recv(), Recv::End);
        assert_eq!(s.on_packet(pkt(Kind::MESSAGE, b"late")), Incoming::Ignored);
        assert_eq!(s.begin_send(), Ok(1));
        assert_eq!(s.close_send(), Some(2));
        assert!(s.is_finished());
        assert_eq!(s.end(), Some(&End::Done));
    }
}
