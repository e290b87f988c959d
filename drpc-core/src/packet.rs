//! Per-stream packet assembly: joins the frames of one (stream, message id) into
//! a packet. Frames of different streams interleave, so every stream (and every
//! not-yet-invoked stream id on a server) owns one assembler. No I/O.

use crate::wire::{Frame, Kind};
use bytes::Bytes;

/// A complete packet of one stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub message_id: u64,
    pub kind: Kind,
    pub control: bool,
    pub data: Bytes,
}

/// What feeding one frame produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// The packet is not complete yet (or the frame belonged to a discarded one).
    Partial,
    Packet(Packet),
    /// The packet grew past the size limit; its remaining frames are dropped.
    TooLarge {
        message_id: u64,
        kind: Kind,
    },
}

/// A frame sequence no well-behaved peer sends; connection-scoped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssemblyError {
    /// A frame's message id is lower than (or repeats) one already completed.
    MessageIdWentBack { got: u64, current: u64 },
    /// Frames of one packet changed kind midway.
    KindChanged {
        message_id: u64,
        from: Kind,
        to: Kind,
    },
}

impl std::fmt::Display for AssemblyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssemblyError::MessageIdWentBack { got, current } => {
                write!(f, "message id {got} is not after message id {current}")
            }
            AssemblyError::KindChanged {
                message_id,
                from,
                to,
            } => {
                write!(f, "packet {message_id} changed kind from {from} to {to}")
            }
        }
    }
}

#[derive(Debug)]
pub struct Assembler {
    /// Message id of the packet in progress, or of the last one finished.
    current: u64,
    in_progress: bool,
    discarding: bool,
    kind: Kind,
    control: bool,
    buf: Vec<u8>,
    max_len: usize,
    /// The size of the last packet joined from several frames: senders tend
    /// to send messages of one size, so the next one's buffer is sized once.
    last_joined: usize,
}

impl Assembler {
    /// An assembler for packets with message ids after `after` and payloads of at
    /// most `max_len` bytes.
    pub fn new(after: u64, max_len: usize) -> Assembler {
        Assembler {
            current: after,
            in_progress: false,
            discarding: false,
            kind: Kind(0),
            control: false,
            buf: Vec::new(),
            max_len,
            last_joined: 0,
        }
    }

    /// Message id of the last packet started.
    pub fn current_message_id(&self) -> u64 {
        self.current
    }

    /// Bytes held for the packet in progress.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Memory held for the packet in progress (its buffer's capacity).
    pub fn held(&self) -> usize {
        self.buf.capacity()
    }

    /// Whether a packet was started and its last frame has not arrived.
    pub fn in_progress(&self) -> bool {
        self.in_progress
    }

