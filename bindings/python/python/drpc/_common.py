"""Argument checking, message (de)serialization and message types shared by
the sync and asyncio layers."""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import sys
import threading
import weakref
from typing import Any, Callable, Dict, Mapping, Optional, Protocol, TypeVar, Union

#: The server call whose handler runs in this context (its thread, or its
#: asyncio task and the tasks it starts): calls made from there inherit its
#: deadline and trace context.
current_call: "contextvars.ContextVar[Any]" = contextvars.ContextVar("drpc_current_call", default=None)

#: Seconds a connect may take before it fails with Unavailable (the default
#: of every client's ``connect_timeout``; pass None for no limit).
DEFAULT_CONNECT_TIMEOUT = 10.0


class Message(Protocol):
    """A message drpc can send: anything with ``SerializeToString()``, such as
    a protobuf message."""

    def SerializeToString(self) -> bytes: ...


#: A request or response as passed to drpc: bytes-like, or a :class:`Message`.
Sendable = Union[bytes, bytearray, memoryview, Message]

M_co = TypeVar("M_co", covariant=True)


class MessageType(Protocol[M_co]):
    """A message class drpc can decode into: anything with a
    ``FromString(bytes)`` constructor, such as a protobuf message class."""

    def FromString(self, s: bytes, /) -> M_co: ...


Decoder = Optional[Callable[[bytes], Any]]


def check_address(address: Any) -> str:
    if not isinstance(address, str):
        raise TypeError(f"address must be a str ('host:port' or 'unix:/path'), got {type(address).__name__}")
    if address.startswith("unix:"):
        if len(address) == len("unix:"):
            raise ValueError("unix address needs a path: 'unix:/path/to/socket'")
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"address must be 'host:port' or 'unix:/path', got {address!r}")
    return address


def check_rpc(rpc: Any) -> str:
    if not isinstance(rpc, str):
        raise TypeError(f"rpc must be a str like '/pkg.Service/Method', got {type(rpc).__name__}")
    if not rpc:
        raise ValueError("rpc must not be empty")
    return rpc


def check_metadata(metadata: Any) -> Optional[Dict[str, str]]:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping of str to str, got {type(metadata).__name__}")
    out: Dict[str, str] = {}
    for k, v in metadata.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError(
                f"metadata keys and values must be str, got {type(k).__name__}: {type(v).__name__}"
            )
        out[k] = v
    return out


def check_timeout(timeout: Any, name: str = "timeout") -> Optional[float]:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(timeout).__name__}")
    seconds = float(timeout)
    if seconds != seconds or seconds < 0:
        raise ValueError(f"{name} must be a non-negative number of seconds, got {seconds}")
    return seconds


def check_max_message_size(size: Any) -> Optional[int]:
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int):
        raise TypeError(f"max_message_size must be an int, got {type(size).__name__}")
    if size <= 0:
        raise ValueError(f"max_message_size must be positive, got {size}")
    return size


def check_byte_count(value: Any, name: str, zero_means: Optional[str] = None) -> Optional[int]:
    """A size in bytes or None (the default); 0 only when ``zero_means``
    says what it stands for (e.g. "no limit")."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int (bytes) or None, got {type(value).__name__}")
    if value < 0 or (value == 0 and zero_means is None):
        allowed = f"non-negative (0 means {zero_means})" if zero_means else "positive"
        raise ValueError(f"{name} must be {allowed}, got {value}")
    if value >= 1 << 63:
        raise ValueError(f"{name} is too large: {value}")
    return value


def check_limit_timeout(value: Any, name: str) -> Optional[float]:
    """A connection timeout in seconds (0 disables it) or None (the default)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds or None, got {type(value).__name__}")
    seconds = float(value)
    if seconds != seconds or seconds < 0 or seconds == float("inf"):
        raise ValueError(f"{name} must be a finite, non-negative number of seconds (0 disables it), got {seconds}")
    return seconds


