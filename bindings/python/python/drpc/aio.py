"""The asyncio API: :class:`Client`, :class:`ClientStream` and :class:`Server`.

They share the extension's runtime with the blocking API; awaiting never
blocks the event loop, and cancelling an awaiting task (``asyncio.wait_for``,
``task.cancel()``) cancels the call on the wire, except for a stream's
``recv()``: cancelling it only abandons the wait, the stream goes on and the
next ``recv()`` returns the message (none is lost).

Example::

    async with drpc.aio.Client("127.0.0.1:8080") as client:
        reply = await client.invoke("/echo.Echo/Echo", b"hi", timeout=1.0)
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable as _AsyncIterableABC, Iterable as _IterableABC
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Generic,
    Iterable,
    List,
    Mapping,
    Optional,
    Sequence,
    Type,
    TypeVar,
    Union,
    overload,
)

from . import _native
from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    MessageType,
    Sendable,
    await_native,
    check_address,
    check_bool,
    check_byte_count,
    check_limit_timeout,
    check_max_message_size,
    check_metadata,
    check_rpc,
    check_timeout,
    current_call,
    decode,
    decoder,
    encode,
    recv_async,
    send_async,
    track,
)
from ._client import _cancelled
from ._intercept import (
    AsyncClientInterceptor as ClientInterceptor,
    AsyncServerInterceptor as ServerInterceptor,
    CallRecord,
    ClientCallDetails,
    Link,
    Outcome,
    StreamObserver,
    _links,
    check_traceparent,
    client_unary_async,
    run_chain,
)
from ._metrics import Metrics
import logging

from ._server import AsyncServerStream, ServerContext, _log, _ServerBase

_client_log = logging.getLogger("drpc.client")
from .errors import Unavailable
from .tls import ClientTLS, ServerTLS, check_server_tls, client_tls_args

__all__ = [
    "Channel",
    "Client",
    "ClientStream",
    "Server",
    "AsyncServerStream",
    "ServerContext",
    "connect",
    "ServerInterceptor",
    "ClientInterceptor",
    "ClientCallDetails",
    "Outcome",
]

M = TypeVar("M")


class ClientStream(Generic[M]):
    """An asyncio streaming call: ``await send(msg)``, ``await close_send()``,
    ``await recv()`` (None at the end) or ``async for``, ``cancel()``. As an
    async context manager, an unfinished stream is cancelled on exit.

    Cancelling a task awaiting ``recv()`` (``asyncio.wait_for(stream.recv(),
    t)``, ``task.cancel()``) leaves the stream as it was: the message that
    was on its way is returned by the next ``recv()``."""

    __slots__ = ("_native", "_decode", "__weakref__")

    def __init__(self, native: _native.NativeStream, response_type: Any = None) -> None:
        self._native = native
        self._decode = decoder(response_type)

    @property
    def id(self) -> int:
        return self._native.id

    @property
    def finished(self) -> bool:
        return self._native.finished

    async def send(self, message: Sendable) -> None:
        """Sends one message (bytes or a protobuf message); waits only for
        flow-control credit."""
        await send_async(self._native, encode(message, "message"))

    async def close_send(self) -> None:
        """Tells the server no more messages will be sent."""
        self._native.close_send()

    async def recv(self) -> Optional[M]:
        """The next response, or None once the server finished sending."""
        return decode(await recv_async(self._native), self._decode)  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Cancels the call; the connection stays usable."""
        self._native.cancel()

    def __aiter__(self) -> "ClientStream[M]":
        return self

    async def __anext__(self) -> M:
        item = await self.recv()
        if item is None:
            raise StopAsyncIteration
        return item

    async def __aenter__(self) -> "ClientStream[M]":
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self._native.finished:
            self._native.cancel()


class _ObservedClientStream(ClientStream[M]):
    """An asyncio ClientStream of an intercepted call: counts what it moves
    and reports the outcome to the interceptors once it has ended."""

    __slots__ = ("_observer",)

    def __init__(self, native: _native.NativeStream, response_type: Any, observer: StreamObserver) -> None:
        super().__init__(native, response_type)
        self._observer = observer

    async def send(self, message: Sendable) -> None:
        data = encode(message, "message")
        try:
            await send_async(self._native, data)
        except asyncio.CancelledError:
            raise  # only this wait was abandoned
        except BaseException as exc:
            self._observer.end(exc)
            raise
        self._observer.rec.sent(len(data))

    async def recv(self) -> Optional[M]:
        try:
            data = await recv_async(self._native)
        except asyncio.CancelledError:
            raise  # a cancelled recv() leaves the stream as it was
        except BaseException as exc:
            self._observer.end(exc)
            raise
        if data is None:
            self._observer.end(None)
        else:
            self._observer.rec.received(len(data))
        return decode(data, self._decode)  # type: ignore[no-any-return]

    def cancel(self) -> None:
        finished = self._native.finished
        self._native.cancel()
        if not finished:
            self._observer.end(_cancelled())

    async def __aexit__(self, *exc: object) -> None:
        if not self._native.finished:
            self.cancel()


