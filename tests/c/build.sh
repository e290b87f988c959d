#!/usr/bin/env bash
# Compiles the C/C++ test programs of libdrpc into $CARGO_TARGET_DIR/c-tests
# (default target/c-tests), against include/drpc.h and the release libdrpc
# (cargo build --release -p drpc-ffi must have run; this script does not run
# cargo). Used by tests/c/run.sh and tests/matrix.
#
#   tests/c/build.sh            # everything: unit_tests, race_tests,
#                               # observe_tests, channel_tests (and
#                               # race_tests_asan when gcc has ASan),
#                               # starvation_test, tls_test, interop_server,
#                               # interop_client, raii_example
#   tests/c/build.sh interop    # only interop_server and interop_client
#
# Needs gcc, g++ and libprotobuf-c-dev (run.sh installs them). Exits non-zero
# with a message naming the program that failed to build.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
build="$target/c-tests"
what="${1:-all}"
case "$what" in all | interop) ;; *) echo "usage: $0 [all|interop]" >&2; exit 2 ;; esac
if [ ! -e "$target/release/libdrpc.so" ]; then
    echo "build.sh: $target/release/libdrpc.so is missing (cargo build --release -p drpc-ffi)" >&2
    exit 1
fi
mkdir -p "$build"

CFLAGS=(-std=c11 -O1 -g -Wall -Wextra -Werror -I"$root/include" -I"$here")
LDFLAGS=(-L"$target/release" -ldrpc -lpthread -Wl,-rpath,"$target/release")
cc_prog() { # NAME SOURCES-AND-LIBS...
    local name=$1
    shift
    gcc "${CFLAGS[@]}" "$@" -o "$build/$name" "${LDFLAGS[@]}" || { echo "build.sh: building $name failed" >&2; exit 1; }
}
cc_prog interop_server -I"$here/proto" "$here/interop_server.c" "$here/proto/test.pb-c.c" "$here/proto/test.drpc.c" -lprotobuf-c
cc_prog interop_client "$here/interop_client.c" "$here/proto/test.pb-c.c" -lprotobuf-c
if [ "$what" = all ]; then
    cc_prog unit_tests "$here/unit_tests.c"
    cc_prog race_tests "$here/race_tests.c"
    cc_prog observe_tests "$here/observe_tests.c"
    cc_prog channel_tests "$here/channel_tests.c"
    cc_prog starvation_test "$here/starvation_test.c"
    cc_prog tls_test "$here/tls_test.c"
    # The race tests again with AddressSanitizer on the C side (libdrpc
    # itself is not instrumented, but every allocation goes through ASan's
    # malloc, so bad frees and C-side use-after-frees are caught). Skipped
    # when the compiler has no ASan runtime.
    rm -f "$build/race_tests_asan" "$build/observe_tests_asan"
    if echo 'int main(void){return 0;}' | gcc -fsanitize=address -x c - -o "$build/asan_probe" 2>/dev/null; then
        cc_prog race_tests_asan -fsanitize=address -fno-omit-frame-pointer "$here/race_tests.c"
        cc_prog observe_tests_asan -fsanitize=address -fno-omit-frame-pointer "$here/observe_tests.c"
    fi
    rm -f "$build/asan_probe"
    g++ -std=c++17 -O1 -g -Wall -Wextra -Werror -pedantic -I"$root/include" "$root/examples/cpp/raii_example.cpp" \
        -o "$build/raii_example" "${LDFLAGS[@]}" || { echo "build.sh: building raii_example failed" >&2; exit 1; }
fi
