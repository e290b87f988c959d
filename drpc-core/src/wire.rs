//! The frame format of DESIGN.md section 1: varints, kinds, frame encode/parse,
//! splitting messages into frames and the Error payload. Pure functions, no I/O.

use bytes::{BufMut, Bytes};
use std::fmt;

/// Largest encoded varint (u64 in 7-bit groups).
pub const MAX_VARINT_LEN: usize = 10;
/// Default payload size at which a packet is split into several frames.
pub const DEFAULT_SPLIT_SIZE: usize = 64 * 1024;
/// The control byte plus three maximal varints.
pub const MAX_FRAME_HEADER: usize = 1 + 3 * MAX_VARINT_LEN;

/// A frame kind (6 bits of the control byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kind(pub u8);

impl Kind {
    pub const INVOKE: Kind = Kind(1);
    pub const MESSAGE: Kind = Kind(2);
    pub const ERROR: Kind = Kind(3);
    pub const CANCEL: Kind = Kind(4);
    pub const CLOSE: Kind = Kind(5);
    pub const CLOSE_SEND: Kind = Kind(6);
    pub const INVOKE_METADATA: Kind = Kind(7);
    pub const WINDOW_UPDATE: Kind = Kind(8);

    /// Kinds this implementation understands; others are ignored when the
    /// control bit is set and are a protocol error otherwise.
    pub fn is_known(self) -> bool {
        (1..=8).contains(&self.0)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match *self {
            Kind::INVOKE => "Invoke",
            Kind::MESSAGE => "Message",
            Kind::ERROR => "Error",
            Kind::CANCEL => "Cancel",
            Kind::CLOSE => "Close",
            Kind::CLOSE_SEND => "CloseSend",
            Kind::INVOKE_METADATA => "InvokeMetadata",
            Kind::WINDOW_UPDATE => "WindowUpdate",
            Kind(n) => return write!(f, "Kind({n})"),
        };
        f.write_str(name)
    }
}

/// A malformed byte stream: always connection-scoped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WireError {
    VarintTooLong,
    FrameTooLarge { len: u64, max: usize },
}

impl fmt::Display for WireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WireError::VarintTooLong => f.write_str("varint longer than 10 bytes"),
            WireError::FrameTooLarge { len, max } => {
                write!(
                    f,
                    "frame payload of {len} bytes exceeds the maximum of {max}"
                )
            }
        }
    }
}

impl std::error::Error for WireError {}

/// Appends `x` as an unsigned LEB128 varint.
pub fn put_varint(buf: &mut impl BufMut, mut x: u64) {
    while x >= 0x80 {
        buf.put_u8((x as u8) | 0x80);
        x >>= 7;
    }
    buf.put_u8(x as u8);
}

pub fn varint_len(x: u64) -> usize {
    (64 - (x | 1).leading_zeros() as usize).div_ceil(7)
}

