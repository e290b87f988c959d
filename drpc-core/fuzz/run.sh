#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 30) from its seed corpus,
# then replays the committed reproducers in fuzz/artifacts (none must crash).
# Needs a nightly toolchain and cargo-fuzz (installed from crates.io if missing).
# Usage: drpc-core/fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
seconds=${1:-30}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(frames decoders server_conn client_conn)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
cd "$here/.."
cargo +nightly fuzz build >/dev/null
for t in "${targets[@]}"; do
    work=$(mktemp -d)
    # Fuzz into a scratch copy so a local run does not churn the committed corpus.
    cp -r "fuzz/corpus/$t/." "$work/"
    echo "== fuzz $t for ${seconds}s"
    cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$seconds" -max_len=65536 \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==[0-9]+== ERROR|SUMMARY)" || true
    rm -rf "$work"
    if ls fuzz/artifacts/"$t"/* >/dev/null 2>&1; then
        echo "fuzz $t: crash artifacts in fuzz/artifacts/$t"
        exit 1
    fi
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each, no crash"
