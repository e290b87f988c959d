"""server.metrics() / client.metrics() after a scripted workload (exact
counts), and drpc's logging: handler errors at ERROR with rpc and peer,
the core's protocol warnings routed to `logging`."""

import asyncio
import logging
import time

import drpc
import drpc.aio


def wait_until(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def workload_server():
    s = drpc.Server()
    s.unary("/t/Echo", lambda req, ctx: req)

    @s.unary("/t/Missing")
    def missing(req, ctx):
        raise drpc.NotFound("no")

    @s.unary("/t/AEcho")
    async def aecho(req, ctx):
        await asyncio.sleep(0)
        return req

    @s.bidi_streaming("/t/Upper")
    def upper(reqs, ctx):
        for r in reqs:
            yield r.upper()

    return s


def test_metrics_after_a_scripted_workload():
    s = workload_server()
    before = s.metrics()
    assert before.streams_opened == 0 and before.rpcs == {}
    addr = s.start()
    try:
        with drpc.Client(addr) as c:
            for _ in range(5):
                assert c.invoke("/t/Echo", b"0123456789") == b"0123456789"
            for _ in range(3):
                try:
                    c.invoke("/t/Missing", b"")
                except drpc.NotFound:
                    pass
            for _ in range(2):
                assert c.invoke("/t/AEcho", b"abc") == b"abc"
            with c.stream("/t/Upper") as st:
                for m in (b"a", b"b", b"c"):
                    st.send(m)
                st.close_send()
                assert list(st) == [b"A", b"B", b"C"]
            def settled():
                sm, cm = s.metrics(), c.metrics()
                # Every frame either side wrote has been read by the other.
                return (
                    sm.streams_closed == cm.streams_closed == 11
                    and cm.bytes_sent == sm.bytes_received
                    and cm.bytes_received == sm.bytes_sent
                )

            wait_until(settled)
            m = s.metrics()
            cm = c.metrics()
        assert isinstance(m, drpc.Metrics)
        assert (m.streams_opened, m.streams_closed, m.streams_failed, m.active_streams) == (11, 11, 3, 0)
        assert dict(m.failed_by_code) == {5: 3}
        assert m.connections_opened == 1
        assert sorted(m.rpcs) == ["/t/AEcho", "/t/Echo", "/t/Missing", "/t/Upper"]
        echo = m.rpcs["/t/Echo"]
        assert (echo.count, echo.failed, echo.latency.count) == (5, 0, 5)
        assert sum(echo.latency.counts) == 5 and len(echo.latency.counts) == len(echo.latency.bounds_us) + 1
        assert echo.latency.cumulative()[-1] == (float("inf"), 5)
        assert (m.rpcs["/t/Missing"].count, m.rpcs["/t/Missing"].failed) == (3, 3)
        assert m.rpcs["/t/AEcho"].count == 2 and m.rpcs["/t/Upper"].count == 1
        # Requests: 5 x 10 + 2 x 3 + 3 x 1 message bytes, plus framing.
        assert m.bytes_received >= 59 and m.bytes_sent >= 59
        # The client saw the same calls from its side.
        assert (cm.streams_opened, cm.streams_closed, cm.streams_failed) == (11, 11, 3)
        assert dict(cm.failed_by_code) == {5: 3}
        assert cm.bytes_sent == m.bytes_received and cm.bytes_received == m.bytes_sent
    finally:
        s.stop(0)


def test_async_client_and_server_metrics():
    async def main():
        s = drpc.aio.Server()

        @s.unary("/t/AEcho")
        async def aecho(req, ctx):
            return req

        addr = await s.start()
        try:
            async with drpc.aio.Client(addr) as c:
                for _ in range(4):
                    await c.invoke("/t/AEcho", b"x")
                for _ in range(200):
                    if s.metrics().streams_closed == 4:
                        break
                    await asyncio.sleep(0.01)
                m, cm = s.metrics(), c.metrics()
            assert (m.streams_opened, m.streams_closed, m.streams_failed) == (4, 4, 0)
            assert m.rpcs["/t/AEcho"].count == 4 and cm.streams_opened == 4
        finally:
            await s.stop(0)

    asyncio.run(main())


def test_handler_error_logged_at_error_with_rpc_and_peer(caplog):
    s = drpc.Server()

    @s.unary("/t/Boom")
    def boom(req, ctx):
        raise ValueError("kaboom")

    addr = s.start()
    try:
        with caplog.at_level(logging.DEBUG, logger="drpc"):
            with drpc.Client(addr) as c:
                try:
                    c.invoke("/t/Boom", b"")
                except drpc.Unknown:
                    pass
        errors = [r for r in caplog.records if r.levelno == logging.ERROR and r.name == drpc.LOGGER_NAME]
        assert len(errors) == 1
        rec = errors[0]
        assert rec.rpc == "/t/Boom" and rec.peer.startswith("127.0.0.1:")
        assert "/t/Boom" in rec.getMessage() and rec.peer in rec.getMessage()
        assert rec.exc_info is not None
        # The core's own line for the same failure is not repeated.
        assert not [r for r in caplog.records if r.name.startswith("drpc.core") and r.levelno >= logging.ERROR]
    finally:
        s.stop(0)


def test_core_protocol_warnings_reach_logging(caplog):
    s = drpc.Server()
    s.unary("/t/Echo", lambda req, ctx: req)
    addr = s.start()
    try:
        with caplog.at_level(logging.WARNING, logger="drpc"):
            with drpc.Client(addr) as c:
                # An invalid drpc-timeout is ignored with a WARN naming the peer.
                assert c.invoke("/t/Echo", b"x", metadata={"drpc-timeout": "soon"}) == b"x"
            wait_until(lambda: any(r.name.startswith("drpc.core") for r in caplog.records))
        warn = [r for r in caplog.records if r.name.startswith("drpc.core")][0]
        assert warn.name == "drpc.core.server"  # the Rust module drpc_core::server
        assert warn.levelno == logging.WARNING
        assert "drpc-timeout" in warn.getMessage() and "127.0.0.1:" in warn.getMessage()
    finally:
        s.stop(0)
