#!/usr/bin/env bash
# Builds libdrpc and runs every C/C++ test of it:
#   - include/drpc.h freshness (cargo test -p drpc-ffi) and a clean compile of
#     the header as C99 and C++17 with -Wall -Wextra -Werror -pedantic;
#   - the C unit tests (tests/c/unit_tests.c) under valgrind memcheck;
#   - the race tests (tests/c/race_tests.c: every scenario raced
#     RACE_ITERS times, default 300) under valgrind memcheck, and again
#     natively with AddressSanitizer (race_tests_asan);
#   - the observability tests (tests/c/observe_tests.c: interceptors,
#     deadlines, trace context, metrics; races OBSERVE_ITERS times, default
#     300) under valgrind memcheck, and again natively with AddressSanitizer;
#   - the channel tests (tests/c/channel_tests.c: drpc_channel_* and
#     drpc_health_* against three servers, races CHANNEL_ITERS times) under
#     valgrind memcheck;
#   - the starvation test (tests/c/starvation_test.c): 600 idle streaming
#     handlers do not delay a unary call; an exhausted handler pool refuses
#     with RESOURCE_EXHAUSTED; DRPC_WORKER_THREADS / DRPC_HANDLER_THREADS and
#     drpc_runtime_configure are applied;
#   - the C interop client and server (CASES.md) against the Rust interop
#     programs and against each other, in mux and sequential mode, and
#     against the Rust ones in mux mode with --flow-control on both sides
#     (adds slow_reader_isolation), with the C programs under valgrind;
#   - the C++17 RAII example (examples/cpp) under valgrind;
#   - drpc-ffi/install.sh into a temporary prefix, and a tiny program built
#     against the installed copy with pkg-config alone (shared, run without
#     LD_LIBRARY_PATH; and static); the SONAME and versioned files; the
#     installed valgrind suppressions.
# Installs missing Debian packages it needs (as root, non-interactively).
# The last line is "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
build="$target/c-tests"
logs="$build/logs"
passed=0
failed=0
failures=()

pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1${2:+: $2}"; }
die() { echo "run.sh: $*" >&2; echo "$passed passed, $((failed + 1)) failed"; exit 1; }

