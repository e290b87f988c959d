"""A client redials a lost connection on its next call (with backoff after
failed redials), and a connect to a peer that never answers times out."""

import asyncio
import socket
import threading
import time

import pytest

import drpc
import drpc.aio


def echo_server(address="127.0.0.1:0"):
    s = drpc.Server()
    s.unary("/t/Echo", lambda r, c: r)

    @s.bidi_streaming("/t/Upper")
    def upper(reqs, ctx):
        for r in reqs:
            yield r.upper()

    return s, s.start(address)


def until_ok(call, timeout=5.0):
    """Calls `call` until it succeeds; returns (result, failures)."""
    deadline = time.monotonic() + timeout
    failures = 0
    while True:
        try:
            return call(), failures
        except drpc.Unavailable:
            failures += 1
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


def test_client_redials_after_server_restart():
    server, addr = echo_server()
    with drpc.Client(addr) as c:
        assert c.invoke("/t/Echo", b"1") == b"1"
        for round_ in range(3):
            server.stop(0)
            server, _ = echo_server(addr)  # same port
            # The loss is noticed by the first call at the latest; the one
            # after redials (no backoff: no redial failed yet).
            assert until_ok(lambda: c.invoke("/t/Echo", b"2"))[0] == b"2"
            assert c.redials == round_ + 1
            assert not c.closed
        with c.stream("/t/Upper") as s:
            s.send(b"ab")
            assert s.recv() == b"AB"
    server.stop(0)


def test_redial_backoff_fails_fast_while_the_server_is_down():
    server, addr = echo_server()
    c = drpc.Client(addr)
    assert c.invoke("/t/Echo", b"x") == b"x"
    server.stop(0)
    deadline = time.monotonic() + 5
    while not c.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.closed
    with pytest.raises(drpc.Unavailable):
        c.invoke("/t/Echo", b"")  # the redial is refused
    t0 = time.monotonic()
    for _ in range(20):
        with pytest.raises(drpc.Unavailable, match="redialling in"):
            c.invoke("/t/Echo", b"")  # within the backoff: no dial at all
    assert time.monotonic() - t0 < 0.15
    server, _ = echo_server(addr)
    # Backoff after one failure is 0.2 s (±20 %); after two, 0.4 s.
    result, _ = until_ok(lambda: c.invoke("/t/Echo", b"back"), timeout=3)
    assert result == b"back"
    assert c.redials == 1
    c.close()
    server.stop(0)


def test_calls_from_many_threads_share_one_redial():
    server, addr = echo_server()
    c = drpc.Client(addr)
    c.invoke("/t/Echo", b"")
    server.stop(0)
    server, _ = echo_server(addr)
    deadline = time.monotonic() + 5
    while not c.closed and time.monotonic() < deadline:
        time.sleep(0.01)
    results = []

    def worker(i):
        results.append(c.invoke("/t/Echo", b"%d" % i))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == sorted(b"%d" % i for i in range(16))
    assert c.redials == 1
    c.close()
    server.stop(0)


def test_no_redial_when_disabled_or_closed():
    server, addr = echo_server()
    c = drpc.Client(addr, reconnect=False)
    c.invoke("/t/Echo", b"")
    server.stop(0)
    server, _ = echo_server(addr)
    time.sleep(0.2)
    for _ in range(3):
        with pytest.raises(drpc.Unavailable):
            c.invoke("/t/Echo", b"")
    assert c.redials == 0
    c.close()

    c = drpc.Client(addr)
    c.close()
    with pytest.raises(drpc.Unavailable, match="closed"):
        c.invoke("/t/Echo", b"")
    assert c.redials == 0 and c.closed
    server.stop(0)


def test_aio_client_redials():
    async def main():
        server, addr = echo_server()
        async with drpc.aio.Client(addr) as c:
            assert await c.invoke("/t/Echo", b"1") == b"1"
            server.stop(0)
            server, _ = echo_server(addr)
            deadline = time.monotonic() + 5
            while True:
                try:
                    assert await c.invoke("/t/Echo", b"2") == b"2"
                    break
                except drpc.Unavailable:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.02)
            assert c.redials == 1
            s = await c.stream("/t/Upper")
            await s.send(b"q")
            assert await s.recv() == b"Q"
            await s.close_send()
        server.stop(0)

    asyncio.run(asyncio.wait_for(main(), 30))


def unanswered(host="127.0.0.1", port=0):
    """A listening socket whose accept queue is full: the kernel drops further
    SYNs, so connecting to it hangs like connecting to a blackholed host.
    Returns the sockets to close."""
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(0)
    host, port = listener.getsockname()
    fillers = []
    for _ in range(4):
        f = socket.socket()
        f.setblocking(False)
        f.connect_ex((host, port))
        fillers.append(f)
    time.sleep(0.1)
    probe = socket.socket()
    probe.settimeout(0.5)
    try:
        with pytest.raises(socket.timeout):
            probe.connect((host, port))
    finally:
        probe.close()
    return f"{host}:{port}", [listener, *fillers]


@pytest.fixture
def unanswered_address():
    address, sockets = unanswered()
    yield address
    for s in sockets:
        s.close()


def test_call_timeout_bounds_a_redial():
    """A redial that gets no answer ends with the call's deadline, or else
    after connect_timeout."""
    server, addr = echo_server()
    c = drpc.Client(addr, connect_timeout=1.0)
    c.invoke("/t/Echo", b"")
    server.stop(0)
    host, port = addr.rsplit(":", 1)
    _, sockets = unanswered(host, int(port))
    try:
        deadline = time.monotonic() + 5
        while not c.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = time.monotonic()
        with pytest.raises(drpc.DeadlineExceeded, match="redialling"):
            c.invoke("/t/Echo", b"", timeout=0.3)
        assert 0.25 < time.monotonic() - t0 < 1.0
        t0 = time.monotonic()
        with pytest.raises(drpc.Unavailable, match="no answer within 1"):
            c.invoke("/t/Echo", b"")
        assert 0.9 < time.monotonic() - t0 < 2.0
    finally:
        for s in sockets:
            s.close()
        c.close()


def test_connect_timeout(unanswered_address):
    t0 = time.monotonic()
    with pytest.raises(drpc.Unavailable, match="no answer within"):
        drpc.Client(unanswered_address, connect_timeout=0.3)
    assert 0.25 < time.monotonic() - t0 < 2

    async def aio():
        with pytest.raises(drpc.Unavailable, match="no answer within"):
            await drpc.aio.connect(unanswered_address, connect_timeout=0.3)

    t0 = time.monotonic()
    asyncio.run(aio())
    assert 0.25 < time.monotonic() - t0 < 2


def test_default_connect_timeout(unanswered_address):
    """Without connect_timeout, a connect gives up after
    DEFAULT_CONNECT_TIMEOUT seconds (not the OS's two minutes)."""
    assert drpc.DEFAULT_CONNECT_TIMEOUT == 10.0
    took = {}

    def sync():
        t0 = time.monotonic()
        with pytest.raises(drpc.Unavailable, match="no answer within 10"):
            drpc.Client(unanswered_address)
        took["sync"] = time.monotonic() - t0

    def aio():
        async def main():
            with pytest.raises(drpc.Unavailable, match="no answer within 10"):
                await drpc.aio.Client(unanswered_address).connect()

        t0 = time.monotonic()
        asyncio.run(main())
        took["aio"] = time.monotonic() - t0

    threads = [threading.Thread(target=f) for f in (sync, aio)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(took) == {"sync", "aio"}, "a connect raised something else"
    for name, secs in took.items():
        assert 9.5 < secs < 13, (name, secs)
