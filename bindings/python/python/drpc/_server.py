"""The server: handler registration shared by the blocking and asyncio
servers, and the blocking :class:`Server`.

Handler exceptions other than :class:`drpc.RpcError` are logged at ERROR, with
the traceback, on the ``drpc.server`` logger (the client sees Unknown)."""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import weakref
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Coroutine,
    Iterator,
    List,
    Optional,
    Sequence,
    TypeVar,
    Union,
    overload,
)

from . import _native
from ._common import (
    MessageType,
    Sendable,
    check_address,
    check_bool,
    check_byte_count,
    check_limit_timeout,
    check_max_message_size,
    check_rpc,
    check_timeout,
    decode,
    decoder,
    encode,
    current_call,
    recv_async,
    send_async,
    track,
)
from ._metrics import Metrics
from ._intercept import CallRecord, Link, _links, run_chain, server_end_code
from .errors import Cancelled, InvalidArgument, RpcError, Unavailable
from .tls import ServerTLS, check_server_tls

__all__ = ["Server", "ServerStream", "AsyncServerStream", "ServerContext", "LOGGER_NAME"]

#: The logger handler failures go to (at ERROR, with the traceback).
LOGGER_NAME = "drpc.server"
_log = logging.getLogger(LOGGER_NAME)

ServerContext = _native.ServerContext

H = TypeVar("H", bound=Callable[..., Any])

#: How long stop() waits for handlers between warnings that it still waits.
_HANDLER_WAIT_WARN_EVERY = 5.0


def _is_async(fn: Any) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    if inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # callable objects with async __call__
    return call is not None and (inspect.iscoroutinefunction(call) or inspect.isasyncgenfunction(call))


def _is_single_message(x: Any) -> bool:
    return isinstance(x, (bytes, bytearray, memoryview)) or hasattr(x, "SerializeToString")


def _encode_result(x: Any) -> Optional[bytes]:
    return None if x is None else encode(x, "handler result")


def _peer_address(ctx: Any) -> Optional[str]:
    try:
        address: Optional[str] = ctx.peer.get("address")
        return address
    except Exception:  # noqa: BLE001 - only for a log line
        return None


def _log_failure(rpc: str, exc: BaseException, ctx: Any) -> None:
    """Logs a handler's exception unless it is a deliberate RpcError: at
    ERROR with the rpc and the peer (also as ``extra`` fields ``rpc`` and
    ``peer`` for structured handlers)."""
    if isinstance(exc, RpcError):
        _log.debug("handler for %s failed with %s", rpc, exc)
    elif isinstance(exc, Exception):
        peer = _peer_address(ctx)
        _log.error(
            "handler for %s (peer %s) raised an exception", rpc, peer, exc_info=exc, extra={"rpc": rpc, "peer": peer}
        )


class ServerStream:
    """The stream a blocking streaming handler works on: ``recv`` requests
    (None at the end; or iterate), ``send`` responses. ``context`` is the
    call's :class:`ServerContext`."""

    __slots__ = ("_native", "_decode", "context")

    def __init__(self, native: _native.NativeStream, dec: Any) -> None:
        self._native = native
        self._decode = dec
        self.context: ServerContext = native.context

    def recv(self, timeout: Optional[float] = None) -> Any:
        """The next request, or None once the client finished sending. With
        ``timeout`` (seconds), raises ``TimeoutError`` if nothing arrived in
        time; nothing is lost, the next ``recv()`` returns the next request."""
        return decode(self._native.recv(check_timeout(timeout)), self._decode)

    def send(self, message: Sendable) -> None:
        """Sends one response (bytes or a protobuf message)."""
        self._native.send(encode(message, "response"))

    def __iter__(self) -> Iterator[Any]:
        while True:
            data = self._native.recv()
            if data is None:
                return
            yield decode(data, self._decode)


class AsyncServerStream:
    """The stream an ``async def`` streaming handler works on: ``await
    recv()`` (None at the end; or ``async for``), ``await send(msg)``. A
    cancelled ``recv()`` (``asyncio.wait_for``, ``task.cancel()``) loses
    nothing: the next ``recv()`` returns the message."""

    __slots__ = ("_native", "_decode", "context")

    def __init__(self, native: _native.NativeStream, dec: Any) -> None:
        self._native = native
        self._decode = dec
        self.context: ServerContext = native.context

    async def recv(self) -> Any:
        return decode(await recv_async(self._native), self._decode)

    async def send(self, message: Sendable) -> None:
        await send_async(self._native, encode(message, "response"))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        while True:
            item = await self.recv()
            if item is None:
                return
            yield item


