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

# The interop programs' project cases and a short trace chain: client ->
# server --forward -> server (trace id kept, new parent span, deadline
# passed on).
bin="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$bin"; }
trap cleanup EXIT
CGO_ENABLED=1 go build -o "$bin/" ./cmd/cgo-interop-server ./cmd/cgo-interop-client
start() { # OUT ARGS...: starts a server, prints its address
  local out=$1
  shift
  "$bin/cgo-interop-server" --addr 127.0.0.1:0 "$@" >"$out" 2>"$out.err" &
  pids+=($!)
  for _ in $(seq 100); do
    if head -n1 "$out" | grep -q '^listening '; then head -n1 "$out" | cut -d' ' -f2; return; fi
    sleep 0.1
  done
  echo "bindings/go/run.sh: the interop server did not start: $(cat "$out.err")" >&2
  exit 1
}
last=$(start "$bin/last.out")
first=$(start "$bin/first.out" --forward "$last")
"$bin/cgo-interop-client" --addr "$last" --case deadline_propagation --case trace_context
"$bin/cgo-interop-client" --addr "$first" --case trace_chain
echo "bindings/go/run.sh: interop project cases and trace chain passed"
