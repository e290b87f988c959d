"""Type-checked (never run) by tests/test_typing.py with `mypy --strict`
against the installed package: the public API as a user writes it, with
the types mypy must infer. A wrong use is marked `# type: ignore[code]`;
--strict reports an unused ignore, so each of those must stay an error."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, Mapping, Optional, Tuple, Union

from typing_extensions import assert_type

import drpc
import drpc.aio
from drpc.interop import test_pb2 as pb


def runtime() -> None:
    drpc.configure_runtime(worker_threads=4, handler_threads=64)
    assert_type(drpc.runtime_settings(), Tuple[int, int])
    drpc.configure_runtime(handler_threads="many")  # type: ignore[arg-type]


def blocking(address: str) -> None:
    drpc.Client(address, memory_budget=1 << 20, read_timeout=5.0).close()
    drpc.Client(address, read_timeout="5")  # type: ignore[arg-type]
    with drpc.Client(address, connect_timeout=2.0, reconnect=True) as client:
        assert_type(client.invoke("/e.E/Echo", b"hi"), bytes)
        reply = client.invoke("/t.T/Unary", pb.SimpleRequest(response_size=3), response_type=pb.SimpleResponse)
        assert_type(reply, pb.SimpleResponse)
        assert_type(client.server_stream("/k.KV/Scan", b"p"), Iterator[bytes])
        assert_type(
            client.server_stream("/k.KV/Scan", b"p", response_type=pb.SimpleResponse), Iterator[pb.SimpleResponse]
        )
        assert_type(client.client_stream("/k.KV/Put", [b"a", pb.Empty()]), Optional[bytes])
        with client.stream("/c.C/Talk", metadata={"k": "v"}, timeout=1.0) as stream:
            assert_type(stream, drpc.ClientStream[bytes])
            stream.send(b"x")
            assert_type(stream.recv(timeout=0.5), Optional[bytes])
            for message in stream:
                assert_type(message, bytes)
        typed = client.stream("/t.T/Stream", response_type=pb.StreamingOutputCallResponse)
        assert_type(typed.recv(), Optional[pb.StreamingOutputCallResponse])
        assert_type(client.redials, int)
        client.invoke(b"/e.E/Echo", b"")  # type: ignore[call-overload]
        client.invoke("/e.E/Echo", "text")  # type: ignore[call-overload]


def serving() -> None:
    server = drpc.Server(max_message_size=1 << 20)
    drpc.Server(memory_budget=0, connection_memory=1 << 20, handshake_timeout=1, idle_timeout=0, read_timeout=2.5)
    drpc.aio.Server(memory_budget=drpc.DEFAULT_MEMORY_BUDGET, handshake_timeout=0.5)
    drpc.Server(memory_budget="1M")  # type: ignore[arg-type]

    @server.unary("/e.E/Echo")
    def echo(request: bytes, context: drpc.ServerContext) -> bytes:
        assert_type(context.rpc, str)
        assert_type(context.is_cancelled(), bool)
        assert_type(context.wait_cancelled(1.0), bool)
        return request

    # The decorator hands back the function itself, still typed (not Any):
    echo(b"", "not a context")  # type: ignore[arg-type]

    def scan(request: bytes, context: drpc.ServerContext) -> Iterator[bytes]:
        yield request

    registered: Callable[[bytes, drpc.ServerContext], Iterator[bytes]] = server.server_streaming("/k.KV/Scan", scan)
    registered(b"", 0)  # type: ignore[arg-type]

    @server.stream("/raw.R/Raw")
    def raw(stream: drpc.ServerStream) -> None:
        stream.send(b"x")
        stream.recv(timeout=1.0)

    address: str = server.start("127.0.0.1:0")
    assert_type(server.wait_for_termination(0.1), bool)
    assert_type(server.running_handlers, int)
    server.stop(grace=1.0)
    server.stop(grace="soon")  # type: ignore[arg-type]
    del address


async def asynchronous(address: str) -> None:
    await drpc.aio.connect(address, memory_budget=1 << 20, read_timeout=5)
    async with drpc.aio.Client(address) as client:
        assert_type(await client.invoke("/e.E/Echo", b"x", timeout=1.0), bytes)
        assert_type(
            await client.invoke("/t.T/Unary", pb.SimpleRequest(), response_type=pb.SimpleResponse), pb.SimpleResponse
        )
        assert_type(client.server_stream("/k.KV/Scan", b""), AsyncIterator[bytes])

        async def requests() -> AsyncIterator[bytes]:
            yield b"1"

        assert_type(await client.client_stream("/k.KV/Put", requests()), Optional[bytes])
        assert_type(await client.client_stream("/k.KV/Put", [b"1"]), Optional[bytes])
        stream = await client.stream("/c.C/Talk")
        assert_type(stream, drpc.aio.ClientStream[bytes])
        assert_type(await asyncio.wait_for(stream.recv(), 0.1), Optional[bytes])
        async for message in stream:
            assert_type(message, bytes)

    server = drpc.aio.Server()

    @server.bidi_streaming("/c.C/Talk")
    async def talk(requests: AsyncIterator[bytes], context: drpc.ServerContext) -> AsyncIterator[bytes]:
        async for r in requests:
            yield r

    @server.stream("/raw.R/Raw")
    async def raw(stream: drpc.AsyncServerStream) -> None:
        await stream.send(await stream.recv())

    assert_type(await server.start("127.0.0.1:0"), str)
    assert_type(await server.wait_for_termination(0.1), bool)
    await server.stop(1.0)


def errors() -> None:
    assert_type(drpc.RpcError("NOT_FOUND", "no key"), drpc.RpcError)
    assert_type(drpc.RpcError(drpc.StatusCode.NOT_FOUND, "no key").code, Union[drpc.StatusCode, int])
    err = drpc.NotFound("missing")
    assert_type(err.message, str)
    try:
        raise err
    except drpc.RpcError as e:
        logging.getLogger(drpc.LOGGER_NAME).info("code %d", int(e.code))
    drpc.RpcError(1.5, "x")  # type: ignore[arg-type]


class Auth(drpc.ServerInterceptor):
    def intercept(self, method: Callable[[Any, Any], Any], request: Any, context: Any) -> Any:
        ctx: drpc.ServerContext = context
        if ctx.metadata.get("authorization") != "Bearer t":
            raise drpc.Unauthenticated("no token")
        assert_type(ctx.deadline, Optional[float])
        assert_type(ctx.time_remaining(), Optional[float])
        assert_type(ctx.traceparent, Optional[str])
        return method(request, context)

    def on_done(self, context: Any, outcome: drpc.Outcome) -> None:
        assert_type(outcome.duration, float)
        assert_type(outcome.bytes_sent, int)
        assert_type(outcome.code, Union[drpc.StatusCode, int])


class AsyncAuth(drpc.aio.ServerInterceptor):
    async def intercept(self, method: Callable[[Any, Any], Awaitable[Any]], request: Any, context: Any) -> Any:
        return await method(request, context)


class Token(drpc.ClientInterceptor):
    def intercept(self, method: Callable[[Any, drpc.ClientCallDetails], Any], request: Any, call: drpc.ClientCallDetails) -> Any:
        call.metadata["authorization"] = "Bearer t"
        assert_type(call.timeout, Optional[float])
        return method(request, call)


def interceptors_deadlines_metrics(address: str) -> None:
    server = drpc.Server(interceptors=[Auth()], max_deadline=30.0, ignore_deadlines=False)
    aserver = drpc.aio.Server(interceptors=[AsyncAuth()])
    m = server.metrics()
    assert_type(m, drpc.Metrics)
    assert_type(m.bytes_sent, int)
    assert_type(m.rpcs["/a/B"].latency, drpc.Histogram)
    assert_type(m.rpcs["/a/B"].latency.cumulative(), Tuple[Tuple[float, int], ...])
    assert_type(aserver.metrics().failed_by_code, Mapping[int, int])
    with drpc.Client(address, interceptors=[Token()], send_deadline=True) as client:
        assert_type(client.invoke("/a/B", b"", timeout=1.0, traceparent="00-" + "1" * 32 + "-" + "2" * 16 + "-01"), bytes)
        assert_type(client.metrics(), drpc.Metrics)
    drpc.aio.Client(address, interceptors=[Token()])
