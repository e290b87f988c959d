//! Byte-level compatibility with storj.io/drpc: the golden vectors that
//! `tests/go/wire` generates from storj.io/drpc v1.0.0 (and checks against it)
//! must be exactly what we encode, and must parse back to the same fields.

use bytes::Bytes;
use drpc_core::packet::{Assembled, Assembler};
use drpc_core::wire::{self, Frame, FrameHeader, Kind};
use drpc_core::{metadata, Metadata};
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors() -> Vec<Value> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/go/wire/testdata/wire_vectors.json"
    );
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("vectors file")).unwrap();
    doc["vectors"].as_array().unwrap().clone()
}

fn u(v: &Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("field {k}"))
}

fn b(v: &Value, k: &str) -> bool {
    v[k].as_bool().unwrap()
}

#[test]
fn every_storj_vector_encodes_and_parses_identically() {
    let all = vectors();
    assert!(all.len() >= 40, "only {} vectors", all.len());
    let mut checked = std::collections::BTreeMap::<String, usize>::new();
    for v in &all {
        let (ty, name, bytes, f) = (
            v["type"].as_str().unwrap(),
            v["name"].as_str().unwrap(),
            unhex(v["hex"].as_str().unwrap()),
            &v["fields"],
        );
        match ty {
            "varint" => {
                let mut out = Vec::new();
                wire::put_varint(&mut out, u(f, "value"));
                assert_eq!(out, bytes, "{name}");
                assert_eq!(
                    wire::read_varint(&bytes).unwrap(),
                    Some((u(f, "value"), bytes.len())),
                    "{name}"
                );
            }
            "frame" => {
                let header = FrameHeader {
                    stream_id: u(f, "stream_id"),
                    message_id: u(f, "message_id"),
                    kind: Kind(u(f, "kind") as u8),
                    control: b(f, "control"),
                    done: b(f, "done"),
                };
                let payload = unhex(f["payload_hex"].as_str().unwrap());
                let mut out = Vec::new();
                wire::put_frame(&mut out, &header, &payload);
                assert_eq!(out, bytes, "{name}");
                let (parsed, at, len) = wire::parse_header(&bytes, usize::MAX).unwrap().unwrap();
                assert_eq!(
                    (parsed, &bytes[at..at + len]),
                    (header, &payload[..]),
                    "{name}"
                );
            }
            "packet" => {
                let payload = unhex(f["payload_hex"].as_str().unwrap());
                let (sid, mid, kind) = (
                    u(f, "stream_id"),
                    u(f, "message_id"),
                    Kind(u(f, "kind") as u8),
                );
                let mut out = Vec::new();
                wire::put_packet(
                    &mut out,
                    sid,
                    mid,
                    kind,
                    b(f, "control"),
                    &payload,
                    u(f, "split") as usize,
                );
                assert_eq!(out, bytes, "{name}");
                // Parse the frames back and reassemble the packet.
                let mut rest = &bytes[..];
                let mut asm = Assembler::new(0, usize::MAX);
                let mut frames = 0;
                let mut packet = None;
                while !rest.is_empty() {
                    let (h, at, len) = wire::parse_header(rest, usize::MAX).unwrap().unwrap();
                    let frame = Frame {
                        header: h,
                        payload: Bytes::copy_from_slice(&rest[at..at + len]),
                    };
                    rest = &rest[at + len..];
                    frames += 1;
                    if let Assembled::Packet(p) = asm.push(frame).unwrap() {
                        packet = Some(p);
                    }
                }
                assert_eq!(frames, u(f, "frames"), "{name}");
                let p = packet.unwrap_or_else(|| panic!("{name}: no packet"));
                assert_eq!(
                    (p.message_id, p.kind, &p.data[..]),
                    (mid, kind, &payload[..]),
                    "{name}"
                );
            }
            "error" => {
                let msg = f["message"].as_str().unwrap();
                assert_eq!(wire::encode_error(u(f, "code"), msg), bytes, "{name}");
                assert_eq!(
                    wire::decode_error(&bytes),
                    (u(f, "code"), msg.to_string()),
                    "{name}"
                );
            }
            "metadata" => {
                let md: Metadata = f["entries"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        (
                            e[0].as_str().unwrap().to_string(),
                            e[1].as_str().unwrap().to_string(),
                        )
                    })
                    .collect();
                assert_eq!(metadata::encode(&md), bytes, "{name}");
                assert_eq!(metadata::decode(&bytes).unwrap(), md, "{name}");
            }
            "invalid_frame" => {
                assert!(
                    wire::parse_header(&bytes, usize::MAX).is_err(),
                    "{name} must be rejected"
                );
            }
            other => panic!("unknown vector type {other}"),
        }
        *checked.entry(ty.to_string()).or_default() += 1;
    }
    for ty in [
        "varint",
        "frame",
        "packet",
        "error",
        "metadata",
        "invalid_frame",
    ] {
        assert!(checked.get(ty).copied().unwrap_or(0) > 0, "no {ty} vectors");
    }
}
