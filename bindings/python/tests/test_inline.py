"""Inline unary handlers (`server.unary(..., inline=True)`): a plain-function
handler run on the drpc runtime thread that read the request, with no hand-off
to a handler thread. Same results, errors, interceptors and shutdown as a
pooled handler."""

import threading

import pytest

import drpc


def thread_name() -> str:
    """The OS name of the calling thread (Python calls foreign ones Dummy-N)."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def test_inline_handler_runs_on_a_runtime_thread_and_answers():
    server = drpc.Server()
    where = {}

    @server.unary("/i/Echo", inline=True)
    def echo(req, ctx):
        where["inline"] = thread_name()
        return req

    def pooled(req, ctx):
        where["pooled"] = thread_name()
        return req

    server.unary("/i/Pooled", pooled)
    addr = server.start("127.0.0.1:0")
    try:
        with drpc.Client(addr) as client:
            assert client.invoke("/i/Echo", b"hi") == b"hi"
            assert client.invoke("/i/Pooled", b"ho") == b"ho"
    finally:
        server.stop(0)
    assert where["inline"].startswith("drpc-worker"), where
    assert where["pooled"].startswith("drpc-handler"), where


def test_inline_handler_errors_and_interceptors_work_as_for_pooled_ones():
    seen = []

    def audit(method, request, context):
        seen.append(context.rpc)
        if context.metadata.get("token") != "s3cret":
            raise drpc.Unauthenticated("no token")
        return method(request, context)

    server = drpc.Server(interceptors=[audit])

    @server.unary("/i/Fail", inline=True)
    def fail(req, ctx):
        raise drpc.NotFound(f"no {req.decode()}")

    server.unary("/i/Echo", lambda req, ctx: req, inline=True)
    addr = server.start("127.0.0.1:0")
    try:
        with drpc.Client(addr) as client:
            with pytest.raises(drpc.Unauthenticated):
                client.invoke("/i/Echo", b"x")
            ok = {"token": "s3cret"}
            assert client.invoke("/i/Echo", b"x", metadata=ok) == b"x"
            with pytest.raises(drpc.NotFound, match="no thing"):
                client.invoke("/i/Fail", b"thing", metadata=ok)
    finally:
        server.stop(0)
    assert seen == ["/i/Echo", "/i/Echo", "/i/Fail"]


def test_an_inline_handler_may_make_blocking_drpc_calls():
    # The runtime thread it runs on hands its other work off while the call
    # blocks (tokio's block_in_place): no deadlock, no panic.
    backend = drpc.Server()
    backend.unary("/b/Upper", lambda req, ctx: req.upper())
    backend_addr = backend.start("127.0.0.1:0")
    front = drpc.Server()
    downstream = drpc.Client(backend_addr)

    @front.unary("/f/Relay", inline=True)
    def relay(req, ctx):
        return downstream.invoke("/b/Upper", req, timeout=5)

    addr = front.start("127.0.0.1:0")
    try:
        with drpc.Client(addr) as client:
            for i in range(50):
                assert client.invoke("/f/Relay", b"abc%d" % i, timeout=5) == b"ABC%d" % i
    finally:
        front.stop(0)
        downstream.close()
        backend.stop(0)


def test_many_callers_race_inline_handlers_and_every_call_is_answered_once():
    server = drpc.Server()
    count = 0
    lock = threading.Lock()

    @server.unary("/i/Count", inline=True)
    def counted(req, ctx):
        nonlocal count
        with lock:
            count += 1
        return req

    addr = server.start("127.0.0.1:0")
    errors = []
    per_thread, threads = 200, 8

    def caller(n):
        try:
            with drpc.Client(addr) as client:
                for i in range(per_thread):
                    body = b"%d-%d" % (n, i)
                    assert client.invoke("/i/Count", body, timeout=10) == body
        except BaseException as exc:  # reported below
            errors.append(exc)

    ts = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    server.stop(0)
    assert not errors, errors[:3]
    assert count == per_thread * threads


def test_stop_waits_for_a_running_inline_handler():
    server = drpc.Server()
    entered = threading.Event()
    release = threading.Event()
    finished = threading.Event()

    @server.unary("/i/Slow", inline=True)
    def slow(req, ctx):
        entered.set()
        release.wait(10)
        finished.set()
        return req

    addr = server.start("127.0.0.1:0")
    client = drpc.Client(addr)
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("r", client.invoke("/i/Slow", b"s", timeout=10)))
    t.start()
    assert entered.wait(10)
    assert server.running_handlers == 1
    threading.Timer(0.2, release.set).start()
    server.stop(5)  # graceful: waits for the handler
    assert finished.is_set()
    t.join(10)
    client.close()
    assert result.get("r") == b"s"


def test_inline_is_refused_for_async_handlers_and_must_be_a_bool():
    server = drpc.Server()

    async def aecho(req, ctx):
        return req

    with pytest.raises(ValueError, match="plain-function"):
        server.unary("/i/A", aecho, inline=True)
    with pytest.raises(ValueError, match="plain-function"):
        server.unary("/i/B", inline=True)(aecho)
    with pytest.raises(TypeError, match="inline must be a bool"):
        server.unary("/i/C", lambda r, c: r, inline=1)  # type: ignore[arg-type]