# ---- prerequisites ---------------------------------------------------------
need_pkgs=()
command -v gcc >/dev/null || need_pkgs+=(gcc)
command -v g++ >/dev/null || need_pkgs+=(g++)
command -v pkg-config >/dev/null || need_pkgs+=(pkg-config)
command -v valgrind >/dev/null || need_pkgs+=(valgrind)
[ -f /usr/include/protobuf-c/protobuf-c.h ] || need_pkgs+=(libprotobuf-c-dev)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing ${need_pkgs[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "${need_pkgs[@]}" >/dev/null ||
        die "could not install ${need_pkgs[*]}"
fi
command -v cargo >/dev/null || die "cargo is required"

mkdir -p "$build" "$logs"
cd "$root"

# The committed proto copy must match the shared one, when it is there.
for shared in "$root/../shared/interop/test.proto" "/work/shared/interop/test.proto"; do
    if [ -f "$shared" ]; then
        if cmp -s "$shared" "$here/proto/test.proto"; then pass proto_copy_fresh; else
            fail proto_copy_fresh "tests/c/proto/test.proto differs from $shared (see tests/c/proto/README.md)"
        fi
        break
    fi
done

# ---- build -----------------------------------------------------------------
echo "building drpc-ffi (release)"
cargo build --release -p drpc-ffi >"$logs/cargo-ffi.log" 2>&1 || { cat "$logs/cargo-ffi.log"; die "cargo build -p drpc-ffi failed"; }
have_rust_interop=0
if cargo build --release -p drpc-interop >"$logs/cargo-interop.log" 2>&1 &&
    [ -x "$target/release/drpc-interop-server" ] && [ -x "$target/release/drpc-interop-client" ]; then
    have_rust_interop=1
else
    fail rust_interop_build "cargo build --release -p drpc-interop failed (see $logs/cargo-interop.log)"
fi

if cargo test --release -p drpc-ffi >"$logs/cargo-test-ffi.log" 2>&1; then pass header_fresh; else
    fail header_fresh "cargo test -p drpc-ffi failed (stale include/drpc.h? see $logs/cargo-test-ffi.log)"
fi

printf '#include "drpc.h"\nint main(void) { return drpc_version() == 0; }\n' >"$build/header_check.c"
cp "$build/header_check.c" "$build/header_check.cpp"
if gcc -std=c99 -pedantic -Wall -Wextra -Werror -I"$root/include" -c "$build/header_check.c" -o "$build/hc.o" 2>"$logs/hc99.log"; then
    pass header_c99; else fail header_c99 "$(head -5 "$logs/hc99.log")"; fi
if g++ -std=c++17 -pedantic -Wall -Wextra -Werror -I"$root/include" -c "$build/header_check.cpp" -o "$build/hcpp.o" 2>"$logs/hcpp.log"; then
    pass header_cxx17; else fail header_cxx17 "$(head -5 "$logs/hcpp.log")"; fi

# The C/C++ programs (tests/c/build.sh, shared with tests/matrix).
"$here/build.sh" all || die "building the C test programs failed"

# vg_setup NAME: valgrind command line logging to $logs/valgrind-NAME/PID.log
VALGRIND=()
vgdir=""
vg_setup() {
    vgdir="$logs/valgrind-$1"
    rm -rf "$vgdir"
    mkdir -p "$vgdir"
    VALGRIND=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible
        --suppressions="$here/valgrind.supp" --log-file="$vgdir/%p.log")
}

# Checks a valgrind exit code and its log; $1 name, $2 exit code, $3 log glob.
valgrind_verdict() {
    local name=$1 rc=$2 log
    for log in $3; do
        if [ -s "$log" ]; then
            fail "$name" "valgrind reported errors (exit $rc), see $log"
            grep -E 'lost in|Invalid|uninitialised|by 0x[0-9A-F]+: (main|drpc|interop)' "$log" | head -40
            return
        fi
    done
    if [ "$rc" = 99 ]; then fail "$name" "valgrind exit 99"; return; fi
    pass "$name"
}

# ---- unit tests ------------------------------------------------------------
echo "== C unit tests (valgrind)"
vg_setup unit
timeout 600 "${VALGRIND[@]}" "$build/unit_tests" >"$logs/unit.out" 2>"$logs/unit.err"
rc=$?
cat "$logs/unit.out"
while read -r line; do
    case "$line" in
        "ok "*) pass "unit/${line#ok }" ;;
        "not ok "*) fail "unit/${line#not ok }" "$(cat "$logs/unit.err" | head -20)" ;;
    esac
done <"$logs/unit.out"
grep -q '^unit: ' "$logs/unit.out" || fail unit_tests_completed "exit $rc: $(tail -20 "$logs/unit.err")"
valgrind_verdict unit_tests_memcheck "$rc" "$vgdir/*.log"

# ---- race tests --------------------------------------------------------------
# Parses "ok NAME" / "not ok NAME" lines of $1.out into results prefixed $2.
tap_results() {
    local out=$1 prefix=$2 err=$3 line
    while read -r line; do
        case "$line" in
            "ok "*) pass "$prefix/${line#ok }" ;;
            "not ok "*) fail "$prefix/${line#not ok }" "$(head -20 "$err")" ;;
        esac
    done <"$out"
}

RACE_ITERS=${RACE_ITERS:-300}
echo "== C race tests, $RACE_ITERS iterations per scenario (valgrind)"
vg_setup race
timeout 1200 "${VALGRIND[@]}" "$build/race_tests" "$RACE_ITERS" >"$logs/race.out" 2>"$logs/race.err"
rc=$?
cat "$logs/race.out"
tap_results "$logs/race.out" race "$logs/race.err"
grep -q '^race: ' "$logs/race.out" || fail race_tests_completed "exit $rc: $(tail -20 "$logs/race.err")"
valgrind_verdict race_tests_memcheck "$rc" "$vgdir/*.log"

