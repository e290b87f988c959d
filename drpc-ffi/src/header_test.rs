//! Checks that the committed `include/drpc.h` is what cbindgen generates
//! from this crate with `cbindgen.toml`. Set `DRPC_REGENERATE_HEADER=1` to
//! rewrite it instead.

use std::path::PathBuf;

#[test]
fn header_is_fresh() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("reading cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed")
        .write(&mut generated);
    let header = crate_dir.join("../include/drpc.h");
    if std::env::var_os("DRPC_REGENERATE_HEADER").is_some() {
        std::fs::write(&header, &generated).expect("writing include/drpc.h");
        return;
    }
    let committed = std::fs::read(&header).unwrap_or_default();
    assert!(
        committed == generated,
        "include/drpc.h is stale: regenerate it with `DRPC_REGENERATE_HEADER=1 cargo test -p drpc-ffi header`"
    );
}
