#!/usr/bin/env python3
"""The drpc-rs benchmark harness: runs every contender over TCP loopback in
one invocation and writes results/results.{json,md} and results/chart.png.

Normally started by bench/run.sh (which builds everything first). Each
contender is a server program and a client program speaking the same
service (see README.md); this script starts servers, runs client workloads,
reads their JSON lines, measures what a process cannot measure about itself
(its peer's CPU, context switches, syscalls) and aggregates.
"""

import argparse
import datetime
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.path.join(HERE, "build")
RUST = os.path.join(HERE, "rust", "target", "release", "drpc-bench")
GO = os.path.join(BUILD, "bench-go")
CBIN = os.path.join(BUILD, "bench-c")
VENV_PY = os.path.join(HERE, ".venv", "bin", "python")
PYBENCH = os.path.join(HERE, "python", "bench_py.py")
KIB, MIB = 1024, 1024 * 1024


def cmd(kind):
    """argv prefix of a contender program, before 'server'/'client'."""
    return {
        "drpc-rs": [RUST, "drpc"],
        "drpc-tls": [RUST, "drpc-tls"],
        "drpc-telemetry": [RUST, "drpc-telemetry"],
        "c": [CBIN],
        "py": [VENV_PY, PYBENCH, "drpc"],
        "storj": [GO, "storj"],
        "tonic": [RUST, "tonic"],
        "grpc-go": [GO, "grpc"],
        "grpcio": [VENV_PY, PYBENCH, "grpcio"],
        "tcp": [RUST, "tcp"],
        "tokio-tcp": [RUST, "tokio-tcp"],
        "channel": [RUST, "channel"],
    }[kind]


# name shown, server program, client program
CONTENDERS = [
    ("drpc-rs (Rust API)", "drpc-rs", "drpc-rs"),
    ("drpc-rs C ABI", "c", "c"),
    ("drpc-rs Python", "py", "py"),
    ("storj.io/drpc v1.0.0 (Go)", "storj", "storj"),
    ("tonic (Rust gRPC)", "tonic", "tonic"),
    ("grpc-go", "grpc-go", "grpc-go"),
    ("grpcio (Python)", "grpcio", "grpcio"),
]
C_TO_RUST = ("C ABI client -> drpc-rs server", "drpc-rs", "c")
# drpc-rs over TLS 1.3 (rustls), unary latency only, next to plaintext.
TLS = ("drpc-rs over TLS (Rust API)", "drpc-tls", "drpc-tls")
# Every call with a deadline and a trace context, through a server
# interceptor with a message observer: what issue 16's features cost when used.
TELEMETRY = ("drpc-rs, deadline+trace+interceptor (Rust API)", "drpc-telemetry", "drpc-telemetry")
# drpc_channel::Channel over one endpoint: its cost over a bare Conn.
CHANNEL = ("drpc-rs Channel, 1 endpoint (Rust API)", "drpc-rs", "channel")
RAW_TCP = ("raw TCP loopback", "tcp", "tcp")
# The same ping-pong through tokio (one task per side): the floor of any
# tokio-based stack, drpc-rs and tonic included.
TOKIO_TCP = ("raw TCP over tokio", "tokio-tcp", "tokio-tcp")
SHORT = {
    "drpc-rs (Rust API)": "drpc-rs",
    "drpc-rs C ABI": "drpc-rs C",
    "drpc-rs Python": "drpc-rs Py",
    "storj.io/drpc v1.0.0 (Go)": "storj Go",
    "tonic (Rust gRPC)": "tonic",
    "grpc-go": "grpc-go",
    "grpcio (Python)": "grpcio",
}


class Server:
    def __init__(self, kind, log, wrap=None):
        argv = (wrap or []) + cmd(kind) + ["server", "--addr", "127.0.0.1:0"]
        self.log = open(log, "ab")
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log)
        line = self.p.stdout.readline().decode().strip()
        if not line.startswith("ADDR "):
            self.stop()
            raise RuntimeError("server %s did not start (%r); see bench/%s" % (kind, line, os.path.relpath(log, HERE)))
        self.addr = line[5:]
        # the real server pid (under strace the child of strace)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        try:
            self.p.stdin.close()
        except Exception:
            pass
        try:
            self.p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
        self.log.close()


def proc_cpu_ctx(pid):
    """(cpu seconds, context switches) of a live process, summed over its
    threads (schedstat: nanosecond run time)."""
    cpu, ctx = 0.0, 0
    for tid in os.listdir("/proc/%d/task" % pid):
        try:
            with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
                cpu += int(f.read().split()[0]) / 1e9
            with open("/proc/%d/task/%s/status" % (pid, tid)) as f:
                for line in f:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        ctx += int(line.split()[1])
        except OSError:
            pass
    return cpu, ctx


