//! Gives libdrpc.so its SONAME (Linux), following the convention of
//! cargo-c: `libdrpc.so.MAJOR`, or `libdrpc.so.0.MINOR` while the major
//! version is 0 (where every minor release may break the ABI).
//!
//! Programs linked against the library record that name, so it must exist
//! next to the library at run time: this also makes the symlink
//! `libdrpc.so.X -> libdrpc.so` in the profile's output directory (where
//! the in-tree tests, examples and the Go binding link it with an rpath).
//! `drpc-ffi/install.sh` installs the real versioned file and both links.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let major = std::env::var("CARGO_PKG_VERSION_MAJOR").expect("cargo sets it");
    let minor = std::env::var("CARGO_PKG_VERSION_MINOR").expect("cargo sets it");
    let soname = if major == "0" {
        format!("libdrpc.so.0.{minor}")
    } else {
        format!("libdrpc.so.{major}")
    };
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    // OUT_DIR is <target>/<profile>/build/drpc-ffi-<hash>/out.
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    let Some(profile_dir) = out.ancestors().nth(3) else {
        return;
    };
    let link = profile_dir.join(&soname);
    #[cfg(unix)]
    if std::fs::symlink_metadata(&link).is_err() {
        // Best effort: a read-only target directory only loses the link.
        let _ = std::os::unix::fs::symlink("libdrpc.so", &link);
    }
    #[cfg(not(unix))]
    let _ = link;
}
