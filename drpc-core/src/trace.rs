//! W3C trace context (`traceparent`, `tracestate`) carried in invoke
//! metadata, so calls join one trace across processes and languages, and
//! with OpenTelemetry users.
//!
//! A server whose call arrives with a `traceparent` gives the call a child
//! span context ([`CallContext::trace`](crate::CallContext::trace)); a client
//! sends `CallOptions::trace`, or else the context of the handler it runs in.
//! Nothing is invented when there is no context.

use std::fmt::Write as _;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

/// The invoke metadata key of the W3C `traceparent` header.
pub const TRACEPARENT_KEY: &str = "traceparent";
/// The invoke metadata key of the W3C `tracestate` header.
pub const TRACESTATE_KEY: &str = "tracestate";

/// Longest `tracestate` kept (W3C: at most 32 members; 512 bytes is what
/// its implementations must propagate).
const MAX_TRACESTATE: usize = 512;

/// The flag bit that marks a trace as sampled.
pub const FLAG_SAMPLED: u8 = 0x01;

/// One span's W3C trace context.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    /// The span this context identifies (the parent of the next hop's span).
    pub span_id: [u8; 8],
    pub flags: u8,
    /// Vendor data carried along unchanged.
    pub tracestate: Option<String>,
}

impl TraceContext {
    /// Parses a version-00 `traceparent` strictly (lowercase hex, exact
    /// length, ids not all zero). A `tracestate` longer than 512 bytes or
    /// with non-printable characters is dropped, the parent kept.
    pub fn parse(traceparent: &str, tracestate: Option<&str>) -> Option<TraceContext> {
        let b = traceparent.as_bytes();
        if b.len() != 55 || &b[..3] != b"00-" || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flags = [0u8; 1];
        decode_hex(&b[3..35], &mut trace_id)?;
        decode_hex(&b[36..52], &mut span_id)?;
        decode_hex(&b[53..55], &mut flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        let tracestate = tracestate
            .filter(|s| {
                !s.is_empty()
                    && s.len() <= MAX_TRACESTATE
                    && s.bytes().all(|c| (0x20..0x7f).contains(&c))
            })
            .map(str::to_owned);
        Some(TraceContext {
            trace_id,
            span_id,
            flags: flags[0],
            tracestate,
        })
    }

    /// `00-<trace id>-<span id>-<flags>` in lowercase hex.
    pub fn to_traceparent(&self) -> String {
        let mut out = String::with_capacity(55);
        out.push_str("00-");
        push_hex(&mut out, &self.trace_id);
        out.push('-');
        push_hex(&mut out, &self.span_id);
        out.push('-');
        push_hex(&mut out, &[self.flags]);
        out
    }

    /// A new trace: random ids, sampled.
    pub fn new_root() -> TraceContext {
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&random_nonzero().to_be_bytes());
        trace_id[8..].copy_from_slice(&random_nonzero().to_be_bytes());
        TraceContext {
            trace_id,
            span_id: random_nonzero().to_be_bytes(),
            flags: FLAG_SAMPLED,
            tracestate: None,
        }
    }

    /// A span in the same trace under this one: the same trace id, flags
    /// and tracestate, a new random span id.
    pub fn child(&self) -> TraceContext {
        TraceContext {
            trace_id: self.trace_id,
            span_id: random_nonzero().to_be_bytes(),
            flags: self.flags,
            tracestate: self.tracestate.clone(),
        }
    }

    /// The trace id in lowercase hex (32 characters), as logs show it.
    pub fn trace_id_hex(&self) -> String {
        let mut out = String::with_capacity(32);
        push_hex(&mut out, &self.trace_id);
        out
    }

    /// The span id in lowercase hex (16 characters).
    pub fn span_id_hex(&self) -> String {
        let mut out = String::with_capacity(16);
        push_hex(&mut out, &self.span_id);
        out
    }

    pub fn is_sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The context of an incoming call's metadata, if it carries a valid one.
    pub(crate) fn from_metadata(md: &crate::Metadata) -> Option<TraceContext> {
        let parent = md.get(TRACEPARENT_KEY)?;
        let parsed = TraceContext::parse(parent, md.get(TRACESTATE_KEY).map(String::as_str));
        if parsed.is_none() {
            tracing::debug!(traceparent = %parent, "ignoring a malformed traceparent");
        }
        parsed
    }
}

impl std::fmt::Display for TraceContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_traceparent())
    }
}

fn decode_hex(src: &[u8], dst: &mut [u8]) -> Option<()> {
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    for (i, pair) in src.chunks_exact(2).enumerate() {
        dst[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

fn push_hex(out: &mut String, bytes: &[u8]) {
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
}

/// 64 unpredictable non-zero bits: SipHash, keyed randomly per process by
/// std, over a counter. Ids need uniqueness, not secrecy.
fn random_nonzero() -> u64 {
    static STATE: std::sync::OnceLock<std::collections::hash_map::RandomState> =
        std::sync::OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let state = STATE.get_or_init(std::collections::hash_map::RandomState::new);
    loop {
        let mut hasher = state.build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        let value = hasher.finish();
        if value != 0 {
            return value;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_and_formats_the_w3c_example() {
        let tc = TraceContext::parse(SAMPLE, Some("congo=t61rcWkgMzE")).unwrap();
        assert_eq!(tc.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tc.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(tc.flags, 1);
        assert!(tc.is_sampled());
        assert_eq!(tc.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(tc.to_traceparent(), SAMPLE);
        assert_eq!(tc.to_string(), SAMPLE);
    }

    #[test]
    fn rejects_malformed_traceparents() {
        let bad = [
            "",
            "00",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", // unknown version, strict 00
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // zero span id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // trailing
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01", // dash moved
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ];
        for s in bad {
            assert_eq!(TraceContext::parse(s, None), None, "{s:?}");
        }
    }

    #[test]
    fn drops_a_bad_tracestate_but_keeps_the_parent() {
        let long = "a=".to_string() + &"b".repeat(600);
        for state in ["", "x=\ny", long.as_str()] {
            let tc = TraceContext::parse(SAMPLE, Some(state)).unwrap();
            assert_eq!(tc.tracestate, None, "{state:?}");
        }
    }

    #[test]
    fn children_keep_the_trace_and_get_new_spans() {
        let root = TraceContext::new_root();
        assert_ne!(root.trace_id, [0; 16]);
        assert!(root.is_sampled());
        let a = root.child();
        let b = root.child();
        assert_eq!(a.trace_id, root.trace_id);
        assert_ne!(a.span_id, root.span_id);
        assert_ne!(a.span_id, b.span_id);
        assert_ne!(TraceContext::new_root().trace_id, root.trace_id);
        let back = TraceContext::parse(&a.to_traceparent(), None).unwrap();
        assert_eq!(back, a);
    }
}
