//! The shared interop test service (`proto/test.proto`, identical to
//! `shared/interop/test.proto`): a server implementation and the client cases of
//! `shared/interop/CASES.md`, used by the `drpc-interop-server` and
//! `drpc-interop-client` programs.

#[allow(clippy::all)]
pub mod pb {
    include!("pb.rs");
}

pub mod cases;
pub mod service;

/// Fully qualified rpc names of the test service.
pub mod rpc {
    pub const EMPTY_CALL: &str = "/drpc.interop.TestService/EmptyCall";
    pub const UNARY_CALL: &str = "/drpc.interop.TestService/UnaryCall";
    pub const STREAMING_OUTPUT_CALL: &str = "/drpc.interop.TestService/StreamingOutputCall";
    pub const STREAMING_INPUT_CALL: &str = "/drpc.interop.TestService/StreamingInputCall";
    pub const FULL_DUPLEX_CALL: &str = "/drpc.interop.TestService/FullDuplexCall";
    pub const HALF_DUPLEX_CALL: &str = "/drpc.interop.TestService/HalfDuplexCall";
    pub const UNIMPLEMENTED_CALL: &str = "/drpc.interop.TestService/UnimplementedCall";
    pub const GET_STATS: &str = "/drpc.interop.TestService/GetStats";
}

/// Parses `--flag value` / `--flag=value` style arguments.
pub fn parse_args(args: impl Iterator<Item = String>) -> Result<Vec<(String, Option<String>)>, String> {
    let mut out = Vec::new();
    let mut args = args.peekable();
    while let Some(arg) = args.next() {
        let Some(flag) = arg.strip_prefix("--") else { return Err(format!("unexpected argument {arg:?}")) };
        if let Some((k, v)) = flag.split_once('=') {
            out.push((k.to_string(), Some(v.to_string())));
        } else if args.peek().is_some_and(|next| !next.starts_with("--")) {
            out.push((flag.to_string(), args.next()));
        } else {
            out.push((flag.to_string(), None));
        }
    }
    Ok(out)
}