def run_client(kind, addr, args, log, timeout, wrap=None):
    argv = (wrap or []) + cmd(kind) + ["client", "--addr", addr] + [str(a) for a in args]
    with open(log, "ab") as lf:
        lf.write(("\n$ %s\n" % " ".join(argv)).encode())
        lf.flush()
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=lf, timeout=timeout)
    out = [json.loads(l) for l in r.stdout.decode().splitlines() if l.startswith("{")]
    if r.returncode != 0:
        raise RuntimeError("client %s exited %d (see bench/%s)" % (kind, r.returncode, os.path.relpath(log, HERE)))
    return out


def med_spread(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize(workload, lines):
    reps = [l for l in lines if "rep" in l]
    s = {}
    if workload in ("unary_lat", "bidi"):
        s["p50_us"] = med_spread([l["p50_us"] for l in reps])
        s["p99_us"] = med_spread([l["p99_us"] for l in reps])
        s["rate"] = med_spread([l["calls"] / l["secs"] for l in reps])
    elif workload in ("unary_tput", "mux"):
        s["rate"] = med_spread([l["calls"] / l["secs"] for l in reps])
        if reps and "conns" in reps[0]:
            s["conns"] = reps[0]["conns"]
    elif workload in ("stream", "upload"):
        s["rate"] = med_spread([l["msgs"] / l["secs"] for l in reps])
        s["mib_s"] = med_spread([l["bytes"] / l["secs"] / MIB for l in reps])
    mem = [l for l in lines if l.get("event") == "mem"]
    if mem:
        m = mem[0]
        n = m["streams"]
        s["conns"] = m["conns"]
        s["open_secs"] = m["open_secs"]
        s["client_kib_per_stream"] = (m["client_rss_kb_after"] - m["client_rss_kb_before"]) / n
        s["server_kib_per_stream"] = (m["server_rss_kb_after"] - m["server_rss_kb_before"]) / n
    return s


def strace_counts(path):
    """{syscall: calls} and the total from an `strace -c` summary."""
    counts = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 5 and re.match(r"^[\d.]+$", parts[0]) and parts[-1] != "total":
                try:
                    calls = int(parts[3])
                except ValueError:
                    continue
                counts[parts[-1]] = counts.get(parts[-1], 0) + calls
    return counts


class Bench:
    def __init__(self, opts):
        self.o = opts
        self.results = {"meta": {}, "runs": [], "costs": {}, "failures": []}
        self.logdir = os.path.join(opts.out, "logs")
        os.makedirs(self.logdir, exist_ok=True)
        for f in os.listdir(self.logdir):
            os.remove(os.path.join(self.logdir, f))

    def log(self, name):
        return os.path.join(self.logdir, re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".log")

    def say(self, msg):
        print("[bench %5.0fs] %s" % (time.time() - self.t0, msg), flush=True)

    def timing(self):
        o = self.o
        return ["--warmup", o.warmup, "--duration", o.duration, "--reps", o.reps]

    def measure(self, server, name, ckind, workload, args, timeout=None):
        label = "%s %s %s" % (name, workload, " ".join(str(a) for a in args))
        t = timeout or (60 + (self.o.warmup + self.o.duration) * (self.o.reps + 1) * 3)
        try:
            lines = run_client(ckind, server.addr, ["--workload", workload, "--server-pid", server.pid]
                               + list(args) + self.timing(), self.log(name), t)
            s = summarize(workload, lines)
            self.results["runs"].append({"contender": name, "workload": workload,
                                         "args": dict(zip(args[::2], args[1::2])), "summary": s, "raw": lines})
            self.say("%-32s %-10s %-28s %s" % (name, workload, " ".join(str(a) for a in args), brief(s)))
            return s
        except Exception as e:
            msg = "%s: %s" % (label, e if not isinstance(e, subprocess.TimeoutExpired) else "timed out")
            self.results["failures"].append(msg)
            self.say("FAILED " + msg)
            return None

    def get(self, name, workload, **args):
        for r in self.results["runs"]:
            if r["contender"] == name and r["workload"] == workload and \
                    all(str(r["args"].get("--" + k)) == str(v) for k, v in args.items()) and \
                    ("--compress" not in r["args"] or "compress" in args):
                return r["summary"]
        return None

    def run(self):
        self.t0 = time.time()
        o = self.o
        self.results["meta"] = {
            "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "machine": machine(), "mode": "smoke" if o.smoke else "full",
            "warmup_s": o.warmup, "duration_s": o.duration, "reps": o.reps,
            "versions": versions(), "idle": self.idle,
        }
        # Raw TCP baselines.
        srv = Server("tcp", self.log("raw-tcp-server"))
        self.measure(srv, RAW_TCP[0], "tcp", "stream", ["--size", MIB])
        self.measure(srv, RAW_TCP[0], "tcp", "unary_lat", ["--size", 0])
        srv.stop()
        srv = Server("tokio-tcp", self.log("tokio-tcp-server"))
        self.measure(srv, TOKIO_TCP[0], "tokio-tcp", "unary_lat", ["--size", 0])
        srv.stop()
        for name, skind, ckind in CONTENDERS + [C_TO_RUST, TLS, CHANNEL, TELEMETRY]:
            try:
                srv = Server(skind, self.log(name + "-server"))
            except Exception as e:
                self.results["failures"].append("%s: server: %s" % (name, e))
                self.say("FAILED %s server: %s" % (name, e))
                continue
            for size in (0, KIB):
                self.measure(srv, name, ckind, "unary_lat", ["--size", size])
            if (name, skind, ckind) == TLS:
                self.measure(srv, name, ckind, "stream", ["--size", MIB])
            if (name, skind, ckind) in (C_TO_RUST, TLS, CHANNEL, TELEMETRY):
                srv.stop()
                continue
            for conc in o.concurrency:
                if not srv.alive():
                    break
                self.measure(srv, name, ckind, "unary_tput", ["--size", KIB, "--concurrency", conc])
            for size in (KIB, 64 * KIB, MIB):
                self.measure(srv, name, ckind, "stream", ["--size", size])
            if skind == "drpc-rs":
                self.large_messages(srv, name, ckind)
            self.measure(srv, name, ckind, "bidi", ["--size", KIB])
            srv.stop()
            # Multiplexing scale: a fresh server per size, so RSS deltas are clean.
            for n in o.mux:
                if n > MUX_LIMIT.get(skind, 10 ** 9):
                    continue
                srv = Server(skind, self.log(name + "-server"))
                self.measure(srv, name, ckind, "mux", ["--size", 64, "--streams", n],
                             timeout=120 + 10 * (o.warmup + o.duration * o.reps))
                srv.stop()
            self.costs(name, skind, ckind)
        self.say("done")
        return self.results

    def large_messages(self, srv, name, ckind):
        """drpc-rs only (the others cap messages at 4 MiB or have no upload
        rpc): 16 MiB server streaming, client-streaming upload, and both with
        snappy compression on text-like payloads."""
        self.measure(srv, name, ckind, "stream", ["--size", 16 * MIB])
        for size in (64 * KIB, MIB):
            self.measure(srv, name, ckind, "upload", ["--size", size])
        for codec in ("snappy",):
            self.measure(srv, name, ckind, "stream", ["--size", MIB, "--compress", codec])
            self.measure(srv, name, ckind, "upload", ["--size", MIB, "--compress", codec])

    def costs(self, name, skind, ckind):
        """Per unary call (0 B): CPU and context switches of each side (from
        the difference of two runs of N1 and N2 calls, so start-up cancels),
        allocations (Rust and Go report them), syscalls (strace -c)."""
        o = self.o
        n1, n2 = o.calls
        c = {}
        try:
            per = {}
            for n in (n1, n2):
                srv = Server(skind, self.log(name + "-server"))
                s0 = proc_cpu_ctx(srv.pid)
                r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                out = run_client(ckind, srv.addr, ["--workload", "count", "--size", 0, "--calls", n],
                                 self.log(name), 120)
                r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                s1 = proc_cpu_ctx(srv.pid)
                srv.stop()
                per[n] = {
                    "client_cpu": (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime),
                    "client_ctx": (r1.ru_nvcsw + r1.ru_nivcsw) - (r0.ru_nvcsw + r0.ru_nivcsw),
                    "server_cpu": s1[0] - s0[0], "server_ctx": s1[1] - s0[1], "out": out[-1] if out else {},
                }
            d = n2 - n1
            c["client_cpu_us"] = (per[n2]["client_cpu"] - per[n1]["client_cpu"]) / d * 1e6
            c["server_cpu_us"] = (per[n2]["server_cpu"] - per[n1]["server_cpu"]) / d * 1e6
            c["client_ctx"] = (per[n2]["client_ctx"] - per[n1]["client_ctx"]) / d
            c["server_ctx"] = (per[n2]["server_ctx"] - per[n1]["server_ctx"]) / d
            last = per[n2]["out"]
            if "client_allocs_per_call" in last:
                c["client_allocs"] = last["client_allocs_per_call"]
                c["server_allocs"] = last["server_allocs_per_call"]
        except Exception as e:
            self.results["failures"].append("%s costs: %s" % (name, e))
        if shutil.which("strace"):
            try:
                sc = {}
                m1, m2 = o.strace_calls
                for n in (m1, m2):
                    with tempfile.TemporaryDirectory() as td:
                        sf, cf = os.path.join(td, "s"), os.path.join(td, "c")
                        srv = Server(skind, self.log(name + "-server"), wrap=["strace", "-f", "-c", "-o", sf])
                        run_client(ckind, srv.addr, ["--workload", "count", "--size", 0, "--calls", n],
                                   self.log(name), 300, wrap=["strace", "-f", "-c", "-o", cf])
                        srv.stop()
                        sc[n] = (strace_counts(sf), strace_counts(cf))
                d = m2 - m1
                for side, i in (("server", 0), ("client", 1)):
                    a, b = sc[m1][i], sc[m2][i]
                    diff = {k: (b.get(k, 0) - a.get(k, 0)) / d for k in set(a) | set(b)}
                    diff = {k: v for k, v in diff.items() if v >= 0.05}
                    c[side + "_syscalls"] = sum(diff.values())
                    c[side + "_syscalls_top"] = dict(sorted(diff.items(), key=lambda kv: -kv[1])[:5])
            except Exception as e:
                self.results["failures"].append("%s strace: %s" % (name, e))
        self.results["costs"][name] = c
        self.say("%-32s costs      %s" % (name, json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                                                             for k, v in c.items() if "top" not in k})))


