#!/usr/bin/env bash
# Installs libdrpc (shared and static library), include/drpc.h and a drpc.pc
# pkg-config file under PREFIX:
#
#   drpc-ffi/install.sh PREFIX
#
#   PREFIX/lib/libdrpc.so  PREFIX/lib/libdrpc.a
#   PREFIX/include/drpc.h  PREFIX/lib/pkgconfig/drpc.pc
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
for f in "$target/release/libdrpc.so" "$target/release/libdrpc.a" "$root/include/drpc.h"; do
    [ -f "$f" ] || { echo "install.sh: missing $f (build drpc-ffi first)" >&2; exit 1; }
done

version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$root/Cargo.toml" | head -n1)
version=${version:-0.0.0}

install -d "$dest/lib/pkgconfig" "$dest/include"
install -m 0755 "$target/release/libdrpc.so" "$dest/lib/libdrpc.so"
install -m 0644 "$target/release/libdrpc.a" "$dest/lib/libdrpc.a"
install -m 0644 "$root/include/drpc.h" "$dest/include/drpc.h"
cat > "$dest/lib/pkgconfig/drpc.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: drpc
Description: DRPC with stream multiplexing (C API of drpc-rs)
Version: $version
Libs: -L\${libdir} -ldrpc
Libs.private: -lpthread -ldl -lm -lrt
Cflags: -I\${includedir}
PC
chmod 0644 "$dest/lib/pkgconfig/drpc.pc"
echo "installed libdrpc $version under $dest"
