//! The code drpc-build generates for `../proto/edge.proto` (and what it
//! imports) and for `../proto/stubs.proto`; `tests/roundtrip.rs` serves and
//! calls every rpc over a socket.

// Packages as nested modules (`edge::v1`, `edge::common`), the file without a
// package at the crate root.
include!(concat!(env!("OUT_DIR"), "/edge.rs"));

/// `stubs.proto`: server side only, with default (Unimplemented) methods.
pub mod stubs {
    include!(concat!(env!("OUT_DIR"), "/stubs/edge.stubs.rs"));
}

/// The generated source, for tests that check what reaches the docs.
pub const EDGE_V1_SOURCE: &str = include_str!(concat!(env!("OUT_DIR"), "/edge.v1.rs"));

/// The descriptor set written by `file_descriptor_set_path`.
pub const EDGE_FDS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/edge.fds"));

pub mod checks;
pub mod service;

/// Parses `--flag value` and `--flag=value` arguments.
pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Vec<(String, String)>, String> {
    let mut parsed = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let flag = arg.strip_prefix("--").ok_or_else(|| format!("unexpected argument {arg:?}"))?;
        match flag.split_once('=') {
            Some((name, value)) => parsed.push((name.to_string(), value.to_string())),
            None => {
                let value = args.next().ok_or_else(|| format!("--{flag} needs a value"))?;
                parsed.push((flag.to_string(), value));
            }
        }
    }
    Ok(parsed)
}
