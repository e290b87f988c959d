#!/usr/bin/env bash
# Cross-implementation interop matrix. Builds what is missing of the Rust
# interop programs and libdrpc (needed by the C and go-cgo implementations,
# whose programs matrix.py compiles itself), then runs matrix.py (extra
# arguments are passed on, e.g. --only rust --only go-storj, --require python,
# --require-all, --no-flow-control). With CI=true a missing implementation
# fails the run (see --require-all / --allow-absent).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
if [ ! -x "$target/release/drpc-interop-server" ] || [ ! -x "$target/release/drpc-interop-client" ]; then
  (cd "$root" && cargo build --release -p drpc-interop)
fi
if [ ! -e "$target/release/libdrpc.so" ]; then
  (cd "$root" && cargo build --release -p drpc-ffi)
fi
python3 "$here/matrix.py" "$@"
# The C and Python interop servers (the core under their bindings) under the
# hostile suite's attacks: RSS within the budget, new clients served.
if [ "$#" -eq 0 ]; then
  python="${DRPC_PYTHON:-$root/bindings/python/.venv/bin/python}"
  for server in "$target/c-tests/interop_server" "$python -m drpc.interop.server"; do
    echo "hostile suite against: $server"
    (cd "$root" && DRPC_HOSTILE_SERVER="$server" cargo test -q --release -p drpc-interop --test hostile_rss -- --include-ignored)
  done
fi
