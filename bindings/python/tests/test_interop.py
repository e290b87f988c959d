"""The interop programs against each other: the Python client against the Rust
server and the Python server, and the Rust client against the Python server
(both handler flavours), all cases, both modes; and a chain of forwarding
servers carrying the trace context and the deadline (trace_chain)."""

import signal
import subprocess

import pytest

from conftest import PY


class Proc:
    def __init__(self, argv):
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        if not line.startswith("listening "):
            self.p.kill()
            raise AssertionError(f"server said {line!r}: {self.p.stderr.read()}")
        self.addr = line.split(" ", 1)[1]

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            raise AssertionError("server did not exit after SIGTERM")
        assert rc == 0, self.p.stderr.read()


# The project's own cases in the interop clients' `all` (deadline_propagation,
# trace_context: between our implementations only).
PROJECT_CASES = 2


def run_client(argv, mode, flow=False, project_cases=0):
    argv = argv + ["--case", "all", "--mode", mode] + (["--flow-control"] if flow else [])
    r = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    lines = r.stdout.splitlines()
    failed = [l for l in lines if not l.startswith("PASS ")]
    assert r.returncode == 0 and not failed, "\n".join(failed) + "\n---\n" + r.stdout + r.stderr
    passed = [l for l in lines if l.startswith("PASS ")]
    want = (16 if mode == "sequential" else (22 if flow else 21)) + project_cases
    assert len(passed) == want, r.stdout
    assert any("slow_reader_isolation" in l for l in lines) == (flow and mode == "mux")
    return passed


# (mode, flow control)
MODES = [("mux", False), ("sequential", False), ("mux", True)]
_servers = {}


def server_for(kind, flow, rust_bins=None):
    key = (kind, flow)
    if key not in _servers:
        if kind == "rust":
            argv = [str(rust_bins[0])]
        else:
            argv = [PY, "-m", "drpc.interop.server", "--api", kind]
        _servers[key] = Proc(argv + ["--addr", "127.0.0.1:0"] + (["--flow-control"] if flow else []))
    return _servers[key]


@pytest.fixture(scope="module", autouse=True)
def _stop_servers():
    yield
    errors = []
    for srv in _servers.values():
        try:
            srv.stop()
        except AssertionError as e:
            errors.append(str(e))
    _servers.clear()
    assert not errors


@pytest.mark.parametrize("mode,flow", MODES)
def test_python_client_vs_rust_server(rust_bins, mode, flow):
    srv = server_for("rust", flow, rust_bins)
    run_client([PY, "-m", "drpc.interop.client", "--addr", srv.addr], mode, flow, PROJECT_CASES)


@pytest.mark.parametrize("api", ["aio", "sync"])
@pytest.mark.parametrize("mode,flow", MODES)
def test_rust_client_vs_python_server(rust_bins, api, mode, flow):
    srv = server_for(api, flow)
    run_client([str(rust_bins[1]), "--addr", srv.addr], mode, flow, PROJECT_CASES)


@pytest.mark.parametrize("api", ["aio", "sync"])
@pytest.mark.parametrize("mode,flow", MODES)
def test_python_client_vs_python_server(api, mode, flow):
    srv = server_for(api, flow)
    run_client([PY, "-m", "drpc.interop.client", "--addr", srv.addr], mode, flow, PROJECT_CASES)


def test_python_server_unix_socket(tmp_path):
    srv = Proc([PY, "-m", "drpc.interop.server", "--addr", f"unix:{tmp_path}/s.sock"])
    try:
        r = subprocess.run(
            [PY, "-m", "drpc.interop.client", "--addr", srv.addr, "--case", "empty_unary", "--case", "large_unary"],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode == 0 and r.stdout.split() == ["PASS", "empty_unary", "PASS", "large_unary"], r.stdout
    finally:
        srv.stop()


def test_client_reports_failure_exit_code(tmp_path):
    # nothing listens there: the client must fail (non-zero), not hang
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    addr = "127.0.0.1:%d" % s.getsockname()[1]
    s.close()
    r = subprocess.run([PY, "-m", "drpc.interop.client", "--addr", addr, "--case", "empty_unary"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0


@pytest.mark.parametrize("client", ["python", "rust"])
@pytest.mark.parametrize("front,middle", [("sync", "aio"), ("aio", "sync")])
def test_trace_chain_through_forwarding_python_servers(rust_bins, client, front, middle):
    """Python or Rust client -> Python server -> Python server -> Rust
    server, each forwarding from inside its handler: the trace id survives
    every hop, the span changes, and the deadline shrinks (the trace_chain
    case)."""
    procs = []
    try:
        procs.append(Proc([str(rust_bins[0]), "--addr", "127.0.0.1:0"]))
        for api in (middle, front):
            procs.append(
                Proc([PY, "-m", "drpc.interop.server", "--api", api, "--addr", "127.0.0.1:0", "--forward", procs[-1].addr])
            )
        argv = [PY, "-m", "drpc.interop.client"] if client == "python" else [str(rust_bins[1])]
        r = subprocess.run(
            argv + ["--addr", procs[-1].addr, "--case", "trace_chain"], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0 and r.stdout.split() == ["PASS", "trace_chain"], r.stdout + r.stderr
    finally:
        for p in reversed(procs):
            p.stop()


def test_trace_chain_fails_without_forwarding():
    # Against a server that does not forward, the echoed traceparent is the
    # one sent (same span id): the case must notice.
    srv = Proc([PY, "-m", "drpc.interop.server", "--addr", "127.0.0.1:0"])
    try:
        r = subprocess.run(
            [PY, "-m", "drpc.interop.client", "--addr", srv.addr, "--case", "trace_chain"],
            capture_output=True, text=True, timeout=60,
        )
        assert r.returncode != 0 and "FAIL trace_chain" in r.stdout, r.stdout
    finally:
        srv.stop()
