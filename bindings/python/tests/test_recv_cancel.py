"""A receive that is cancelled or times out never loses a message: the next
receive returns it. Each test is a ping-pong of thousands of messages (so
almost every receive has to wait) in which receives are abandoned at random
moments: asyncio.wait_for with tiny timeouts, task.cancel() after a random
number of loop turns, and the blocking recv(timeout=...). Every message must
arrive exactly once, in order."""

import asyncio
import random
import time

import pytest

import drpc
import drpc.aio

N = 10_000
N_TASK_CANCEL = 3_000
# Timeouts around the round-trip time, so the reply often lands just as the
# receive is abandoned.
TINY = [0, 0, 1e-5, 3e-5, 1e-4, 2e-4, 5e-4]
# The blocking recv's timer has millisecond resolution: timeouts and reply
# delays of that order make receives time out just as replies land.
SYNC_N = 2_000
SYNC_TINY = [0, 5e-4, 1e-3, 2e-3]
# A lost message stalls the ping-pong; give up waiting for one after this.
STALL = 5.0


class Lost(AssertionError):
    pass


async def recv_abandoning(stream, mode, rnd, stats):
    """stream.recv(), abandoned at random moments until it returns."""
    deadline = time.monotonic() + STALL
    while True:
        if time.monotonic() > deadline:
            raise Lost("no message for %.0f s: one was lost" % STALL)
        if mode == "wait_for":
            try:
                return await asyncio.wait_for(stream.recv(), rnd.choice(TINY))
            except asyncio.TimeoutError:
                stats["abandoned"] += 1
        else:
            task = asyncio.ensure_future(stream.recv())
            for _ in range(rnd.randrange(4)):
                await asyncio.sleep(0)
            task.cancel()
            try:
                return await task
            except asyncio.CancelledError:
                stats["abandoned"] += 1


def recv_timing_out(stream, rnd, stats):
    deadline = time.monotonic() + STALL
    while True:
        if time.monotonic() > deadline:
            raise Lost("no message for %.0f s: one was lost" % STALL)
        try:
            return stream.recv(timeout=rnd.choice(SYNC_TINY))
        except TimeoutError:
            stats["abandoned"] += 1


def make_server():
    s = drpc.Server()

    @s.stream("/t/Echo")
    def echo(stream):
        for m in stream:
            stream.send(m)

    @s.stream("/t/SlowEcho")
    def slow_echo(stream):
        rnd = random.Random(3)
        for m in stream:
            time.sleep(rnd.choice(SYNC_TINY))
            stream.send(m)

    @s.stream("/t/AEcho")
    async def aecho(stream):
        async for m in stream:
            await stream.send(m)

    # Server-side abandoned receives: the handler checks the order itself and
    # echoes, so a loss stalls the client too.
    @s.stream("/t/AAbandon")
    async def aabandon(stream):
        mode = stream.context.metadata["mode"]
        rnd = random.Random(mode)
        stats = {"abandoned": 0}
        expected = 0
        while True:
            m = await recv_abandoning(stream, mode, rnd, stats)
            if m is None:
                return b"%d" % stats["abandoned"]
            if m != b"%d" % expected:
                raise drpc.DataLoss(f"expected {expected}, got {m!r}")
            expected += 1
            await stream.send(m)

    @s.stream("/t/Abandon")
    def abandon(stream):
        rnd = random.Random(1)
        stats = {"abandoned": 0}
        expected = 0
        while True:
            m = recv_timing_out(stream, rnd, stats)
            if m is None:
                return b"%d" % stats["abandoned"]
            if m != b"%d" % expected:
                raise drpc.DataLoss(f"expected {expected}, got {m!r}")
            expected += 1
            stream.send(m)

    return s


@pytest.fixture(scope="module")
def address():
    s = make_server()
    addr = s.start("127.0.0.1:0")
    yield addr
    s.stop(0)


