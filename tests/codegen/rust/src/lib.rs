//! The code drpc-build generates for tests/codegen/proto/edge/ (packages as
//! nested modules `edge::v1`, `edge::common`; plain.proto, which has no
//! package, at the crate root), and the answer table of tests/codegen/README.md
//! served (`service`) and checked (`cases`).

include!(concat!(env!("OUT_DIR"), "/edge.rs"));

pub mod cases;
pub mod service;

/// Reads `--addr HOST:PORT` (or `--addr=HOST:PORT`), the only flag the
/// matrix passes; anything else is an error.
pub fn addr_flag(args: impl Iterator<Item = String>) -> Result<Option<String>, String> {
    let mut addr = None;
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--addr" => addr = Some(args.next().ok_or("--addr needs a value")?),
            other => match other.strip_prefix("--addr=") {
                Some(value) => addr = Some(value.to_string()),
                None => return Err(format!("unexpected argument {other:?}")),
            },
        }
    }
    Ok(addr)
}
