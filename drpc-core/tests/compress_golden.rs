//! Golden tests of message compression against the Go codecs cockroachdb/drpc
//! uses (see tests/go/compress): Go's snappy and minlz-fastest encodings,
//! including the snappy blocks cockroachdb/drpc sends under `minlz-fastest`
//! for messages of 4 KiB and less, decode here to the original bytes; and
//! our encodings, committed as tests/go/compress/testdata/rust-*, are what
//! this build produces (the Go test decodes them with the Go codecs).
//! DRPC_REGENERATE_GOLDEN=1 rewrites the rust-* files.

use drpc_core::Compression;
use std::path::PathBuf;

const SIZES: [usize; 11] = [0, 1, 15, 16, 17, 100, 1000, 4096, 4097, 20000, 100000];

/// The payload tests/go/compress builds: "drpc-0 drpc-1 ..." cut to `n`
/// bytes, or xorshift32 bytes.
fn input(n: usize, random: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 16);
    if random {
        let mut x: u32 = 2463534242;
        while out.len() < n {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            out.push(x as u8);
        }
        return out;
    }
    let mut i = 0;
    while out.len() < n {
        out.extend_from_slice(format!("drpc-{i} ").as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

fn payloads() -> Vec<(String, Vec<u8>)> {
    let mut ps: Vec<(String, Vec<u8>)> = SIZES.iter().map(|&n| (format!("text-{n}"), input(n, false))).collect();
    ps.push(("random-5000".to_string(), input(5000, true)));
    ps
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/go/compress/testdata")
}

fn read(name: &str) -> Vec<u8> {
    let path = testdata().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn go_encodings_decode_here() {
    for (name, data) in payloads() {
        for (file, codec) in [
            (format!("go-snappy-{name}.bin"), Compression::Snappy),
            (format!("go-minlz-fastest-{name}.bin"), Compression::MinLzFastest),
            // cockroachdb/drpc: snappy blocks under minlz-fastest up to 4 KiB.
            (format!("go-cockroach-minlz-{name}.bin"), Compression::MinLzFastest),
        ] {
            let got = codec.decompress(&read(&file), data.len()).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(got, data, "{file} decodes to other bytes");
        }
    }
}

#[test]
fn our_encodings_are_the_committed_ones() {
    let regenerate = std::env::var("DRPC_REGENERATE_GOLDEN").as_deref() == Ok("1");
    for (name, data) in payloads() {
        for codec in [Compression::Snappy, Compression::MinLzFastest] {
            let file = format!("rust-{}-{name}.bin", codec.name());
            let packed = codec.compress(&data).unwrap();
            assert_eq!(codec.decompress(&packed, data.len()).unwrap(), data);
            if regenerate {
                std::fs::write(testdata().join(&file), &packed).unwrap();
            } else {
                assert_eq!(
                    read(&file),
                    packed,
                    "{file} is stale: regenerate with DRPC_REGENERATE_GOLDEN=1 and run the Go test (tests/go/compress)"
                );
            }
        }
    }
}
