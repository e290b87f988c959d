"""Deadlines and trace context: drpc-timeout reaches the handler's context,
cancels sleeping handlers (blocking and asyncio) with DeadlineExceeded for
the caller, is capped or ignored by server options, and is inherited, with
the trace context, by calls a handler makes."""

import asyncio
import json
import threading
import time

import pytest

import drpc
import drpc.aio

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def describe(ctx):
    """What a handler sees of its deadline and trace, as JSON bytes."""
    return json.dumps(
        {
            "remaining": ctx.time_remaining(),
            "deadline": ctx.deadline,
            "now": time.monotonic(),
            "traceparent": ctx.traceparent,
            "trace_id": ctx.trace_id,
            "timeout_md": ctx.metadata.get("drpc-timeout"),
            "traceparent_md": ctx.metadata.get("traceparent"),
        }
    ).encode()


def deadline_server(**options):
    s = drpc.Server(**options)
    s.woke = []  # (rpc, seconds the handler slept, cancelled?)

    @s.unary("/t/Describe")
    def describe_sync(req, ctx):
        return describe(ctx)

    @s.unary("/t/Sleep")
    def sleep(req, ctx):
        t0 = time.monotonic()
        cancelled = ctx.wait_cancelled(5.0)
        s.woke.append(("sync", time.monotonic() - t0, cancelled, ctx.is_cancelled()))
        if cancelled:
            raise drpc.Cancelled("gave up")
        return b"slept"

    @s.unary("/t/ASleep")
    async def asleep(req, ctx):
        t0 = time.monotonic()
        try:
            await asyncio.sleep(5.0)
        except asyncio.CancelledError:
            s.woke.append(("async", time.monotonic() - t0, True, ctx.is_cancelled()))
            raise
        return b"slept"

    return s


@pytest.fixture
def dserver():
    s = deadline_server()
    s.address = s.start()
    yield s
    s.stop(0)


@pytest.mark.parametrize("rpc", ["/t/Sleep", "/t/ASleep"])
def test_drpc_timeout_cancels_a_sleeping_handler(dserver, rpc):
    with drpc.Client(dserver.address) as c:
        for attempt in range(3):
            before = len(dserver.woke)
            t0 = time.monotonic()
            # Set by hand, without a deadline of the client's own: only the
            # server can end this call.
            with pytest.raises(drpc.DeadlineExceeded) as e:
                c.invoke(rpc, b"", metadata={"drpc-timeout": "100m"})
            took = time.monotonic() - t0
            assert e.value.code == 4
            deadline = time.monotonic() + 2
            while len(dserver.woke) == before and time.monotonic() < deadline:
                time.sleep(0.005)
            kind, slept, cancelled, ctx_cancelled = dserver.woke[-1]
            assert cancelled and ctx_cancelled
            assert 0.09 <= slept and 0.09 <= took
            if slept < 0.15 and took < 0.15:
                return
        pytest.fail(f"the handler woke after {slept:.3f}s and the caller after {took:.3f}s, want < 0.15 s")


def test_async_server_handler_cancelled_by_deadline():
    async def main():
        s = drpc.aio.Server()
        woke = []

        @s.unary("/t/ASleep")
        async def asleep(req, ctx):
            t0 = time.monotonic()
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                woke.append(time.monotonic() - t0)
                raise
            return b""

        addr = await s.start()
        try:
            async with drpc.aio.Client(addr) as c:
                t0 = time.monotonic()
                with pytest.raises(drpc.DeadlineExceeded):
                    await c.invoke("/t/ASleep", b"", timeout=0.1)
                assert time.monotonic() - t0 < 1.0
            for _ in range(100):
                if woke:
                    break
                await asyncio.sleep(0.01)
            assert woke and woke[0] < 1.0
        finally:
            await s.stop(0)

    run(main())