class _CountingServerStream(ServerStream):
    """A ServerStream that counts what it moves, for interceptors' outcomes."""

    __slots__ = ("_rec",)

    def __init__(self, native: _native.NativeStream, dec: Any, rec: CallRecord) -> None:
        super().__init__(native, dec)
        self._rec = rec

    def recv(self, timeout: Optional[float] = None) -> Any:
        data = self._native.recv(check_timeout(timeout))
        if data is not None:
            self._rec.received(len(data))
        return decode(data, self._decode)

    def send(self, message: Sendable) -> None:
        data = encode(message, "response")
        self._native.send(data)
        self._rec.sent(len(data))

    def __iter__(self) -> Iterator[Any]:
        while True:
            data = self._native.recv()
            if data is None:
                return
            self._rec.received(len(data))
            yield decode(data, self._decode)


class _CountingAsyncServerStream(AsyncServerStream):
    """An AsyncServerStream that counts what it moves."""

    __slots__ = ("_rec",)

    def __init__(self, native: _native.NativeStream, dec: Any, rec: CallRecord) -> None:
        super().__init__(native, dec)
        self._rec = rec

    async def recv(self) -> Any:
        data = await recv_async(self._native)
        if data is not None:
            self._rec.received(len(data))
        return decode(data, self._decode)

    async def send(self, message: Sendable) -> None:
        data = encode(message, "response")
        await send_async(self._native, data)
        self._rec.sent(len(data))


def _report(links: List[Link], rec: CallRecord, rpc: str, failure: Optional[BaseException], ctx: Any) -> None:
    code, message = server_end_code(failure, ctx)
    rec.report(links, ctx, rec.outcome(rpc, code, message), _log)


def _send_all(stream: ServerStream, out: Any) -> None:
    if out is None:
        return
    if _is_single_message(out):
        stream.send(out)
        return
    for item in out:
        stream.send(item)


async def _send_all_async(stream: AsyncServerStream, out: Any) -> None:
    if hasattr(out, "__aiter__"):
        async for item in out:
            await stream.send(item)
        return
    if inspect.isawaitable(out):
        out = await out
    if out is None:
        return
    if _is_single_message(out):
        await stream.send(out)
        return
    for item in out:
        await stream.send(item)


class _AsyncHandle:
    """An async handler scheduled on an event loop from a runtime thread; the
    runtime calls ``cancel()`` (from any thread) when the RPC is cancelled.
    ``done`` is called exactly once, when the coroutine has really ended."""

    __slots__ = ("_loop", "_task", "_cancelled", "_tasks")

    def __init__(self, loop: asyncio.AbstractEventLoop, tasks: "weakref.WeakSet[asyncio.Task[Any]]") -> None:
        self._loop = loop
        self._task: Optional["asyncio.Task[Any]"] = None
        self._cancelled = False
        self._tasks = tasks

    def start(self, coro: Coroutine[Any, Any, Any], rpc: str, ctx: Any, done: Callable[[Any, Any], None]) -> None:
        def report(task: "asyncio.Task[Any]") -> None:
            if task.cancelled():
                done(None, Cancelled("handler cancelled"))
                return
            exc = task.exception()
            if exc is not None:
                _log_failure(rpc, exc, ctx)
                done(None, exc)
            else:
                done(task.result(), None)

        def create() -> None:
            if self._cancelled:
                coro.close()
                done(None, Cancelled("handler cancelled"))
                return
            self._task = self._loop.create_task(coro)
            self._tasks.add(self._task)
            self._task.add_done_callback(report)

        try:
            self._loop.call_soon_threadsafe(create)
        except RuntimeError:  # the loop closed meanwhile
            coro.close()
            done(None, Unavailable("the server's event loop is not running"))

    def _cancel_on_loop(self) -> None:
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    def cancel(self) -> None:
        try:
            self._loop.call_soon_threadsafe(self._cancel_on_loop)
        except RuntimeError:  # the loop is closed: the handler cannot run any more
            pass


class _NoHandle:
    def cancel(self) -> None:
        pass


