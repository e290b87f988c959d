#!/usr/bin/env bash
# Runs the Rust interop client against the Rust interop server, every case, in
# mux and sequential modes. Expects `cargo build --release -p drpc-interop`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/target/release"
out=$(mktemp)
"$bin/drpc-interop-server" --addr 127.0.0.1:0 >"$out" &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$out"' EXIT
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
addr=$(head -n1 "$out" | awk '{print $2}')
passed=0; failed=0
for mode in mux sequential; do
  echo "== rust client -> rust server ($mode)"
  if log=$("$bin/drpc-interop-client" --addr "$addr" --case all --mode "$mode"); then :; fi
  echo "$log"
  passed=$((passed + $(grep -c '^PASS' <<<"$log" || true)))
  failed=$((failed + $(grep -c '^FAIL' <<<"$log" || true)))
done
kill -TERM $server
wait $server || { echo "server did not exit cleanly"; failed=$((failed + 1)); }
trap 'rm -f "$out"' EXIT
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
