"""Server.stop(grace) waits for handlers, interpreter exit never aborts with
handlers still running, handler failures are logged, wait_for_termination."""

import asyncio
import logging
import re
import subprocess
import textwrap
import threading
import time

import pytest

import drpc
import drpc.aio

from conftest import PY


def busy(seconds):
    """Runs Python bytecode (holding and releasing the GIL) for `seconds`."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += sum(range(100))
    return n


async def stubborn_sleep(seconds):
    """Sleeps `seconds` even if cancelled meanwhile."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while loop.time() < end:
        try:
            await asyncio.sleep(end - loop.time())
        except asyncio.CancelledError:
            pass


def test_stop_waits_for_a_handler_that_ignores_cancellation():
    s = drpc.Server()
    finished = threading.Event()

    @s.unary("/t/Busy")
    def handler(req, ctx):
        busy(1.0)
        finished.set()
        return b"done"

    addr = s.start("127.0.0.1:0")
    c = drpc.Client(addr)
    caller = threading.Thread(target=lambda: pytest.raises(drpc.RpcError, c.invoke, "/t/Busy", b""))
    caller.start()
    deadline = time.monotonic() + 5
    while s.running_handlers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.running_handlers == 1
    t0 = time.monotonic()
    s.stop(grace=0.1)
    assert finished.is_set(), "stop() returned while the handler still ran"
    assert s.running_handlers == 0
    assert 0.5 < time.monotonic() - t0 < 5
    caller.join(5)
    c.close()


@pytest.mark.parametrize("flavour", ["sync", "async", "sync-stream", "async-stream"])
def test_stop_grace_then_cancel(flavour):
    """Handlers that honour cancellation: stop lets them run for `grace`, then
    cancels them, and returns once they have returned."""
    s = drpc.Server()
    saw_cancel = []

    if flavour == "sync":
        @s.unary("/t/H")
        def h(req, ctx):
            if ctx.wait_cancelled(30):
                saw_cancel.append(True)
            return b""
    elif flavour == "async":
        @s.unary("/t/H")
        async def h(req, ctx):
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                await asyncio.sleep(0.2)  # cleanup that stop() must wait for
                saw_cancel.append(True)
                raise
            return b""
    elif flavour == "sync-stream":
        @s.stream("/t/H")
        def h(stream):
            try:
                stream.recv()
                stream.recv()  # never comes
            except drpc.RpcError:  # Unavailable: the server shut down
                busy(0.2)
                saw_cancel.append(True)
                raise
    else:
        @s.stream("/t/H")
        async def h(stream):
            try:
                await stream.recv()
                await stream.recv()
            except (drpc.RpcError, asyncio.CancelledError):
                # The stream fails and the task is cancelled, in either order:
                # a cleanup that outlasts both, which stop() must wait for.
                await stubborn_sleep(0.2)
                saw_cancel.append(True)
                raise

    addr = s.start("127.0.0.1:0")
    c = drpc.Client(addr)
    if flavour.endswith("stream"):
        st = c.stream("/t/H")
        st.send(b"x")
    else:
        threading.Thread(target=lambda: pytest.raises(drpc.RpcError, c.invoke, "/t/H", b""), daemon=True).start()
    deadline = time.monotonic() + 5
    while s.running_handlers == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert s.running_handlers == 1
    t0 = time.monotonic()
    s.stop(grace=0.3)
    took = time.monotonic() - t0
    assert saw_cancel == [True]
    assert s.running_handlers == 0
    assert 0.3 <= took < 4, took
    c.close()