# Contenders that cannot hold more open streams (see README.md): the C ABI
# and the Python binding run a blocking handler thread per open stream.
MUX_LIMIT = {"c": 100, "py": 100, "grpcio": 100}


def brief(s):
    parts = []
    for k in ("p50_us", "p99_us"):
        if s.get(k):
            parts.append("%s=%.1f" % (k, s[k]["median"]))
    if s.get("rate"):
        parts.append("rate=%.0f/s [%.0f-%.0f]" % (s["rate"]["median"], s["rate"]["min"], s["rate"]["max"]))
    if s.get("mib_s"):
        parts.append("%.0f MiB/s" % s["mib_s"]["median"])
    for k in ("conns", "client_kib_per_stream", "server_kib_per_stream"):
        if k in s:
            parts.append("%s=%s" % (k, round(s[k], 2) if isinstance(s[k], float) else s[k]))
    return " ".join(parts)


def versions():
    v = {}
    for k, argv in (("rustc", ["rustc", "--version"]), ("go", ["go", "version"])):
        try:
            v[k] = subprocess.run(argv, capture_output=True, text=True).stdout.strip()
        except OSError:
            pass
    try:
        out = subprocess.run([VENV_PY, "-c", "import grpc, sys; print(grpc.__version__, sys.version.split()[0])"],
                             capture_output=True, text=True).stdout.split()
        v["grpcio"], v["python"] = out[0], out[1]
    except Exception:
        pass
    try:
        lock = open(os.path.join(HERE, "rust", "Cargo.lock")).read()
        v["tonic"] = re.search(r'name = "tonic"\nversion = "([^"]+)"', lock).group(1)
        gomod = open(os.path.join(HERE, "go", "go.mod")).read()
        v["grpc-go"] = re.search(r"google.golang.org/grpc (v\S+)", gomod).group(1)
    except Exception:
        pass
    return v


