#!/usr/bin/env bash
# Installs libdrpc (shared and static library), include/drpc.h, a drpc.pc
# pkg-config file and the valgrind suppressions under PREFIX:
#
#   drpc-ffi/install.sh PREFIX
#
#   PREFIX/lib/libdrpc.so.X.Y.Z             the shared library (SONAME libdrpc.so.0.Y
#   PREFIX/lib/libdrpc.so.0.Y -> ...X.Y.Z    while the major version is 0, else
#   PREFIX/lib/libdrpc.so -> libdrpc.so.0.Y  libdrpc.so.X), and its links
#   PREFIX/lib/libdrpc.a
#   PREFIX/include/drpc.h
#   PREFIX/lib/pkgconfig/drpc.pc
#   PREFIX/share/drpc/valgrind.supp         (pkg-config --variable=valgrind_suppressions drpc)
#
# drpc.pc's Libs carry -Wl,-rpath,PREFIX/lib, so a program built with
# `pkg-config --libs drpc` finds the library at run time without
# LD_LIBRARY_PATH or ldconfig. (Installing into a directory the dynamic
# linker already searches, e.g. PREFIX=/usr/local on Debian, you may run
# `ldconfig` instead and ignore the rpath.)
#
# Builds the library first (cargo build --release -p drpc-ffi) unless
# DRPC_NO_BUILD=1. Honours CARGO_TARGET_DIR and DESTDIR (staged installs:
# files go to DESTDIR/PREFIX, drpc.pc still names PREFIX). Then:
#   cc app.c $(pkg-config --cflags --libs drpc)            # shared
#   cc app.c $(pkg-config --cflags drpc) PREFIX/lib/libdrpc.a $(pkg-config --libs-only-l --static drpc | sed s/-ldrpc//)
set -euo pipefail

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 PREFIX" >&2
    exit 2
fi
prefix=$1
case "$prefix" in
    /*) ;;
    *) prefix="$(pwd)/$prefix" ;;
esac
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
dest="${DESTDIR:-}$prefix"

if [ "${DRPC_NO_BUILD:-0}" != 1 ]; then
    (cd "$root" && cargo build --release -p drpc-ffi)
fi
for f in "$target/release/libdrpc.so" "$target/release/libdrpc.a" "$root/include/drpc.h" "$root/tests/c/valgrind.supp"; do
    [ -f "$f" ] || { echo "install.sh: missing $f (build drpc-ffi first)" >&2; exit 1; }
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
version=${version:-0.0.0}
# The SONAME the library was linked with (drpc-ffi/build.rs).
soname=$(readelf -d "$target/release/libdrpc.so" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
[ -n "$soname" ] || { echo "install.sh: $target/release/libdrpc.so has no SONAME" >&2; exit 1; }
real="libdrpc.so.$version"

install -d "$dest/lib/pkgconfig" "$dest/include" "$dest/share/drpc"
rm -f "$dest/lib/libdrpc.so" "$dest/lib/$soname"
install -m 0755 "$target/release/libdrpc.so" "$dest/lib/$real"
[ "$soname" = "$real" ] || ln -s "$real" "$dest/lib/$soname"
ln -s "$soname" "$dest/lib/libdrpc.so"
install -m 0644 "$target/release/libdrpc.a" "$dest/lib/libdrpc.a"
install -m 0644 "$root/include/drpc.h" "$dest/include/drpc.h"
install -m 0644 "$root/tests/c/valgrind.supp" "$dest/share/drpc/valgrind.supp"
cat > "$dest/lib/pkgconfig/drpc.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include
valgrind_suppressions=\${prefix}/share/drpc/valgrind.supp

Name: drpc
Description: DRPC with stream multiplexing (C API of drpc-rs)
Version: $version
Libs: -L\${libdir} -Wl,-rpath,\${libdir} -ldrpc
Libs.private: -lpthread -ldl -lm -lrt
Cflags: -I\${includedir}
PC
chmod 0644 "$dest/lib/pkgconfig/drpc.pc"
echo "installed libdrpc $version ($soname) under $dest"