def test_aio_stop_waits_for_handlers():
    async def main():
        s = drpc.aio.Server()
        done = []

        @s.unary("/t/Slow")
        async def slow(req, ctx):
            try:
                await asyncio.sleep(30)
            finally:
                await asyncio.sleep(0.2)
                done.append("async")

        @s.unary("/t/Busy")
        def busy_handler(req, ctx):
            busy(0.5)
            done.append("sync")
            return b""

        addr = await s.start("127.0.0.1:0")
        async with drpc.aio.Client(addr) as c:
            calls = [asyncio.ensure_future(c.invoke(rpc, b"")) for rpc in ("/t/Slow", "/t/Busy")]
            while s.running_handlers < 2:
                await asyncio.sleep(0.01)
            await s.stop(grace=0.05)
            assert sorted(done) == ["async", "sync"]
            assert s.running_handlers == 0
            await asyncio.gather(*calls, return_exceptions=True)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_stop_from_inside_a_handler_does_not_deadlock():
    s = drpc.Server()
    stopped = threading.Event()

    @s.unary("/t/StopMe")
    def stop_me(req, ctx):
        s.stop(0)
        stopped.set()
        return b"bye"

    addr = s.start("127.0.0.1:0")
    with drpc.Client(addr) as c:
        try:
            c.invoke("/t/StopMe", b"", timeout=10)
        except drpc.RpcError:
            pass  # the server shut down under the call
    assert stopped.wait(10)
    assert s.wait_for_termination(5)