def encode(message: Any, what: str = "request") -> bytes:
    """bytes-like objects pass through; protobuf messages (anything with
    SerializeToString) are serialized."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, (bytearray, memoryview)):
        return bytes(message)
    serialize = getattr(message, "SerializeToString", None)
    if serialize is None or not callable(serialize):
        raise TypeError(
            f"{what} must be bytes or a protobuf message (with SerializeToString), got {type(message).__name__}"
        )
    data = serialize()
    if not isinstance(data, bytes):
        raise TypeError(f"{type(message).__name__}.SerializeToString() returned {type(data).__name__}, not bytes")
    return data


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def decoder(message_type: Any, what: str = "response_type") -> Decoder:
    """The function turning received bytes into `message_type` (None: bytes)."""
    if message_type is None or message_type is bytes:
        return None
    from_string: object = getattr(message_type, "FromString", None)
    if from_string is None or not callable(from_string):
        raise TypeError(f"{what} must be a protobuf message class (with FromString) or None, got {message_type!r}")
    return from_string


def decode(data: Optional[bytes], dec: Decoder) -> Any:
    if data is None or dec is None:
        return data
    return dec(data)


# Objects to close at interpreter exit, so no runtime thread calls into a
# finalizing interpreter.
_live: "weakref.WeakSet[Any]" = weakref.WeakSet()
_live_lock = threading.Lock()


def track(obj: Any) -> None:
    with _live_lock:
        _live.add(obj)


@atexit.register
def _close_all() -> None:
    with _live_lock:
        objs = list(_live)
    for obj in objs:
        try:
            obj._shutdown_at_exit()
        except BaseException:  # noqa: BLE001 - best effort at exit
            pass
    try:
        from . import _native

        # Runtime threads only run short callbacks once every server has
        # stopped; still, never let finalization start while one is inside
        # Python: that aborts the process.
        waited = 0.0
        while not _native._quiesce(5.0):
            waited += 5.0
            sys.stderr.write(f"drpc: exit is waiting for runtime threads inside Python ({waited:.0f} s)\n")
    except BaseException:  # noqa: BLE001
        pass


async def recv_async(native: Any) -> Optional[bytes]:
    """Receives on a native stream without blocking the event loop.

    The message is taken only by ``poll_recv()``, synchronously, in the step
    that returns it; the awaited part only waits until one is ready (and
    parks it in the stream). So a cancelled ``recv()`` (``wait_for``,
    ``task.cancel()``) leaves the message for the next one."""
    while True:
        ready, data = native.poll_recv()
        if ready:
            return data  # type: ignore[no-any-return]
        await await_native(native.wait_recv_async)


async def send_async(native: Any, data: bytes) -> None:
    """Sends on a native stream without blocking the event loop: at once
    when possible, else waiting for flow-control credit in the background."""
    await await_native(lambda cb: native.send_nowait(data, cb))


def _future_and_callback(loop: asyncio.AbstractEventLoop) -> "tuple[asyncio.Future[Any], Callable[[Any, Any], None]]":
    """A future of ``loop`` and the thread-safe ``cb(value, exc)`` settling
    it. Made apart from the awaiting frame, so that frame can drop the
    future without breaking a callback still to come."""
    fut = loop.create_future()

    def settle(value: Any, exc: Any) -> None:
        if fut.done():
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(value)

    def callback(value: Any, exc: Any) -> None:
        try:
            loop.call_soon_threadsafe(settle, value, exc)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass

    return fut, callback


async def await_native(start: Callable[[Callable[[Any, Any], None]], Any]) -> Any:
    """Runs an extension ``*_async`` operation as an awaitable: ``start(cb)``
    begins it and returns a task with ``cancel()`` (or None when it finished
    at once); ``cb(value, exc)`` is called
    once from a runtime thread. Cancelling the awaiting coroutine cancels the
    operation (and so the call on the wire)."""
    fut, callback = _future_and_callback(asyncio.get_running_loop())
    task = start(callback)
    # The callback leads to the future too (see the end): not from this frame.
    del callback
    if task is None:  # finished synchronously; the callback is never called
        return None
    try:
        return await fut
    except BaseException:
        if not fut.done() or fut.cancelled():
            task.cancel()
        raise
    finally:
        # A failed future holds its exception, whose traceback holds this
        # frame, which holds the future: a cycle keeping every awaiting
        # frame alive (a cancelled handler's response generator, and the
        # cleanup its `finally`/`with` blocks owe) until the cycle collector
        # runs. Dropping this frame's references breaks it.
        del fut


def configure_runtime(*, worker_threads: Optional[int] = None, handler_threads: Optional[int] = None) -> None:
    """Sets drpc's thread counts; call it before the first Client or Server
    (afterwards it raises RuntimeError). None keeps a setting as it is.

    ``worker_threads``: the runtime threads (named ``drpc-worker``) that run
    all network I/O and asyncio callbacks. Default: the number of cores, or
    the environment variable ``DRPC_WORKER_THREADS``.

    ``handler_threads``: the most plain-function (sync) server handlers
    running at once, each on its own ``drpc-handler`` thread (started on
    demand, stopped after 10 s idle). Streaming handlers may hold at most
    three quarters of them, so unary calls always find the rest; a call that
    finds no thread free fails at once with ResourceExhausted. Default 1024,
    or the environment variable ``DRPC_HANDLER_THREADS``.
    """
    from . import _native

    for name, value in (("worker_threads", worker_threads), ("handler_threads", handler_threads)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
        if value <= 0 or value > 1 << 20:
            raise ValueError(f"{name} must be between 1 and {1 << 20}, got {value}")
    _native.configure_runtime(worker_threads, handler_threads)


def runtime_settings() -> "tuple[int, int]":
    """``(worker_threads, handler_threads)`` in effect. Starts the runtime,
    which fixes them (``configure_runtime`` raises from then on)."""
    from . import _native

    return _native.runtime_settings()