class _ServerBase:
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
        if interceptors is not None and (isinstance(interceptors, (str, bytes)) or not isinstance(interceptors, Sequence)):
            raise TypeError(f"interceptors must be a list of interceptors, got {type(interceptors).__name__}")
        self._interceptors: List[Any] = list(interceptors or [])
        self._sync_links: Optional[List[Link]] = None
        self._async_links: Optional[List[Link]] = None
        self._native = _native.NativeServer(
            check_max_message_size(max_message_size),
            check_bool(flow_control, "flow_control"),
            memory_budget=check_byte_count(memory_budget, "memory_budget", "no limit"),
            connection_memory=check_byte_count(connection_memory, "connection_memory"),
            handshake_timeout=check_limit_timeout(handshake_timeout, "handshake_timeout"),
            idle_timeout=check_limit_timeout(idle_timeout, "idle_timeout"),
            read_timeout=check_limit_timeout(read_timeout, "read_timeout"),
            max_deadline=check_timeout(max_deadline, "max_deadline"),
            ignore_deadlines=check_bool(ignore_deadlines, "ignore_deadlines"),
        )
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._has_async = False
        self._addresses: List[str] = []
        # Running async handler tasks, so a handler stopping its own server
        # is not waited for by that stop.
        self._handler_tasks: "weakref.WeakSet[asyncio.Task[Any]]" = weakref.WeakSet()

    def _own_async_handlers(self) -> int:
        try:
            current = asyncio.current_task()
        except RuntimeError:  # no running loop in this thread
            return 0
        return 1 if current is not None and current in self._handler_tasks else 0

    # -- registration -------------------------------------------------------

    @overload
    def unary(
        self, rpc: str, handler: H, *, request_type: Optional[MessageType[Any]] = None, inline: bool = False
    ) -> H: ...

    @overload
    def unary(
        self,
        rpc: str,
        handler: None = None,
        *,
        request_type: Optional[MessageType[Any]] = None,
        inline: bool = False,
    ) -> Callable[[H], H]: ...

    def unary(
        self,
        rpc: str,
        handler: Optional[H] = None,
        *,
        request_type: Optional[MessageType[Any]] = None,
        inline: bool = False,
    ) -> Union[H, Callable[[H], H]]:
        """Registers ``handler(request, context) -> response`` for ``rpc``.
        The request is bytes, or ``request_type.FromString(bytes)``; the
        response bytes or a protobuf message. Plain functions run on a worker
        thread; ``async def`` handlers on the server's event loop. Without
        ``handler``, returns a decorator.

        ``inline=True`` (plain functions only) runs the handler on the drpc
        runtime thread that read the request instead of a handler thread:
        no hand-off to another thread and back, so a short handler answers
        several microseconds sooner. Only for handlers that return quickly
        without blocking (no sleeping, waiting on I/O or locks): while one
        runs, that runtime thread serves no other call or connection."""
        if inline and handler is not None and _is_async(handler):
            raise ValueError("inline=True is for plain-function handlers, not async def ones")
        return self._register("unary", rpc, handler, request_type, inline)

    @overload
    def server_streaming(self, rpc: str, handler: H, *, request_type: Optional[MessageType[Any]] = None) -> H: ...

    @overload
    def server_streaming(
        self, rpc: str, handler: None = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Callable[[H], H]: ...

    def server_streaming(
        self, rpc: str, handler: Optional[H] = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Union[H, Callable[[H], H]]:
        """Registers ``handler(request, context)`` returning an iterable of
        responses (a generator, or an async generator for ``async def``)."""
        return self._register("server", rpc, handler, request_type)

    @overload
    def client_streaming(self, rpc: str, handler: H, *, request_type: Optional[MessageType[Any]] = None) -> H: ...

    @overload
    def client_streaming(
        self, rpc: str, handler: None = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Callable[[H], H]: ...

    def client_streaming(
        self, rpc: str, handler: Optional[H] = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Union[H, Callable[[H], H]]:
        """Registers ``handler(requests, context) -> response``; ``requests``
        is an iterator (async iterator for ``async def`` handlers)."""
        return self._register("client", rpc, handler, request_type)

    @overload
    def bidi_streaming(self, rpc: str, handler: H, *, request_type: Optional[MessageType[Any]] = None) -> H: ...

    @overload
    def bidi_streaming(
        self, rpc: str, handler: None = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Callable[[H], H]: ...

    def bidi_streaming(
        self, rpc: str, handler: Optional[H] = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Union[H, Callable[[H], H]]:
        """Registers ``handler(requests, context)`` returning an iterable of
        responses; ``requests`` is an (async) iterator."""
        return self._register("bidi", rpc, handler, request_type)

    @overload
    def stream(self, rpc: str, handler: H, *, request_type: Optional[MessageType[Any]] = None) -> H: ...

    @overload
    def stream(
        self, rpc: str, handler: None = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Callable[[H], H]: ...

    def stream(
        self, rpc: str, handler: Optional[H] = None, *, request_type: Optional[MessageType[Any]] = None
    ) -> Union[H, Callable[[H], H]]:
        """Registers a raw streaming ``handler(stream)`` taking a
        :class:`ServerStream` (or :class:`AsyncServerStream` for ``async
        def``); whatever it returns or yields is sent."""
        return self._register("raw", rpc, handler, request_type)

    def _register(
        self, kind: str, rpc: str, handler: Optional[H], request_type: Any, inline: bool = False
    ) -> Union[H, Callable[[H], H]]:
        check_rpc(rpc)
        if not isinstance(inline, bool):
            raise TypeError(f"inline must be a bool, got {type(inline).__name__}")
        if handler is None:
            def decorate(fn: H) -> H:
                if inline and _is_async(fn):
                    raise ValueError("inline=True is for plain-function handlers, not async def ones")
                self._register(kind, rpc, fn, request_type, inline)
                return fn
            return decorate
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        dec = decoder(request_type, "request_type")
        is_async = _is_async(handler)
        links = self._links(is_async, rpc)
        if kind == "unary":
            self._native.add_unary(rpc, self._unary_entry(rpc, handler, dec, is_async, links), is_async, inline)
        else:
            self._native.add_stream(rpc, self._stream_entry(kind, rpc, handler, dec, is_async, links), is_async)
        if is_async:
            self._has_async = True
        return handler

    def _links(self, is_async: bool, rpc: str) -> List[Link]:
        """The interceptor chain for handlers of one kind (cached)."""
        links = self._async_links if is_async else self._sync_links
        if links is None:
            what = f"{'async def' if is_async else 'plain-function'} handler of {rpc}"
            links = _links(self._interceptors, is_async, what)
            if is_async:
                self._async_links = links
            else:
                self._sync_links = links
        return links

    def _unary_entry(self, rpc: str, fn: Any, dec: Any, is_async: bool, links: List[Link]) -> Callable[..., Any]:
        if not is_async and not links:
            def entry(data: bytes, ctx: Any) -> Optional[bytes]:
                token = current_call.set(ctx)
                try:
                    return _encode_result(fn(decode(data, dec), ctx))
                except BaseException as exc:
                    _log_failure(rpc, exc, ctx)
                    raise
                finally:
                    current_call.reset(token)
            return entry

        if not is_async:
            def entry_intercepted(data: bytes, ctx: Any) -> Optional[bytes]:
                token = current_call.set(ctx)
                rec = CallRecord()
                rec.received(len(data))
                failure: Optional[BaseException] = None
                try:
                    out = _encode_result(run_chain(links, fn, decode(data, dec), ctx, rec))
                    rec.sent(0 if out is None else len(out))
                    return out
                except BaseException as exc:
                    failure = exc
                    _log_failure(rpc, exc, ctx)
                    raise
                finally:
                    current_call.reset(token)
                    _report(links, rec, rpc, failure, ctx)
                    failure = None  # no frame -> exception -> traceback -> frame cycle
            return entry_intercepted

        if not links:
            async def run(data: bytes, ctx: Any) -> Optional[bytes]:
                current_call.set(ctx)  # the task's own context
                return _encode_result(await fn(decode(data, dec), ctx))
        else:
            async def last(req: Any, ctx: Any) -> Any:
                return await fn(req, ctx)

            async def run(data: bytes, ctx: Any) -> Optional[bytes]:
                current_call.set(ctx)
                rec = CallRecord()
                rec.received(len(data))
                failure: Optional[BaseException] = None
                try:
                    out = _encode_result(await run_chain(links, last, decode(data, dec), ctx, rec))
                    rec.sent(0 if out is None else len(out))
                    return out
                except BaseException as exc:
                    failure = exc
                    raise
                finally:
                    _report(links, rec, rpc, failure, ctx)
                    failure = None  # no frame -> exception -> traceback -> frame cycle

        def entry_async(data: bytes, ctx: Any, done: Any) -> Any:
            return self._schedule(rpc, run(data, ctx), ctx, done)

        return entry_async

    def _stream_entry(
        self, kind: str, rpc: str, fn: Any, dec: Any, is_async: bool, links: List[Link]
    ) -> Callable[..., Any]:
        # What the chain ends in: the handler, called as for its kind.
        if kind == "raw":
            def handler(req: Any, ctx: Any) -> Any:
                return fn(req)
        else:
            handler = fn

        if not is_async:
            def entry(native: _native.NativeStream) -> None:
                rec = CallRecord() if links else None
                s = ServerStream(native, dec) if rec is None else _CountingServerStream(native, dec, rec)
                ctx = s.context
                token = current_call.set(ctx)
                failure: Optional[BaseException] = None

                def call(req: Any) -> Any:
                    return handler(req, ctx) if rec is None else run_chain(links, handler, req, ctx, rec)

                try:
                    if kind == "server":
                        req = s.recv()
                        if req is None:
                            raise InvalidArgument("server-streaming call without a request")
                        _send_all(s, call(req))
                    elif kind == "client":
                        resp = call(iter(s))
                        if resp is not None:
                            s.send(resp)
                    elif kind == "bidi":
                        _send_all(s, call(iter(s)))
                    else:
                        _send_all(s, call(s))
                except BaseException as exc:
                    if rec is not None:
                        failure = exc
                    _log_failure(rpc, exc, ctx)
                    raise
                finally:
                    current_call.reset(token)
                    if rec is not None:
                        _report(links, rec, rpc, failure, ctx)
                        # Holding the exception would keep this frame (and the
                        # handler's generator, whose cleanup ends the call's
                        # bookkeeping) alive until the cycle collector runs.
                        failure = None
            return entry

        async def last(req: Any, ctx: Any) -> Any:
            out = handler(req, ctx)
            if inspect.isawaitable(out) and not hasattr(out, "__aiter__"):
                out = await out
            return out

        async def run(s: AsyncServerStream) -> None:
            ctx = s.context
            current_call.set(ctx)
            rec = s._rec if isinstance(s, _CountingAsyncServerStream) else None
            failure: Optional[BaseException] = None

            async def call(req: Any) -> Any:
                if rec is None:
                    return await last(req, ctx)
                return await run_chain(links, last, req, ctx, rec)

            try:
                if kind == "server":
                    req = await s.recv()
                    if req is None:
                        raise InvalidArgument("server-streaming call without a request")
                    await _send_all_async(s, await call(req))
                elif kind == "client":
                    resp = await call(s.__aiter__())
                    if resp is not None:
                        await s.send(resp)
                elif kind == "bidi":
                    await _send_all_async(s, await call(s.__aiter__()))
                else:
                    await _send_all_async(s, await call(s))
            except BaseException as exc:
                if rec is not None:
                    failure = exc
                raise
            finally:
                if rec is not None:
                    _report(links, rec, rpc, failure, ctx)
                    # See the blocking entry: no reference cycle through the
                    # exception, so the handler's async generator is closed now.
                    failure = None

        def entry_async(native: _native.NativeStream, done: Any) -> Any:
            s = AsyncServerStream(native, dec) if not links else _CountingAsyncServerStream(native, dec, CallRecord())
            return self._schedule(rpc, run(s), s.context, done)

        return entry_async

    def _schedule(self, rpc: str, coro: Coroutine[Any, Any, Any], ctx: Any, done: Callable[[Any, Any], None]) -> Any:
        """Runs an async handler's coroutine on the server's loop (called from a
        runtime thread); returns a handle whose cancel() cancels it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            done(None, Unavailable("the server's event loop is not running"))
            return _NoHandle()
        handle = _AsyncHandle(loop, self._handler_tasks)
        handle.start(coro, rpc, ctx, done)
        return handle

    def _wait_for_handlers(self, include_async: bool) -> None:
        """Blocks until the handlers have returned, warning now and then."""
        waited = 0.0
        while not self._native.wait_handlers(_HANDLER_WAIT_WARN_EVERY, include_async):
            waited += _HANDLER_WAIT_WARN_EVERY
            _log.warning(
                "stop: still waiting for %d handler(s) to return after %.0f s "
                "(a plain-function handler cannot be interrupted: check context.is_cancelled())",
                self._native.running_handlers(),
                waited,
            )

    # -- state --------------------------------------------------------------

    @property
    def addresses(self) -> List[str]:
        """Addresses the server listens on."""
        return list(self._addresses)

    @property
    def active_rpcs(self) -> int:
        """RPCs in progress now."""
        return self._native.active_rpcs()

    @property
    def running_handlers(self) -> int:
        """Handler invocations (functions or coroutines) that have not returned."""
        return self._native.running_handlers()

    @property
    def connections(self) -> int:
        """Open connections."""
        return self._native.connections()

    def metrics(self) -> Metrics:
        """The server's counters, summed over its connections (closed ones
        included), with a latency histogram per rpc; see :class:`drpc.Metrics`."""
        return Metrics._from_native(self._native.metrics())

    def reload_tls(self, tls: ServerTLS) -> None:
        """Takes a new certificate, key or client CA on every TLS address,
        for connections accepted from now on (established ones keep theirs).
        On error nothing changes."""
        checked = check_server_tls(tls)
        if checked is None:
            raise TypeError("reload_tls needs a drpc.ServerTLS")
        self._native.reload_tls(**checked._native_args())


class Server(_ServerBase):
    """A DRPC server, blocking API.

    Register handlers, then ``start(address)`` (returns the bound address;
    port 0 picks one), ``wait_for_termination()`` if the program has nothing
    else to do, and ``stop(grace)``. Plain-function handlers run on worker
    threads; ``async def`` handlers run on an event loop thread the server
    owns. Serves multiplexing and sequential clients alike.
    ``flow_control=True`` turns on per-stream flow control (off by default:
    it is not negotiated, and sequential peers reject its frames).

    ``interceptors``: :class:`drpc.ServerInterceptor` objects (or functions)
    wrapping every plain-function handler, and :class:`drpc.aio.ServerInterceptor`
    ones the ``async def`` handlers; the first is outermost. A client's
    deadline (its ``drpc-timeout``) is the handler's ``context.deadline``; when
    it passes the call is cancelled and the client gets DeadlineExceeded.
    ``max_deadline`` (seconds) caps the deadlines accepted;
    ``ignore_deadlines=True`` ignores them.

    Example::

        server = drpc.Server()
        server.unary("/echo.Echo/Echo", lambda req, ctx: req)
        addr = server.start("127.0.0.1:0")
        ...
        server.stop(grace=1.0)
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
        self._loop_thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        self._started = False
        self._terminated = threading.Event()

    def _ensure_loop(self) -> None:
        with self._lock:
            if self._loop is not None:
                return
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    try:
                        tasks = asyncio.all_tasks(loop)
                        for t in tasks:
                            t.cancel()
                        if tasks:
                            loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
                    finally:
                        loop.close()

            t = threading.Thread(target=run, name="drpc-server-loop", daemon=True)
            t.start()
            ready.wait()
            self._loop, self._loop_thread = loop, t

    def start(self, address: str = "127.0.0.1:0", *, tls: Optional[ServerTLS] = None) -> str:
        """Listens on ``address`` (``host:port`` or ``unix:/path``) and serves
        in the background; returns the bound address. May be called more than
        once to listen on several addresses. With ``tls`` (a
        :class:`drpc.ServerTLS`) the address serves TLS; handlers read the
        peer's verified identity in ``context.peer``."""
        check_address(address)
        tls = check_server_tls(tls)
        if self._terminated.is_set():
            raise RuntimeError("the server was stopped; create a new one")
        if self._has_async:
            self._ensure_loop()
        bound = self._native.start(address) if tls is None else self._native.start_tls(address, **tls._native_args())
        self._addresses.append(bound)
        self._started = True
        track(self)
        return bound

    def stop(self, grace: Optional[float] = None) -> None:
        """Stops accepting, lets running RPCs finish for up to ``grace``
        seconds (default: none), then cancels the rest (their contexts report
        cancellation, their streams fail with Unavailable, async handlers get
        ``CancelledError``) and closes every connection. Returns once every
        handler has returned: Python cannot stop a running function, so a
        plain-function handler that ignores cancellation is waited for (with
        a warning on the ``drpc.server`` logger every 5 s)."""
        self._native.stop(check_timeout(grace, "grace"))
        with self._lock:
            loop, t = self._loop, self._loop_thread
        # An async handler calling stop() blocks the loop its peers need.
        on_loop = t is threading.current_thread()
        self._wait_for_handlers(include_async=not on_loop)
        with self._lock:
            self._loop = self._loop_thread = None
        if loop is not None and t is not None:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
            if not on_loop:
                t.join(timeout=5.0)
        self._terminated.set()

    def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        """Blocks until the server is stopped (by ``stop()`` from another
        thread, or at interpreter exit) or ``timeout`` seconds passed; returns
        True if it stopped. Ctrl-C interrupts the wait."""
        timeout = check_timeout(timeout)
        return self._terminated.wait(timeout)

    def _shutdown_at_exit(self) -> None:
        self.stop(0)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
