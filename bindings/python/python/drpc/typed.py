"""Typed wrappers used by code that ``drpc.codegen`` generates (``*_drpc.py``).

They add message types to the untyped streaming API of :mod:`drpc` and
:mod:`drpc.aio`; the wire behaviour is exactly that of the wrapped objects.
"""

from __future__ import annotations

import collections.abc
from typing import (
    Any,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Generic,
    Iterable,
    Iterator,
    Mapping,
    Optional,
    Protocol,
    TypeVar,
    Union,
)

from . import aio
from ._client import Client, ClientStream
from ._common import MessageType, Sendable
from .errors import Internal, RpcError

__all__ = [
    "BidiStream",
    "AsyncBidiStream",
    "RequestIterator",
    "stream_unary",
    "stream_unary_async",
    "overrides",
]

Req = TypeVar("Req", bound=Sendable)
Resp = TypeVar("Resp")
T_co = TypeVar("T_co", covariant=True)


class RequestIterator(Protocol[T_co]):
    """The requests a client- or bidi-streaming servicer method receives.

    A plain method or generator gets an iterator (``for r in requests``), an
    ``async def`` method an async iterator (``async for r in requests``).
    This protocol has both halves, so a servicer may annotate the parameter
    as ``Iterator[Req]`` or ``AsyncIterator[Req]`` to match its kind.
    """

    def __iter__(self) -> Iterator[T_co]: ...

    def __next__(self) -> T_co: ...

    def __aiter__(self) -> AsyncIterator[T_co]: ...

    def __anext__(self) -> Awaitable[T_co]: ...


def _missing_response(rpc: str) -> RpcError:
    return Internal(f"{rpc}: the server ended the call without a response")


class BidiStream(Generic[Req, Resp]):
    """A typed bidi-streaming call (blocking API): ``send`` requests,
    ``close_send`` when done, ``recv`` responses until None (or iterate).
    As a context manager, an unfinished call is cancelled on exit."""

    __slots__ = ("_stream",)

    def __init__(self, stream: ClientStream[Resp]) -> None:
        self._stream = stream

    @property
    def raw(self) -> ClientStream[Resp]:
        """The untyped :class:`drpc.ClientStream`."""
        return self._stream

    @property
    def finished(self) -> bool:
        return self._stream.finished

    def send(self, request: Req) -> None:
        self._stream.send(request)

    def close_send(self) -> None:
        self._stream.close_send()

    def recv(self) -> Optional[Resp]:
        """The next response, or None once the server finished sending."""
        return self._stream.recv()

    def cancel(self) -> None:
        self._stream.cancel()

    def __iter__(self) -> Iterator[Resp]:
        return self

    def __next__(self) -> Resp:
        response = self.recv()
        if response is None:
            raise StopIteration
        return response

    def __enter__(self) -> "BidiStream[Req, Resp]":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stream.__exit__(*exc)


class AsyncBidiStream(Generic[Req, Resp]):
    """A typed bidi-streaming call (asyncio): ``await send(req)``, ``await
    close_send()``, ``await recv()`` (None at the end) or ``async for``.
    As an async context manager, an unfinished call is cancelled on exit."""

    __slots__ = ("_stream",)

    def __init__(self, stream: aio.ClientStream[Resp]) -> None:
        self._stream = stream

    @property
    def raw(self) -> aio.ClientStream[Resp]:
        """The untyped :class:`drpc.aio.ClientStream`."""
        return self._stream

    @property
    def finished(self) -> bool:
        return self._stream.finished

    async def send(self, request: Req) -> None:
        await self._stream.send(request)

    async def close_send(self) -> None:
        await self._stream.close_send()

    async def recv(self) -> Optional[Resp]:
        """The next response, or None once the server finished sending."""
        return await self._stream.recv()

    def cancel(self) -> None:
        self._stream.cancel()

    def __aiter__(self) -> AsyncIterator[Resp]:
        return self

    async def __anext__(self) -> Resp:
        response = await self.recv()
        if response is None:
            raise StopAsyncIteration
        return response

    async def __aenter__(self) -> "AsyncBidiStream[Req, Resp]":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._stream.__aexit__(*exc)


def stream_unary(
    client: Client,
    rpc: str,
    requests: Iterable[Req],
    response_type: MessageType[Resp],
    metadata: Optional[Mapping[str, str]],
    timeout: Optional[float],
) -> Resp:
    """A client-streaming call: sends every request, returns the one
    response (:class:`drpc.Internal` if the server sent none)."""
    with client.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout) as stream:
        for request in requests:
            stream.send(request)
        stream.close_send()
        response: Optional[Resp] = stream.recv()
    if response is None:
        raise _missing_response(rpc)
    return response


async def stream_unary_async(
    client: aio.Client,
    rpc: str,
    requests: Union[Iterable[Req], AsyncIterable[Req]],
    response_type: MessageType[Resp],
    metadata: Optional[Mapping[str, str]],
    timeout: Optional[float],
) -> Resp:
    """The asyncio client-streaming call; ``requests`` may be an iterable or
    an async iterable."""
    stream = await client.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout)
    async with stream:
        if isinstance(requests, collections.abc.AsyncIterable):
            async for request in requests:
                await stream.send(request)
        else:
            for request in requests:
                await stream.send(request)
        await stream.close_send()
        response: Optional[Resp] = await stream.recv()
    if response is None:
        raise _missing_response(rpc)
    return response


def overrides(servicer: object, base: type, method: str) -> bool:
    """Whether ``servicer`` implements ``method`` itself rather than
    inheriting the Unimplemented one of the generated ``base``."""
    return method in getattr(servicer, "__dict__", {}) or getattr(type(servicer), method, None) is not getattr(base, method)
