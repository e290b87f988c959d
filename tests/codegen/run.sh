#!/usr/bin/env bash
# Tests of the code generators (tests/codegen/README.md), non-interactively:
#   - Python (drpc.codegen): the interop programs' test_drpc.py is fresh;
#     generates the edge-case protos with grpcio-tools' protoc and the
#     protoc-gen-drpc_python console script, and again with
#     `python -m drpc.codegen` (Debian's protoc), which must agree; mypy
#     --strict on the generated modules and on the typed edge programs; the
#     generator's pytest suite (tests/codegen/python/test_codegen.py);
#   - C (codegen/c/protoc-gen-drpc-c, installed by `make install`): the C
#     interop server's tests/c/proto/test.drpc.{h,c} are fresh; protoc-c +
#     the plugin, the generated code and the edge programs compiled with
#     -Wall -Wextra -Werror -pedantic (the header also as C++17);
#   - Go: bindings/go/codegen/edgepb (storj's protoc-gen-go-drpc output) is
#     fresh (regen.sh --check) and its programs build over the cgo binding;
#   - Rust: drpc-build compiles the same protos from the build script of
#     tests/codegen/rust (crate drpc-codegen-edge), whose programs build;
#   - every generated client against every generated server, all rpc kinds:
#     {C, Python sync, Python asyncio, Go, Rust} x {C, Python sync, Python
#     asyncio, Go, Rust}, the C programs under valgrind;
#   - `make install` puts protoc-gen-drpc-c in PREFIX/bin.
# Installs what it lacks: Debian protobuf-compiler, protobuf-c-compiler,
# libprotobuf-c-dev, valgrind (as root); the Python package and pytest, mypy,
# types-protobuf, grpcio-tools into bindings/python/.venv (DRPC_SKIP_INSTALL=1
# skips pip). Logs and generated code go to target/codegen/. The last line is
# "N passed, M failed"; exits non-zero on any failure.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
build="$target/codegen"
logs="$build/logs"
passed=0
failed=0
failures=()
pass() { passed=$((passed + 1)); echo "PASS $1"; }
fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1${2:+: $2}"; }
die() { echo "run.sh: $*" >&2; echo "$passed passed, $((failed + 1)) failed"; exit 1; }

# ---- prerequisites ---------------------------------------------------------
need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
command -v protoc-c >/dev/null || need+=(protobuf-c-compiler)
[ -f /usr/include/protobuf-c/protobuf-c.h ] || need+=(libprotobuf-c-dev)
command -v valgrind >/dev/null || need+=(valgrind)
command -v g++ >/dev/null || need+=(g++)
if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]}"
    sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    { $sudo apt-get update -qq && $sudo apt-get install -y -qq "${need[@]}"; } >/dev/null || die "could not install ${need[*]}"
fi

rm -rf "$build"
mkdir -p "$logs"
echo "building drpc-ffi (release)"
(cd "$root" && cargo build --release -p drpc-ffi) >"$logs/cargo.log" 2>&1 || { tail -20 "$logs/cargo.log"; die "cargo build -p drpc-ffi failed"; }

venv="$root/bindings/python/.venv"
py="$venv/bin/python"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore
if [ "${DRPC_SKIP_INSTALL:-0}" != 1 ]; then
    [ -x "$py" ] || python3 -m venv "$venv" || die "could not create $venv"
    "$py" -m pip install --quiet pytest protobuf mypy types-protobuf grpcio-tools >"$logs/pip.log" 2>&1 ||
        { tail -20 "$logs/pip.log"; die "pip install of the test tools failed"; }
    # (Re)install the package unless the installed copy is this source.
    installed=$("$py" -c 'import drpc, os; print(os.path.dirname(drpc.__file__))' 2>/dev/null)
    if [ -z "$installed" ] || ! diff -rq -x __pycache__ -x '_native*' "$root/bindings/python/python/drpc" "$installed" >/dev/null 2>&1; then
        echo "==> pip install bindings/python"
        "$py" -m pip install --quiet --force-reinstall --no-deps "$root/bindings/python" >>"$logs/pip.log" 2>&1 ||
            { tail -20 "$logs/pip.log"; die "pip install bindings/python failed"; }
    fi
fi
"$py" -c 'import drpc.codegen, grpc_tools, mypy' 2>/dev/null || die "$venv lacks drpc.codegen, grpcio-tools or mypy"

