#!/usr/bin/env bash
# Regenerates edgepb/ from the edge-case protos (tests/codegen/proto/edge/)
# with protoc-gen-go and storj's protoc-gen-go-drpc, exactly as a user of
# storj.io/drpc would (the Go packages are set on the command line, so the
# protos stay language-neutral).
#
#   bindings/go/codegen/regen.sh            # rewrite edgepb/
#   bindings/go/codegen/regen.sh --check    # regenerate into a temp dir, diff against edgepb/
#
# Needs protoc (Debian: apt-get install protobuf-compiler); installs the two
# plugins from the Go module proxy into a private GOBIN (pinned versions).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
gobin="${CARGO_TARGET_DIR:-$root/target}/codegen-gobin"
GOBIN="$gobin" go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
GOBIN="$gobin" go install storj.io/drpc/cmd/protoc-gen-go-drpc@v1.0.0
out="$here/edgepb"
if [ "${1:-}" = --check ]; then
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi
mkdir -p "$out"
mod="drpc-rs/bindings/go/codegen/edgepb"
maps=("Medge/edge.proto=$mod/edgev1;edgev1" "Medge/common.proto=$mod/common;common" "Medge/plain.proto=$mod/plain;plain")
opts=()
for m in "${maps[@]}"; do opts+=(--go_opt="$m" --go-drpc_opt="$m"); done
PATH="$gobin:$PATH" protoc -I "$root/tests/codegen/proto" \
    --go_out="$out" --go_opt=module="$mod" --go-drpc_out="$out" --go-drpc_opt=module="$mod" "${opts[@]}" \
    edge/edge.proto edge/common.proto edge/plain.proto
if [ "${1:-}" = --check ]; then
    diff -r "$here/edgepb" "$out" && echo "edgepb is fresh"
fi
