//! The metadata and Error payload decoders: no panic, and what decodes
//! re-encodes to something that decodes the same.
#![no_main]

use drpc_core::{metadata, wire};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(md) = metadata::decode(data) {
        assert_eq!(metadata::decode(&metadata::encode(&md)).unwrap(), md);
    }
    let (code, message) = wire::decode_error(data);
    if data.len() >= 8 {
        let again = wire::decode_error(&wire::encode_error(code, &message));
        assert_eq!(again, (code, message));
    }
});
