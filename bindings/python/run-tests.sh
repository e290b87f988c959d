#!/usr/bin/env bash
# Builds and tests the Python bindings, non-interactively:
#   - creates (or reuses) a virtualenv in bindings/python/.venv
#   - pip-installs the package (`pip install ./bindings/python`, built by
#     maturin from PyPI) and the test dependencies (pytest, protobuf, and
#     mypy + types-protobuf for tests/test_typing.py)
#   - builds the Rust interop binaries (cargo build --release -p
#     drpc-interop at the repository root; a no-op when fresh)
#   - runs pytest; exits non-zero on failure.
# Extra arguments go to pytest (e.g. ./run-tests.sh -k interop -x).
# Environment: PYTHON (default python3), DRPC_SKIP_INSTALL=1 to skip the
# pip install step, DRPC_INTEROP_BIN_DIR for prebuilt interop binaries.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
python=${PYTHON:-python3}
venv="$here/.venv"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 PIP_ROOT_USER_ACTION=ignore

if [ ! -x "$venv/bin/python" ]; then
    echo "==> creating virtualenv $venv"
    "$python" -m venv "$venv"
fi
py="$venv/bin/python"

if [ "${DRPC_SKIP_INSTALL:-0}" != 1 ]; then
    echo "==> installing test dependencies"
    "$py" -m pip install --quiet --upgrade "pip>=23" pytest protobuf mypy types-protobuf
    echo "==> pip install $here"
    # Non-editable install: the tests import the installed package, as a user
    # would. Its one runtime dependency (protobuf) was installed just above.
    "$py" -m pip install --quiet --force-reinstall --no-deps "$here"
fi

if [ -n "${DRPC_INTEROP_BIN_DIR:-}" ]; then
    bindir=$DRPC_INTEROP_BIN_DIR
    if [ ! -x "$bindir/drpc-interop-server" ] || [ ! -x "$bindir/drpc-interop-client" ]; then
        echo "no drpc-interop-server/-client in DRPC_INTEROP_BIN_DIR=$bindir" >&2
        exit 1
    fi
else
    # Always through cargo (a no-op when fresh): stale binaries would lack
    # what the interop cases check (drpc-timeout, traceparent).
    echo "==> building the Rust interop binaries"
    (cd "$repo" && cargo build --release -p drpc-interop)
fi

echo "==> pytest"
cd "$here"
# ./python is not on sys.path here: the tests import the installed package.
exec "$py" -m pytest -ra -p no:cacheprovider "$@" tests
