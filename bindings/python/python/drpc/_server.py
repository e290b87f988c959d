"""The server: handler registration shared by the blocking and asyncio
servers, and the blocking :class:`Server`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import logging
import threading
from typing import Any, AsyncIterator, Callable, Iterator, Optional, TypeVar

from . import _native
from ._common import (
    await_native,
    send_async,
    check_address,
    check_max_message_size,
    check_rpc,
    check_timeout,
    decode,
    decoder,
    encode,
    track,
)
from .errors import Cancelled, InvalidArgument, RpcError, Unavailable

__all__ = ["Server", "ServerStream", "AsyncServerStream", "ServerContext"]

_log = logging.getLogger("drpc")

ServerContext = _native.ServerContext

H = TypeVar("H", bound=Callable[..., Any])


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


class ServerStream:
    """The stream a blocking streaming handler works on: ``recv`` requests
    (None at the end; or iterate), ``send`` responses. ``context`` is the
    call's :class:`ServerContext`."""

    __slots__ = ("_native", "_decode", "context")

    def __init__(self, native: Any, dec: Any) -> None:
        self._native = native
        self._decode = dec
        self.context: ServerContext = native.context

    def recv(self) -> Any:
        """The next request, or None once the client finished sending."""
        return decode(self._native.recv(), self._decode)

    def send(self, message: Any) -> None:
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
    recv()`` (None at the end; or ``async for``), ``await send(msg)``."""

    __slots__ = ("_native", "_decode", "context")

    def __init__(self, native: Any, dec: Any) -> None:
        self._native = native
        self._decode = dec
        self.context: ServerContext = native.context

    async def recv(self) -> Any:
        ready, data = self._native.poll_recv()
        if not ready:
            data = await await_native(self._native.recv_async)
        return decode(data, self._decode)

    async def send(self, message: Any) -> None:
        await send_async(self._native, encode(message, "response"))

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Any]:
        while True:
            item = await self.recv()
            if item is None:
                return
            yield item


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


def _report(done: Callable[[Any, Any], None], fut: "concurrent.futures.Future[Any]") -> None:
    if fut.cancelled():
        done(None, Cancelled("handler cancelled"))
        return
    exc = fut.exception()
    if exc is not None:
        if not isinstance(exc, RpcError):
            _log.debug("handler failed", exc_info=exc)
        done(None, exc)
    else:
        done(fut.result(), None)


class _NoHandle:
    def cancel(self) -> bool:
        return False


class _ServerBase:
    def __init__(self, *, max_message_size: Optional[int] = None, flow_control: bool = False) -> None:
        if not isinstance(flow_control, bool):
            raise TypeError("flow_control must be a bool")
        self._native = _native.NativeServer(check_max_message_size(max_message_size), flow_control)
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._has_async = False
        self._addresses: "list[str]" = []

    # -- registration -------------------------------------------------------

    def unary(self, rpc: str, handler: Any = None, *, request_type: Any = None) -> Any:
        """Registers ``handler(request, context) -> response`` for ``rpc``.
        The request is bytes, or ``request_type.FromString(bytes)``; the
        response bytes or a protobuf message. Plain functions run on a worker
        thread; ``async def`` handlers on the server's event loop. Without
        ``handler``, returns a decorator."""
        return self._register("unary", rpc, handler, request_type)

    def server_streaming(self, rpc: str, handler: Any = None, *, request_type: Any = None) -> Any:
        """Registers ``handler(request, context)`` returning an iterable of
        responses (a generator, or an async generator for ``async def``)."""
        return self._register("server", rpc, handler, request_type)

    def client_streaming(self, rpc: str, handler: Any = None, *, request_type: Any = None) -> Any:
        """Registers ``handler(requests, context) -> response``; ``requests``
        is an iterator (async iterator for ``async def`` handlers)."""
        return self._register("client", rpc, handler, request_type)

    def bidi_streaming(self, rpc: str, handler: Any = None, *, request_type: Any = None) -> Any:
        """Registers ``handler(requests, context)`` returning an iterable of
        responses; ``requests`` is an (async) iterator."""
        return self._register("bidi", rpc, handler, request_type)

    def stream(self, rpc: str, handler: Any = None, *, request_type: Any = None) -> Any:
        """Registers a raw streaming ``handler(stream)`` taking a
        :class:`ServerStream` (or :class:`AsyncServerStream` for ``async
        def``); whatever it returns or yields is sent."""
        return self._register("raw", rpc, handler, request_type)

    def _register(self, kind: str, rpc: str, handler: Any, request_type: Any) -> Any:
        check_rpc(rpc)
        if handler is None:
            def decorate(fn: H) -> H:
                self._register(kind, rpc, fn, request_type)
                return fn
            return decorate
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {type(handler).__name__}")
        dec = decoder(request_type, "request_type")
        is_async = _is_async(handler)
        if kind == "unary":
            self._native.add_unary(rpc, self._unary_entry(handler, dec, is_async), is_async)
        else:
            self._native.add_stream(rpc, self._stream_entry(kind, handler, dec, is_async), is_async)
        if is_async:
            self._has_async = True
        return handler

    def _unary_entry(self, fn: Any, dec: Any, is_async: bool) -> Callable[..., Any]:
        if not is_async:
            def entry(data: bytes, ctx: Any) -> Optional[bytes]:
                try:
                    return _encode_result(fn(decode(data, dec), ctx))
                except RpcError:
                    raise
                except Exception:
                    _log.debug("handler for %s failed", ctx.rpc, exc_info=True)
                    raise
            return entry

        async def run(data: bytes, ctx: Any) -> Optional[bytes]:
            return _encode_result(await fn(decode(data, dec), ctx))

        def entry_async(data: bytes, ctx: Any, done: Any) -> Any:
            return self._schedule(run(data, ctx), done)

        return entry_async

    def _stream_entry(self, kind: str, fn: Any, dec: Any, is_async: bool) -> Callable[..., Any]:
        if not is_async:
            def entry(native: Any) -> None:
                s = ServerStream(native, dec)
                ctx = s.context
                try:
                    if kind == "server":
                        req = s.recv()
                        if req is None:
                            raise InvalidArgument("server-streaming call without a request")
                        _send_all(s, fn(req, ctx))
                    elif kind == "client":
                        resp = fn(iter(s), ctx)
                        if resp is not None:
                            s.send(resp)
                    elif kind == "bidi":
                        _send_all(s, fn(iter(s), ctx))
                    else:
                        _send_all(s, fn(s))
                except RpcError:
                    raise
                except Exception:
                    _log.debug("handler for %s failed", ctx.rpc, exc_info=True)
                    raise
            return entry

        async def run(native: Any) -> None:
            s = AsyncServerStream(native, dec)
            ctx = s.context
            if kind == "server":
                req = await s.recv()
                if req is None:
                    raise InvalidArgument("server-streaming call without a request")
                await _send_all_async(s, fn(req, ctx))
            elif kind == "client":
                resp = fn(s.__aiter__(), ctx)
                if inspect.isawaitable(resp):
                    resp = await resp
                if resp is not None:
                    await s.send(resp)
            elif kind == "bidi":
                await _send_all_async(s, fn(s.__aiter__(), ctx))
            else:
                await _send_all_async(s, fn(s))

        def entry_async(native: Any, done: Any) -> Any:
            return self._schedule(run(native), done)

        return entry_async

    def _schedule(self, coro: Any, done: Any) -> Any:
        """Runs an async handler's coroutine on the server's loop (called from a
        runtime thread); returns a handle whose cancel() cancels it."""
        loop = self._loop
        if loop is None or loop.is_closed():
            coro.close()
            done(None, Unavailable("the server's event loop is not running"))
            return _NoHandle()
        cfut = asyncio.run_coroutine_threadsafe(coro, loop)
        cfut.add_done_callback(functools.partial(_report, done))
        return cfut

    # -- state --------------------------------------------------------------

    @property
    def addresses(self) -> "list[str]":
        """Addresses the server listens on."""
        return list(self._addresses)

    @property
    def active_rpcs(self) -> int:
        """RPC handlers running now."""
        return self._native.active_rpcs()

    @property
    def connections(self) -> int:
        """Open connections."""
        return self._native.connections()


class Server(_ServerBase):
    """A DRPC server, blocking API.

    Register handlers, then ``start(address)`` (returns the bound address;
    port 0 picks one) and later ``stop(grace)``. Plain-function handlers run
    on worker threads; ``async def`` handlers run on an event loop thread the
    server owns. Serves multiplexing and sequential clients alike.
    ``flow_control=True`` turns on per-stream flow control (off by default:
    it is not negotiated, and sequential peers reject its frames).

    Example::

        server = drpc.Server()
        server.unary("/echo.Echo/Echo", lambda req, ctx: req)
        addr = server.start("127.0.0.1:0")
        ...
        server.stop(grace=1.0)
    """

    def __init__(self, *, max_message_size: Optional[int] = None, flow_control: bool = False) -> None:
        super().__init__(max_message_size=max_message_size, flow_control=flow_control)
        self._loop_thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

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

    def start(self, address: str = "127.0.0.1:0") -> str:
        """Listens on ``address`` (``host:port`` or ``unix:/path``) and serves
        in the background; returns the bound address. May be called more than
        once to listen on several addresses."""
        check_address(address)
        if self._has_async:
            self._ensure_loop()
        bound = self._native.start(address)
        self._addresses.append(bound)
        track(self)
        return bound

    def stop(self, grace: Optional[float] = None) -> None:
        """Stops accepting, lets running RPCs finish for up to ``grace``
        seconds (default: none), cancels the rest, closes every connection."""
        self._native.stop(check_timeout(grace, "grace"))
        with self._lock:
            loop, t = self._loop, self._loop_thread
            self._loop = self._loop_thread = None
        if loop is not None and t is not None:
            try:
                loop.call_soon_threadsafe(loop.stop)
            except RuntimeError:
                pass
            if t is not threading.current_thread():
                t.join(timeout=5.0)

    def _shutdown_at_exit(self) -> None:
        self.stop(0)

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