if [ -x "$build/race_tests_asan" ]; then
    echo "== C race tests (AddressSanitizer)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 timeout 600 "$build/race_tests_asan" "$RACE_ITERS" \
        >"$logs/race-asan.out" 2>"$logs/race-asan.err"
    rc=$?
    tap_results "$logs/race-asan.out" race-asan "$logs/race-asan.err"
    if [ "$rc" = 0 ] && grep -q '^race: ' "$logs/race-asan.out" && ! grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer' "$logs/race-asan.err"; then
        pass race_tests_asan
    else
        fail race_tests_asan "exit $rc: $(grep -A20 'ERROR: ' "$logs/race-asan.err" | head -40)"
    fi
fi

# ---- interceptors, deadlines, trace context, metrics -------------------------
OBSERVE_ITERS=${OBSERVE_ITERS:-300}
echo "== C observability tests, $OBSERVE_ITERS race iterations (valgrind)"
vg_setup observe
timeout 900 "${VALGRIND[@]}" "$build/observe_tests" "$OBSERVE_ITERS" >"$logs/observe.out" 2>"$logs/observe.err"
rc=$?
cat "$logs/observe.out"
tap_results "$logs/observe.out" observe "$logs/observe.err"
grep -q '^observe: ' "$logs/observe.out" || fail observe_tests_completed "exit $rc: $(tail -20 "$logs/observe.err")"
valgrind_verdict observe_tests_memcheck "$rc" "$vgdir/*.log"
if [ -x "$build/observe_tests_asan" ]; then
    echo "== C observability tests (AddressSanitizer)"
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 timeout 600 "$build/observe_tests_asan" "$OBSERVE_ITERS" \
        >"$logs/observe-asan.out" 2>"$logs/observe-asan.err"
    rc=$?
    tap_results "$logs/observe-asan.out" observe-asan "$logs/observe-asan.err"
    if [ "$rc" = 0 ] && grep -q '^observe: ' "$logs/observe-asan.out" && ! grep -q 'ERROR: AddressSanitizer\|ERROR: LeakSanitizer' "$logs/observe-asan.err"; then
        pass observe_tests_asan
    else
        fail observe_tests_asan "exit $rc: $(grep -A20 'ERROR: ' "$logs/observe-asan.err" | head -40)"
    fi
fi

# ---- TLS -------------------------------------------------------------------
# Throwaway certificates (drpc-tls's rcgen example), then the TLS API under
# valgrind and the C interop programs over mutual TLS.
certs="$build/certs"
rm -rf "$certs"
if cargo run -q --release -p drpc-tls --example gen-test-certs -- "$certs" >"$logs/certs.log" 2>&1; then
    echo "== TLS API (valgrind)"
    vg_setup tls
    timeout 300 "${VALGRIND[@]}" "$build/tls_test" "$certs" >"$logs/tls.out" 2>"$logs/tls.err"
    rc=$?
    cat "$logs/tls.out"
    tap_results "$logs/tls.out" tls "$logs/tls.err"
    grep -q '^tls: ' "$logs/tls.out" || fail tls_test_completed "exit $rc: $(tail -20 "$logs/tls.err")"
    valgrind_verdict tls_test_memcheck "$rc" "$vgdir/*.log"
else
    fail test_certificates "$(tail -5 "$logs/certs.log")"
fi
# ---- channels --------------------------------------------------------------
CHANNEL_ITERS=${CHANNEL_ITERS:-100}
echo "== C channel tests, $CHANNEL_ITERS race iterations (valgrind)"
vg_setup channel
timeout 900 "${VALGRIND[@]}" "$build/channel_tests" "$CHANNEL_ITERS" >"$logs/channel.out" 2>"$logs/channel.err"
rc=$?
cat "$logs/channel.out"
tap_results "$logs/channel.out" channel "$logs/channel.err"
grep -q '^channel: ' "$logs/channel.out" || fail channel_tests_completed "exit $rc: $(tail -20 "$logs/channel.err")"
valgrind_verdict channel_tests_memcheck "$rc" "$vgdir/*.log"