def hold_cpus_awake():
    """Keeps idle CPUs polling instead of halting while the bench runs.

    On a VM whose idle CPUs halt (haltpoll with no polling, as here), waking
    a thread blocked in read or epoll_wait costs ~70 µs, and every ping-pong
    pays it: latency rows then measure the host, not the stacks. Writing 0 to
    /dev/cpu_dma_latency (the PM QoS interface latency tools such as
    cyclictest and tuned's latency-performance profile use) keeps the idle
    CPUs in their polling state until the file is closed, which happens when
    this process exits. Needs root; DRPC_BENCH_DEEP_IDLE=1 leaves idle alone.
    Returns what the report says about it.
    """
    if os.environ.get("DRPC_BENCH_DEEP_IDLE") == "1":
        return "default (DRPC_BENCH_DEEP_IDLE=1)"
    try:
        fd = os.open("/dev/cpu_dma_latency", os.O_WRONLY)
        os.write(fd, (0).to_bytes(4, sys.byteorder, signed=True))
    except OSError as e:
        return "default (/dev/cpu_dma_latency: %s)" % e.strerror
    hold_cpus_awake.fd = fd  # kept open for the life of the run
    return "polling (/dev/cpu_dma_latency held at 0)"


def machine():
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30
    return "%s, %d cores, %.0f GiB, Linux %s" % (cpu, os.cpu_count(), mem, platform.release())


# ------------------------------------------------------------------ report