@pytest.mark.parametrize("mode,count", [("wait_for", N), ("task_cancel", N_TASK_CANCEL)])
@pytest.mark.parametrize("rpc", ["/t/Echo", "/t/AEcho"])
def test_aio_client_recv_abandoned(address, rpc, mode, count):
    async def main():
        rnd = random.Random(count)
        stats = {"abandoned": 0}
        async with drpc.aio.Client(address) as c:
            async with await c.stream(rpc) as s:
                for i in range(count):
                    await s.send(b"%d" % i)
                    got = await recv_abandoning(s, mode, rnd, stats)
                    assert got == b"%d" % i
                await s.close_send()
                assert await s.recv() is None
        return stats["abandoned"]

    abandoned = asyncio.run(main())
    # Most receives wait for the echo, so many were abandoned mid-flight.
    assert abandoned > count // 4


@pytest.mark.parametrize("mode,count", [("wait_for", N), ("task_cancel", N_TASK_CANCEL)])
def test_aio_server_recv_abandoned(address, mode, count):
    with drpc.Client(address) as c, c.stream("/t/AAbandon", metadata={"mode": mode}) as s:
        for i in range(count):
            s.send(b"%d" % i)
            assert s.recv(timeout=STALL + 5) == b"%d" % i
        s.close_send()
        abandoned = int(s.recv())
        assert s.recv() is None
    assert abandoned > count // 4


def test_sync_client_recv_timeout_loses_nothing(address):
    rnd = random.Random(2)
    stats = {"abandoned": 0}
    with drpc.Client(address) as c, c.stream("/t/SlowEcho") as s:
        for i in range(SYNC_N):
            s.send(b"%d" % i)
            assert recv_timing_out(s, rnd, stats) == b"%d" % i
        s.close_send()
        assert s.recv() is None
    assert stats["abandoned"] > SYNC_N // 10


def test_sync_server_recv_timeout_loses_nothing(address):
    rnd = random.Random(4)
    with drpc.Client(address) as c, c.stream("/t/Abandon") as s:
        for i in range(SYNC_N):
            time.sleep(rnd.choice(SYNC_TINY))
            s.send(b"%d" % i)
            assert s.recv(timeout=STALL + 5) == b"%d" % i
        s.close_send()
        abandoned = int(s.recv())
    assert abandoned > SYNC_N // 10


def test_recv_timeout_keeps_the_stream_usable(address):
    with drpc.Client(address) as c, c.stream("/t/Echo") as s:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            s.recv(timeout=0.1)
        assert 0.09 < time.monotonic() - t0 < 1.0
        assert not s.finished
        s.send(b"after")
        assert s.recv(timeout=5) == b"after"
        with pytest.raises(ValueError):
            s.recv(timeout=-1)


def test_message_parked_by_a_cancelled_recv_comes_first():
    """Deterministic: the message that completed an abandoned wait is the one
    the next recv() returns, ahead of later ones."""

    async def main():
        s = drpc.aio.Server()
        release = asyncio.Event()

        @s.stream("/t/Two")
        async def two(stream):
            await release.wait()
            await stream.send(b"first")
            await stream.send(b"second")

        addr = await s.start("127.0.0.1:0")
        async with drpc.aio.Client(addr) as c:
            st = await c.stream("/t/Two")
            waiting = asyncio.ensure_future(st.recv())
            await asyncio.sleep(0.05)  # the native wait is pending now
            release.set()
            await asyncio.sleep(0.2)  # both messages have arrived; one is parked
            waiting.cancel()
            # The recv task had already been woken with "ready" and so may
            # have returned before the cancel landed; either way "first" is
            # delivered exactly once, before "second".
            got = []
            try:
                got.append(await waiting)
            except asyncio.CancelledError:
                pass
            while (m := await st.recv()) is not None:
                got.append(m)
            assert got == [b"first", b"second"]
        await s.stop()

    asyncio.run(asyncio.wait_for(main(), 30))
