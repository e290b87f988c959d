#!/usr/bin/env python3
"""Soak test (not part of `make test`): for DURATION seconds, a mixed load
through the Rust, C and Python layers against one Rust interop server:
- drpc-interop-soak: unary calls, streams, cancels and deadlines on one
  multiplexed connection, plus a worker that reconnects for every call;
- the C interop client running every case in a loop (a new process and
  connection each time), when it has been built (tests/c/run.sh);
- the Python interop client doing the same, when bindings/python/.venv exists.
It samples the server's resident memory, prints calls, errors by code and memory
over time, and fails if memory keeps growing (last third vs middle third) or
any layer saw an unexpected failure. Usage: soak.py [DURATION_SECONDS]"""

import os
import re
import subprocess
import sys
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BIN = os.path.join(ROOT, "target", "release")
C_CLIENT = os.path.join(ROOT, "target", "c-tests", "interop_client")
PYTHON = os.path.join(ROOT, "bindings", "python", ".venv", "bin", "python")


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def loop_client(name, argv, deadline, results):
    runs = passed = failed = 0
    while time.time() < deadline:
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        runs += 1
        passed += len(re.findall(r"^PASS ", r.stdout, re.M))
        fails = re.findall(r"^FAIL .*", r.stdout, re.M)
        failed += len(fails) + (1 if r.returncode != 0 and not fails else 0)
        for f in fails[:3]:
            print("soak: %s: %s" % (name, f), flush=True)
    results[name] = (runs, passed, failed)


# Every mux case but no_leaks: the server is shared with the other load, so it
# never has exactly one active rpc.
CASES = ["empty_unary", "large_unary", "client_streaming", "server_streaming", "ping_pong", "half_duplex",
         "empty_stream", "custom_metadata", "status_code_and_message", "special_status_message",
         "unimplemented_method", "cancel_after_begin", "cancel_after_first_response",
         "timeout_on_sleeping_server", "server_cancel_propagation", "concurrent_unary", "interleaved_streams",
         "large_interleaved", "cancel_one_of_many", "connection_reuse"]
CASE_ARGS = [a for c in CASES for a in ("--case", c)]


def main():
    duration = int(sys.argv[1]) if len(sys.argv) > 1 else 600
    every = max(5, min(30, duration // 20))
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "drpc-interop"], cwd=ROOT, check=True)
    server = subprocess.Popen([os.path.join(BIN, "drpc-interop-server"), "--addr", "127.0.0.1:0"],
                              stdout=subprocess.PIPE, text=True)
    addr = server.stdout.readline().split()[1]
    deadline = time.time() + duration
    results = {}
    loops = []
    if os.path.exists(C_CLIENT):
        loops.append(("c", [C_CLIENT, "--addr", addr, "--mode", "mux"] + CASE_ARGS))
    else:
        print("soak: C client not built (run tests/c/run.sh); skipping the C layer")
    if os.path.exists(PYTHON):
        loops.append(("python", [PYTHON, "-m", "drpc.interop.client", "--addr", addr, "--mode", "mux"] + CASE_ARGS))
    else:
        print("soak: bindings/python/.venv missing (run bindings/python/run-tests.sh); skipping the Python layer")
    threads = [threading.Thread(target=loop_client, args=(n, a, deadline, results)) for n, a in loops]
    for t in threads:
        t.start()
    rust = subprocess.Popen([os.path.join(BIN, "drpc-interop-soak"), "--addr", addr, "--seconds", str(duration),
                             "--every", str(every)], stdout=subprocess.PIPE, text=True)
    samples = []
    start = time.time()
    reader = threading.Thread(target=lambda: [print(l, end="", flush=True) for l in rust.stdout])
    reader.start()
    while rust.poll() is None:
        samples.append((int(time.time() - start), rss_kib(server.pid)))
        print("soak t=%5ds server_rss_kib=%d" % samples[-1], flush=True)
        time.sleep(every)
    reader.join()
    for t in threads:
        t.join()
    server.terminate()
    server_ok = server.wait(timeout=30) == 0
    n = len(samples)
    middle = [kib for _, kib in samples[n // 3: 2 * n // 3]] or [0]
    last = [kib for _, kib in samples[2 * n // 3:]] or [0]
    growth = (sum(last) / len(last)) / max(1, sum(middle) / len(middle)) - 1
    print("\nsoak summary after %ds" % duration)
    print("server rss (KiB) over time: " + ", ".join("%ds:%d" % s for s in samples))
    print("server rss: middle third avg %.0f KiB, last third avg %.0f KiB, growth %+.1f%%"
          % (sum(middle) / len(middle), sum(last) / len(last), growth * 100))
    for name, (runs, passed, failed) in sorted(results.items()):
        print("%s client: %d runs, %d cases passed, %d failed" % (name, runs, passed, failed))
    ok = rust.returncode == 0 and server_ok and all(f == 0 for _, _, f in results.values())
    plateau = growth < 0.10 or (sum(last) / len(last)) - (sum(middle) / len(middle)) < 4096
    print("rust load: %s; server exit on SIGTERM: %s; memory plateau: %s"
          % ("ok" if rust.returncode == 0 else "UNEXPECTED FAILURES", "clean" if server_ok else "NOT CLEAN",
             "yes" if plateau else "NO"))
    return 0 if ok and plateau else 1


if __name__ == "__main__":
    sys.exit(main())
