//! Deadline propagation: a client sends the time its call has left in the
//! invoke metadata key [`TIMEOUT_KEY`], in gRPC's timeout grammar (1 to 8
//! ASCII digits then a unit: `H` hours, `M` minutes, `S` seconds, `m`
//! milliseconds, `u` microseconds, `n` nanoseconds; `250m` is 250 ms). A
//! server applies it to the call (see `CallContext::deadline`). A peer that
//! does not know the key (storj.io/drpc) ignores it.

use std::time::Duration;

/// The invoke metadata key carrying the caller's remaining time.
pub const TIMEOUT_KEY: &str = "drpc-timeout";

/// Largest value the grammar allows in front of a unit.
const MAX_VALUE: u128 = 99_999_999;

/// Units from finest to coarsest, with their length in nanoseconds.
const UNITS: [(char, u128); 6] = [
    ('n', 1),
    ('u', 1_000),
    ('m', 1_000_000),
    ('S', 1_000_000_000),
    ('M', 60_000_000_000),
    ('H', 3_600_000_000_000),
];

/// Encodes `d` in the finest unit whose value fits in 8 digits, rounding up
/// (a deadline is never sent shorter than it is). Zero is `0n`; durations
/// past the grammar's largest (99999999 hours) are sent as that.
pub fn encode_timeout(d: Duration) -> String {
    let nanos = d.as_nanos();
    for (unit, len) in UNITS {
        let value = nanos.div_ceil(len);
        if value <= MAX_VALUE {
            return format!("{value}{unit}");
        }
    }
    format!("{MAX_VALUE}H")
}

/// Parses a timeout in the gRPC grammar, strictly: 1 to 8 ASCII digits then
/// exactly one unit character, nothing else (no sign, space or fraction).
pub fn parse_timeout(s: &str) -> Option<Duration> {
    let bytes = s.as_bytes();
    let (&unit, digits) = bytes.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = digits
        .iter()
        .fold(0, |v, &d| v * 10 + u64::from(d - b'0'));
    let (_, len) = UNITS.iter().find(|(u, _)| *u as u32 == u32::from(unit))?;
    let nanos = u128::from(value) * len;
    Some(Duration::new(
        (nanos / 1_000_000_000) as u64,
        (nanos % 1_000_000_000) as u32,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_in_the_finest_unit_that_fits() {
        assert_eq!(encode_timeout(Duration::ZERO), "0n");
        assert_eq!(encode_timeout(Duration::from_nanos(1)), "1n");
        assert_eq!(encode_timeout(Duration::from_millis(250)), "250000u");
        assert_eq!(encode_timeout(Duration::from_nanos(99_999_999)), "99999999n");
        assert_eq!(encode_timeout(Duration::from_nanos(100_000_000)), "100000u");
        assert_eq!(encode_timeout(Duration::from_secs(5)), "5000000u");
        assert_eq!(encode_timeout(Duration::from_secs(100)), "100000m");
        assert_eq!(encode_timeout(Duration::from_secs(100_000)), "100000S");
        assert_eq!(encode_timeout(Duration::from_secs(100_000_000)), "1666667M");
        assert_eq!(encode_timeout(Duration::from_secs(6_000_000_000)), "1666667H");
        assert_eq!(encode_timeout(Duration::MAX), "99999999H");
    }

    #[test]
    fn rounds_up_never_down() {
        // 100000001 ns does not fit in 8 digits: 100001 us, not 100000 us.
        assert_eq!(encode_timeout(Duration::from_nanos(100_000_001)), "100001u");
        for nanos in [1u64, 7, 999, 123_456_789, 5_000_000_001, 98_765_432_123_456] {
            let d = Duration::from_nanos(nanos);
            let back = parse_timeout(&encode_timeout(d)).unwrap();
            assert!(back >= d, "{d:?} came back as {back:?}");
        }
    }

    #[test]
    fn parses_every_unit() {
        assert_eq!(parse_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout("4u"), Some(Duration::from_micros(4)));
        assert_eq!(parse_timeout("5n"), Some(Duration::from_nanos(5)));
        assert_eq!(parse_timeout("0n"), Some(Duration::ZERO));
        assert_eq!(parse_timeout("00000001S"), Some(Duration::from_secs(1)));
        assert_eq!(
            parse_timeout("99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
    }

    #[test]
    fn rejects_what_the_grammar_does_not_allow() {
        for bad in [
            "", "m", "S", "123", "123456789m", "-1S", "+1S", "1.5S", " 1S", "1S ", "1s", "1h",
            "1x", "1SS", "١S", "1\u{0}S", "0x1S",
        ] {
            assert_eq!(parse_timeout(bad), None, "{bad:?}");
        }
    }
}
