"""Server and client interceptors, blocking and asyncio: order, short-circuit,
metadata changes the handler sees, wrapped streams, and the outcomes their
on_done observes."""

import asyncio
import threading
import time

import pytest

import drpc
import drpc.aio


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


class Recorder(drpc.ServerInterceptor):
    """Logs when it enters and leaves, and the outcomes it observes."""

    def __init__(self, name, log, outcomes):
        self.name, self.log, self.outcomes = name, log, outcomes

    def intercept(self, method, request, context):
        self.log.append(f"{self.name}>")
        try:
            return method(request, context)
        finally:
            self.log.append(f"<{self.name}")

    def on_done(self, context, outcome):
        self.outcomes.append((self.name, outcome))


class AsyncRecorder(drpc.aio.ServerInterceptor):
    def __init__(self, name, log, outcomes):
        self.name, self.log, self.outcomes = name, log, outcomes

    async def intercept(self, method, request, context):
        self.log.append(f"{self.name}>")
        try:
            return await method(request, context)
        finally:
            self.log.append(f"<{self.name}")

    def on_done(self, context, outcome):
        self.outcomes.append((self.name, outcome))


class Auth(drpc.ServerInterceptor):
    def intercept(self, method, request, context):
        if context.metadata.get("authorization") != "Bearer s3cret":
            raise drpc.Unauthenticated("missing or bad token")
        context.metadata["x-user"] = "alice"
        return method(request, context)


class AsyncAuth(drpc.aio.ServerInterceptor):
    async def intercept(self, method, request, context):
        await asyncio.sleep(0)  # an async check (a token service, say)
        if context.metadata.get("authorization") != "Bearer s3cret":
            raise drpc.Unauthenticated("missing or bad token")
        context.metadata["x-user"] = "alice"
        return await method(request, context)


TOKEN = {"authorization": "Bearer s3cret"}


def sync_server(interceptors, log):
    s = drpc.Server(interceptors=interceptors)

    @s.unary("/t/Echo")
    def echo(req, ctx):
        log.append("handler")
        return req

    @s.unary("/t/User")
    def user(req, ctx):
        log.append("handler")
        return ctx.metadata.get("x-user", "").encode()

    @s.unary("/t/Missing")
    def missing(req, ctx):
        raise drpc.NotFound("no such key")

    @s.unary("/t/Boom")
    def boom(req, ctx):
        raise ValueError("kaboom")

    @s.bidi_streaming("/t/Upper")
    def upper(reqs, ctx):
        for r in reqs:
            yield r.upper()

    @s.stream("/t/Raw")
    def raw(stream):
        stream.send(b"hello " + stream.recv())
        return None

    return s


def async_server(interceptors, log):
    s = drpc.aio.Server(interceptors=interceptors)

    @s.unary("/t/Echo")
    async def echo(req, ctx):
        log.append("handler")
        return req

    @s.unary("/t/User")
    async def user(req, ctx):
        log.append("handler")
        return ctx.metadata.get("x-user", "").encode()

    @s.unary("/t/Missing")
    async def missing(req, ctx):
        raise drpc.NotFound("no such key")

    @s.bidi_streaming("/t/Upper")
    async def upper(reqs, ctx):
        async for r in reqs:
            yield r.upper()

    @s.server_streaming("/t/Count")
    async def count(req, ctx):
        for i in range(int(req)):
            yield b"%d" % i

    return s


# -- server, blocking ---------------------------------------------------------


def test_server_interceptors_run_in_order_and_report_innermost_first():
    log, outcomes = [], []
    s = sync_server([Recorder("a", log, outcomes), Recorder("b", log, outcomes)], log)
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            assert c.invoke("/t/Echo", b"x" * 100) == b"x" * 100
        wait_until(lambda: len(outcomes) == 2)
        assert log == ["a>", "b>", "handler", "<b", "<a"]
        assert [name for name, _ in outcomes] == ["b", "a"]
        o = outcomes[0][1]
        assert o.rpc == "/t/Echo" and o.code == drpc.StatusCode.OK and o.ok and o.message == ""
        assert (o.bytes_received, o.bytes_sent, o.messages_received, o.messages_sent) == (100, 100, 1, 1)
        assert 0 < o.duration < 5
    finally:
        s.stop(0)


