#!/usr/bin/env python3
"""Cross-implementation interop matrix (stdlib only).

Starts every interop server that exists and runs every interop client that
exists against it, with the cases of shared/interop/CASES.md:

  sequential  every-peer cases, --mode sequential          (every pair)
  mux         every-peer + multiplexing cases, --mode mux  (both sides multiplex)
  mux+fc      slow_reader_isolation, both sides --flow-control (both multiplex)
  tls         every-peer cases, --mode sequential, over mutual TLS: the server
              gets --tls-cert/--tls-key/--tls-client-ca, the client
              --tls-ca/--tls-server-name/--tls-cert/--tls-key (every pair
              whose both sides support TLS; certificates are made for the
              run by drpc-tls's gen-test-certs example)

Between this project's implementations the mux run adds PROJECT_CASES
(deadline propagation, trace context), and one more run chains servers
(python -> c -> go-cgo -> rust, each forwarding with --forward) under the
Rust client's trace_chain case: the trace id and the deadline cross all four.

Each run gets a fresh server. Prints the matrix and the failures (case, the
client's FAIL reason, the tails of both sides' stderr) and exits 1 if any
applicable run failed. Implementations that are absent print "absent" and do
not fail the run unless named with --require, or --require-all is given (the
default when the environment has CI=true or CI=1).

Implementations are pluggable: edit IMPLS below ({root} = the repository
root, {target} = $CARGO_TARGET_DIR or {root}/target, {bin} = a temporary
directory, {python} = the interpreter with the drpc package are substituted).
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

EVERY_PEER = [
    "empty_unary", "large_unary", "client_streaming", "server_streaming",
    "ping_pong", "half_duplex", "empty_stream", "custom_metadata",
    "status_code_and_message", "special_status_message", "unimplemented_method",
    "cancel_after_begin", "cancel_after_first_response",
    "timeout_on_sleeping_server", "server_cancel_propagation", "connection_reuse",
]
# no_leaks must run after every other case; slow_reader_isolation needs
# --flow-control on both sides and runs as its own "mux+fc" run.
MUX_ONLY = ["concurrent_unary", "interleaved_streams", "large_interleaved", "cancel_one_of_many"]
MUX_LAST = ["no_leaks"]
FLOW_CONTROL_CASES = ["slow_reader_isolation"]
# The TLS run: every sequential-peer case over mutual TLS (it adds well
# under a second per pair).
TLS_CASES = EVERY_PEER
# Cases of this project (not in shared/interop/CASES.md): deadline
# propagation (`drpc-timeout`) and W3C trace context, run in the mux run
# between implementations marked "project_cases" (not storj.io/drpc, which
# ignores the metadata). See tests/interop/README.md.
PROJECT_CASES = ["deadline_propagation", "trace_context"]
# The trace chain: the Rust client calls the first server, each server
# forwards to the next (--forward), the last one echoes what it received.
CHAIN = ["python", "c", "go-cgo", "rust"]


def python_for_bindings():
    """The interpreter that has the drpc package: $DRPC_PYTHON, the bindings'
    venv, or python3."""
    for cand in (os.environ.get("DRPC_PYTHON"),
                 os.path.join(ROOT, "bindings/python/.venv/bin/python"),
                 shutil.which("python3")):
        if cand and os.path.exists(cand):
            return cand
    return "python3"


# name: the column/row label. mux: multiplexing implementation (storj.io/drpc
# is sequential only). flow_control (default true): supports --flow-control,
# needed for the mux+fc run. tls (default true): takes the --tls-* flags.
# server/client: argv (without --addr/--case/--mode).
# build: optional argv run once (cwd = build_cwd) before probing, e.g. to
# compile a binary into {bin}. probe: optional argv that must exit 0 for the
# implementation to count as present; otherwise the first argv element of
# server/client must be an existing file.
IMPLS = [
    {
        "name": "rust",
        "mux": True,
        "project_cases": True,
        "server": ["{target}/release/drpc-interop-server"],
        "client": ["{target}/release/drpc-interop-client"],
    },
    {
        "name": "c",
        "mux": True,
        "project_cases": True,
        # tests/c/build.sh is what tests/c/run.sh builds them with; it needs
        # {target}/release/libdrpc.so (cargo build --release -p drpc-ffi).
        "build": ["bash", "{root}/tests/c/build.sh", "interop"],
        "server": ["{target}/c-tests/interop_server"],
        "client": ["{target}/c-tests/interop_client"],
    },
    {
        "name": "python",
        "mux": True,
        "project_cases": True,
        "server": ["{python}", "-m", "drpc.interop.server"],
        "client": ["{python}", "-m", "drpc.interop.client"],
        "probe": ["{python}", "-c", "import drpc.interop.server, drpc.interop.client"],
    },
    {
        "name": "go-storj",
        "mux": False,
        "build": ["go", "build", "-o", "{bin}/", "./cmd/storj-interop-server", "./cmd/storj-interop-client"],
        "build_cwd": "{root}/tests/go",
        "server": ["{bin}/storj-interop-server"],
        "client": ["{bin}/storj-interop-client"],
    },
    {
        "name": "go-cgo",
        "mux": True,
        "project_cases": True,
        "build_if": "{root}/bindings/go/go.mod",
        "build": ["go", "build", "-o", "{bin}/", "./cmd/cgo-interop-server", "./cmd/cgo-interop-client"],
        "build_cwd": "{root}/bindings/go",
        "server": ["{bin}/cgo-interop-server"],
        "client": ["{bin}/cgo-interop-client"],
    },
]


def subst(argv, ctx):
    return [a.format(**ctx) for a in argv]


def tail(text, n=15):
    lines = text.strip().splitlines()
    return "\n".join(("    " + l) for l in lines[-n:]) if lines else "    (empty)"


class Impl:
    def __init__(self, spec, ctx):
        self.name = spec["name"]
        self.mux = spec["mux"]
        self.flow_control = spec.get("flow_control", True)
        self.tls = spec.get("tls", True)
        self.project_cases = spec.get("project_cases", False)
        self.server = subst(spec["server"], ctx)
        self.client = subst(spec["client"], ctx)
        self.present = False
        self.why = ""
        build_if = spec.get("build_if")
        if build_if and not os.path.exists(build_if.format(**ctx)):
            self.why = "absent (%s missing)" % build_if.format(**ctx)
            return
        if "build" in spec:
            try:
                r = subprocess.run(subst(spec["build"], ctx), cwd=spec.get("build_cwd", "{root}").format(**ctx),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
            except (OSError, subprocess.TimeoutExpired) as e:
                self.why = "absent (build: %s)" % e
                return
            if r.returncode != 0:
                self.why = "absent (build failed: %s)" % r.stdout.strip().splitlines()[-1:]
                return
        if "probe" in spec:
            try:
                r = subprocess.run(subst(spec["probe"], ctx), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
                ok = r.returncode == 0
            except (OSError, subprocess.TimeoutExpired):
                ok = False
            if not ok:
                self.why = "absent (probe failed)"
                return
        else:
            for argv in (self.server, self.client):
                if not os.path.exists(argv[0]):
                    shown = os.path.relpath(argv[0], ROOT)
                    self.why = "absent (%s)" % (argv[0] if shown.startswith("..") else shown)
                    return
        self.present = True


class Server:
    """A running interop server: first stdout line must be `listening HOST:PORT`."""

    def __init__(self, impl, flow_control, extra=(), timeout=30):
        argv = impl.server + ["--addr", "127.0.0.1:0"] + (["--flow-control"] if flow_control else []) + list(extra)
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=self.stderr, text=True)
        self.addr = None
        first = []
        t = threading.Thread(target=lambda: first.append(self.proc.stdout.readline()), daemon=True)
        t.start()
        t.join(timeout)
        line = first[0].rstrip("\n") if first else ""
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError("no `listening HOST:PORT` line within %ds (got %r); stderr:\n%s"
                               % (timeout, line, tail(self.read_stderr())))
        self.addr = line[len("listening "):]
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def read_stderr(self):
        self.stderr.seek(0)
        return self.stderr.read()

    def stop(self):
        """SIGTERM; returns an error string unless the server exits 0 within 10 s."""
        if self.proc.poll() is not None:
            return "server exited early with %s" % self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return "server did not exit within 10 s of SIGTERM"
        return None if rc == 0 else "server exited with %s after SIGTERM" % rc


def run_pair(srv_impl, cli_impl, mode, timeout, certs=None):
    """Returns (passed, total, failures) where failures are strings."""
    flow_control = mode == "mux+fc"
    server_extra, client_extra = [], []
    if mode == "tls":
        cases = TLS_CASES
        server_extra = ["--tls-cert", os.path.join(certs, "server.pem"), "--tls-key", os.path.join(certs, "server-key.pem"),
                        "--tls-client-ca", os.path.join(certs, "ca.pem")]
        client_extra = ["--tls-ca", os.path.join(certs, "ca.pem"), "--tls-server-name", "localhost",
                        "--tls-cert", os.path.join(certs, "client.pem"), "--tls-key", os.path.join(certs, "client-key.pem")]
    elif mode == "sequential":
        cases = EVERY_PEER
    elif mode == "mux":
        ours = srv_impl.project_cases and cli_impl.project_cases
        cases = EVERY_PEER + MUX_ONLY + (PROJECT_CASES if ours else []) + MUX_LAST
    else:
        cases = FLOW_CONTROL_CASES
    try:
        srv = Server(srv_impl, flow_control, server_extra)
    except (OSError, RuntimeError) as e:
        return 0, len(cases), ["server %s failed to start: %s" % (srv_impl.name, e)]
    argv = cli_impl.client + ["--addr", srv.addr, "--mode", "mux" if mode in ("mux", "mux+fc") else "sequential"]
    argv += client_extra
    if flow_control:
        argv.append("--flow-control")
    for c in cases:
        argv += ["--case", c]
    failures = []
    try:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        out, err, rc = r.stdout, r.stderr, r.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
        rc = None
        failures.append("client timed out after %ds" % timeout)
    except OSError as e:
        out, err, rc = "", str(e), None
        failures.append("client failed to start: %s" % e)
    stop_err = srv.stop()
    srv_err = srv.read_stderr()

    results = {}
    for line in out.splitlines():
        if line.startswith("PASS "):
            results[line[5:].strip()] = None
        elif line.startswith("FAIL "):
            name, _, reason = line[5:].partition(":")
            results[name.strip()] = reason.strip()
    passed = 0
    for c in cases:
        if c not in results:
            failures.append("%s: no PASS/FAIL line" % c)
        elif results[c] is not None:
            failures.append("%s: %s" % (c, results[c]))
        else:
            passed += 1
    any_fail = passed != len(cases)
    if rc is not None and (rc == 0) == any_fail:
        failures.append("client exit status %s does not match its results" % rc)
    if stop_err:
        failures.append(stop_err)
    if failures:
        failures.append("client stderr:\n" + tail(err))
        failures.append("server stderr:\n" + tail(srv_err))
    return passed, len(cases), failures


def run_chain(chain, client_impl, timeout):
    """Starts the chain's servers from the last to the first, each forwarding
    to the next, and runs the trace_chain case against the first."""
    servers, failures = [], []
    try:
        forward = []
        for impl in reversed(chain):
            srv = Server(impl, False, forward)
            servers.append((impl.name, srv))
            forward = ["--forward", srv.addr]
        argv = client_impl.client + ["--addr", servers[-1][1].addr, "--mode", "mux", "--case", "trace_chain"]
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if r.returncode != 0 or "PASS trace_chain" not in r.stdout:
            failures.append("client: %s\n%s" % (r.stdout.strip(), tail(r.stderr)))
    except (OSError, RuntimeError, subprocess.TimeoutExpired) as e:
        failures.append("chain failed: %s" % e)
    for name, srv in servers:
        err = srv.stop()
        if err or failures:
            failures.append("server %s: %s\n%s" % (name, err or "", tail(srv.read_stderr())))
    return failures


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", action="append", default=[], help="limit to these implementations (repeatable)")
    ap.add_argument("--require", action="append", default=[], help="fail if this implementation is absent (repeatable)")
    ap.add_argument("--require-all", action="store_true", default=os.environ.get("CI", "").lower() in ("true", "1"),
                    help="fail if any implementation (of --only, if given) is absent; default on when CI=true")
    ap.add_argument("--allow-absent", dest="require_all", action="store_false",
                    help="do not fail for absent implementations (overrides CI=true)")
    ap.add_argument("--no-flow-control", action="store_true", help="skip the mux+fc runs")
    ap.add_argument("--no-tls", action="store_true", help="skip the tls runs")
    ap.add_argument("--no-chain", action="store_true", help="skip the trace chain run")
    ap.add_argument("--timeout", type=int, default=300, help="per client run, seconds")
    args = ap.parse_args()

    bindir = tempfile.mkdtemp(prefix="drpc-matrix-")
    target = os.path.abspath(os.environ.get("CARGO_TARGET_DIR") or os.path.join(ROOT, "target"))
    ctx = {"root": ROOT, "target": target, "bin": bindir, "python": python_for_bindings()}
    impls = [Impl(s, ctx) for s in IMPLS if not args.only or s["name"] in args.only]
    bad = False
    failures_absent = []
    unknown = [n for n in args.only + args.require if n not in [s["name"] for s in IMPLS]]
    if unknown:
        ap.error("unknown implementation(s): %s (known: %s)" % (", ".join(unknown), ", ".join(s["name"] for s in IMPLS)))
    print("implementations:")
    for im in impls:
        print("  %-9s %s" % (im.name, "present (%s)" % ("multiplexing" if im.mux else "sequential only")
                                     if im.present else im.why))
        if not im.present and (args.require_all or im.name in args.require):
            bad = True
            failures_absent.append(im.name)
    present = [im for im in impls if im.present]
    certs = None
    if not args.no_tls:
        certs = os.path.join(bindir, "certs")
        gen = os.path.join(target, "release", "examples", "gen-test-certs")
        try:
            r = subprocess.run([gen, certs], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
            ok = r.returncode == 0
            why = r.stdout.strip()
        except OSError as e:
            ok, why = False, str(e)
        if not ok:
            print("FAILED: cannot make test certificates with %s: %s" % (gen, why))
            bad = True
            certs = None

    cells, failures = {}, []
    for s in present:
        for c in present:
            modes = ["sequential"]
            if s.mux and c.mux:
                modes.append("mux")
                if not args.no_flow_control and s.flow_control and c.flow_control:
                    modes.append("mux+fc")
            if certs and s.tls and c.tls:
                modes.append("tls")
            parts = []
            for mode in modes:
                t0 = time.time()
                passed, total, fails = run_pair(s, c, mode, args.timeout, certs)
                status = "ok" if not fails else "FAIL"
                print("  client %-9s server %-9s %-10s %2d/%-2d %s (%.1fs)"
                      % (c.name, s.name, mode, passed, total, status, time.time() - t0), flush=True)
                parts.append("%s %d/%d" % ({"sequential": "seq", "mux": "mux", "mux+fc": "fc", "tls": "tls"}[mode], passed, total)
                             + ("" if not fails else "!"))
                if fails:
                    bad = True
                    failures.append(("client %s -> server %s, %s" % (c.name, s.name, mode), fails))
            cells[(c.name, s.name)] = ", ".join(parts)

    by_name = {im.name: im for im in present}
    if not args.no_chain and all(n in by_name for n in CHAIN):
        t0 = time.time()
        fails = run_chain([by_name[n] for n in CHAIN], by_name["rust"], args.timeout)
        print("  trace chain rust client -> %s: %s (%.1fs)" % (" -> ".join(CHAIN), "ok" if not fails else "FAIL", time.time() - t0))
        if fails:
            bad = True
            failures.append(("trace chain", fails))
    elif not args.no_chain and args.require_all:
        bad = True
        failures.append(("trace chain", ["needs %s" % ", ".join(CHAIN)]))

    names = [im.name for im in impls]
    width = max([len("client \\ server")] + [len(n) for n in names])
    colw = {n: max(len(n), max([len(cells.get((c, n), "")) for c in names] + [6])) for n in names}
    print("\nmatrix (rows: client, columns: server; n/k = cases passed; ! = failures):")
    print("  " + "client \\ server".ljust(width) + " | " + " | ".join(n.ljust(colw[n]) for n in names))
    print("  " + "-" * width + "-+-" + "-+-".join("-" * colw[n] for n in names))
    present_names = {im.name for im in present}
    for c in names:
        row = []
        for s in names:
            if c not in present_names or s not in present_names:
                row.append("absent".ljust(colw[s]))
            else:
                row.append(cells[(c, s)].ljust(colw[s]))
        print("  " + c.ljust(width) + " | " + " | ".join(row))

    if failures_absent:
        print("\nFAILED: required implementation(s) absent: %s" % ", ".join(failures_absent))
    for what, fails in failures:
        print("\nFAILED %s:" % what)
        for f in fails:
            print("  " + f)
    shutil.rmtree(bindir, ignore_errors=True)
    print("\nmatrix: %s" % ("FAIL" if bad else "PASS"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
