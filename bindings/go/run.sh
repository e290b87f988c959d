#!/usr/bin/env bash
# Tests of the cgo binding (see README.md). Non-interactive: builds libdrpc
# (cargo build --release -p drpc-ffi) if target/release/libdrpc.so is missing
# (DRPC_REBUILD=1 always builds), then runs go test -count=1 ./...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ "${DRPC_REBUILD:-0}" = 1 ] || [ ! -e "$root/target/release/libdrpc.so" ]; then
  echo "bindings/go/run.sh: building libdrpc" >&2
  (cd "$root" && cargo build --release -p drpc-ffi)
fi
cd "$here"
CGO_ENABLED=1 go test -count=1 "$@" ./...
