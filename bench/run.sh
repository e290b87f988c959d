#!/usr/bin/env bash
# The drpc-rs benchmark: builds every contender, then runs them all over TCP
# loopback in one invocation (bench.py) and writes results/results.{md,json,png}.
#
#   bench/run.sh           full run (about 15 minutes on 2 cores)
#   bench/run.sh --smoke   tiny iteration counts (< 2 minutes once built): checks
#                          every contender runs; writes results/smoke.{md,json,png}
#
# Installs what it needs from crates.io, PyPI, the Go module proxy and
# Debian (strace, best effort): Rust, Go, Python 3 and gcc must be present.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="$here/build"
mkdir -p "$build"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
step() { echo "==> $*" >&2; }

# strace for the syscall counts (optional: the column is left empty without it).
if ! command -v strace >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  step "apt-get install strace"
  (apt-get install -y -q strace >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q strace >/dev/null 2>&1; }) \
    || echo "bench: strace not installable; syscall counts will be missing" >&2
fi

step "cargo build --release -p drpc-ffi (libdrpc.so)"
(cd "$root" && cargo build --release -q -p drpc-ffi)

step "cargo build --release -p drpc-tls --example gen-test-certs (certificates of the TLS run)"
(cd "$root" && cargo build --release -q -p drpc-tls --example gen-test-certs)
export DRPC_BENCH_CERTS="$build/certs"
rm -rf "$DRPC_BENCH_CERTS" && "$root/target/release/examples/gen-test-certs" "$DRPC_BENCH_CERTS"

step "cargo build --release (bench/rust: drpc-rs, drpc-rs over TLS, tonic, raw TCP)"
cargo build --release -q --manifest-path "$here/rust/Cargo.toml"

step "go build (bench/go: storj.io/drpc, grpc-go)"
(cd "$here/go" && go build -o "$build/bench-go" .)

step "cc bench/c/bench.c (C ABI)"
${CC:-cc} -O2 -Wall -std=c11 -I"$root/include" "$here/c/bench.c" -o "$build/bench-c" \
  -L"$root/target/release" -ldrpc -Wl,-rpath,"$root/target/release" -lpthread

venv="$here/.venv"
if [ ! -x "$venv/bin/python" ]; then
  step "python3 -m venv $venv"
  "${PYTHON:-python3}" -m venv "$venv"
fi
py="$venv/bin/python"
if ! "$py" -c 'import matplotlib, grpc' >/dev/null 2>&1; then
  step "pip install matplotlib grpcio"
  "$py" -m pip install -q matplotlib grpcio
fi
# (Re)install the drpc Python package when its sources or the core changed.
stamp=$(cd "$root" && find bindings/python/src bindings/python/python bindings/python/Cargo.toml \
          bindings/python/pyproject.toml drpc-core/src drpc-core/Cargo.toml -type f \
          -not -name '*.so' -not -path '*/__pycache__/*' | sort | xargs cat | sha256sum | cut -c1-16)
if [ "$(cat "$build/py-stamp" 2>/dev/null)" != "$stamp" ] || ! "$py" -c 'import drpc' >/dev/null 2>&1; then
  step "pip install ./bindings/python (maturin build)"
  CARGO_TARGET_DIR="$build/py-target" "$py" -m pip install -q --force-reinstall "$root/bindings/python"
  echo "$stamp" > "$build/py-stamp"
fi

# 10,000 connections (storj.io/drpc needs one per stream) need the fds.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
step "running bench.py $*"
exec "$py" "$here/bench.py" "$@"