def test_handler_sees_the_callers_deadline(dserver):
    with drpc.Client(dserver.address) as c:
        seen = json.loads(c.invoke("/t/Describe", b"", timeout=2.0))
        assert 1.5 < seen["remaining"] <= 2.0
        assert abs((seen["deadline"] - seen["now"]) - seen["remaining"]) < 0.2
        assert seen["timeout_md"] is not None
        plain = json.loads(c.invoke("/t/Describe", b""))
        assert plain["remaining"] is None and plain["deadline"] is None and plain["timeout_md"] is None
        assert plain["traceparent"] is None and plain["trace_id"] is None
    with drpc.Client(dserver.address, send_deadline=False) as c:
        seen = json.loads(c.invoke("/t/Describe", b"", timeout=2.0))
        assert seen["remaining"] is None and seen["timeout_md"] is None


def test_max_deadline_and_ignore_deadlines():
    capped = deadline_server(max_deadline=0.5)
    ignoring = deadline_server(ignore_deadlines=True)
    a, b = capped.start(), ignoring.start()
    try:
        with drpc.Client(a) as c:
            seen = json.loads(c.invoke("/t/Describe", b"", timeout=30.0))
            assert 0 < seen["remaining"] <= 0.5
            # The cap limits what clients ask for; a call without a deadline
            # keeps none.
            assert json.loads(c.invoke("/t/Describe", b""))["remaining"] is None
        with drpc.Client(b) as c:
            seen = json.loads(c.invoke("/t/Describe", b"", timeout=30.0))
            assert seen["remaining"] is None
    finally:
        capped.stop(0)
        ignoring.stop(0)
    with pytest.raises(ValueError):
        drpc.Server(max_deadline=-1)
    with pytest.raises(TypeError):
        drpc.Server(ignore_deadlines=1)


def test_trace_context_reaches_the_handler(dserver):
    with drpc.Client(dserver.address) as c:
        seen = json.loads(c.invoke("/t/Describe", b"", traceparent=TRACEPARENT))
        assert seen["traceparent_md"] == TRACEPARENT  # sent as is
        # The server span is a child: same trace, a span id of its own.
        assert seen["trace_id"] == TRACE_ID
        tp = seen["traceparent"].split("-")
        assert tp[0] == "00" and tp[1] == TRACE_ID and tp[2] != TRACEPARENT.split("-")[2] and tp[3] == "01"
        with pytest.raises(ValueError, match="traceparent"):
            c.invoke("/t/Describe", b"", traceparent="not-a-traceparent")
        with pytest.raises(TypeError):
            c.invoke("/t/Describe", b"", traceparent=b"00")


def _forwarding_sync_server(next_addr):
    """A blocking server whose handler calls /t/Describe on next_addr."""
    s = drpc.Server()
    clients = {}
    lock = threading.Lock()

    @s.unary("/t/Forward")
    def forward(req, ctx):
        with lock:
            if "c" not in clients:
                clients["c"] = drpc.Client(next_addr)
        mine = json.loads(describe(ctx))
        theirs = json.loads(clients["c"].invoke("/t/Describe", b""))
        return json.dumps({"mine": mine, "theirs": theirs}).encode()

    s.clients = clients
    return s


def _check_inherited(result):
    mine, theirs = result["mine"], result["theirs"]
    # The deadline went on, a little shorter.
    assert theirs["remaining"] is not None and theirs["remaining"] <= mine["remaining"]
    assert 1.0 < theirs["remaining"] <= 2.0
    # The trace went on: same trace id, and the next server's parent is this
    # handler's span.
    assert mine["trace_id"] == theirs["trace_id"] == TRACE_ID
    assert theirs["traceparent_md"] == mine["traceparent"]
    assert theirs["traceparent"] != mine["traceparent"]


def test_sync_handler_calls_inherit_deadline_and_trace(dserver):
    front = _forwarding_sync_server(dserver.address)
    addr = front.start()
    try:
        with drpc.Client(addr) as c:
            result = json.loads(c.invoke("/t/Forward", b"", timeout=2.0, traceparent=TRACEPARENT))
        _check_inherited(result)
        # Outside any handler nothing is inherited.
        with drpc.Client(dserver.address) as c:
            assert json.loads(c.invoke("/t/Describe", b""))["traceparent_md"] is None
    finally:
        front.stop(0)
        for c in front.clients.values():
            c.close()