/// Reads a varint: `Ok(None)` when `buf` ends before it does.
pub fn read_varint(buf: &[u8]) -> Result<Option<(u64, usize)>, WireError> {
    let mut out = 0u64;
    for (i, &byte) in buf.iter().enumerate() {
        if i == MAX_VARINT_LEN {
            return Err(WireError::VarintTooLong);
        }
        // The 10th byte may only carry the top bit of a u64.
        if i == MAX_VARINT_LEN - 1 && byte > 1 {
            return Err(WireError::VarintTooLong);
        }
        out |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(Some((out, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(WireError::VarintTooLong);
    }
    Ok(None)
}

/// Everything in a frame but its payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub stream_id: u64,
    pub message_id: u64,
    pub kind: Kind,
    pub control: bool,
    pub done: bool,
}

/// A parsed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub payload: Bytes,
}

impl FrameHeader {
    pub fn control_byte(&self) -> u8 {
        (self.kind.0 << 1) & 0x7e | u8::from(self.done) | (u8::from(self.control) << 7)
    }
}

/// Parses a frame header at the start of `buf`. Returns the header, the header
/// length and the payload length, or `Ok(None)` if more bytes are needed.
/// A payload longer than `max_payload` is an error before any of it is buffered.
pub fn parse_header(
    buf: &[u8],
    max_payload: usize,
) -> Result<Option<(FrameHeader, usize, usize)>, WireError> {
    let Some(&control) = buf.first() else {
        return Ok(None);
    };
    let mut at = 1;
    let next = |at: &mut usize| -> Result<Option<u64>, WireError> {
        Ok(read_varint(&buf[*at..])?.map(|(v, n)| {
            *at += n;
            v
        }))
    };
    let Some(stream_id) = next(&mut at)? else {
        return Ok(None);
    };
    let Some(message_id) = next(&mut at)? else {
        return Ok(None);
    };
    let Some(len) = next(&mut at)? else {
        return Ok(None);
    };
    if len > max_payload as u64 {
        return Err(WireError::FrameTooLarge {
            len,
            max: max_payload,
        });
    }
    let header = FrameHeader {
        stream_id,
        message_id,
        kind: Kind((control & 0x7e) >> 1),
        control: control & 0x80 != 0,
        done: control & 0x01 != 0,
    };
    Ok(Some((header, at, len as usize)))
}

/// Appends one frame.
pub fn put_frame(buf: &mut impl BufMut, header: &FrameHeader, payload: &[u8]) {
    put_frame_header(buf, header, payload.len());
    buf.put_slice(payload);
}

/// Appends a frame's header only, for a payload of `len` bytes the caller
/// appends itself.
pub fn put_frame_header(buf: &mut impl BufMut, header: &FrameHeader, len: usize) {
    buf.put_u8(header.control_byte());
    put_varint(buf, header.stream_id);
    put_varint(buf, header.message_id);
    put_varint(buf, len as u64);
}

/// Bytes `put_packet` will append for a packet of `len` bytes.
pub fn packet_encoded_len(stream_id: u64, message_id: u64, len: usize, split: usize) -> usize {
    let frames = len.div_ceil(split).max(1);
    let ids = 1 + varint_len(stream_id) + varint_len(message_id);
    frames * ids + len + varint_len(split as u64) * frames
}

/// Appends a whole packet, split into frames of at most `split` payload bytes
/// (an empty packet is one empty frame); `done` is set on the last frame.
pub fn put_packet(
    buf: &mut impl BufMut,
    stream_id: u64,
    message_id: u64,
    kind: Kind,
    control: bool,
    payload: &[u8],
    split: usize,
) {
    let split = split.max(1);
    let mut rest = payload;
    loop {
        let n = rest.len().min(split);
        let (chunk, tail) = rest.split_at(n);
        let header = FrameHeader {
            stream_id,
            message_id,
            kind,
            control,
            done: tail.is_empty(),
        };
        put_frame(buf, &header, chunk);
        if tail.is_empty() {
            return;
        }
        rest = tail;
    }
}

/// Encodes an Error payload: 8-byte big-endian code, then the UTF-8 message.
pub fn encode_error(code: u64, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + message.len());
    out.extend_from_slice(&code.to_be_bytes());
    out.extend_from_slice(message.as_bytes());
    out
}

