#!/usr/bin/env bash
# Tests of the cgo binding (see README.md). Non-interactive: builds libdrpc
# (cargo build --release -p drpc-ffi; a no-op when fresh), then runs go test -count=1 ./...
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# Always through cargo (a no-op when fresh): a stale libdrpc would lack
# newer symbols (TLS) the binding links against.
echo "bindings/go/run.sh: building libdrpc" >&2
(cd "$root" && cargo build --release -p drpc-ffi)
cd "$here"
CGO_ENABLED=1 go test -count=1 "$@" ./...