EXIT_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys, threading, time, drpc, drpc.aio

    kind = sys.argv[1]

    def busy(seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sum(range(100))
        return b"late"

    def call(addr, rpc):
        try:
            c = drpc.Client(addr)
            if rpc.endswith("Stream"):
                s = c.stream(rpc)
                s.send(b"x")
                s.recv()
            else:
                c.invoke(rpc, b"")
        except BaseException:
            pass

    if kind.startswith("aio"):
        async def main():
            s = drpc.aio.Server()
            s.unary("/t/Busy", lambda r, c: busy(2.5))
            addr = await s.start("127.0.0.1:0")
            threading.Thread(target=call, args=(addr, "/t/Busy"), daemon=True).start()
            while s.running_handlers == 0:
                await asyncio.sleep(0.01)
        asyncio.run(main())
    else:
        s = drpc.Server()
        s.unary("/t/Busy", lambda r, c: busy(2.5))
        @s.stream("/t/BusyStream")
        def busy_stream(stream):
            stream.recv()
            busy(2.5)
            stream.send(b"late")
        @s.unary("/t/ABusy")
        async def abusy(r, c):
            try:
                await asyncio.sleep(30)
            finally:
                busy(0.5)
        addr = s.start("127.0.0.1:0")
        for rpc in ("/t/Busy", "/t/BusyStream", "/t/ABusy"):
            threading.Thread(target=call, args=(addr, rpc), daemon=True).start()
        while s.running_handlers < 3:
            time.sleep(0.01)
        if kind == "stop":
            s.stop(grace=0.5)
            assert s.running_handlers == 0, s.running_handlers
    print("exiting", flush=True)
    """
)


def test_exit_with_running_handlers_never_aborts():
    """The interpreter exits with status 0, and no fatal error, while
    plain-function handlers still run Python code (repeated, concurrently)."""
    kinds = ["plain", "stop", "aio"] * 4
    procs = [
        subprocess.Popen([PY, "-c", EXIT_SCRIPT, kind], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for kind in kinds
    ]
    for kind, p in zip(kinds, procs):
        out, err = p.communicate(timeout=60)
        assert "exiting" in out, (kind, err)
        assert "Fatal Python error" not in err, (kind, err)
        assert p.returncode == 0, (kind, p.returncode, err)


@pytest.mark.parametrize("rpc", ["/t/Boom", "/t/ABoom", "/t/SBoom", "/t/ASBoom"])
def test_handler_exception_is_logged_at_error_with_traceback(caplog, rpc):
    s = drpc.Server()

    def boom(req, ctx):
        raise ValueError("kaboom")

    async def aboom(req, ctx):
        raise ValueError("kaboom")

    def sboom(stream):
        raise ValueError("kaboom")

    async def asboom(stream):
        raise ValueError("kaboom")

    s.unary("/t/Boom", boom)
    s.unary("/t/ABoom", aboom)
    s.stream("/t/SBoom", sboom)
    s.stream("/t/ASBoom", asboom)
    s.unary("/t/Denied", lambda r, c: (_ for _ in ()).throw(drpc.PermissionDenied("no")))
    addr = s.start("127.0.0.1:0")
    try:
        with caplog.at_level(logging.ERROR, logger=drpc.LOGGER_NAME), drpc.Client(addr) as c:
            with pytest.raises(drpc.Unknown, match="kaboom"):
                if "S" in rpc:
                    c.stream(rpc).recv()
                else:
                    c.invoke(rpc, b"")
            with pytest.raises(drpc.PermissionDenied):
                c.invoke("/t/Denied", b"")
            deadline = time.monotonic() + 5
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.01)
    finally:
        s.stop(0)
    records = [r for r in caplog.records if r.name == "drpc.server"]
    assert len(records) == 1, records  # the deliberate PermissionDenied is not an error
    (rec,) = records
    assert rec.levelno == logging.ERROR
    assert rpc in rec.getMessage()
    assert rec.exc_info is not None and rec.exc_info[0] is ValueError
    assert "kaboom" in caplog.text and "Traceback" in caplog.text


def test_basic_config_shows_handler_failures():
    """With logging.basicConfig(), a crashing handler prints its traceback."""
    script = textwrap.dedent(
        """
        import logging, drpc
        logging.basicConfig()
        s = drpc.Server()
        @s.unary("/t/Boom")
        def boom(req, ctx):
            raise ZeroDivisionError("divided")
        addr = s.start("127.0.0.1:0")
        with drpc.Client(addr) as c:
            try:
                c.invoke("/t/Boom", b"")
            except drpc.Unknown:
                pass
        s.stop()
        """
    )
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert re.search(r"ERROR:drpc.server:handler for /t/Boom \(peer 127\.0\.0\.1:\d+\) raised an exception", r.stderr)
    assert "ZeroDivisionError: divided" in r.stderr and "Traceback" in r.stderr


def test_wait_for_termination():
    s = drpc.Server()
    s.unary("/t/Echo", lambda r, c: r)
    s.start("127.0.0.1:0")
    t0 = time.monotonic()
    assert s.wait_for_termination(timeout=0.1) is False
    assert time.monotonic() - t0 >= 0.09
    threading.Timer(0.2, s.stop).start()
    assert s.wait_for_termination() is True
    assert s.wait_for_termination(0) is True
    with pytest.raises(RuntimeError):
        s.start("127.0.0.1:0")


def test_aio_wait_for_termination():
    async def main():
        s = drpc.aio.Server()
        s.unary("/t/Echo", lambda r, c: r)
        await s.start("127.0.0.1:0")
        assert await s.wait_for_termination(timeout=0.05) is False
        waiter = asyncio.ensure_future(s.wait_for_termination())
        await asyncio.sleep(0.05)
        assert not waiter.done()
        await s.stop()
        assert await asyncio.wait_for(waiter, 5) is True
        assert await s.wait_for_termination(0) is True

    asyncio.run(asyncio.wait_for(main(), 30))


def test_aio_stop_from_inside_a_handler_does_not_deadlock():
    async def main():
        s = drpc.aio.Server()
        stopped = asyncio.Event()

        @s.unary("/t/StopMe")
        async def stop_me(req, ctx):
            try:
                await s.stop(0)
            except asyncio.CancelledError:
                pass  # its own stop cancelled it (grace 0); it carries on
            # Must not wait for this very handler.
            await s.stop(0)
            stopped.set()
            return b"bye"

        addr = await s.start("127.0.0.1:0")
        async with drpc.aio.Client(addr) as c:
            try:
                await c.invoke("/t/StopMe", b"", timeout=10)
            except drpc.RpcError:
                pass
        await asyncio.wait_for(stopped.wait(), 10)
        assert await s.wait_for_termination(5)

    asyncio.run(asyncio.wait_for(main(), 30))


def test_ctrl_c_interrupts_wait_for_termination():
    script = textwrap.dedent(
        """
        import sys, drpc
        s = drpc.Server()
        s.unary("/t/Echo", lambda r, c: r)
        s.start("127.0.0.1:0")
        print("waiting", flush=True)
        try:
            s.wait_for_termination()
        except KeyboardInterrupt:
            s.stop(1)
            print("interrupted", flush=True)
            sys.exit(3)
        """
    )
    import signal

    p = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "waiting"
    time.sleep(0.2)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=10)
    assert p.returncode == 3 and "interrupted" in out, err