def test_server_interceptor_short_circuits_and_changes_metadata():
    log, outcomes = [], []
    s = sync_server([Recorder("a", log, outcomes), Auth(), Recorder("c", log, outcomes)], log)
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            with pytest.raises(drpc.Unauthenticated) as e:
                c.invoke("/t/User", b"")
            assert e.value.message == "missing or bad token"
            wait_until(lambda: len(outcomes) == 1)
            # The handler and the interceptor after Auth never ran; only the
            # interceptor that ran observes the outcome.
            assert log == ["a>", "<a"]
            assert outcomes[0][0] == "a" and outcomes[0][1].code == drpc.StatusCode.UNAUTHENTICATED
            assert outcomes[0][1].message == "missing or bad token"
            log.clear()
            outcomes.clear()
            assert c.invoke("/t/User", b"", metadata=TOKEN) == b"alice"
            wait_until(lambda: len(outcomes) == 2)
            assert log == ["a>", "c>", "handler", "<c", "<a"]
    finally:
        s.stop(0)


def test_server_outcome_codes_for_errors():
    log, outcomes = [], []
    s = sync_server([Recorder("a", log, outcomes)], log)
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            with pytest.raises(drpc.NotFound):
                c.invoke("/t/Missing", b"k")
            with pytest.raises(drpc.Unknown):
                c.invoke("/t/Boom", b"")
        wait_until(lambda: len(outcomes) == 2)
        got = sorted((o.rpc, int(o.code), o.message) for _, o in outcomes)
        assert got == [("/t/Boom", 2, "kaboom"), ("/t/Missing", 5, "no such key")]
    finally:
        s.stop(0)


class Shout(drpc.ServerInterceptor):
    """Changes messages both ways: requests upper-cased by the handler get an
    exclamation mark on the way in, responses a prefix on the way out."""

    def intercept(self, method, request, context):
        if context.rpc == "/t/Upper":
            responses = method((r + b"!" for r in request), context)
            return (b">" + r for r in responses)
        return method(request, context)


def test_server_interceptor_wraps_streams_and_counts_messages():
    log, outcomes = [], []
    s = sync_server([Recorder("a", log, outcomes), Shout()], log)
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            with c.stream("/t/Upper") as st:
                for m in (b"ab", b"cde"):
                    st.send(m)
                st.close_send()
                assert list(st) == [b">AB!", b">CDE!"]
            with c.stream("/t/Raw") as st:
                st.send(b"bob")
                st.close_send()
                assert list(st) == [b"hello bob"]
        wait_until(lambda: len(outcomes) == 2)
        by_rpc = {o.rpc: o for _, o in outcomes}
        up = by_rpc["/t/Upper"]
        assert up.code == 0 and (up.messages_received, up.messages_sent) == (2, 2)
        assert (up.bytes_received, up.bytes_sent) == (5, 9)
        raw = by_rpc["/t/Raw"]
        assert (raw.messages_received, raw.messages_sent, raw.bytes_sent) == (1, 1, 9)
    finally:
        s.stop(0)


def test_function_interceptors_and_kind_mismatch():
    seen = []

    def plain(method, request, context):
        seen.append(context.rpc)
        return method(request, context)

    s = drpc.Server(interceptors=[plain])
    s.unary("/t/Echo", lambda req, ctx: req)
    with pytest.raises(TypeError, match="async def"):
        # A plain interceptor cannot wrap an async handler: refusing beats
        # letting the handler bypass it.
        @s.unary("/t/AEcho")
        async def aecho(req, ctx):
            return req

    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            assert c.invoke("/t/Echo", b"1") == b"1"
        assert seen == ["/t/Echo"]
    finally:
        s.stop(0)
    with pytest.raises(TypeError):
        drpc.Server(interceptors=Auth())  # not a list
    with pytest.raises(TypeError):
        drpc.Server(interceptors=[object()]).unary("/t/X", lambda r, c: r)


class Both:
    """One object serving plain and async handlers alike."""

    def __init__(self):
        self.rpcs = []

    def intercept(self, method, request, context):
        self.rpcs.append(("sync", context.rpc))
        return method(request, context)

    async def intercept_async(self, method, request, context):
        self.rpcs.append(("async", context.rpc))
        return await method(request, context)


