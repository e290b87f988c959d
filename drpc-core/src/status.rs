//! Status codes and the error type every fallible call returns.
//!
//! Codes use the gRPC numbering (DESIGN.md section 5); on the wire they travel as
//! a u64 inside Error frames.

use std::fmt;

/// A DRPC status code (gRPC numbering).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Code {
    Ok = 0,
    Canceled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// Maps a wire code to a [`Code`]; codes outside the gRPC range become `Unknown`.
    pub fn from_u64(code: u64) -> Code {
        use Code::*;
        match code {
            0 => Ok,
            1 => Canceled,
            2 => Unknown,
            3 => InvalidArgument,
            4 => DeadlineExceeded,
            5 => NotFound,
            6 => AlreadyExists,
            7 => PermissionDenied,
            8 => ResourceExhausted,
            9 => FailedPrecondition,
            10 => Aborted,
            11 => OutOfRange,
            12 => Unimplemented,
            13 => Internal,
            14 => Unavailable,
            15 => DataLoss,
            16 => Unauthenticated,
            _ => Unknown,
        }
    }

    pub fn as_u64(self) -> u64 {
        self as u64
    }

    /// The canonical upper-snake name, as gRPC prints it.
    pub fn name(self) -> &'static str {
        use Code::*;
        match self {
            Ok => "OK",
            Canceled => "CANCELED",
            Unknown => "UNKNOWN",
            InvalidArgument => "INVALID_ARGUMENT",
            DeadlineExceeded => "DEADLINE_EXCEEDED",
            NotFound => "NOT_FOUND",
            AlreadyExists => "ALREADY_EXISTS",
            PermissionDenied => "PERMISSION_DENIED",
            ResourceExhausted => "RESOURCE_EXHAUSTED",
            FailedPrecondition => "FAILED_PRECONDITION",
            Aborted => "ABORTED",
            OutOfRange => "OUT_OF_RANGE",
            Unimplemented => "UNIMPLEMENTED",
            Internal => "INTERNAL",
            Unavailable => "UNAVAILABLE",
            DataLoss => "DATA_LOSS",
            Unauthenticated => "UNAUTHENTICATED",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An RPC failure: a code plus a human-readable message.
///
/// `wire_code` keeps the exact u64 a remote Error frame carried, so a code this
/// library does not know still round-trips through a proxy unchanged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    code: Code,
    wire_code: u64,
    message: String,
}

impl Status {
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status {
            code,
            wire_code: code.as_u64(),
            message: message.into(),
        }
    }

    /// The status a remote Error frame stands for: code 0 becomes Unknown
    /// (an error with no code), the message is kept verbatim.
    pub fn from_wire(wire_code: u64, message: impl Into<String>) -> Status {
        let code = match wire_code {
            0 => Code::Unknown,
            c => Code::from_u64(c),
        };
        Status {
            code,
            wire_code,
            message: message.into(),
        }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    /// The code to put on the wire: the original remote code when there was one.
    pub fn wire_code(&self) -> u64 {
        self.wire_code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn canceled(message: impl Into<String>) -> Status {
        Status::new(Code::Canceled, message)
    }
    pub fn deadline_exceeded(message: impl Into<String>) -> Status {
        Status::new(Code::DeadlineExceeded, message)
    }
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }
    pub fn internal(message: impl Into<String>) -> Status {
        Status::new(Code::Internal, message)
    }
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }
    pub fn unimplemented(message: impl Into<String>) -> Status {
        Status::new(Code::Unimplemented, message)
    }
    pub fn resource_exhausted(message: impl Into<String>) -> Status {
        Status::new(Code::ResourceExhausted, message)
    }
    pub fn unknown(message: impl Into<String>) -> Status {
        Status::new(Code::Unknown, message)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "drpc {}: {}", self.code, self.message)
    }
}

impl std::error::Error for Status {}

impl From<prost::DecodeError> for Status {
    fn from(err: prost::DecodeError) -> Status {
        Status::new(Code::Internal, format!("decoding message: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_zero_becomes_unknown() {
        for n in 0..=16u64 {
            assert_eq!(Code::from_u64(n).as_u64(), n);
        }
        assert_eq!(Code::from_u64(99), Code::Unknown);
        let s = Status::from_wire(0, "boom");
        assert_eq!(s.code(), Code::Unknown);
        assert_eq!(s.wire_code(), 0);
        let s = Status::from_wire(1234, "custom");
        assert_eq!((s.code(), s.wire_code()), (Code::Unknown, 1234));
        assert_eq!(
            Status::new(Code::NotFound, "x").to_string(),
            "drpc NOT_FOUND: x"
        );
    }
}
