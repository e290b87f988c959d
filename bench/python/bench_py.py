"""The Python contenders of bench/ (see bench/README.md).

    python bench_py.py {drpc|grpcio} server --addr 127.0.0.1:0
        prints "ADDR host:port", serves until stdin closes
    python bench_py.py {drpc|grpcio} client --addr A --workload W [--size N]
        [--concurrency N] [--streams N] [--calls N] [--warmup S] [--duration S]
        [--reps N] [--server-pid PID]

drpc = the drpc package (bindings/python, blocking API, sync handlers on its
worker threads); grpcio = grpcio's blocking API (ThreadPoolExecutor server).
Both move raw bytes (no serializers). Concurrent callers are threads.
"""

import json
import os
import struct
import sys
import threading
import time

UNARY, STREAM, BIDI = "/bench.Bench/Unary", "/bench.Bench/Stream", "/bench.Bench/Bidi"
SERVER_THREADS = 128


def emit(d):
    sys.stdout.write(json.dumps(d) + "\n")
    sys.stdout.flush()


def rss_kb(pid=0):
    path = "/proc/self/status" if not pid else "/proc/%d/status" % pid
    try:
        with open(path) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def pct_us(sorted_ns, p):
    if not sorted_ns:
        return 0.0
    i = min(len(sorted_ns) - 1, int(round(p / 100 * (len(sorted_ns) - 1))))
    return sorted_ns[i] / 1000.0


def stream_request(size, secs):
    return struct.pack(">QQ", size, int(secs * 1000))


def parse_stream_request(b):
    size, ms = struct.unpack(">QQ", b[:16])
    return size, ms / 1000.0


def serve_until_stdin_closes(addr):
    print("ADDR " + addr, flush=True)
    try:
        sys.stdin.buffer.read()
    finally:
        os._exit(0)


# ---------------------------------------------------------------- drpc


def drpc_server(addr):
    import drpc

    server = drpc.Server()
    # A short echo: inline, on the runtime thread that read the request (as
    # the C server's non-blocking handler); see bench/README.md.
    server.unary(UNARY, lambda req, ctx: req, inline=True)
    server.unary("/bench.Bench/Stats", lambda req, ctx: b"0")

    def stream(s):
        size, secs = parse_stream_request(s.recv())
        msg = b"\xa5" * size
        end = time.monotonic() + secs
        while time.monotonic() < end:
            s.send(msg)

    def bidi(s):
        for m in s:
            s.send(m)

    server.stream(STREAM, stream)
    server.stream(BIDI, bidi)
    serve_until_stdin_closes(server.start(addr))


class DrpcClient:
    def __init__(self, addr):
        import drpc

        self.c = drpc.Client(addr)
        self.conns = 1

    def unary(self, data):
        return self.c.invoke(UNARY, data)

    def server_stream(self, req):
        n = b = 0
        for m in self.c.server_stream(STREAM, req):
            n += 1
            b += len(m)
        return n, b

    def bidi(self):
        s = self.c.stream(BIDI)

        class B:
            def rt(self_, data):
                s.send(data)
                s.recv()

            def finish(self_):
                s.close_send()
                for _ in s:
                    pass

        return B()


# ---------------------------------------------------------------- grpcio


