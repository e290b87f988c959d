"""The package's annotations and stubs are checked by mypy --strict: the
sources (with the extension's _native.pyi), and a user's program
(tests/typecheck/check_api.py) against the installed package, which must ship
py.typed and the stubs. run-tests.sh installs mypy and types-protobuf."""

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE.parent  # bindings/python
CACHE = PACKAGE / ".venv" / "mypy-cache"


def mypy(*args, cwd):
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(CACHE), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Success: no issues found" in r.stdout


def test_package_sources_pass_mypy_strict():
    mypy("--config-file", str(PACKAGE / "pyproject.toml"), "-p", "drpc", cwd=PACKAGE / "python")


def test_user_code_against_installed_package_passes_mypy_strict():
    # Run from tests/typecheck so `import drpc` resolves to the installed package.
    mypy("--strict", "check_api.py", cwd=HERE / "typecheck")


def test_extension_stub_matches_the_extension():
    # stubtest imports the installed drpc._native and compares every name and
    # signature with _native.pyi.
    r = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--mypy-config-file", str(PACKAGE / "pyproject.toml"), "drpc._native"],
        cwd=HERE / "typecheck",
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