def test_async_handler_calls_inherit_deadline_and_trace(dserver):
    async def main():
        s = drpc.aio.Server()
        backend = drpc.aio.Client(dserver.address)

        @s.unary("/t/Forward")
        async def forward(req, ctx):
            await backend.connect()
            mine = json.loads(describe(ctx))
            # Also through a task the handler starts: it copies the context.
            theirs = json.loads(await asyncio.ensure_future(backend.invoke("/t/Describe", b"")))
            return json.dumps({"mine": mine, "theirs": theirs}).encode()

        addr = await s.start()
        try:
            async with drpc.aio.Client(addr) as c:
                result = json.loads(await c.invoke("/t/Forward", b"", timeout=2.0, traceparent=TRACEPARENT))
            _check_inherited(result)
        finally:
            await backend.close()
            await s.stop(0)

    run(main())


def test_inherited_deadline_ends_the_outgoing_call(dserver):
    # The handler's own call has no timeout, but its caller's deadline of
    # 0.2 s ends it: the backend sleeps 5 s.
    front = drpc.Server()
    seen = []

    @front.unary("/t/Forward")
    def forward(req, ctx):
        with drpc.Client(dserver.address) as c:
            t0 = time.monotonic()
            try:
                c.invoke("/t/Sleep", b"")
            except drpc.RpcError as e:
                seen.append((int(e.code), time.monotonic() - t0))
                raise
        return b""

    addr = front.start()
    try:
        with drpc.Client(addr) as c:
            with pytest.raises(drpc.DeadlineExceeded):
                c.invoke("/t/Forward", b"", timeout=0.2)
        deadline = time.monotonic() + 3
        while not seen and time.monotonic() < deadline:
            time.sleep(0.01)
        assert seen and seen[0][0] == 4 and seen[0][1] < 1.0
    finally:
        front.stop(0)


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_deadline_races_handler_completion(flavour):
    """Hundreds of calls whose deadline passes around the moment their
    handler answers: each ends exactly once, OK with its own answer or
    DeadlineExceeded, and the server's books balance (no call lost or
    counted twice, no handler left running)."""
    import random

    outcomes = []
    started = []
    lock = threading.Lock()

    class Count(drpc.ServerInterceptor):
        def intercept(self, method, request, context):
            started.append(context.rpc)
            return method(request, context)

        async def intercept_async(self, method, request, context):
            started.append(context.rpc)
            return await method(request, context)

        def on_done(self, context, outcome):
            with lock:
                outcomes.append(int(outcome.code))

    s = drpc.Server(interceptors=[Count()])
    if flavour == "sync":
        @s.unary("/t/Work")
        def work(req, ctx):
            ctx.wait_cancelled(int(req.split(b":")[1]) / 1000.0)
            return req
    else:
        @s.unary("/t/Work")
        async def awork(req, ctx):
            await asyncio.sleep(int(req.split(b":")[1]) / 1000.0)
            return req

    addr = s.start()
    n = 300
    rng = random.Random(16)

    async def main():
        async with drpc.aio.Client(addr) as c:
            async def one(i):
                req = b"%d:%d" % (i, rng.randint(0, 20))
                try:
                    reply = await c.invoke("/t/Work", req, timeout=rng.randint(1, 20) / 1000.0)
                except drpc.DeadlineExceeded:
                    return "deadline"
                assert reply == req
                return "ok"

            return await asyncio.gather(*(one(i) for i in range(n)))

    try:
        results = run(main())
        assert len(results) == n and set(results) <= {"ok", "deadline"}
        deadline = time.monotonic() + 10
        while (s.metrics().streams_closed < n or s.running_handlers) and time.monotonic() < deadline:
            time.sleep(0.01)
        m = s.metrics()
        # Every call whose interceptors ran is reported once. (An async
        # handler whose call was cancelled while it waited for the loop never
        # starts, and neither do its interceptors; blocking ones always start.)
        assert len(outcomes) == len(started) and set(outcomes) <= {0, 1, 4}
        assert len(started) == n if flavour == "sync" else 0 < len(started) <= n
        assert (m.streams_opened, m.streams_closed, m.active_streams) == (n, n, 0)
        assert s.running_handlers == 0
    finally:
        s.stop(0)