def fmt_ms(s, key, unit_div=1.0, prec=1):
    if not s or not s.get(key):
        return "–"
    v = s[key]
    m, lo, hi = v["median"] / unit_div, v["min"] / unit_div, v["max"] / unit_div
    if v["n"] == 1:
        return ("%." + str(prec) + "f") % m
    return ("%." + str(prec) + "f [%." + str(prec) + "f–%." + str(prec) + "f]") % (m, lo, hi)


def kfmt(x):
    if x is None:
        return "–"
    if x >= 1e6:
        return "%.2fM" % (x / 1e6)
    if x >= 1e4:
        return "%.0fk" % (x / 1e3)
    if x >= 1e3:
        return "%.1fk" % (x / 1e3)
    return "%.0f" % x


def rate_fmt(s, key="rate"):
    if not s or not s.get(key):
        return "–"
    v = s[key]
    if v["n"] == 1:
        return kfmt(v["median"])
    return "%s [%s–%s]" % (kfmt(v["median"]), kfmt(v["min"]), kfmt(v["max"]))


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def targets(b):
    """Every target of the project (issue 17's table first), measured as
    ratios against a peer of the same run."""
    R = "drpc-rs (Rust API)"

    def med(name, w, key, **args):
        s = b.get(name, w, **args)
        return s[key]["median"] if s and s.get(key) else None

    rows = []

    def add(what, value, op, limit, note=""):
        ok = None if value is None else (value <= limit if op == "<=" else value >= limit)
        rows.append((what, value, op, limit, ok, note))

    p50 = lambda n: med(n, "unary_lat", "p50_us", size=0)
    bw = lambda n, size=MIB: med(n, "stream", "mib_s", size=size)
    st = lambda n, size: med(n, "stream", "rate", size=size)
    tp = lambda n, c: med(n, "unary_tput", "rate", concurrency=c)
    add("1 MiB server-streaming bandwidth: drpc-rs / raw TCP", ratio(bw(R), bw(RAW_TCP[0])), ">=", 0.8,
        "16 MiB: %s" % (("%.2f" % ratio(bw(R, 16 * MIB), bw(RAW_TCP[0]))) if ratio(bw(R, 16 * MIB), bw(RAW_TCP[0])) else "–"))
    add("unary p50 (0 B): C ABI / Rust API", ratio(p50("drpc-rs C ABI"), p50(R)), "<=", 1.1,
        "C client -> Rust server: %s" % (("%.2f" % ratio(p50(C_TO_RUST[0]), p50(R))) if ratio(p50(C_TO_RUST[0]), p50(R)) else "–"))
    add("unary p50 (0 B): Python / Rust API", ratio(p50("drpc-rs Python"), p50(R)), "<=", 2.0)
    add("Python unary calls/s (1 caller): drpc / grpcio", ratio(tp("drpc-rs Python", 1), tp("grpcio (Python)", 1)), ">=", 5.0,
        "16 threads: %s" % (("%.2f" % ratio(tp("drpc-rs Python", 16), tp("grpcio (Python)", 16)))
                            if ratio(tp("drpc-rs Python", 16), tp("grpcio (Python)", 16)) else "–"))
    add("unary p50 (0 B): drpc-rs / raw TCP ping-pong", ratio(p50(R), p50(RAW_TCP[0])), "<=", 1.25,
        "the same ping-pong over tokio: %s" % (("%.2f" % ratio(p50(TOKIO_TCP[0]), p50(RAW_TCP[0])))
                                              if ratio(p50(TOKIO_TCP[0]), p50(RAW_TCP[0])) else "–"))
    add("1 KiB server-streaming msgs/s: drpc-rs / tonic", ratio(st(R, KIB), st("tonic (Rust gRPC)", KIB)), ">=", 1.5)
    mux = b.get(R, "mux", streams=10000)
    worst = None
    if mux and "server_kib_per_stream" in mux:
        worst = max(mux["server_kib_per_stream"], mux["client_kib_per_stream"])
    add("10,000 open streams: RSS KiB per stream (worse side)", worst, "<=", 2.0,
        "server %.2f, client %.2f" % (mux["server_kib_per_stream"], mux["client_kib_per_stream"]) if worst is not None else "")
    add("unary p50 (0 B): drpc-rs / storj Go DRPC", ratio(p50(R), p50("storj.io/drpc v1.0.0 (Go)")), "<=", 0.7)
    add("unary p50 (0 B): drpc-rs / tonic", ratio(p50(R), p50("tonic (Rust gRPC)")), "<=", 0.5)
    add("unary p50 (0 B): drpc-rs / grpc-go", ratio(p50(R), p50("grpc-go")), "<=", 0.5)
    add("1 KiB server-streaming msgs/s: drpc-rs / storj Go DRPC",
        ratio(st(R, KIB), st("storj.io/drpc v1.0.0 (Go)", KIB)), ">=", 1.5)
    add("unary p50 (0 B): Channel (1 endpoint) / Conn", ratio(p50(CHANNEL[0]), p50(R)), "<=", 1.05)
    add("unary p50 (0 B): deadline+trace+interceptor / plain", ratio(p50(TELEMETRY[0]), p50(R)), "<=", 1.10,
        "every per-call feature of issue 16 on; with none of them on, the cost is the metrics "
        "counters alone (see Cost in README.md)")
    return rows