proto="$here/proto"
protos=(edge/edge.proto edge/common.proto edge/plain.proto)

# ---- Python generator ------------------------------------------------------
gen_py="$build/py"
mkdir -p "$gen_py" "$build/py-cli"
# As a protoc plugin: protoc finds protoc-gen-drpc_python on PATH.
if PATH="$venv/bin:$PATH" "$py" -m grpc_tools.protoc -I"$proto" --python_out="$gen_py" --pyi_out="$gen_py" \
    --drpc_python_out="$gen_py" "${protos[@]}" >"$logs/py-plugin.log" 2>&1 &&
    [ -f "$gen_py/edge/edge_drpc.py" ] && [ -f "$gen_py/edge/plain_drpc.py" ]; then
    pass python_protoc_plugin
else
    fail python_protoc_plugin "$(tail -5 "$logs/py-plugin.log")"
fi
# As `python -m drpc.codegen`, with Debian's protoc: the same modules.
if (cd "$proto" && "$py" -m drpc.codegen --protoc "$(command -v protoc)" --out "$build/py-cli" "${protos[@]}") \
    >"$logs/py-cli.log" 2>&1 && diff -r -x '*_pb2.py*' -x __pycache__ "$gen_py" "$build/py-cli" >"$logs/py-cli.diff"; then
    pass python_cli_matches_plugin
else
    fail python_cli_matches_plugin "$(tail -5 "$logs/py-cli.log" "$logs/py-cli.diff")"
fi
# And with its default protoc (grpcio-tools', being installed), -I given.
if "$py" -m drpc.codegen -I "$proto" --out "$build/py-cli-default" "${protos[@]/#/$proto/}" >"$logs/py-cli-default.log" 2>&1 &&
    diff -r -x '*_pb2.py*' -x __pycache__ "$gen_py" "$build/py-cli-default" >"$logs/py-cli-default.diff"; then
    pass python_cli_default_protoc
else
    fail python_cli_default_protoc "$(tail -5 "$logs/py-cli-default.log" "$logs/py-cli-default.diff")"
fi

# The interop programs' generated module (drpc/interop/test_drpc.py, by
# bindings/python/gen_proto.sh) is fresh.
mkdir -p "$build/interop-proto/drpc/interop" "$build/interop-py"
cp "$root/tests/c/proto/test.proto" "$build/interop-proto/drpc/interop/test.proto"
if "$py" -m drpc.codegen --no-messages --protoc "$(command -v protoc)" -I "$build/interop-proto" --out "$build/interop-py" \
    "$build/interop-proto/drpc/interop/test.proto" >"$logs/interop-gen.log" 2>&1 &&
    diff "$root/bindings/python/python/drpc/interop/test_drpc.py" "$build/interop-py/drpc/interop/test_drpc.py" >>"$logs/interop-gen.log"; then
    pass python_interop_generated_fresh
else
    fail python_interop_generated_fresh "$(tail -5 "$logs/interop-gen.log") (run bindings/python/gen_proto.sh)"
fi

# mypy --strict on the generated modules and on the edge programs, which
# override every servicer method as plain functions, generators, coroutines
# and async generators. (Errors inside protoc's own _pb2.pyi are not ours.)
cp "$here/python/edge_server.py" "$here/python/edge_client.py" "$gen_py/"
printf '[mypy]\nstrict = True\nexplicit_package_bases = True\n\n[mypy-edge.common_pb2,edge.edge_pb2,edge.plain_pb2]\nignore_errors = True\n' >"$gen_py/mypy.ini"
if (cd "$gen_py" && "$py" -m mypy --config-file mypy.ini edge/edge_drpc.py edge/plain_drpc.py edge/common_drpc.py \
    edge_server.py edge_client.py) >"$logs/mypy.log" 2>&1; then
    pass python_mypy_strict
else
    fail python_mypy_strict "$(tail -10 "$logs/mypy.log")"
fi

if (cd "$here/python" && DRPC_CODEGEN_GEN="$gen_py" "$py" -m pytest -q -p no:cacheprovider test_codegen.py) \
    >"$logs/pytest.log" 2>&1; then
    pass "python_pytest ($(tail -1 "$logs/pytest.log"))"
else
    fail python_pytest "$(tail -30 "$logs/pytest.log")"
fi

