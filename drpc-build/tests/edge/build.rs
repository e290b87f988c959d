//! Compiles the edge-case protos the way a user's build script would.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let protos = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../proto");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    drpc_build::configure()
        .include_file("edge.rs")
        .file_descriptor_set_path(out.join("edge.fds"))
        .type_attribute(".edge.common.Tag", "#[derive(Eq, Hash)]")
        .field_attribute(".edge.v1.Item.type", "#[doc = \"(a field attribute from build.rs)\"]")
        .compile_protos(&[protos.join("edge.proto")], &[&protos])?;
    // The README's example, with every default.
    drpc_build::compile_protos(protos.join("kv.proto"))?;
    let stubs = out.join("stubs");
    std::fs::create_dir_all(&stubs)?;
    drpc_build::configure()
        .build_client(false)
        .server_default_stubs(true)
        .out_dir(&stubs)
        .compile_protos(&[protos.join("stubs.proto")], &[&protos])
}
