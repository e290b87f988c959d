//! The frame parser and per-stream packet assembler on arbitrary bytes: no
//! panic, no unbounded allocation, and every assembled packet within limits.
#![no_main]

use bytes::Bytes;
use drpc_core::packet::{Assembled, Assembler};
use drpc_core::wire::{parse_header, Frame};
use libfuzzer_sys::fuzz_target;
use std::collections::HashMap;

const MAX: usize = 1 << 16;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut assemblers: HashMap<u64, Assembler> = HashMap::new();
    while let Ok(Some((h, at, len))) = parse_header(rest, MAX) {
        if rest.len() < at + len {
            break;
        }
        let frame = Frame { header: h, payload: Bytes::copy_from_slice(&rest[at..at + len]) };
        rest = &rest[at + len..];
        if assemblers.len() > 64 && !assemblers.contains_key(&h.stream_id) {
            continue;
        }
        let asm = assemblers.entry(h.stream_id).or_insert_with(|| Assembler::new(0, MAX));
        match asm.push(frame) {
            Ok(Assembled::Packet(p)) => assert!(p.data.len() <= MAX),
            Ok(_) => assert!(asm.buffered() <= MAX),
            Err(_) => {
                assemblers.remove(&h.stream_id);
            }
        }
    }
});