# ---- C generator -----------------------------------------------------------
gen_c="$build/c"
mkdir -p "$gen_c"
wkt=(google/protobuf/empty.proto google/protobuf/timestamp.proto google/protobuf/wrappers.proto)
if protoc-c -I"$proto" -I/usr/include --c_out="$gen_c" "${protos[@]}" "${wkt[@]}" >"$logs/protoc-c.log" 2>&1 &&
    protoc -I"$proto" --plugin=protoc-gen-drpc-c="$root/codegen/c/protoc-gen-drpc-c" --drpc-c_out="$gen_c" \
        "${protos[@]}" >>"$logs/protoc-c.log" 2>&1; then
    pass c_protoc_plugin
else
    fail c_protoc_plugin "$(tail -5 "$logs/protoc-c.log")"
fi
# The C interop server's generated code (tests/c/proto/test.drpc.{h,c}) is fresh.
mkdir -p "$build/interop-c"
if protoc -I"$root/tests/c/proto" --plugin=protoc-gen-drpc-c="$root/codegen/c/protoc-gen-drpc-c" \
    --drpc-c_out="$build/interop-c" test.proto >"$logs/interop-c.log" 2>&1 &&
    diff "$root/tests/c/proto/test.drpc.h" "$build/interop-c/test.drpc.h" >>"$logs/interop-c.log" &&
    diff "$root/tests/c/proto/test.drpc.c" "$build/interop-c/test.drpc.c" >>"$logs/interop-c.log"; then
    pass c_interop_generated_fresh
else
    fail c_interop_generated_fresh "$(tail -5 "$logs/interop-c.log") (see tests/c/proto/README.md)"