# ---- starvation, handler pool, runtime configuration -----------------------
echo "== handler starvation and runtime configuration"
run_starvation() { # MODE ENV...
    local mode=$1 rc
    shift
    env "$@" timeout 300 "$build/starvation_test" "$mode" >"$logs/starvation-$mode.out" 2>"$logs/starvation-$mode.err"
    rc=$?
    cat "$logs/starvation-$mode.out"
    tap_results "$logs/starvation-$mode.out" "starvation-$mode" "$logs/starvation-$mode.err"
    if [ "$rc" != 0 ] || ! grep -q '^ok ' "$logs/starvation-$mode.out"; then
        fail "starvation-$mode/exit" "exit $rc: $(tail -10 "$logs/starvation-$mode.err")"
    fi
}
run_starvation idle -u DRPC_WORKER_THREADS -u DRPC_HANDLER_THREADS
run_starvation exhaust DRPC_WORKER_THREADS=2 DRPC_HANDLER_THREADS=8
run_starvation configure -u DRPC_HANDLER_THREADS DRPC_WORKER_THREADS=2

# ---- interop ---------------------------------------------------------------
# start_server NAME CMD...: starts a server, waits for "listening HOST:PORT".
server_pid=""
server_addr=""
start_server() {
    local name=$1
    shift
    : >"$logs/$name.server.out"
    "$@" --addr 127.0.0.1:0 >"$logs/$name.server.out" 2>"$logs/$name.server.err" &
    server_pid=$!
    server_addr=""
    for _ in $(seq 300); do
        if head -n1 "$logs/$name.server.out" | grep -q '^listening '; then
            server_addr=$(head -n1 "$logs/$name.server.out" | cut -d' ' -f2)
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

stop_server() { # NAME: SIGTERM, expect exit 0 within 30 s
    local name=$1 rc
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$server_pid" 2>/dev/null; then
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
        fail "$name/server_sigterm" "server did not exit within 30 s of SIGTERM"
        return
    fi
    wait "$server_pid"
    rc=$?
    if [ "$rc" = 0 ]; then pass "$name/server_sigterm_exit_0"; else
        fail "$name/server_sigterm_exit_0" "exit $rc: $(tail -5 "$logs/$name.server.err")"; fi
}

# run_interop NAME MODE SERVER_VALGRIND(0/1) SERVER_CMD CLIENT_VALGRIND(0/1) CLIENT_CMD [FC]
# MODE is mux or sequential; FC=fc gives both sides --flow-control (then
# --case all includes slow_reader_isolation).
run_interop() {
    local name=$1 mode=$2 svg=$3 scmd=$4 cvg=$5 ccmd=$6 fc=${7:-} rc
    local label=$mode flags=()
    if [ "$fc" = fc ]; then label="$mode-fc"; flags=(--flow-control); fi
    local run="$name-$label"
    echo "== interop $name ($label)"
    vg_setup "$run"
    local spre=() cpre=()
    [ "$svg" = 1 ] && spre=("${VALGRIND[@]}")
    [ "$cvg" = 1 ] && cpre=("${VALGRIND[@]}")
    local stls=() ctls=()
    if [ "${TLS_RUN:-0}" = 1 ]; then
        stls=(--tls-cert "$certs/server.pem" --tls-key "$certs/server-key.pem" --tls-client-ca "$certs/ca.pem")
        ctls=(--tls-ca "$certs/ca.pem" --tls-server-name localhost --tls-cert "$certs/client.pem" --tls-key "$certs/client-key.pem")
    fi
    if ! start_server "$run" "${spre[@]}" "$scmd" "${flags[@]}" "${stls[@]}"; then
        fail "$run/server_start" "$(tail -5 "$logs/$run.server.err")"
        kill -KILL "$server_pid" 2>/dev/null
        wait "$server_pid" 2>/dev/null
        return
    fi
    timeout 600 "${cpre[@]}" "$ccmd" --addr "$server_addr" --case all --mode "$mode" "${flags[@]}" "${ctls[@]}" \
        >"$logs/$run.client.out" 2>"$logs/$run.client.err"
    rc=$?
    while read -r line; do
        case "$line" in
            "PASS "*) pass "$run/${line#PASS }" ;;
            "FAIL "*) local c=${line#FAIL }; fail "$run/${c%%:*}" "${c#*: }" ;;
        esac
    done <"$logs/$run.client.out"
    local cases want
    cases=$(grep -c '^\(PASS\|FAIL\) ' "$logs/$run.client.out")
    # 16 cases for every peer and the 2 project cases (deadline_propagation,
    # trace_context); mux adds 5 (6 with slow_reader_isolation).
    if [ "$mode" = mux ]; then want=23; else want=18; fi
    if [ "$mode" = mux ] && [ "$fc" = fc ]; then want=24; fi
    if [ "$cases" != "$want" ]; then
        fail "$run/case_count" "ran $cases cases, want $want (exit $rc): $(tail -5 "$logs/$run.client.err")"
    fi
    if [ "$fc" = fc ] && ! grep -q '^PASS slow_reader_isolation$' "$logs/$run.client.out"; then
        fail "$run/slow_reader_isolation_ran" "flow-control run without a passing slow_reader_isolation"
    fi
    stop_server "$run"
    if [ "$svg" = 1 ] || [ "$cvg" = 1 ]; then
        valgrind_verdict "$run/memcheck" "$rc" "$vgdir/*.log"
    fi
}