/// Decodes an Error payload. A payload shorter than 8 bytes has no code (like
/// storj.io/drpc, the whole payload is then the message and the code is 0).
pub fn decode_error(payload: &[u8]) -> (u64, String) {
    if payload.len() < 8 {
        return (0, String::from_utf8_lossy(payload).into_owned());
    }
    let code = u64::from_be_bytes(payload[..8].try_into().expect("8 bytes"));
    (code, String::from_utf8_lossy(&payload[8..]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_bytes(h: FrameHeader, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_frame(&mut v, &h, payload);
        v
    }

    #[test]
    fn window_update_example_from_the_spec() {
        let mut delta = Vec::new();
        put_varint(&mut delta, 131072);
        let h = FrameHeader {
            stream_id: 7,
            message_id: 0,
            kind: Kind::WINDOW_UPDATE,
            control: true,
            done: true,
        };
        assert_eq!(
            frame_bytes(h, &delta),
            [0x91, 0x07, 0x00, 0x03, 0x80, 0x80, 0x08]
        );
    }

    #[test]
    fn control_byte_layout() {
        let h = |kind, control, done| FrameHeader {
            stream_id: 1,
            message_id: 1,
            kind,
            control,
            done,
        };
        assert_eq!(h(Kind::INVOKE, false, true).control_byte(), 0b0000_0011);
        assert_eq!(h(Kind::MESSAGE, false, false).control_byte(), 0b0000_0100);
        assert_eq!(h(Kind::CANCEL, true, true).control_byte(), 0b1000_1001);
        assert_eq!(h(Kind::INVOKE_METADATA, false, true).control_byte(), 0x0f);
        assert_eq!(h(Kind(63), true, true).control_byte(), 0xff);
    }

    #[test]
    fn invoke_frame_bytes() {
        let h = FrameHeader {
            stream_id: 1,
            message_id: 1,
            kind: Kind::INVOKE,
            control: false,
            done: true,
        };
        assert_eq!(frame_bytes(h, b"/a.B/C"), b"\x03\x01\x01\x06/a.B/C");
        let h = FrameHeader {
            stream_id: 300,
            message_id: 2,
            kind: Kind::CLOSE_SEND,
            control: false,
            done: true,
        };
        assert_eq!(frame_bytes(h, b""), [0x0d, 0xac, 0x02, 0x02, 0x00]);
    }

    #[test]
    fn varints_round_trip_and_reject_overlong() {
        for x in [
            0u64,
            1,
            127,
            128,
            300,
            16383,
            16384,
            u32::MAX as u64,
            u64::MAX,
        ] {
            let mut v = Vec::new();
            put_varint(&mut v, x);
            assert_eq!(v.len(), varint_len(x));
            assert_eq!(read_varint(&v).unwrap(), Some((x, v.len())));
            assert_eq!(read_varint(&v[..v.len() - 1]).unwrap(), None);
        }
        assert_eq!(read_varint(&[0xff; 11]), Err(WireError::VarintTooLong));
        assert_eq!(read_varint(&[0x80; 10]), Err(WireError::VarintTooLong));
        // 10 bytes whose last carries more than the 64th bit overflow a u64.
        let mut over = vec![0xff; 9];
        over.push(0x02);
        assert_eq!(read_varint(&over), Err(WireError::VarintTooLong));
    }

    #[test]
    fn parse_needs_whole_header_and_bounds_payload() {
        let bytes = b"\x05\x01\x02\x03abc";
        let (h, at, len) = parse_header(bytes, 10).unwrap().unwrap();
        assert_eq!(
            (h.kind, h.stream_id, h.message_id, h.done, h.control),
            (Kind::MESSAGE, 1, 2, true, false)
        );
        assert_eq!((at, len), (4, 3));
        for cut in 0..4 {
            assert_eq!(parse_header(&bytes[..cut], 10).unwrap(), None);
        }
        assert_eq!(
            parse_header(bytes, 2),
            Err(WireError::FrameTooLarge { len: 3, max: 2 })
        );
        let mut overlong = vec![0x05];
        overlong.extend_from_slice(&[0x80; 11]);
        assert_eq!(parse_header(&overlong, 10), Err(WireError::VarintTooLong));
    }

    #[test]
    fn packets_split_at_the_split_size() {
        let mut v = Vec::new();
        put_packet(&mut v, 1, 1, Kind::MESSAGE, false, b"abcdefg", 3);
        assert_eq!(
            v,
            b"\x04\x01\x01\x03abc\x04\x01\x01\x03def\x05\x01\x01\x01g".to_vec()
        );
        assert!(packet_encoded_len(1, 1, 7, 3) >= v.len());
        let mut v = Vec::new();
        put_packet(&mut v, 2, 5, Kind::CLOSE_SEND, false, b"", 3);
        assert_eq!(v, [0x0d, 0x02, 0x05, 0x00]);
    }

    #[test]
    fn error_payloads() {
        let p = encode_error(2, "test status message");
        assert_eq!(&p[..8], &[0, 0, 0, 0, 0, 0, 0, 2]);
        assert_eq!(&p[8..], b"test status message");
        assert_eq!(decode_error(&p), (2, "test status message".to_string()));
        assert_eq!(decode_error(b"short"), (0, "short".to_string()));
        assert_eq!(
            decode_error(&encode_error(u64::MAX, "")),
            (u64::MAX, String::new())
        );
    }
}
