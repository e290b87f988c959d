//! The InvokeMetadata payload: a protobuf `map<string,string>` at field 1, i.e.
//! entries `0x0A len { 0x0A klen key 0x12 vlen value }`.

use crate::wire::{put_varint, read_varint};
use std::collections::BTreeMap;

/// Invoke metadata: string keys to string values, kept sorted so encoding is
/// deterministic.
pub type Metadata = BTreeMap<String, String>;

/// Encodes metadata; empty metadata encodes to no bytes.
pub fn encode(md: &Metadata) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in md {
        let mut entry = Vec::with_capacity(k.len() + v.len() + 8);
        put_field(&mut entry, 1, k.as_bytes());
        put_field(&mut entry, 2, v.as_bytes());
        put_field(&mut out, 1, &entry);
    }
    out
}

/// The exact length of `encode(md)`, without encoding.
pub fn encoded_len(md: &Metadata) -> usize {
    md.iter()
        .map(|(k, v)| {
            let entry = field_len(k.len()) + field_len(v.len());
            field_len(entry)
        })
        .sum()
}

/// A length-delimited field of a one-byte tag and `len` bytes of data.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Memory an entry costs once decoded beyond its key and value bytes (two
/// string headers and the map's node, amortized).
const ENTRY_OVERHEAD: usize = 96;

/// What decoded metadata costs in memory, approximately.
pub fn cost(md: &Metadata) -> usize {
    md.iter()
        .map(|(k, v)| k.len() + v.len() + ENTRY_OVERHEAD)
        .sum()
}

/// Decodes metadata unless it would cost more than `max_cost` bytes of
/// memory (then `Ok(None)`), checked while decoding.
pub fn decode_limited(buf: &[u8], max_cost: usize) -> Result<Option<Metadata>, MetadataError> {
    let mut spent = 0usize;
    decode_with(buf, |k, v| {
        spent += k.len() + v.len() + ENTRY_OVERHEAD;
        spent <= max_cost
    })
}

/// Appends one entry to an encoded payload (what [`encode`] makes of a map
/// holding it); the key must not be in the payload already.
pub fn put_entry(out: &mut Vec<u8>, key: &str, value: &str) {
    let mut entry = Vec::with_capacity(key.len() + value.len() + 8);
    put_field(&mut entry, 1, key.as_bytes());
    put_field(&mut entry, 2, value.as_bytes());
    put_field(out, 1, &entry);
}

fn put_field(out: &mut Vec<u8>, field: u64, data: &[u8]) {
    put_varint(out, field << 3 | 2);
    put_varint(out, data.len() as u64);
    out.extend_from_slice(data);
}

/// Why a metadata payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataError(pub &'static str);

impl std::fmt::Display for MetadataError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed metadata: {}", self.0)
    }
}

impl std::error::Error for MetadataError {}

/// Decodes metadata. Unknown fields are skipped as protobuf requires; a later
/// duplicate key wins, as in a protobuf map.
pub fn decode(buf: &[u8]) -> Result<Metadata, MetadataError> {
    Ok(decode_with(buf, |_, _| true)?.expect("never refused"))
}

/// Decodes, asking `admit` before keeping each entry; `Ok(None)` once it refuses.
fn decode_with(
    mut buf: &[u8],
    mut admit: impl FnMut(&[u8], &[u8]) -> bool,
) -> Result<Option<Metadata>, MetadataError> {
    let mut md = Metadata::new();
    while !buf.is_empty() {
        let (field, data, rest) = next_field(buf)?;
        buf = rest;
        if field != (1, 2) {
            continue;
        }
        let (mut key, mut value) = (Vec::new(), Vec::new());
        let mut entry = data.unwrap_or_default();
        while !entry.is_empty() {
            let (f, d, rest) = next_field(entry)?;
            entry = rest;
            match (f, d) {
                ((1, 2), Some(d)) => key = d.to_vec(),
                ((2, 2), Some(d)) => value = d.to_vec(),
                _ => {}
            }
        }
        if !admit(&key, &value) {
            return Ok(None);
        }
        let key = String::from_utf8(key).map_err(|_| MetadataError("key is not UTF-8"))?;
        let value = String::from_utf8(value).map_err(|_| MetadataError("value is not UTF-8"))?;
        md.insert(key, value);
    }
    Ok(Some(md))
}

