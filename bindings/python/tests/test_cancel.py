import _thread
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import drpc

from conftest import PY


def wait_for(cond, timeout=2.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


@pytest.mark.parametrize("rpc", ["/t/Sleep", "/t/ASleep"])
def test_timeout_is_deadline_exceeded_and_server_sees_cancel(server, client, rpc):
    t0 = time.monotonic()
    with pytest.raises(drpc.DeadlineExceeded) as ei:
        client.invoke(rpc, b"5", timeout=0.1)
    assert ei.value.code == 4
    assert time.monotonic() - t0 < 1.0
    assert wait_for(lambda: rpc in server.cancelled_calls)
    assert wait_for(lambda: server.active_rpcs == 0)
    assert client.invoke("/t/Echo", b"still ok") == b"still ok"


def test_zero_timeout_fails_before_sending(client):
    with pytest.raises(drpc.DeadlineExceeded):
        client.invoke("/t/Echo", b"", timeout=0)


def test_stream_timeout(client):
    s = client.stream("/t/Upper", timeout=0.1)
    with pytest.raises(drpc.DeadlineExceeded):
        s.recv()


def test_stream_cancel(server, client):
    s = client.stream("/t/Upper")
    s.send(b"a")
    assert s.recv() == b"A"
    s.cancel()
    with pytest.raises(drpc.Cancelled) as ei:
        s.recv()
    assert ei.value.code == 1
    with pytest.raises(drpc.Cancelled):
        s.send(b"b")
    assert client.invoke("/t/Echo", b"x") == b"x"


def test_cancel_from_other_thread_unblocks_recv(client):
    s = client.stream("/t/Upper")
    threading.Timer(0.1, s.cancel).start()
    t0 = time.monotonic()
    with pytest.raises(drpc.Cancelled):
        s.recv()
    assert time.monotonic() - t0 < 1.0


def test_stream_context_manager_cancels(server, client):
    with client.stream("/t/Sleep") as s:
        s.send(b"5")
        s.close_send()
    assert wait_for(lambda: "/t/Sleep" in server.cancelled_calls)


def test_keyboard_interrupt_cancels_blocking_call(server, client):
    threading.Timer(0.2, _thread.interrupt_main).start()
    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        client.invoke("/t/Sleep", b"10")
    assert time.monotonic() - t0 < 1.0
    assert wait_for(lambda: "/t/Sleep" in server.cancelled_calls)
    assert client.invoke("/t/Echo", b"after") == b"after"


def test_keyboard_interrupt_cancels_stream_recv(server, client):
    s = client.stream("/t/Upper")
    threading.Timer(0.2, _thread.interrupt_main).start()
    with pytest.raises(KeyboardInterrupt):
        s.recv()
    assert s.finished


def test_sigint_in_subprocess_interrupts_call(server):
    script = textwrap.dedent(
        f"""
        import sys, drpc
        c = drpc.Client({server.address!r})
        print("calling", flush=True)
        try:
            c.invoke("/t/Sleep", b"30")
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(3)
        """
    )
    p = subprocess.Popen([PY, "-c", script], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "calling"
    time.sleep(0.3)
    t0 = time.monotonic()
    p.send_signal(signal.SIGINT)
    out, _ = p.communicate(timeout=10)
    assert p.returncode == 3 and "interrupted" in out
    assert time.monotonic() - t0 < 2.0
    assert wait_for(lambda: "/t/Sleep" in server.cancelled_calls)


def test_exit_with_open_objects_does_not_hang(tmp_path):
    script = textwrap.dedent(
        """
        import asyncio, threading, drpc
        s = drpc.Server()
        s.unary("/t/Sleep", lambda r, c: c.wait_cancelled(30) and b"")
        @s.unary("/t/ASleep")
        async def asleep(r, c):
            await asyncio.sleep(30)
        addr = s.start("127.0.0.1:0")
        c = drpc.Client(addr)
        st = c.stream("/t/Sleep")
        for rpc in ["/t/Sleep", "/t/ASleep"]:
            threading.Thread(target=lambda rpc=rpc: c.invoke(rpc, b""), daemon=True).start()
        import time; time.sleep(0.3)
        print("exiting", flush=True)
        """
    )
    t0 = time.monotonic()
    r = subprocess.run([PY, "-c", script], capture_output=True, text=True, timeout=20)
    assert "exiting" in r.stdout
    assert time.monotonic() - t0 < 10
    assert r.returncode == 0, r.stderr
