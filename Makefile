# drpc-rs: the two commands a newcomer needs are `make demo` and `make test`.
# Both install what they need on a fresh machine (Rust, Go, Python and gcc are
# assumed present; everything else comes from crates.io, PyPI, the Go module
# proxy and Debian's packages).

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr/local

.PHONY: demo test test-rust test-interop test-c test-python test-codegen test-go test-matrix test-fuzz test-bench-smoke bench lint test-miri soak install

## The main job: 1,000 concurrent unary calls and several bidi streams over ONE connection
## (`make demo TLS=1`: the same over mutual TLS, with an identity check in the handlers;
## `make demo CHANNEL=1`: a Channel over three local servers: the per-server split,
## one server killed mid-run (retries), restarted (used again), and a graceful drain).
TLS ?= 0
demo:
ifeq ($(TLS),1)
	$(CARGO) run --release -p drpc-tls --example demo-tls
else ifdef CHANNEL
	$(CARGO) run --release -p drpc-channel --example channel_demo
else
	$(CARGO) run --release -p drpc-core --example demo
endif

## Every test: lint, Rust, interop, C, Python, the code generators, Go, and the cross-implementation matrix.
test: lint test-rust test-miri test-interop test-c test-python test-codegen test-go test-matrix test-fuzz test-bench-smoke
	@echo "make test: all suites passed"

## Every contender once with tiny counts, so the benchmark keeps working.
test-bench-smoke:
	bench/run.sh --smoke

## The full benchmark (about 10 minutes): bench/results/results.{md,png}.
bench:
	bench/run.sh

test-rust:
	$(CARGO) test --workspace --all-targets

## The Rust interop client against the Rust interop server, both modes; then the
## interop server as a process under 64-connection attacks (RSS within its budget).
test-interop:
	$(CARGO) build --release -p drpc-interop
	tests/interop/run.sh
	$(CARGO) test --release -p drpc-interop --test hostile_rss -- --include-ignored

test-c:
	tests/c/run.sh

test-python:
	bindings/python/run-tests.sh

## The Python and C code generators: generated clients x generated servers, every rpc kind.
test-codegen:
	tests/codegen/run.sh

test-go:
	tests/go/run.sh

test-matrix:
	tests/matrix/run.sh

## clippy, and the offline dependency source/license check (tools/check-deps.py).
## Every fuzz target briefly (FUZZ_SECONDS each), so they keep building and running.
FUZZ_SECONDS ?= 30
test-fuzz:
	drpc-core/fuzz/run.sh $(FUZZ_SECONDS)

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 tools/check-deps.py

## Mixed load through the Rust, C and Python layers for DURATION seconds (not in `test`).
DURATION ?= 600
soak:
	python3 tests/soak/soak.py $(DURATION)

## The I/O-free layers' unit tests under miri (drpc-core has no unsafe code;
## drpc-ffi's unsafe is exercised under valgrind by tests/c).
test-miri:
	rustup component add miri rust-src --toolchain nightly
	$(CARGO) +nightly miri test -p drpc-core --lib

## libdrpc, drpc.h and drpc.pc, and the C code generator protoc-gen-drpc-c in PREFIX/bin.
install:
	drpc-ffi/install.sh $(PREFIX)
	install -D -m 0755 codegen/c/protoc-gen-drpc-c $(DESTDIR)$(PREFIX)/bin/protoc-gen-drpc-c
