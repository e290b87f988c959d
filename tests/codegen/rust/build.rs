//! Compiles tests/codegen/proto/edge/*.proto, the protos every generator of
//! the cross-language matrix compiles, with drpc-build.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let proto = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let files = ["edge/edge.proto", "edge/common.proto", "edge/plain.proto"].map(|f| proto.join(f));
    drpc_build::configure().include_file("edge.rs").compile_protos(&files, &[&proto])
}
