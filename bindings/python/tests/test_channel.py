"""drpc.Channel and drpc.aio.Channel over three local servers: round-robin
split, retries around a stopped server, fail-fast versus wait-for-ready, a
restarted server used again, health-based draining, and drpc.Health."""

import asyncio
import socket
import threading
import time

import pytest

import drpc


def who_server(name, address="127.0.0.1:0", health=None):
    s = drpc.Server()
    s.hits = 0
    lock = threading.Lock()

    @s.unary("/t/Who")
    def who(req, ctx):
        nonlocal lock
        if req:
            time.sleep(float(req.decode()))
        with lock:
            s.hits += 1
        return name.encode()

    s.health = health or drpc.Health()
    s.health.register(s)
    s.address = s.start(address)
    return s


@pytest.fixture
def three():
    servers = [who_server(n) for n in "abc"]
    yield servers
    for s in servers:
        s.stop(0)


def target(servers):
    return "ipv4:" + ",".join(s.address for s in servers)


FAST = dict(connect_backoff=(0.02, 0.2))


def wait_until(cond, limit=5.0):
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_round_robin_split_and_lazy_connect(three):
    with drpc.Channel(target(three), **FAST) as ch:
        assert all(state == "idle" for _, state in ch.endpoints())
        ch.ready(5)
        assert wait_until(lambda: all(state == "ready" for _, state in ch.endpoints()))
        got = [ch.invoke("/t/Who", b"") for _ in range(300)]
        assert {n: got.count(n) for n in (b"a", b"b", b"c")} == {b"a": 100, b"b": 100, b"c": 100}
        assert ch.stats()["retries"] == 0


def test_stopped_server_loses_no_call(three):
    ch = drpc.Channel(target(three), max_attempts=5, retry_budget=None, **FAST)
    errors = []

    def load():
        for _ in range(100):
            try:
                ch.invoke("/t/Who", b"0.002")
            except drpc.RpcError as e:  # pragma: no cover - reported below
                errors.append(e)

    threads = [threading.Thread(target=load) for _ in range(6)]
    for t in threads:
        t.start()
    assert wait_until(lambda: three[1].hits >= 30)
    three[1].stop(0)
    for t in threads:
        t.join()
    assert errors == []
    assert three[0].hits + three[2].hits + three[1].hits >= 600
    ch.close()
    with pytest.raises(drpc.Unavailable):
        ch.invoke("/t/Who", b"")


def test_fail_fast_wait_for_ready_and_restart():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    address = "127.0.0.1:%d" % sock.getsockname()[1]
    sock.close()
    ch = drpc.Channel(address, **FAST)
    t0 = time.monotonic()
    with pytest.raises(drpc.Unavailable):
        ch.invoke("/t/Who", b"")
    assert time.monotonic() - t0 < 2
    with pytest.raises(drpc.DeadlineExceeded):
        ch.invoke("/t/Who", b"", timeout=0.2, wait_for_ready=True)
    result = {}

    def late_call():
        result["reply"] = ch.invoke("/t/Who", b"", timeout=5, wait_for_ready=True)

    t = threading.Thread(target=late_call)
    t.start()
    time.sleep(0.1)
    s = who_server("late", address)
    t.join()
    assert result["reply"] == b"late"
    s.stop(0)


def test_health_takes_endpoints_out_of_rotation(three):
    ch = drpc.Channel(target(three), health_check="", max_attempts=1, **FAST)
    ch.ready(5)
    assert wait_until(lambda: [st for _, st in ch.endpoints()] == ["ready"] * 3)
    three[0].health.set_status("", drpc.ServingStatus.NOT_SERVING)
    assert wait_until(lambda: ch.endpoints()[0][1] == "not_serving")
    assert {ch.invoke("/t/Who", b"") for _ in range(30)} == {b"b", b"c"}
    # Graceful shutdown: NOT_SERVING first, then stop: no call fails.
    three[1].health.shutdown()
    assert three[1].health.status() == drpc.ServingStatus.NOT_SERVING
    assert wait_until(lambda: ch.endpoints()[1][1] == "not_serving")
    three[1].stop(1)
    assert {ch.invoke("/t/Who", b"") for _ in range(30)} == {b"c"}
    three[0].health.set_status("", drpc.ServingStatus.SERVING)
    assert wait_until(lambda: ch.endpoints()[0][1] == "ready")
    with pytest.raises(ValueError):
        three[0].health.set_status("", 9)


def test_streams_and_option_errors(three):
    ch = drpc.Channel(target(three), load_balancing="power_of_two_choices", **FAST)
    with ch.stream("/t/Who") as s:
        s.send(b"")
        s.close_send()
        assert s.recv() in (b"a", b"b", b"c")
    with pytest.raises(drpc.InvalidArgument):
        drpc.Channel("http://x:1")
    with pytest.raises(ValueError):
        drpc.Channel("x:1", load_balancing="random")
    with pytest.raises(ValueError):
        drpc.Channel("x:1", max_attempts=0)
    with pytest.raises(ValueError):
        drpc.Channel("x:1", retry_budget=(0, 0.1))


def test_aio_channel(three):
    async def main():
        async with drpc.aio.Channel(target(three), **FAST) as ch:
            replies = await asyncio.gather(*(ch.invoke("/t/Who", b"") for _ in range(30)))
            assert set(replies) == {b"a", b"b", b"c"}
            s = await ch.stream("/t/Who")
            async with s:
                await s.send(b"")
                await s.close_send()
                assert await s.recv() in (b"a", b"b", b"c")
            # Cancelling the awaiting task cancels the call.
            task = asyncio.ensure_future(ch.invoke("/t/Who", b"5"))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(main())