RS="$target/release/drpc-interop-server"
RC="$target/release/drpc-interop-client"
for mode in mux sequential; do
    if [ $have_rust_interop = 1 ]; then
        run_interop c-client-vs-rust-server "$mode" 0 "$RS" 1 "$build/interop_client"
        run_interop rust-client-vs-c-server "$mode" 1 "$build/interop_server" 0 "$RC"
    fi
    run_interop c-client-vs-c-server "$mode" 1 "$build/interop_server" 1 "$build/interop_client"
done
# Flow control on both sides (mux only: a sequential peer cannot speak it).
if [ $have_rust_interop = 1 ]; then
    run_interop c-client-vs-rust-server mux 0 "$RS" 1 "$build/interop_client" fc
    run_interop rust-client-vs-c-server mux 1 "$build/interop_server" 0 "$RC" fc
fi

# A short trace chain: C client -> C server (--forward) -> C server; the
# last one sees the client's trace id with another parent span, and less
# than the client's 5 s deadline.
echo "== trace chain (C -> C --forward -> C)"
if start_server chain-last "$build/interop_server"; then
    last_pid=$server_pid
    last_addr=$server_addr
    if start_server chain-first "$build/interop_server" --forward "$last_addr"; then
        if out=$(timeout 60 "$build/interop_client" --addr "$server_addr" --case trace_chain 2>&1) &&
            [ "$out" = "PASS trace_chain" ]; then
            pass trace_chain_c_c_c
        else
            fail trace_chain_c_c_c "$out"
        fi
        stop_server chain-first
    else
        fail trace_chain_start "$(tail -5 "$logs/chain-first.server.err")"
    fi
    server_pid=$last_pid
    stop_server chain-last
else
    fail trace_chain_start "$(tail -5 "$logs/chain-last.server.err")"
fi

# Mutual TLS: C client and server against each other and the Rust ones.
if [ -f "$certs/ca.pem" ]; then
    TLS_RUN=1 run_interop c-client-vs-c-server-mtls mux 1 "$build/interop_server" 1 "$build/interop_client"
    if [ $have_rust_interop = 1 ]; then
        TLS_RUN=1 run_interop c-client-vs-rust-server-mtls mux 0 "$RS" 1 "$build/interop_client"
        TLS_RUN=1 run_interop rust-client-vs-c-server-mtls sequential 1 "$build/interop_server" 0 "$RC"
    fi
