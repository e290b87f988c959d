import asyncio
import time

import pytest

import drpc
import drpc.aio
from drpc.interop import test_pb2 as pb


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_aio_unary_and_errors(server):
    async def main():
        async with drpc.aio.Client(server.address) as c:
            assert await c.invoke("/t/Echo", b"x") == b"x"
            assert await c.invoke("/t/AEcho", b"y") == b"y"
            req = pb.SimpleRequest(response_size=5)
            resp = await c.invoke("/t/Proto", req, response_type=pb.SimpleResponse)
            assert resp.payload.body == bytes(5)
            with pytest.raises(drpc.NotFound):
                await c.invoke("/t/Fail", b"5:nf")
            with pytest.raises(drpc.Unimplemented):
                await c.invoke("/x/Y", b"")
            out = await asyncio.gather(*(c.invoke("/t/AEcho", str(i).encode()) for i in range(100)))
            assert out == [str(i).encode() for i in range(100)]
    run(main())


def test_aio_connect_helper_and_close(server):
    async def main():
        c = await drpc.aio.connect(server.address)
        assert await c.invoke("/t/Echo", b"1") == b"1"
        await c.close()
        assert c.closed
        with pytest.raises(drpc.Unavailable):
            await c.invoke("/t/Echo", b"")
        c2 = drpc.aio.Client(server.address)
        with pytest.raises(drpc.Unavailable):
            await c2.invoke("/t/Echo", b"")
    run(main())


@pytest.mark.parametrize("prefix", ["", "A"])
def test_aio_streams(server, prefix):
    async def main():
        async with drpc.aio.Client(server.address) as c:
            got = [m async for m in c.server_stream(f"/t/{prefix}Count", b"3")]
            assert got == [b"0", b"1", b"2"]
            async with await c.stream(f"/t/{prefix}Upper") as s:
                await s.send(b"ab")
                assert await s.recv() == b"AB"
                await s.send(b"cd")
                await s.close_send()
                assert [m async for m in s] == [b"CD"]
            s = await c.stream(f"/t/{prefix}Sum")
            for n in (b"1", b"2"):
                await s.send(n)
            await s.close_send()
            assert await s.recv() == b"3"
    run(main())


@pytest.mark.parametrize("rpc", ["/t/Sleep", "/t/ASleep"])
def test_aio_timeout_and_task_cancel(server, rpc):
    async def main():
        async with drpc.aio.Client(server.address) as c:
            t0 = time.monotonic()
            with pytest.raises(drpc.DeadlineExceeded):
                await c.invoke(rpc, b"5", timeout=0.1)
            assert time.monotonic() - t0 < 1.0
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.invoke(rpc, b"5"), 0.1)
            for _ in range(200):
                if len(server.cancelled_calls) >= 2:
                    break
                await asyncio.sleep(0.01)
            assert server.cancelled_calls == [rpc, rpc]
            s = await c.stream("/t/AUpper")
            task = asyncio.ensure_future(s.recv())
            await asyncio.sleep(0.05)
            s.cancel()
            with pytest.raises(drpc.Cancelled):
                await task
            assert await c.invoke("/t/Echo", b"ok") == b"ok"
    run(main())


def test_aio_server():
    async def main():
        server = drpc.aio.Server()
        calls = []

        @server.unary("/s/Echo")
        async def echo(req, ctx):
            calls.append(ctx.metadata.get("who"))
            return req

        @server.unary("/s/Sync")
        def sync(req, ctx):
            return req * 2

        @server.stream("/s/Chat")
        async def chat(stream):
            async for m in stream:
                await stream.send(m[::-1])

        @server.unary("/s/Slow")
        async def slow(req, ctx):
            await asyncio.sleep(0.3)
            return b"done"

        async with server:
            addr = await server.start("127.0.0.1:0")
            async with drpc.aio.Client(addr) as c:
                assert await c.invoke("/s/Echo", b"e", metadata={"who": "me"}) == b"e"
                assert await c.invoke("/s/Sync", b"ab") == b"abab"
                s = await c.stream("/s/Chat")
                await s.send(b"abc")
                assert await s.recv() == b"cba"
                await s.close_send()
                assert await s.recv() is None
                # graceful stop waits for the slow call
                pending = asyncio.ensure_future(c.invoke("/s/Slow", b""))
                await asyncio.sleep(0.05)
                await server.stop(grace=2.0)
                assert await pending == b"done"
        assert calls == ["me"]
    run(main())


def test_aio_many_concurrent_streams(server):
    async def main():
        async with drpc.aio.Client(server.address) as c:
            async def one(k):
                s = await c.stream("/t/AUpper")
                for r in range(20):
                    m = f"s{k}r{r}".encode()
                    await s.send(m)
                    assert await s.recv() == m.upper()
                await s.close_send()
                assert await s.recv() is None
            await asyncio.gather(*(one(k) for k in range(32)))
    run(main())


@pytest.mark.parametrize("rpc", ["/t/Sum", "/t/ASum"])
def test_aio_client_stream(server, rpc):
    async def main():
        async with drpc.aio.Client(server.address) as c:
            assert await c.client_stream(rpc, [b"1", b"2", b"3"]) == b"6"

            async def gen():
                for n in (b"10", b"20"):
                    await asyncio.sleep(0)
                    yield n

            assert await c.client_stream(rpc, gen()) == b"30"
            assert await c.client_stream(rpc, []) == b"0"
            with pytest.raises(TypeError):
                await c.client_stream(rpc, b"123")
            with pytest.raises(drpc.Unimplemented):
                await c.client_stream("/x/Missing", [b"1"])

    run(main())
