//! Generates the TestService messages, client and server from proto/test.proto
//! with drpc-build (no protoc).
fn main() -> std::io::Result<()> {
    drpc_build::compile_protos("proto/test.proto")
}