def test_interceptor_with_both_kinds_on_a_mixed_server():
    both = Both()
    s = drpc.Server(interceptors=[both])
    s.unary("/t/Echo", lambda req, ctx: req)

    @s.unary("/t/AEcho")
    async def aecho(req, ctx):
        return req

    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            assert c.invoke("/t/Echo", b"1") == b"1"
            assert c.invoke("/t/AEcho", b"2") == b"2"
        assert both.rpcs == [("sync", "/t/Echo"), ("async", "/t/AEcho")]
    finally:
        s.stop(0)


# -- server, asyncio ----------------------------------------------------------


def test_async_server_interceptors_order_short_circuit_metadata_and_streams():
    async def main():
        log, outcomes = [], []
        s = async_server([AsyncRecorder("a", log, outcomes), AsyncAuth(), AsyncRecorder("c", log, outcomes)], log)
        addr = await s.start()
        try:
            async with drpc.aio.Client(addr) as c:
                with pytest.raises(drpc.Unauthenticated):
                    await c.invoke("/t/User", b"")
                assert log == ["a>", "<a"]
                log.clear()
                assert await c.invoke("/t/User", b"", metadata=TOKEN) == b"alice"
                assert log == ["a>", "c>", "handler", "<c", "<a"]
                with pytest.raises(drpc.NotFound):
                    await c.invoke("/t/Missing", b"", metadata=TOKEN)
                got = [x async for x in c.server_stream("/t/Count", b"3", metadata=TOKEN)]
                assert got == [b"0", b"1", b"2"]
                st = await c.stream("/t/Upper", metadata=TOKEN)
                async with st:
                    await st.send(b"x")
                    await st.close_send()
                    assert [m async for m in st] == [b"X"]
            for _ in range(200):
                if len(outcomes) == 8:
                    break
                await asyncio.sleep(0.01)
            names = [(n, o.rpc, int(o.code)) for n, o in outcomes]
            assert names == [
                ("a", "/t/User", 16),
                ("c", "/t/User", 0),
                ("a", "/t/User", 0),
                ("c", "/t/Missing", 5),
                ("a", "/t/Missing", 5),
                ("c", "/t/Count", 0),
                ("a", "/t/Count", 0),
                ("c", "/t/Upper", 0),
            ] + names[8:]
            count = outcomes[5][1]
            assert (count.messages_received, count.messages_sent, count.bytes_sent) == (1, 3, 3)
        finally:
            await s.stop(0)

    run(main())


def test_async_server_interceptor_wraps_async_streams():
    class Wrap(drpc.aio.ServerInterceptor):
        async def intercept(self, method, request, context):
            async def doubled():
                async for r in request:
                    yield r * 2

            responses = await method(doubled(), context)

            async def tagged():
                async for r in responses:
                    yield b"<" + r + b">"

            return tagged()

    async def main():
        s = async_server([Wrap()], [])
        addr = await s.start()
        try:
            async with drpc.aio.Client(addr) as c:
                st = await c.stream("/t/Upper")
                async with st:
                    await st.send(b"ab")
                    await st.send(b"c")
                    await st.close_send()
                    assert [m async for m in st] == [b"<ABAB>", b"<CC>"]
        finally:
            await s.stop(0)

    run(main())


# -- clients ------------------------------------------------------------------


class ClientRecorder(drpc.ClientInterceptor):
    def __init__(self, name, log, outcomes):
        self.name, self.log, self.outcomes = name, log, outcomes

    def intercept(self, method, request, call):
        self.log.append(f"{self.name}>")
        try:
            return method(request, call)
        finally:
            self.log.append(f"<{self.name}")

    def on_done(self, call, outcome):
        self.outcomes.append((self.name, outcome))


class ClientAuth(drpc.ClientInterceptor):
    def __init__(self, token):
        self.token = token

    def intercept(self, method, request, call):
        if self.token is None:
            raise drpc.Unauthenticated("no token configured")
        call.metadata["authorization"] = f"Bearer {self.token}"
        return method(request, call)


