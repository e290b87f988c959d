#!/usr/bin/env bash
# Regenerates interoppb/ from test.proto (a byte-identical copy of
# shared/interop/test.proto; the Go package is set only on the command line so
# the .proto stays identical). Needs protoc (Debian: apt-get install
# protobuf-compiler) and the two plugins, installed from the module proxy:
#   go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
#   go install storj.io/drpc/cmd/protoc-gen-go-drpc@v1.0.0
# Tests compile from the committed output; only regeneration needs these tools.
set -euo pipefail
cd "$(dirname "$0")"
export PATH="$(go env GOPATH)/bin:$PATH"
PKG="drpc-rs/tests/go/interoppb;interoppb"
protoc -I . \
  --go_out=interoppb --go_opt=paths=source_relative --go_opt="Mtest.proto=$PKG" \
  --go-drpc_out=interoppb --go-drpc_opt=paths=source_relative --go-drpc_opt="Mtest.proto=$PKG" \
  test.proto
gofmt -l interoppb || true