def grpcio_server(addr):
    from concurrent import futures

    import grpc

    def stream(req, ctx):
        size, secs = parse_stream_request(req)
        msg = b"\xa5" * size
        end = time.monotonic() + secs
        while time.monotonic() < end:
            yield msg

    def bidi(it, ctx):
        for m in it:
            yield m

    handler = grpc.method_handlers_generic_handler(
        "bench.Bench",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(lambda req, ctx: req),
            "Stats": grpc.unary_unary_rpc_method_handler(lambda req, ctx: b"0"),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
            "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=SERVER_THREADS))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(addr)
    server.start()
    serve_until_stdin_closes("%s:%d" % (addr.rsplit(":", 1)[0], port))


class GrpcioClient:
    def __init__(self, addr):
        import grpc

        self.ch = grpc.insecure_channel(addr)
        grpc.channel_ready_future(self.ch).result(timeout=10)
        self._unary = self.ch.unary_unary(UNARY)
        self._stream = self.ch.unary_stream(STREAM)
        self._bidi = self.ch.stream_stream(BIDI)
        self.conns = 1

    def unary(self, data):
        return self._unary(data)

    def server_stream(self, req):
        n = b = 0
        for m in self._stream(req):
            n += 1
            b += len(m)
        return n, b

    def bidi(self):
        import queue

        q = queue.Queue()
        DONE = object()

        def gen():
            while True:
                m = q.get()
                if m is DONE:
                    return
                yield m

        it = self._bidi(gen())

        class B:
            def rt(self_, data):
                q.put(data)
                next(it)

            def finish(self_):
                q.put(DONE)
                for _ in it:
                    pass

        return B()


# ---------------------------------------------------------------- workloads


def latency_reps(p, fn):
    end = time.monotonic() + p["warmup"]
    while time.monotonic() < end:
        fn()
    for rep in range(p["reps"]):
        lat = []
        start = time.perf_counter_ns()
        stop = start + int(p["duration"] * 1e9)
        while True:
            t = time.perf_counter_ns()
            if t >= stop:
                break
            fn()
            lat.append(time.perf_counter_ns() - t)
        secs = (time.perf_counter_ns() - start) / 1e9
        lat.sort()
        emit({"rep": rep, "calls": len(lat), "secs": secs,
              "p50_us": pct_us(lat, 50), "p99_us": pct_us(lat, 99)})


def run_threads(n, target):
    ts = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def client(c, p):
    data = b"\x5a" * p["size"]
    w = p["workload"]
    if w == "unary_lat":
        latency_reps(p, lambda: c.unary(data))
    elif w == "unary_tput":
        for rep in range(p["reps"] + 1):
            d = p["duration"] if rep else p["warmup"]
            counts = [0] * p["concurrency"]
            start = time.monotonic()
            end = start + d

            def worker(i):
                n = 0
                while time.monotonic() < end:
                    c.unary(data)
                    n += 1
                counts[i] = n

            run_threads(p["concurrency"], worker)
            if rep:
                emit({"rep": rep - 1, "calls": sum(counts), "secs": time.monotonic() - start, "conns": c.conns})
    elif w == "stream":
        c.server_stream(stream_request(p["size"], p["warmup"]))
        for rep in range(p["reps"]):
            start = time.monotonic()
            n, b = c.server_stream(stream_request(p["size"], p["duration"]))
            emit({"rep": rep, "msgs": n, "bytes": b, "secs": time.monotonic() - start})
    elif w == "bidi":
        s = c.bidi()
        latency_reps(p, lambda: s.rt(data))
        s.finish()
    elif w == "mux":
        c.unary(b"")
        time.sleep(0.2)
        cb, sb = rss_kb(), rss_kb(p["server_pid"])
        streams = [None] * p["streams"]
        t0 = time.monotonic()

        def opener(i):
            s = c.bidi()
            s.rt(data)
            streams[i] = s

        run_threads(p["streams"], opener)
        open_secs = time.monotonic() - t0
        time.sleep(0.2)
        emit({"event": "mem", "streams": p["streams"], "open_secs": open_secs, "conns": c.conns,
              "client_rss_kb_before": cb, "client_rss_kb_after": rss_kb(),
              "server_rss_kb_before": sb, "server_rss_kb_after": rss_kb(p["server_pid"])})
        for rep in range(p["reps"] + 1):
            d = p["duration"] if rep else p["warmup"]
            counts = [0] * p["streams"]
            start = time.monotonic()
            end = start + d

            def pinger(i):
                n = 0
                while time.monotonic() < end:
                    streams[i].rt(data)
                    n += 1
                counts[i] = n

            run_threads(p["streams"], pinger)
            if rep:
                emit({"rep": rep - 1, "calls": sum(counts), "secs": time.monotonic() - start})
        run_threads(p["streams"], lambda i: streams[i].finish())
    elif w == "count":
        for _ in range(200):
            c.unary(data)
        start = time.monotonic()
        for _ in range(p["calls"]):
            c.unary(data)
        emit({"calls": p["calls"], "secs": time.monotonic() - start})
    else:
        raise SystemExit("unknown workload " + w)


def main():
    impl, role = sys.argv[1], sys.argv[2]
    kv = dict(zip(sys.argv[3::2], sys.argv[4::2]))
    kv = {k.lstrip("-"): v for k, v in kv.items()}
    p = {
        "addr": kv.get("addr", "127.0.0.1:0"),
        "workload": kv.get("workload", "unary_lat"),
        "size": int(kv.get("size", 0)),
        "concurrency": int(kv.get("concurrency", 1)),
        "streams": int(kv.get("streams", 1)),
        "calls": int(kv.get("calls", 1000)),
        "warmup": float(kv.get("warmup", 0.5)),
        "duration": float(kv.get("duration", 1.0)),
        "reps": int(kv.get("reps", 3)),
        "server_pid": int(kv.get("server-pid", 0)),
    }
    if role == "server":
        (drpc_server if impl == "drpc" else grpcio_server)(p["addr"])
    else:
        c = DrpcClient(p["addr"]) if impl == "drpc" else GrpcioClient(p["addr"])
        client(c, p)
        os._exit(0)  # do not wait on library threads at exit


if __name__ == "__main__":
    main()