def test_client_interceptors_order_metadata_short_circuit_and_outcome():
    log, outcomes = [], []
    s = sync_server([Auth()], log)
    addr = s.start()
    try:
        with drpc.Client(addr, interceptors=[ClientRecorder("a", log, outcomes), ClientAuth("s3cret")]) as c:
            assert c.invoke("/t/User", b"12345") == b"alice"
            assert log == ["a>", "handler", "<a"]
            assert len(outcomes) == 1
            o = outcomes[0][1]
            assert (o.rpc, o.code, o.bytes_sent, o.bytes_received, o.messages_sent, o.messages_received) == (
                "/t/User", 0, 5, 5, 1, 1,
            )
            with pytest.raises(drpc.NotFound):
                c.invoke("/t/Missing", b"")
            assert outcomes[1][1].code == drpc.StatusCode.NOT_FOUND
            # Streams report once they end.
            with c.stream("/t/Upper") as st:
                st.send(b"abc")
                st.close_send()
                assert st.recv() == b"ABC"
                assert len(outcomes) == 2
                assert st.recv() is None
            assert outcomes[2][1].code == 0 and outcomes[2][1].messages_received == 1
            # A stream cancelled before its end reports Cancelled.
            with c.stream("/t/Upper") as st:
                st.send(b"x")
            assert outcomes[3][1].code == drpc.StatusCode.CANCELLED
        log.clear()
        calls_before = log.count("handler")
        with drpc.Client(addr, interceptors=[ClientAuth(None), ClientRecorder("b", log, outcomes)]) as c:
            with pytest.raises(drpc.Unauthenticated, match="no token configured"):
                c.invoke("/t/User", b"")
        assert log.count("handler") == calls_before and "b>" not in log  # never sent
    finally:
        s.stop(0)


def test_async_client_interceptors():
    class AsyncClientAuth(drpc.aio.ClientInterceptor):
        def __init__(self, log):
            self.log = log
            self.outcomes = []

        async def intercept(self, method, request, call):
            self.log.append(("call", call.rpc, call.kind))
            call.metadata["authorization"] = "Bearer s3cret"
            return await method(request, call)

        def on_done(self, call, outcome):
            self.outcomes.append(outcome)

    async def main():
        log = []
        s = async_server([AsyncAuth()], log)
        addr = await s.start()
        icp = AsyncClientAuth(log)
        try:
            async with drpc.aio.Client(addr, interceptors=[icp]) as c:
                assert await c.invoke("/t/User", b"") == b"alice"
                got = [x async for x in c.server_stream("/t/Count", b"2")]
                assert got == [b"0", b"1"]
                with pytest.raises(drpc.NotFound):
                    await c.invoke("/t/Missing", b"")
            assert [(e[2], e[1]) for e in log if isinstance(e, tuple)] == [
                ("unary", "/t/User"), ("stream", "/t/Count"), ("unary", "/t/Missing"),
            ]
            assert [int(o.code) for o in icp.outcomes] == [0, 0, 5]
            assert icp.outcomes[1].messages_received == 2
            with pytest.raises(TypeError):
                drpc.aio.Client(addr, interceptors=[ClientAuth("x")])  # blocking interceptor on an asyncio client
        finally:
            await s.stop(0)

    run(main())


def test_channel_interceptors():
    log = []
    s = sync_server([Auth()], log)
    addr = s.start()
    try:
        with drpc.Channel(addr, interceptors=[ClientAuth("s3cret")]) as ch:
            assert ch.invoke("/t/User", b"") == b"alice"
            assert list(ch.server_stream("/t/Upper", b"q")) == [b"Q"]
    finally:
        s.stop(0)


def test_no_interceptors_means_plain_streams():
    # Without interceptors nothing is wrapped (no per-message bookkeeping).
    s = sync_server(None, [])
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            st = c.stream("/t/Upper")
            assert type(st) is drpc.ClientStream
            st.cancel()
    finally:
        s.stop(0)


def test_interceptor_on_done_errors_are_logged_not_raised(caplog):
    class Broken(drpc.ServerInterceptor):
        def on_done(self, context, outcome):
            raise RuntimeError("observer bug")

    s = sync_server([Broken()], [])
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            assert c.invoke("/t/Echo", b"ok") == b"ok"
        wait_until(lambda: any("on_done" in r.getMessage() for r in caplog.records))
    finally:
        s.stop(0)