def report(b, opts):
    r = b.results
    m = r["meta"]
    L = []
    L.append("Run %s on %s; mode %s: %.2g s warm-up, %d × %.2g s repetitions per measurement; "
             "idle CPUs: %s. Cells are the median over repetitions, [min–max] the spread." %
             (m["date"], m["machine"], m["mode"], m["warmup_s"], m["reps"], m["duration_s"],
              m.get("idle", "default")))
    L.append("Versions: " + ", ".join("%s %s" % kv for kv in sorted(m.get("versions", {}).items())) + ".")
    L.append("")
    L.append("### Targets (ratios from this run)")
    L.append("")
    L.append("| target | measured | wanted | met |")
    L.append("|---|---|---|---|")
    for what, v, op, lim, ok, note in targets(b):
        L.append("| %s | %s%s | %s %g | %s |" % (what, "–" if v is None else "%.2f" % v,
                                                (" (%s)" % note) if note else "", op, lim,
                                                "n/a" if ok is None else ("yes" if ok else "**no**")))
    L.append("")
    L.append("### Unary latency, one caller (µs)")
    L.append("")
    L.append("| contender | 0 B p50 | 0 B p99 | 1 KiB p50 | 1 KiB p99 |")
    L.append("|---|---|---|---|---|")
    for name in [c[0] for c in CONTENDERS] + [C_TO_RUST[0], TLS[0], CHANNEL[0], TELEMETRY[0], RAW_TCP[0], TOKIO_TCP[0]]:
        a, k = b.get(name, "unary_lat", size=0), b.get(name, "unary_lat", size=KIB)
        if a or k:
            L.append("| %s | %s | %s | %s | %s |" % (name, fmt_ms(a, "p50_us"), fmt_ms(a, "p99_us"),
                                                    fmt_ms(k, "p50_us"), fmt_ms(k, "p99_us")))
    L.append("")
    L.append("### Unary throughput, 1 KiB, calls/s")
    L.append("")
    L.append("| contender | " + " | ".join("%d callers" % c for c in opts.concurrency) + " | connections used |")
    L.append("|---|" + "---|" * (len(opts.concurrency) + 1))
    for name in [c[0] for c in CONTENDERS]:
        ss = [b.get(name, "unary_tput", concurrency=c) for c in opts.concurrency]
        conns = "/".join(str(s.get("conns", "?")) if s else "–" for s in ss)
        L.append("| %s | %s | %s |" % (name, " | ".join(rate_fmt(s) for s in ss), conns))
    L.append("")
    L.append("### Server streaming (one stream)")
    L.append("")
    L.append("| contender | 1 KiB msgs/s | 1 KiB MiB/s | 64 KiB MiB/s | 1 MiB MiB/s | 1 MiB vs raw TCP |")
    L.append("|---|---|---|---|---|---|")
    tcp = b.get(RAW_TCP[0], "stream", size=MIB)
    tcpbw = tcp["mib_s"]["median"] if tcp else None
    for name in [c[0] for c in CONTENDERS]:
        k, mb = b.get(name, "stream", size=KIB), b.get(name, "stream", size=MIB)
        pct = ratio(mb["mib_s"]["median"], tcpbw) if mb and tcpbw else None
        k64 = b.get(name, "stream", size=64 * KIB)
        L.append("| %s | %s | %s | %s | %s | %s |" % (name, rate_fmt(k), fmt_ms(k, "mib_s", prec=0), fmt_ms(k64, "mib_s", prec=0),
                                                     fmt_ms(mb, "mib_s", prec=0), "–" if pct is None else "%.0f%%" % (pct * 100)))
    L.append("| %s | | | | %s | 100%% |" % (RAW_TCP[0], fmt_ms(tcp, "mib_s", prec=0)))
    L.append("")
    L.append("### Large messages, drpc-rs (Rust API), one stream, MiB/s")
    L.append("")
    L.append("Upload = client streaming (the client sends, the server counts). Compressed runs send "
             "text-like payloads (about 3:1) and count the uncompressed bytes.")
    L.append("")
    L.append("| workload | MiB/s | vs raw TCP |")
    L.append("|---|---|---|")
    R = CONTENDERS[0][0]
    for label, cname, w, args in [
            ("server streaming 16 MiB", R, "stream", {"size": 16 * MIB}),
            ("upload 64 KiB", R, "upload", {"size": 64 * KIB}),
            ("upload 1 MiB", R, "upload", {"size": MIB}),
            ("server streaming 1 MiB, snappy", R, "stream", {"size": MIB, "compress": "snappy"}),
            ("upload 1 MiB, snappy", R, "upload", {"size": MIB, "compress": "snappy"}),
            ("server streaming 1 MiB over TLS 1.3", TLS[0], "stream", {"size": MIB})]:
        s = b.get(cname, w, **args)
        pct = ratio(s["mib_s"]["median"], tcpbw) if s and s.get("mib_s") and tcpbw else None
        L.append("| %s | %s | %s |" % (label, fmt_ms(s, "mib_s", prec=0), "–" if pct is None else "%.0f%%" % (pct * 100)))
    L.append("")
    L.append("### Bidi ping-pong, 1 KiB, one stream")
    L.append("")
    L.append("| contender | round trips/s | p50 µs | p99 µs |")
    L.append("|---|---|---|---|")
    for name in [c[0] for c in CONTENDERS]:
        s = b.get(name, "bidi")
        L.append("| %s | %s | %s | %s |" % (name, rate_fmt(s), fmt_ms(s, "p50_us"), fmt_ms(s, "p99_us")))
    L.append("")
    L.append("### Multiplexing scale: N open bidi streams, all ping-ponging 64 B")
    L.append("")
    L.append("Aggregate round trips/s; RSS growth per open stream (KiB, client / server); "
             "connections used. `–`: not run (see README).")
    L.append("")
    L.append("| contender | " + " | ".join("N=%d" % n for n in opts.mux) + " |")
    L.append("|---|" + "---|" * len(opts.mux))
    for name in [c[0] for c in CONTENDERS]:
        cells = []
        for n in opts.mux:
            s = b.get(name, "mux", streams=n)
            if not s or "rate" not in s:
                cells.append("–")
                continue
            mem = ""
            if n >= 100 and "client_kib_per_stream" in s:
                mem = "; %.1f / %.1f KiB" % (s["client_kib_per_stream"], s["server_kib_per_stream"])
            cells.append("%s rt/s%s; %s conn" % (rate_fmt(s), mem, s.get("conns", "?")))
        L.append("| %s | %s |" % (name, " | ".join(cells)))
    L.append("")
    L.append("### Cost per unary call (0 B, one caller), client / server")
    L.append("")
    L.append("| contender | CPU µs | context switches | heap allocations | syscalls | top syscalls (client; server) |")
    L.append("|---|---|---|---|---|---|")
    for name in [c[0] for c in CONTENDERS]:
        c = r["costs"].get(name, {})

        def pair(k, fmt="%.1f"):
            a, s = c.get("client_" + k), c.get("server_" + k)
            if a is None and s is None:
                return "–"
            return "%s / %s" % ("–" if a is None else fmt % a, "–" if s is None else fmt % s)

        top = lambda side: ", ".join("%s %.1f" % kv for kv in c.get(side + "_syscalls_top", {}).items())
        L.append("| %s | %s | %s | %s | %s | %s; %s |" % (name, pair("cpu_us", "%.0f"), pair("ctx"), pair("allocs"),
                                                         pair("syscalls"), top("client") or "–", top("server") or "–"))
    if r["failures"]:
        L.append("")
        L.append("### Failures in this run")
        L.append("")
        for f in r["failures"]:
            L.append("- " + f)
    L.append("")
    return "\n".join(L)