    pub fn push(&mut self, frame: Frame) -> Result<Assembled, AssemblyError> {
        let h = frame.header;
        if h.message_id < self.current || (h.message_id == self.current && !self.in_progress) {
            return Err(AssemblyError::MessageIdWentBack {
                got: h.message_id,
                current: self.current,
            });
        }
        if h.message_id > self.current || !self.in_progress {
            // A newer packet supersedes whatever was partly assembled.
            self.current = h.message_id;
            self.in_progress = true;
            self.discarding = false;
            self.kind = h.kind;
            self.control = h.control;
            self.buf = Vec::new();
        } else if h.kind != self.kind {
            return Err(AssemblyError::KindChanged {
                message_id: h.message_id,
                from: self.kind,
                to: h.kind,
            });
        }
        self.control |= h.control;
        if self.discarding {
            self.in_progress = !h.done;
            return Ok(Assembled::Partial);
        }
        if self.buf.len() + frame.payload.len() > self.max_len {
            self.discarding = true;
            self.in_progress = !h.done;
            self.buf = Vec::new();
            return Ok(Assembled::TooLarge {
                message_id: h.message_id,
                kind: h.kind,
            });
        }
        if !h.done {
            if self.buf.capacity() == 0 {
                let guess = self.last_joined.max(2 * frame.payload.len());
                self.buf = crate::recycle::take(guess.min(self.max_len));
            }
            self.buf.extend_from_slice(&frame.payload);
            return Ok(Assembled::Partial);
        }
        self.in_progress = false;
        // A one-frame packet keeps the reader's buffer slice: no copy.
        let data = if self.buf.is_empty() {
            frame.payload
        } else {
            self.buf.extend_from_slice(&frame.payload);
            self.last_joined = self.buf.len();
            crate::recycle::freeze(std::mem::take(&mut self.buf))
        };
        Ok(Assembled::Packet(Packet {
            message_id: h.message_id,
            kind: self.kind,
            control: self.control,
            data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::FrameHeader;

    fn frame(mid: u64, kind: Kind, done: bool, data: &'static [u8]) -> Frame {
        Frame {
            header: FrameHeader {
                stream_id: 1,
                message_id: mid,
                kind,
                control: false,
                done,
            },
            payload: Bytes::from_static(data),
        }
    }

    fn packet(a: Assembled) -> Packet {
        match a {
            Assembled::Packet(p) => p,
            other => panic!("expected a packet, got {other:?}"),
        }
    }

    #[test]
    fn joins_split_frames() {
        let mut a = Assembler::new(0, 100);
        assert_eq!(
            a.push(frame(1, Kind::MESSAGE, false, b"ab")).unwrap(),
            Assembled::Partial
        );
        assert_eq!(a.buffered(), 2);
        let p = packet(a.push(frame(1, Kind::MESSAGE, true, b"cd")).unwrap());
        assert_eq!(
            (p.message_id, p.kind, &p.data[..]),
            (1, Kind::MESSAGE, &b"abcd"[..])
        );
        let p = packet(a.push(frame(2, Kind::CLOSE_SEND, true, b"")).unwrap());
        assert_eq!(p.kind, Kind::CLOSE_SEND);
    }

    #[test]
    fn higher_message_id_discards_partial_packet() {
        let mut a = Assembler::new(0, 100);
        a.push(frame(1, Kind::MESSAGE, false, b"stale")).unwrap();
        let p = packet(a.push(frame(3, Kind::MESSAGE, true, b"new")).unwrap());
        assert_eq!((p.message_id, &p.data[..]), (3, &b"new"[..]));
    }

    #[test]
    fn rejects_going_back_and_kind_changes() {
        let mut a = Assembler::new(2, 100);
        assert!(matches!(
            a.push(frame(2, Kind::MESSAGE, true, b"")),
            Err(AssemblyError::MessageIdWentBack { .. })
        ));
        assert!(matches!(
            a.push(frame(1, Kind::MESSAGE, true, b"")),
            Err(AssemblyError::MessageIdWentBack { .. })
        ));
        a.push(frame(3, Kind::MESSAGE, false, b"x")).unwrap();
        assert!(matches!(
            a.push(frame(3, Kind::ERROR, true, b"")),
            Err(AssemblyError::KindChanged { .. })
        ));
        let mut a = Assembler::new(0, 100);
        packet(a.push(frame(1, Kind::MESSAGE, true, b"x")).unwrap());
        assert!(
            a.push(frame(1, Kind::MESSAGE, true, b"x")).is_err(),
            "a finished id cannot repeat"
        );
    }

    #[test]
    fn oversized_packet_is_reported_once_and_skipped() {
        let mut a = Assembler::new(0, 4);
        a.push(frame(1, Kind::MESSAGE, false, b"abc")).unwrap();
        assert_eq!(
            a.push(frame(1, Kind::MESSAGE, false, b"de")).unwrap(),
            Assembled::TooLarge {
                message_id: 1,
                kind: Kind::MESSAGE
            }
        );
        assert_eq!(a.buffered(), 0);
        assert_eq!(
            a.push(frame(1, Kind::MESSAGE, true, b"f")).unwrap(),
            Assembled::Partial
        );
        let p = packet(a.push(frame(2, Kind::MESSAGE, true, b"ok")).unwrap());
        assert_eq!(&p.data[..], b"ok");
    }

    #[test]
    fn control_bit_on_any_frame_marks_the_packet() {
        let mut a = Assembler::new(0, 100);
        a.push(frame(1, Kind(9), false, b"")).unwrap();
        let mut last = frame(1, Kind(9), true, b"");
        last.header.control = true;
        assert!(packet(a.push(last).unwrap()).control);
    }
}
