"""The asyncio API: :class:`Client`, :class:`ClientStream` and :class:`Server`.

They share the extension's runtime with the blocking API; awaiting never
blocks the event loop, and cancelling an awaiting task (``asyncio.wait_for``,
``task.cancel()``) cancels the call on the wire.

Example::

    async with drpc.aio.Client("127.0.0.1:8080") as client:
        reply = await client.invoke("/echo.Echo/Echo", b"hi", timeout=1.0)
"""

from __future__ import annotations

import asyncio
from typing import Any, AsyncIterator, Mapping, Optional

from . import _native
from ._common import (
    await_native,
    send_async,
    check_address,
    check_max_message_size,
    check_metadata,
    check_rpc,
    check_timeout,
    decode,
    decoder,
    encode,
    track,
)
from ._server import AsyncServerStream, ServerContext, _ServerBase
from .errors import Unavailable

__all__ = ["Client", "ClientStream", "Server", "AsyncServerStream", "ServerContext", "connect"]


class ClientStream:
    """An asyncio streaming call: ``await send(msg)``, ``await close_send()``,
    ``await recv()`` (None at the end) or ``async for``, ``cancel()``. As an
    async context manager, an unfinished stream is cancelled on exit."""

    __slots__ = ("_native", "_decode", "__weakref__")

    def __init__(self, native: Any, response_type: Any = None) -> None:
        self._native = native
        self._decode = decoder(response_type)

    @property
    def id(self) -> int:
        return self._native.id

    @property
    def finished(self) -> bool:
        return self._native.finished

    async def send(self, message: Any) -> None:
        """Sends one message (bytes or a protobuf message); waits only for
        flow-control credit."""
        await send_async(self._native, encode(message, "message"))

    async def close_send(self) -> None:
        """Tells the server no more messages will be sent."""
        self._native.close_send()

    async def recv(self) -> Any:
        """The next response, or None once the server finished sending."""
        ready, data = self._native.poll_recv()
        if not ready:
            data = await await_native(self._native.recv_async)
        return decode(data, self._decode)

    def cancel(self) -> None:
        """Cancels the call; the connection stays usable."""
        self._native.cancel()

    def __aiter__(self) -> "ClientStream":
        return self

    async def __anext__(self) -> Any:
        item = await self.recv()
        if item is None:
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> "ClientStream":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        if not self._native.finished:
            self._native.cancel()


class Client:
    """An asyncio DRPC client connection.

    ``await drpc.aio.connect(addr)``, or ``async with drpc.aio.Client(addr) as
    c``, or ``c = drpc.aio.Client(addr); await c.connect()``. Options as for
    :class:`drpc.Client`.
    """

    def __init__(
        self,
        address: str,
        *,
        sequential: bool = False,
        max_message_size: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        flow_control: bool = False,
    ) -> None:
        self._address = check_address(address)
        if not isinstance(sequential, bool):
            raise TypeError("sequential must be a bool")
        if not isinstance(flow_control, bool):
            raise TypeError("flow_control must be a bool")
        self._flow_control = flow_control
        self._sequential = sequential
        self._max = check_max_message_size(max_message_size)
        self._connect_timeout = check_timeout(connect_timeout, "connect_timeout")
        self._native: Any = None

    async def connect(self) -> "Client":
        """Connects (a no-op when connected); returns self."""
        if self._native is None:
            self._native = await await_native(
                lambda cb: _native.NativeConn.connect_async(
                    self._address, cb, self._sequential, self._max, self._connect_timeout, self._flow_control
                )
            )
            track(self)
        return self

    def _conn(self) -> Any:
        if self._native is None:
            raise Unavailable("not connected: await client.connect() first")
        return self._native

    @property
    def address(self) -> str:
        return self._address

    @property
    def sequential(self) -> bool:
        return self._sequential

    @property
    def closed(self) -> bool:
        return self._native is not None and self._native.closed

    async def invoke(
        self,
        rpc: str,
        request: Any,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> Any:
        """A unary call; see :meth:`drpc.Client.invoke`."""
        dec = decoder(response_type)
        conn = self._conn()
        args = (check_rpc(rpc), encode(request))
        md, to = check_metadata(metadata), check_timeout(timeout)
        data = await await_native(lambda cb: conn.unary_async(args[0], args[1], cb, md, to))
        return decode(data, dec)

    async def stream(
        self,
        rpc: str,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> ClientStream:
        """Opens a streaming call; ``timeout`` applies to the whole call."""
        decoder(response_type)
        conn = self._conn()
        name, md, to = check_rpc(rpc), check_metadata(metadata), check_timeout(timeout)
        native = await await_native(lambda cb: conn.stream_async(name, cb, md, to))
        return ClientStream(native, response_type)

    async def server_stream(
        self,
        rpc: str,
        request: Any,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
    ) -> AsyncIterator[Any]:
        """A server-streaming call: sends ``request``, yields the responses."""
        s = await self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout)
        async with s:
            await s.send(request)
            await s.close_send()
            async for item in s:
                yield item

    async def close(self) -> None:
        """Closes the connection; calls in flight fail with Unavailable."""
        if self._native is not None:
            conn = self._native
            await await_native(conn.close_async)

    def _shutdown_at_exit(self) -> None:
        if self._native is not None:
            self._native.close()

    async def __aenter__(self) -> "Client":
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<drpc.aio.Client {self._address!r}>"


async def connect(
    address: str,
    *,
    sequential: bool = False,
    max_message_size: Optional[int] = None,
    connect_timeout: Optional[float] = None,
    flow_control: bool = False,
) -> Client:
    """Connects to ``address`` (``host:port`` or ``unix:/path``)."""
    client = Client(
        address,
        sequential=sequential,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout,
        flow_control=flow_control,
    )
    return await client.connect()


class Server(_ServerBase):
    """An asyncio DRPC server: ``async def`` handlers run on the event loop
    that called :meth:`start`; plain-function handlers on worker threads.

    Example::

        server = drpc.aio.Server()

        @server.unary("/echo.Echo/Echo")
        async def echo(request, context):
            return request

        addr = await server.start("127.0.0.1:0")
        ...
        await server.stop(grace=1.0)
    """

    async def start(self, address: str = "127.0.0.1:0") -> str:
        """Listens on ``address`` and serves in the background; returns the
        bound address."""
        check_address(address)
        self._loop = asyncio.get_running_loop()
        native = self._native
        bound = await await_native(lambda cb: native.start_async(address, cb))
        self._addresses.append(bound)
        track(self)
        return bound

    async def stop(self, grace: Optional[float] = None) -> None:
        """Stops accepting, lets running RPCs finish for up to ``grace``
        seconds, cancels the rest and closes every connection."""
        g = check_timeout(grace, "grace")
        native = self._native
        await await_native(lambda cb: native.stop_async(cb, g))

    async def wait_closed(self) -> None:  # pragma: no cover - convenience
        await asyncio.Event().wait()

    def _shutdown_at_exit(self) -> None:
        self._native.stop(0)

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.stop()