fi
CFLAGS=(-std=c11 -O1 -g -Wall -Wextra -Werror -pedantic -I"$gen_c" -I"$root/include")
LIBS=(-L"$target/release" -ldrpc -lprotobuf-c -lpthread -Wl,-rpath,"$target/release")
srcs=("$gen_c"/edge/*.c "$gen_c"/google/protobuf/*.c)
if gcc "${CFLAGS[@]}" "$here/c/edge_server.c" "${srcs[@]}" -o "$build/edge_server" "${LIBS[@]}" 2>"$logs/cc.log" &&
    gcc "${CFLAGS[@]}" "$here/c/edge_client.c" "${srcs[@]}" -o "$build/edge_client" "${LIBS[@]}" 2>>"$logs/cc.log"; then
    pass c_compile_werror
else
    fail c_compile_werror "$(head -20 "$logs/cc.log")"
fi
# As C++17 too (extern "C"). Only plain.proto's: protobuf-c's own header for
# edge.proto is not C++, since its service struct has a member named `class`.
printf '#include "edge/plain.drpc.h"\n#include "edge/common.drpc.h"\nint main() { return 0; }\n' >"$build/hdr.cpp"
if g++ -std=c++17 -Wall -Wextra -Werror -pedantic -I"$gen_c" -I"$root/include" -fsyntax-only "$build/hdr.cpp" 2>"$logs/cxx.log"; then
    pass c_header_cxx17
else
    fail c_header_cxx17 "$(head -10 "$logs/cxx.log")"
fi

# ---- Go: storj's protoc-gen-go-drpc over the cgo binding (drpcstorj) ---------
gobind="$root/bindings/go"
if "$gobind/codegen/regen.sh" --check >"$logs/go-regen.log" 2>&1; then pass go_generated_code_fresh; else
    fail go_generated_code_fresh "$(tail -10 "$logs/go-regen.log") (run bindings/go/codegen/regen.sh)"; fi
if (cd "$gobind" && CGO_ENABLED=1 go build -o "$build/edge-go-server" ./codegen/cmd/edge-server &&
    CGO_ENABLED=1 go build -o "$build/edge-go-client" ./codegen/cmd/edge-client) >"$logs/go-build.log" 2>&1; then
    pass go_build
else
    fail go_build "$(tail -10 "$logs/go-build.log")"
fi

# ---- Rust: drpc-build, from tests/codegen/rust/build.rs ----------------------
# Release, like drpc-ffi above, so the two share drpc-core's build.
if (cd "$root" && cargo build --release -p drpc-codegen-edge) >"$logs/rust-build.log" 2>&1; then
    pass rust_build
else
    fail rust_build "$(grep -m5 -A5 '^error' "$logs/rust-build.log")"
fi

# ---- every client against every server -------------------------------------
VALGRIND=(valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible
    --suppressions="$root/tests/c/valgrind.supp")
server_pid=""
server_addr=""
start_server() { # NAME CMD...
    local name=$1
    shift
    "$@" --addr 127.0.0.1:0 >"$logs/$name.server.out" 2>"$logs/$name.server.err" &
    server_pid=$!
    for _ in $(seq 300); do
        if head -n1 "$logs/$name.server.out" | grep -q '^listening '; then
            server_addr=$(head -n1 "$logs/$name.server.out" | cut -d' ' -f2)
            return 0
        fi
        kill -0 "$server_pid" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
stop_server() { # NAME: SIGTERM, exit 0 expected
    local name=$1 rc
    kill -TERM "$server_pid" 2>/dev/null
    for _ in $(seq 300); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null
    wait "$server_pid"
    rc=$?
    if [ "$rc" = 0 ]; then pass "$name/server_exit_0"; else fail "$name/server_exit_0" "exit $rc: $(tail -5 "$logs/$name.server.err")"; fi
}
want_cases_c=16  # edge_client.c: the 12 shared cases + echo_unary_async(_race), echo_bidi_cancel, bad_arguments
want_cases_py=12  # also Go's and Rust's
declare -A server_cmd=(
    [go]="$build/edge-go-server"
    [c]="${VALGRIND[*]} $build/edge_server"
    [py-sync]="$py $here/python/edge_server.py --gen $gen_py --api sync"
    [py-aio]="$py $here/python/edge_server.py --gen $gen_py --api aio"
    [rust]="$target/release/codegen-edge-server"
)
declare -A client_cmd=(
    [go]="$build/edge-go-client"
    [c]="${VALGRIND[*]} $build/edge_client"
    [py-sync]="$py $here/python/edge_client.py --gen $gen_py --api sync"
    [py-aio]="$py $here/python/edge_client.py --gen $gen_py --api aio"
    [rust]="$target/release/codegen-edge-client"
)
for s in c py-sync py-aio go rust; do
    for c in c py-sync py-aio go rust; do
        run="$c-client-vs-$s-server"
        echo "== $run"
        # shellcheck disable=SC2086
        if ! start_server "$run" ${server_cmd[$s]}; then
            fail "$run/server_start" "$(tail -5 "$logs/$run.server.err")"
            kill -KILL "$server_pid" 2>/dev/null
            continue
        fi
        # shellcheck disable=SC2086
        timeout 300 ${client_cmd[$c]} --addr "$server_addr" >"$logs/$run.client.out" 2>"$logs/$run.client.err"
        rc=$?
        while read -r line; do
            case "$line" in
                "PASS "*) pass "$run/${line#PASS }" ;;
                "FAIL "*) l=${line#FAIL }; fail "$run/${l%%:*}" "${l#*: }" ;;
            esac
        done <"$logs/$run.client.out"
        want=$want_cases_py
        [ "$c" = c ] && want=$want_cases_c
        got=$(grep -c '^PASS ' "$logs/$run.client.out")
        if [ "$rc" = 0 ] && [ "$got" = "$want" ]; then pass "$run/client_exit_0"; else
            fail "$run/client_exit_0" "exit $rc, $got of $want cases passed: $(tail -5 "$logs/$run.client.err")"; fi
        stop_server "$run"
        if [ "$s" = c ] && grep -q . "$logs/$run.server.err"; then fail "$run/server_valgrind" "$(head -20 "$logs/$run.server.err")"; fi
        if [ "$c" = c ] && grep -q '^==' "$logs/$run.client.err"; then fail "$run/client_valgrind" "$(head -20 "$logs/$run.client.err")"; fi
    done
done

# ---- make install ------------------------------------------------------------
prefix="$build/prefix"
if (cd "$root" && DRPC_NO_BUILD=1 make -s install PREFIX="$prefix") >"$logs/install.log" 2>&1 &&
    [ -x "$prefix/bin/protoc-gen-drpc-c" ] && mkdir -p "$build/c-installed" &&
    PATH="$prefix/bin:$PATH" protoc -I"$proto" --drpc-c_out="$build/c-installed" "${protos[@]}" 2>>"$logs/install.log" &&
    diff -r -x '*.pb-c.*' -x google "$gen_c" "$build/c-installed" >>"$logs/install.log"; then
    pass make_install_c_plugin
else
    fail make_install_c_plugin "$(tail -5 "$logs/install.log")"
fi

echo
if [ $failed -gt 0 ]; then
    echo "failures:"
    printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
