#!/usr/bin/env bash
# Runs the Rust interop client against the Rust interop server, every case:
# mux and sequential modes against a plain server, then with flow control on
# both sides (which adds slow_reader_isolation), plain and with each codec;
# and trace_chain through a forwarding server.
# Expects `cargo build --release -p drpc-interop`.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bin="$root/target/release"
passed=0; failed=0

# run_against "SERVER FLAGS" "CLIENT FLAGS"...: one server, one client run per flag set.
run_against() {
  local server_flags=$1; shift
  local out; out=$(mktemp)
  # shellcheck disable=SC2086
  "$bin/drpc-interop-server" --addr 127.0.0.1:0 $server_flags >"$out" &
  local server=$!
  for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.05; done
  local addr; addr=$(head -n1 "$out" | awk '{print $2}')
  for client_flags in "$@"; do
    echo "== rust client ($client_flags) -> rust server (${server_flags:-default})"
    local log
    # shellcheck disable=SC2086
    log=$("$bin/drpc-interop-client" --addr "$addr" --case all $client_flags) || true
    echo "$log"
    passed=$((passed + $(grep -c '^PASS' <<<"$log" || true)))
    failed=$((failed + $(grep -c '^FAIL' <<<"$log" || true)))
  done
  kill -TERM "$server"
  if ! wait "$server"; then echo "FAIL server did not exit cleanly on SIGTERM"; failed=$((failed + 1)); fi
  rm -f "$out"
}

run_against "" "--mode mux" "--mode sequential"

# trace_chain: client -> forwarding server -> server; the trace id and the
# (shrinking) deadline cross the hop through the handler's inheritance.
chain() {
  local back_out front_out; back_out=$(mktemp); front_out=$(mktemp)
  "$bin/drpc-interop-server" --addr 127.0.0.1:0 >"$back_out" &
  local back=$!
  for _ in $(seq 100); do [ -s "$back_out" ] && break; sleep 0.05; done
  local back_addr; back_addr=$(head -n1 "$back_out" | awk '{print $2}')
  "$bin/drpc-interop-server" --addr 127.0.0.1:0 --forward "$back_addr" >"$front_out" &
  local front=$!
  for _ in $(seq 100); do [ -s "$front_out" ] && break; sleep 0.05; done
  local front_addr; front_addr=$(head -n1 "$front_out" | awk '{print $2}')
  for mode in mux sequential; do
    echo "== rust client ($mode) -> rust server --forward -> rust server: trace_chain"
    local log
    log=$("$bin/drpc-interop-client" --addr "$front_addr" --mode "$mode" --case trace_chain) || true
    echo "$log"
    passed=$((passed + $(grep -c '^PASS' <<<"$log" || true)))
    failed=$((failed + $(grep -c '^FAIL' <<<"$log" || true)))
  done
  kill -TERM "$front" "$back"
  wait "$front" || { echo "FAIL forwarding server did not exit cleanly"; failed=$((failed + 1)); }
  wait "$back" || { echo "FAIL server did not exit cleanly"; failed=$((failed + 1)); }
  rm -f "$back_out" "$front_out"
}
chain
# TLS and mutual TLS, with throwaway certificates made now (drpc-tls's rcgen example).
certs=$(mktemp -d); trap 'rm -rf "$certs"' EXIT
(cd "$root" && cargo run -q --release -p drpc-tls --example gen-test-certs -- "$certs")
tls_server="--tls-cert $certs/server.pem --tls-key $certs/server-key.pem"
run_against "$tls_server" "--mode mux --tls-ca $certs/ca.pem --tls-server-name localhost" \
  "--mode sequential --tls-ca $certs/ca.pem --compression snappy"
run_against "$tls_server --tls-client-ca $certs/ca.pem" \
  "--mode mux --tls-ca $certs/ca.pem --tls-cert $certs/client.pem --tls-key $certs/client-key.pem"
run_against "--flow-control" "--mode mux --flow-control" "--mode sequential --flow-control" \
  "--mode mux --flow-control --compression snappy" "--mode mux --flow-control --compression minlz-fastest"
echo "interop: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