def test_interceptor_threads_see_handler_thread():
    # Blocking interceptors run on the handler's thread (so thread-locals and
    # the inherited call context are the handler's).
    threads = []

    def where(method, request, context):
        threads.append(threading.current_thread().name)
        return method(request, context)

    s = drpc.Server(interceptors=[where])
    s.unary("/t/T", lambda req, ctx: threading.current_thread().name.encode())
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            assert c.invoke("/t/T", b"").decode() == threads[0]
    finally:
        s.stop(0)


@pytest.mark.parametrize("flow_control", [False, True])
@pytest.mark.parametrize("intercepted", [False, True])
@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_cancelled_streaming_handler_generator_is_closed_at_once(flavour, intercepted, flow_control):
    """A cancelled call's response generator is closed when its handler ends,
    not when the cycle collector next runs (its cleanup ends the handler's
    own bookkeeping: the interop server's active-rpc count, say)."""
    import gc

    closed = threading.Event()
    s = drpc.Server(interceptors=[Both()] if intercepted else None, flow_control=flow_control)
    # With flow control the window fills at once: the handler waits in a send
    # that the cancel then fails.
    size = 64 * 1024 if flow_control else 1024

    if flavour == "sync":
        @s.server_streaming("/t/Forever")
        def forever(req, ctx):
            try:
                while True:
                    yield b"x" * size
            finally:
                closed.set()
    else:
        @s.server_streaming("/t/Forever")
        async def aforever(req, ctx):
            try:
                while True:
                    yield b"x" * size
            finally:
                closed.set()

    addr = s.start()
    gc.disable()
    try:
        with drpc.Client(addr, flow_control=flow_control) as c:
            for _ in range(20):
                closed.clear()
                st = c.stream("/t/Forever")
                st.send(b"")
                st.close_send()
                assert st.recv() is not None
                time.sleep(0.05)  # the handler now waits for credit (flow control)
                st.cancel()
                assert closed.wait(5.0), "the handler's generator was not closed"
    finally:
        gc.enable()
        s.stop(0)


def test_observer_interceptor_wraps_every_kind_but_a_checking_one_does_not():
    class Observer(drpc.ServerInterceptor):  # on_done only: plain and async handlers alike
        def __init__(self):
            self.seen = []

        def on_done(self, context, outcome):
            self.seen.append((outcome.rpc, int(outcome.code)))

    obs = Observer()
    s = drpc.Server(interceptors=[obs])
    s.unary("/t/Echo", lambda req, ctx: req)

    @s.unary("/t/AEcho")
    async def aecho(req, ctx):
        return req

    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            assert c.invoke("/t/Echo", b"1") == b"1"
            assert c.invoke("/t/AEcho", b"2") == b"2"
        wait_until(lambda: len(obs.seen) == 2)
        assert sorted(obs.seen) == [("/t/AEcho", 0), ("/t/Echo", 0)]
    finally:
        s.stop(0)
    # A plain Auth (it overrides intercept) cannot guard an async handler:
    # registering one fails instead of leaving it unguarded.
    guarded = drpc.Server(interceptors=[Auth()])
    with pytest.raises(TypeError, match="async def"):
        guarded.unary("/t/AEcho", aecho)
    aguarded = drpc.aio.Server(interceptors=[AsyncAuth()])
    with pytest.raises(TypeError, match="plain"):
        aguarded.unary("/t/Echo", lambda req, ctx: req)


def test_intercepted_stream_counts_exactly_with_a_sender_and_a_receiver_thread():
    """One thread sends while another receives, on hundreds of streams: the
    outcome counts every message once and is reported once per stream."""
    outcomes = []

    class Count(drpc.ClientInterceptor):
        def on_done(self, call, outcome):
            outcomes.append(outcome)

    s = sync_server(None, [])
    addr = s.start()
    n_streams, n_messages = 200, 50
    try:
        with drpc.Client(addr, interceptors=[Count()]) as c:
            for _ in range(n_streams):
                st = c.stream("/t/Upper")
                got = []
                reader = threading.Thread(target=lambda: got.extend(st))
                reader.start()
                for i in range(n_messages):
                    st.send(b"m%03d" % i)
                st.close_send()
                reader.join(10)
                assert len(got) == n_messages
        assert len(outcomes) == n_streams
        for o in outcomes:
            assert (o.code, o.messages_sent, o.messages_received) == (0, n_messages, n_messages)
            assert o.bytes_sent == o.bytes_received == 4 * n_messages
    finally:
        s.stop(0)