/// One protobuf field: (number, wire type), its data if length-delimited, and
/// the bytes after it.
type Field<'a> = ((u64, u8), Option<&'a [u8]>, &'a [u8]);

fn next_field(buf: &[u8]) -> Result<Field<'_>, MetadataError> {
    let varint = |b: &[u8]| match read_varint(b) {
        Ok(Some(v)) => Ok(v),
        _ => Err(MetadataError("bad varint")),
    };
    let (tag, n) = varint(buf)?;
    let buf = &buf[n..];
    let field = (tag >> 3, (tag & 7) as u8);
    match field.1 {
        0 => {
            let (_, n) = varint(buf)?;
            Ok((field, None, &buf[n..]))
        }
        1 | 5 => {
            let n = if field.1 == 1 { 8 } else { 4 };
            if buf.len() < n {
                return Err(MetadataError("truncated fixed field"));
            }
            Ok((field, None, &buf[n..]))
        }
        2 => {
            let (len, n) = varint(buf)?;
            let buf = &buf[n..];
            if len > buf.len() as u64 {
                return Err(MetadataError("length past the end"));
            }
            let (data, rest) = buf.split_at(len as usize);
            Ok((field, Some(data), rest))
        }
        _ => Err(MetadataError("unsupported wire type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_entries_as_the_spec_says() {
        let md = Metadata::from([("k".to_string(), "vv".to_string())]);
        assert_eq!(
            encode(&md),
            [0x0a, 0x07, 0x0a, 0x01, b'k', 0x12, 0x02, b'v', b'v']
        );
        assert!(encode(&Metadata::new()).is_empty());
    }

    #[test]
    fn round_trips_unicode_and_many_entries() {
        let mut md = Metadata::new();
        md.insert("x-drpc-test".into(), "hello/世界".into());
        md.insert("empty".into(), String::new());
        md.insert("big".into(), "v".repeat(300));
        assert_eq!(decode(&encode(&md)).unwrap(), md);
    }

    #[test]
    fn encoded_len_is_exact() {
        for (klen, vlen, n) in [
            (0, 0, 1),
            (1, 127, 3),
            (5, 128, 40),
            (200, 16_384, 2),
            (1, 2_097_152 / if cfg!(miri) { 64 } else { 1 }, 1),
        ] {
            let md: Metadata = (0..n)
                .map(|i| (format!("{i:0>klen$}"), "v".repeat(vlen)))
                .collect();
            assert_eq!(
                encoded_len(&md),
                encode(&md).len(),
                "key {klen} value {vlen} entries {n}"
            );
        }
    }

    #[test]
    fn decode_limited_stops_at_the_cost() {
        let md: Metadata = (0..200).map(|i| (i.to_string(), String::new())).collect();
        let bytes = encode(&md);
        assert_eq!(decode_limited(&bytes, cost(&md)).unwrap(), Some(md.clone()));
        assert_eq!(decode_limited(&bytes, cost(&md) - 1).unwrap(), None);
    }

    #[test]
    fn rejects_truncation_and_skips_unknown_fields() {
        let md = Metadata::from([("a".to_string(), "b".to_string())]);
        let bytes = encode(&md);
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut with_unknown = vec![0x10, 0x05]; // field 2, varint 5
        with_unknown.extend_from_slice(&bytes);
        assert_eq!(decode(&with_unknown).unwrap(), md);
        assert!(decode(&[0x0a, 0x02, 0x0a, 0x05]).is_err());
        assert!(
            decode(&[0x0a, 0x03, 0x0a, 0x01, 0xff]).is_err(),
            "non-UTF-8 key"
        );
    }
}