def chart(b, opts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c[0] for c in CONTENDERS]
    short = [SHORT[n] for n in names]
    colors = ["#d62728", "#ff7f0e", "#e377c2", "#1f77b4", "#2ca02c", "#17becf", "#8c564b"]
    fig, ax = plt.subplots(2, 3, figsize=(18, 9))
    m = b.results["meta"]
    fig.suptitle("drpc-rs benchmark, TCP loopback — %s — %s (%s)" % (m["date"][:16], m["machine"], m["mode"]),
                 fontsize=10)

    def val(name, w, key, **a):
        s = b.get(name, w, **a)
        return s[key]["median"] if s and s.get(key) else 0

    # unary latency
    a = ax[0][0]
    x = range(len(names))
    a.bar([i - 0.2 for i in x], [val(n, "unary_lat", "p50_us", size=0) for n in names], 0.4, label="p50", color=colors)
    a.bar([i + 0.2 for i in x], [val(n, "unary_lat", "p99_us", size=0) for n in names], 0.4, label="p99",
          color=colors, alpha=0.4)
    a.set_xticks(list(x))
    a.set_xticklabels(short, rotation=20, fontsize=8)
    a.set_yscale("log")
    a.set_ylabel("µs (log)")
    a.set_title("unary latency, 0 B, one caller (solid p50, light p99; lower is better)", fontsize=9)
    # unary throughput
    a = ax[0][1]
    w = 0.8 / len(names)
    for i, n in enumerate(names):
        a.bar([j + i * w for j in range(len(opts.concurrency))],
              [val(n, "unary_tput", "rate", concurrency=c) for c in opts.concurrency], w, label=short[i], color=colors[i])
    a.set_xticks([j + 0.4 - w / 2 for j in range(len(opts.concurrency))])
    a.set_xticklabels(["%d callers" % c for c in opts.concurrency])
    a.set_yscale("log")
    a.set_ylabel("calls/s (log)")
    a.set_title("unary throughput, 1 KiB, one connection (storj: one per caller)", fontsize=9)
    a.legend(fontsize=7)
    # streaming
    a = ax[0][2]
    a.bar(list(x), [val(n, "stream", "rate", size=KIB) / 1000 for n in names], 0.6, color=colors)
    a.set_ylabel("thousand msgs/s")
    a.set_xticks(list(x))
    a.set_xticklabels(short, rotation=20, fontsize=8)
    a.set_title("server streaming, 1 KiB messages, one stream", fontsize=9)
    a = ax[1][0]
    a.bar(list(x), [val(n, "stream", "mib_s", size=MIB) for n in names], 0.6, color=colors)
    tcp = val(RAW_TCP[0], "stream", "mib_s", size=MIB)
    if tcp:
        a.axhline(tcp, color="k", ls="--", lw=1)
        a.axhline(0.8 * tcp, color="k", ls=":", lw=1)
        a.text(len(names) - 0.5, tcp, "raw TCP", fontsize=7, va="bottom", ha="right")
        a.text(len(names) - 0.5, 0.8 * tcp, "80% of raw TCP", fontsize=7, va="bottom", ha="right")
    a.set_ylabel("MiB/s")
    a.set_xticks(list(x))
    a.set_xticklabels(short, rotation=20, fontsize=8)
    a.set_title("server streaming, 1 MiB messages, one stream", fontsize=9)
    # bidi
    a = ax[1][1]
    a.bar(list(x), [val(n, "bidi", "p50_us") for n in names], 0.6, color=colors)
    a.set_ylabel("µs")
    a.set_xticks(list(x))
    a.set_xticklabels(short, rotation=20, fontsize=8)
    a.set_title("bidi ping-pong round trip p50, 1 KiB (lower is better)", fontsize=9)
    # mux
    a = ax[1][2]
    for i, n in enumerate(names):
        pts = [(k, val(n, "mux", "rate", streams=k)) for k in opts.mux]
        pts = [p for p in pts if p[1]]
        if pts:
            a.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=short[i], color=colors[i])
    a.set_xscale("log")
    a.set_yscale("log")
    a.set_xlabel("open streams (storj: connections)")
    a.set_ylabel("aggregate round trips/s")
    a.set_title("multiplexing scale: N concurrent bidi streams, 64 B ping-pong", fontsize=9)
    a.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny iteration counts: checks every contender runs")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    o = ap.parse_args()
    if o.smoke:
        o.warmup, o.duration, o.reps = 0.05, 0.1, 1
        o.concurrency, o.mux = [1, 16, 256], [1, 100]
        o.calls, o.strace_calls = (50, 250), (20, 120)
    else:
        o.warmup, o.duration, o.reps = 0.5, 1.0, 5
        o.concurrency, o.mux = [1, 16, 256], [1, 100, 1000, 10000]
        o.calls, o.strace_calls = (1000, 6000), (200, 1200)
    os.makedirs(o.out, exist_ok=True)
    b = Bench(o)
    b.idle = hold_cpus_awake()
    try:
        b.run()
    except Exception:
        traceback.print_exc()
        b.results["failures"].append("harness: " + traceback.format_exc().splitlines()[-1])
    name = "smoke" if o.smoke else "results"
    with open(os.path.join(o.out, name + ".json"), "w") as f:
        json.dump(b.results, f, indent=1)
    md = report(b, o)
    with open(os.path.join(o.out, name + ".md"), "w") as f:
        f.write("# drpc-rs benchmark results\n\n" + md)
    chart(b, o, os.path.join(o.out, name + ".png"))
    print(md)
    print("wrote %s/%s.{md,json,png}" % (o.out, name))
    if b.results["failures"]:
        print("FAILURES: %d (listed in the report)" % len(b.results["failures"]), file=sys.stderr)
        # A smoke run checks that every contender works; a full run reports
        # a contender's failure at some scale as a result.
        return 1 if o.smoke else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
