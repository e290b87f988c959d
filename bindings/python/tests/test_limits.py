"""The core's memory budget and connection timeouts, as Server and Client
options (sync and asyncio)."""

import asyncio
import math
import socket
import time

import pytest

import drpc
import drpc.aio


def host_port(addr):
    host, _, port = addr.rpartition(":")
    return host, int(port)


def silent_socket_lifetime(server_kwargs, wait):
    """Seconds until a server built with ``server_kwargs`` closes a raw
    connection that never sends a byte, or None if it is still open after
    ``wait`` seconds."""
    server = drpc.Server(**server_kwargs)
    server.unary("/l/Echo", lambda req, ctx: req)
    addr = server.start("127.0.0.1:0")
    try:
        with socket.create_connection(host_port(addr), timeout=5) as sock:
            start = time.monotonic()
            sock.settimeout(wait)
            try:
                data = sock.recv(1)
            except socket.timeout:
                return None
            except ConnectionResetError:
                data = b""
            assert data == b"", data
            return time.monotonic() - start
    finally:
        server.stop(grace=1)


def test_handshake_timeout_closes_a_silent_connection():
    lifetime = silent_socket_lifetime({"handshake_timeout": 0.2}, wait=5)
    assert lifetime is not None and lifetime < 2.0, lifetime


def test_zero_disables_the_handshake_timeout():
    assert silent_socket_lifetime({"handshake_timeout": 0, "idle_timeout": 0}, wait=0.8) is None


def test_idle_timeout_closes_a_connection_without_streams():
    server = drpc.Server(idle_timeout=0.3)
    server.unary("/l/Echo", lambda req, ctx: req)
    addr = server.start("127.0.0.1:0")
    try:
        with drpc.Client(addr, reconnect=False) as client:
            assert client.invoke("/l/Echo", b"a") == b"a"
            deadline = time.monotonic() + 5
            while not client.closed and time.monotonic() < deadline:
                time.sleep(0.02)
            assert client.closed
    finally:
        server.stop(grace=1)


def test_all_server_options_serve_sync_and_aio_clients_with_options():
    server = drpc.Server(
        memory_budget=64 << 20,
        connection_memory=8 << 20,
        handshake_timeout=5,
        idle_timeout=60.5,
        read_timeout=10,
    )
    server.unary("/l/Echo", lambda req, ctx: req)
    addr = server.start("127.0.0.1:0")
    try:
        with drpc.Client(addr, memory_budget=16 << 20, read_timeout=5.0) as client:
            assert client.invoke("/l/Echo", b"x" * 100_000) == b"x" * 100_000

        async def aio_call():
            async with drpc.aio.Client(addr, memory_budget=0, read_timeout=0) as c:
                return await c.invoke("/l/Echo", b"y")

        assert asyncio.run(aio_call()) == b"y"
    finally:
        server.stop(grace=1)


def test_unlimited_server_budget_and_aio_server_options():
    async def main():
        server = drpc.aio.Server(memory_budget=0, handshake_timeout=0.2, idle_timeout=0, read_timeout=0)

        @server.unary("/l/Echo")
        async def echo(req, ctx):
            return req

        addr = await server.start("127.0.0.1:0")
        try:
            c = await drpc.aio.connect(addr, memory_budget=1 << 20, read_timeout=2)
            async with c:
                assert await c.invoke("/l/Echo", b"z") == b"z"
            reader, writer = await asyncio.open_connection(*host_port(addr))
            start = time.monotonic()
            assert await asyncio.wait_for(reader.read(1), 5) == b""
            writer.close()
            return time.monotonic() - start
        finally:
            await server.stop(grace=1)

    assert asyncio.run(main()) < 2.0


def test_a_small_client_budget_still_carries_large_messages_in_turn():
    server = drpc.Server()
    server.unary("/l/Echo", lambda req, ctx: req)
    addr = server.start("127.0.0.1:0")
    try:
        with drpc.Client(addr, memory_budget=2 << 20) as client:
            for _ in range(3):
                assert len(client.invoke("/l/Echo", b"q" * (1 << 20), timeout=10)) == 1 << 20
    finally:
        server.stop(grace=1)


BAD_SERVER_OPTIONS = [
    ({"memory_budget": -1}, ValueError),
    ({"memory_budget": "1M"}, TypeError),
    ({"memory_budget": True}, TypeError),
    ({"memory_budget": 1.5}, TypeError),
    ({"connection_memory": 0}, ValueError),
    ({"connection_memory": -5}, ValueError),
    ({"handshake_timeout": -0.1}, ValueError),
    ({"handshake_timeout": math.nan}, ValueError),
    ({"idle_timeout": math.inf}, ValueError),
    ({"idle_timeout": "10"}, TypeError),
    ({"read_timeout": -1}, ValueError),
    ({"read_timeout": False}, TypeError),
]


@pytest.mark.parametrize("kwargs, exc", BAD_SERVER_OPTIONS)
def test_bad_server_options(kwargs, exc):
    with pytest.raises(exc):
        drpc.Server(**kwargs)
    with pytest.raises(exc):
        drpc.aio.Server(**kwargs)


BAD_CLIENT_OPTIONS = [
    ({"memory_budget": -1}, ValueError),
    ({"memory_budget": "big"}, TypeError),
    ({"read_timeout": -2}, ValueError),
    ({"read_timeout": math.nan}, ValueError),
    ({"read_timeout": "5"}, TypeError),
]


@pytest.mark.parametrize("kwargs, exc", BAD_CLIENT_OPTIONS)
def test_bad_client_options(kwargs, exc):
    # Checked before connecting: nothing listens on this address.
    with pytest.raises(exc):
        drpc.Client("127.0.0.1:9", **kwargs)
    with pytest.raises(exc):
        drpc.aio.Client("127.0.0.1:9", **kwargs)


def test_native_layer_checks_values_too():
    from drpc import _native

    with pytest.raises(ValueError):
        _native.NativeServer(handshake_timeout=-1.0)
    with pytest.raises(ValueError):
        _native.NativeServer(connection_memory=0)
    with pytest.raises(OverflowError):
        _native.NativeServer(memory_budget=-1)


def test_default_memory_budget_is_exported():
    assert drpc.DEFAULT_MEMORY_BUDGET == 256 << 20
