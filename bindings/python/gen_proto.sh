#!/bin/sh
# Regenerates python/drpc/interop/test_pb2.py from the shared interop proto,
# and test_drpc.py (the typed TestService client/servicer, by drpc.codegen).
# Generated with protoc 3.21.12 (Debian's protobuf-compiler); the output needs
# the `protobuf` runtime >= 3.20 and works with current 4.x-7.x releases.
# test_drpc.py needs a Python with this package installed (PYTHON, default
# bindings/python/.venv/bin/python); tests/codegen/run.sh checks it is fresh.
# Usage: bindings/python/gen_proto.sh [path/to/test.proto]
set -eu
here=$(cd "$(dirname "$0")" && pwd)
proto=${1:-$here/../../../shared/interop/test.proto}
[ -f "$proto" ] || proto=/work/shared/interop/test.proto
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/drpc/interop"
cp "$proto" "$tmp/drpc/interop/test.proto"
protoc -I "$tmp" --python_out="$here/python" --pyi_out="$here/python" "$tmp/drpc/interop/test.proto"
# Where the output comes from, for whoever reads it.
note='# Regenerate with bindings/python/gen_proto.sh (protoc 3.21.12 --python_out --pyi_out).'
sed -i "1a $note" "$here/python/drpc/interop/test_pb2.py"    # after the coding line
sed -i "1i $note" "$here/python/drpc/interop/test_pb2.pyi"
echo "wrote $here/python/drpc/interop/test_pb2.py and test_pb2.pyi"
"${PYTHON:-$here/.venv/bin/python}" -m drpc.codegen --no-messages --protoc "$(command -v protoc)" -I "$tmp" \
    --out "$here/python" "$tmp/drpc/interop/test.proto"