fi

# ---- C++ example -----------------------------------------------------------
echo "== C++17 RAII example (valgrind)"
vg_setup cpp
timeout 300 "${VALGRIND[@]}" "$build/raii_example" >"$logs/raii.out" 2>&1
rc=$?
cat "$logs/raii.out"
if [ "$rc" = 0 ] && grep -q '^PASS cpp_raii' "$logs/raii.out"; then pass cpp_raii; else fail cpp_raii "exit $rc"; fi
valgrind_verdict cpp_raii_memcheck "$rc" "$vgdir/*.log"

# ---- install + pkg-config --------------------------------------------------
echo "== install.sh + pkg-config"
prefix="$build/prefix"
rm -rf "$prefix"
if DRPC_NO_BUILD=1 "$root/drpc-ffi/install.sh" "$prefix" >"$logs/install.log" 2>&1; then
    pass install_sh
    export PKG_CONFIG_PATH="$prefix/lib/pkgconfig"
    # The versioned library: real file, SONAME link, dev link.
    soname=$(readelf -d "$prefix/lib/libdrpc.so" 2>/dev/null | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
    if [ -n "$soname" ] && [ -L "$prefix/lib/$soname" ] && [ -L "$prefix/lib/libdrpc.so" ] &&
        [ -f "$(readlink -f "$prefix/lib/libdrpc.so")" ]; then
        pass "installed_soname_$soname"
    else
        fail installed_soname "no SONAME or missing links: $(ls -l "$prefix/lib")"
    fi
    supp=$(pkg-config --variable=valgrind_suppressions drpc)
    if [ -n "$supp" ] && cmp -s "$supp" "$here/valgrind.supp"; then pass installed_valgrind_suppressions; else
        fail installed_valgrind_suppressions "pkg-config --variable=valgrind_suppressions drpc gave '$supp'"; fi
    # Built with pkg-config's output alone: no -L, no rpath of our own.
    # shellcheck disable=SC2046
    if gcc -std=c99 -Wall -Wextra -Werror "$here/install_smoke.c" -o "$build/smoke_shared" \
        $(pkg-config --cflags --libs drpc) 2>"$logs/smoke.log" &&
        # shellcheck disable=SC2046
        gcc -std=c99 -Wall -Wextra -Werror "$here/install_smoke.c" -o "$build/smoke_static" \
            $(pkg-config --cflags drpc) "$prefix/lib/libdrpc.a" \
            $(pkg-config --static --libs-only-l drpc | sed 's/-ldrpc\b//') 2>>"$logs/smoke.log"; then
        pass pkg_config_build
        if start_server smoke "$build/interop_server"; then
            for kind in shared static; do
                if out=$(env -u LD_LIBRARY_PATH "$build/smoke_$kind" "$server_addr" 2>&1) && [ "$out" = "ok: 0-byte response" ]; then
                    pass "installed_${kind}_call"
                else
                    fail "installed_${kind}_call" "$out"
                fi
            done
            # (no grep -q on a pipe: with pipefail, ldd's SIGPIPE would fail it)
            if env -u LD_LIBRARY_PATH ldd "$build/smoke_shared" 2>&1 | grep -F "$prefix/lib/$soname" >/dev/null; then
                pass installed_shared_linked_by_soname
            else
                fail installed_shared_linked_by_soname "smoke_shared does not load $prefix/lib/$soname: $(ldd "$build/smoke_shared" | grep drpc)"; fi
            stop_server smoke
        else
            fail smoke_server_start
        fi
    else
        fail pkg_config_build "$(head -20 "$logs/smoke.log")"
    fi
else
    fail install_sh "$(tail -5 "$logs/install.log")"
fi

echo
if [ $failed -gt 0 ]; then
    echo "failures:"
    printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