class Client:
    """An asyncio DRPC client connection.

    ``await drpc.aio.connect(addr)``, or ``async with drpc.aio.Client(addr) as
    c``, or ``c = drpc.aio.Client(addr); await c.connect()``. Options as for
    :class:`drpc.Client`, including the redial of a lost connection on the
    next call (``reconnect=True``).
    """

    def __init__(
        self,
        address: str,
        *,
        sequential: bool = False,
        max_message_size: Optional[int] = None,
        connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
        flow_control: bool = False,
        reconnect: bool = True,
        tls: Optional[ClientTLS] = None,
        memory_budget: Optional[int] = None,
        read_timeout: Optional[float] = None,
        interceptors: Optional[Sequence[Any]] = None,
        send_deadline: bool = True,
    ) -> None:
        self._address = check_address(address)
        self._links = _links(interceptors, True, "calls of a drpc.aio.Client")
        self._send_deadline = check_bool(send_deadline, "send_deadline")
        self._tls = client_tls_args(tls)
        self._sequential = check_bool(sequential, "sequential")
        self._flow_control = check_bool(flow_control, "flow_control")
        self._reconnect = check_bool(reconnect, "reconnect")
        self._memory_budget = check_byte_count(memory_budget, "memory_budget", "no limit")
        self._read_timeout = check_limit_timeout(read_timeout, "read_timeout")
        self._max = check_max_message_size(max_message_size)
        self._connect_timeout = check_timeout(connect_timeout, "connect_timeout")
        self._native: Optional[_native.NativeConn] = None

    async def connect(self) -> "Client":
        """Connects (a no-op when connected); returns self."""
        if self._native is None:
            self._native = await await_native(
                lambda cb: _native.NativeConn.connect_async(
                    self._address,
                    cb,
                    self._sequential,
                    self._max,
                    self._connect_timeout,
                    self._flow_control,
                    self._reconnect,
                    **self._tls,
                    memory_budget=self._memory_budget,
                    read_timeout=self._read_timeout,
                    send_deadline=self._send_deadline,
                )
            )
            track(self)
        return self

    def _conn(self) -> _native.NativeConn:
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
        """Whether the connection is down: closed by ``close()``, or lost and
        not redialled (yet)."""
        return self._native is not None and self._native.closed

    @property
    def redials(self) -> int:
        """How many times the connection was redialled after being lost."""
        return 0 if self._native is None else self._native.redials

    @overload
    async def invoke(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Optional[Type[bytes]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> bytes: ...

    @overload
    async def invoke(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: MessageType[M],
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> M: ...

    async def invoke(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Any:
        """A unary call; see :meth:`drpc.Client.invoke`."""
        dec = decoder(response_type)
        if self._links:
            call = ClientCallDetails(
                check_rpc(rpc), "unary", self._address, dict(check_metadata(metadata) or {}), timeout, traceparent
            )
            return await client_unary_async(self._links, call, request, self._raw_unary, dec, _client_log)
        conn = self._conn()
        name, data = check_rpc(rpc), encode(request)
        md, to, tp = check_metadata(metadata), check_timeout(timeout), check_traceparent(traceparent)
        parent = current_call.get()
        reply = await await_native(lambda cb: conn.unary_async(name, data, cb, md, to, parent, tp))
        return decode(reply, dec)

    async def _raw_unary(self, data: bytes, call: ClientCallDetails) -> bytes:
        conn = self._conn()
        name, md, to = check_rpc(call.rpc), check_metadata(call.metadata), check_timeout(call.timeout)
        tp, parent = check_traceparent(call.traceparent), current_call.get()
        reply: bytes = await await_native(lambda cb: conn.unary_async(name, data, cb, md, to, parent, tp))
        return reply

    async def _raw_stream(self, call: ClientCallDetails) -> _native.NativeStream:
        conn = self._conn()
        name, md, to = check_rpc(call.rpc), check_metadata(call.metadata), check_timeout(call.timeout)
        tp, parent = check_traceparent(call.traceparent), current_call.get()
        native: _native.NativeStream = await await_native(lambda cb: conn.stream_async(name, cb, md, to, parent, tp))
        return native

    def metrics(self) -> Metrics:
        """This client's connection counters (summed over its redials)."""
        return Metrics._from_native(self._conn().metrics())

    @overload
    async def stream(
        self,
        rpc: str,
        *,
        response_type: Optional[Type[bytes]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> ClientStream[bytes]: ...

    @overload
    async def stream(
        self,
        rpc: str,
        *,
        response_type: MessageType[M],
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> ClientStream[M]: ...

    async def stream(
        self,
        rpc: str,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> ClientStream[Any]:
        """Opens a streaming call; ``timeout`` applies to the whole call."""
        decoder(response_type)
        if self._links:
            call = ClientCallDetails(
                check_rpc(rpc), "stream", self._address, dict(check_metadata(metadata) or {}), timeout, traceparent
            )
            return await open_observed_stream_async(self._links, call, self._raw_stream, response_type, _client_log)  # type: ignore[no-any-return]
        conn = self._conn()
        name, md, to = check_rpc(rpc), check_metadata(metadata), check_timeout(timeout)
        tp, parent = check_traceparent(traceparent), current_call.get()
        native = await await_native(lambda cb: conn.stream_async(name, cb, md, to, parent, tp))
        return ClientStream(native, response_type)

    @overload
    def server_stream(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Optional[Type[bytes]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> AsyncIterator[bytes]: ...

    @overload
    def server_stream(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: MessageType[M],
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> AsyncIterator[M]: ...

    async def server_stream(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> AsyncIterator[Any]:
        """A server-streaming call: sends ``request``, yields the responses."""
        s = await self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout, traceparent=traceparent)
        async with s:
            await s.send(request)
            await s.close_send()
            async for item in s:
                yield item

    @overload
    async def client_stream(
        self,
        rpc: str,
        requests: Union[Iterable[Sendable], AsyncIterable[Sendable]],
        *,
        response_type: Optional[Type[bytes]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Optional[bytes]: ...

    @overload
    async def client_stream(
        self,
        rpc: str,
        requests: Union[Iterable[Sendable], AsyncIterable[Sendable]],
        *,
        response_type: MessageType[M],
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Optional[M]: ...

    async def client_stream(
        self,
        rpc: str,
        requests: Union[Iterable[Sendable], AsyncIterable[Sendable]],
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Any:
        """A client-streaming call: sends every request (from an iterable or
        an async iterable), returns the response (None if the server sent
        none)."""
        if not isinstance(requests, (_IterableABC, _AsyncIterableABC)) or isinstance(requests, (bytes, str)):
            raise TypeError(f"requests must be an iterable or an async iterable, got {type(requests).__name__}")
        s = await self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout, traceparent=traceparent)
        async with s:
            if isinstance(requests, _AsyncIterableABC):
                async for r in requests:
                    await s.send(r)
            else:
                for r in requests:
                    await s.send(r)
            await s.close_send()
            return await s.recv()

    async def close(self) -> None:
        """Closes the connection; calls in flight fail with Unavailable, and
        it is not redialled."""
        if self._native is not None:
            conn = self._native
            await await_native(conn.close_async)

    def _shutdown_at_exit(self) -> None:
        if self._native is not None:
            self._native.close()

    async def __aenter__(self) -> "Client":
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<drpc.aio.Client {self._address!r}>"


async def open_observed_stream_async(
    links: List[Link], call: ClientCallDetails, raw: Any, response_type: Any, log: Any
) -> Any:
    """Opens a stream through asyncio client interceptors; ``await
    raw(call)`` opens the native stream as ``call`` says."""
    rec = CallRecord()
    observer = StreamObserver(links, call, rec, log)

    async def last(_req: Any, c: ClientCallDetails) -> Any:
        return _ObservedClientStream(await raw(c), response_type, observer)

    try:
        return await run_chain(links, last, None, call, rec)
    except BaseException as exc:
        observer.end(exc)
        raise


async def connect(
    address: str,
    *,
    sequential: bool = False,
    max_message_size: Optional[int] = None,
    connect_timeout: Optional[float] = DEFAULT_CONNECT_TIMEOUT,
    flow_control: bool = False,
    reconnect: bool = True,
    tls: Optional[ClientTLS] = None,
    memory_budget: Optional[int] = None,
    read_timeout: Optional[float] = None,
    interceptors: Optional[Sequence[Any]] = None,
    send_deadline: bool = True,
) -> Client:
    """Connects to ``address`` (``host:port`` or ``unix:/path``)."""
    client = Client(
        address,
        sequential=sequential,
        max_message_size=max_message_size,
        connect_timeout=connect_timeout,
        flow_control=flow_control,
        reconnect=reconnect,
        tls=tls,
        memory_budget=memory_budget,
        read_timeout=read_timeout,
        interceptors=interceptors,
        send_deadline=send_deadline,
    )
    return await client.connect()


def _resolve(fut: "asyncio.Future[None]") -> None:
    if not fut.done():
        fut.set_result(None)


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

    def __init__(
        self,
        *,
        max_message_size: Optional[int] = None,
        flow_control: bool = False,
        memory_budget: Optional[int] = None,
        connection_memory: Optional[int] = None,
        handshake_timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        read_timeout: Optional[float] = None,
        interceptors: Optional[Sequence[Any]] = None,
        max_deadline: Optional[float] = None,
        ignore_deadlines: bool = False,
    ) -> None:
        super().__init__(
            max_message_size=max_message_size,
            flow_control=flow_control,
            memory_budget=memory_budget,
            connection_memory=connection_memory,
            handshake_timeout=handshake_timeout,
            idle_timeout=idle_timeout,
            read_timeout=read_timeout,
            interceptors=interceptors,
            max_deadline=max_deadline,
            ignore_deadlines=ignore_deadlines,
        )
        self._terminated = threading.Event()
        self._waiters: List["asyncio.Future[None]"] = []
        self._waiters_lock = threading.Lock()

    async def start(self, address: str = "127.0.0.1:0", *, tls: Optional[ServerTLS] = None) -> str:
        """Listens on ``address`` and serves in the background (over TLS
        with ``tls``); returns the bound address."""
        check_address(address)
        tls = check_server_tls(tls)
        if self._terminated.is_set():
            raise RuntimeError("the server was stopped; create a new one")
        self._loop = asyncio.get_running_loop()
        native = self._native
        if tls is None:
            bound: str = await await_native(lambda cb: native.start_async(address, cb))
        else:
            args = tls._native_args()
            bound = await await_native(lambda cb: native.start_tls_async(address, cb, **args))
        self._addresses.append(bound)
        track(self)
        return bound

    async def stop(self, grace: Optional[float] = None) -> None:
        """Stops accepting, lets running RPCs finish for up to ``grace``
        seconds, then cancels the rest and closes every connection. Returns
        once every handler has returned (see :meth:`drpc.Server.stop`)."""
        g = check_timeout(grace, "grace")
        native = self._native
        await await_native(lambda cb: native.stop_async(cb, g))
        waited = 0.0
        every = 5.0
        own = self._own_async_handlers()
        while not await await_native(lambda cb: native.wait_handlers_async(cb, every, True, own)):
            waited += every
            _log.warning(
                "stop: still waiting for %d handler(s) to return after %.0f s", native.running_handlers(), waited
            )
        self._set_terminated()

    def _set_terminated(self) -> None:
        self._terminated.set()
        with self._waiters_lock:
            waiters, self._waiters = self._waiters, []
        for fut in waiters:
            try:
                fut.get_loop().call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed
                pass

    async def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        """Waits until the server is stopped or ``timeout`` seconds passed;
        returns True if it stopped."""
        timeout = check_timeout(timeout)
        if self._terminated.is_set():
            return True
        fut: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()
        with self._waiters_lock:
            if self._terminated.is_set():
                return True
            self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
            return True
        except asyncio.TimeoutError:
            return False
        finally:
            with self._waiters_lock:
                if fut in self._waiters:
                    self._waiters.remove(fut)

    async def wait_closed(self) -> None:
        """Waits until the server is stopped."""
        await self.wait_for_termination()

    def _shutdown_at_exit(self) -> None:
        self._native.stop(0)
        # The loop async handlers ran on has usually ended by now: only the
        # plain-function handlers (on runtime threads) must be waited for.
        self._wait_for_handlers(include_async=False)
        self._set_terminated()

    async def __aenter__(self) -> "Server":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


from ._channel import AsyncChannel as Channel  # noqa: E402  (needs ClientStream above)
