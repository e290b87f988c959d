#!/usr/bin/env bash
# Cross-implementation interop matrix. Builds the Rust interop programs if they
# are missing, then runs matrix.py (extra arguments are passed on, e.g.
# --only rust --only go-storj, --require python, --no-flow-control).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
if [ ! -x "$root/target/release/drpc-interop-server" ] || [ ! -x "$root/target/release/drpc-interop-client" ]; then
  (cd "$root" && cargo build --release -p drpc-interop)
fi
exec python3 "$here/matrix.py" "$@"
