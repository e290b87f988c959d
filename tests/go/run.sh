#!/usr/bin/env bash
# Go interop tests against the real storj.io/drpc (see README.md).
# Non-interactive: builds the Rust interop programs (cargo: a no-op when
# fresh), then runs `go test ./...`, then
# bindings/go/run.sh (the cgo binding's tests; DRPC_SKIP_CGO=1 skips them).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# Always through cargo (a no-op when fresh): stale programs would lack flags
# the tests use (--tls-*, --drpcmigrate).
echo "run.sh: building the Rust interop programs" >&2
(cd "$root" && cargo build --release -p drpc-interop)
cd "$here"
# A missing Rust binary is a failure here, not a skip.
export DRPC_REQUIRE_RUST=1 DRPC_RS_ROOT="$root"
go test -count=1 "$@" ./...
# The cgo binding's tests (storj.io/drpc <-> libdrpc in one process), unless
# DRPC_SKIP_CGO=1.
if [ "${DRPC_SKIP_CGO:-0}" != 1 ] && [ -f "$root/bindings/go/go.mod" ]; then
  "$root/bindings/go/run.sh" "$@"
fi
