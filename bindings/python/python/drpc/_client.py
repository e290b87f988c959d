"""The blocking client."""

from __future__ import annotations

import logging
from typing import Any, Generic, Iterable, Iterator, List, Mapping, Optional, Sequence, Type, TypeVar, overload

from . import _native
from .tls import ClientTLS, client_tls_args
from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    MessageType,
    Sendable,
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
    track,
)
from ._intercept import (
    CallRecord,
    ClientCallDetails,
    Link,
    StreamObserver,
    _links,
    check_traceparent,
    client_unary,
    run_chain,
)
from ._metrics import Metrics

#: The logger client-side problems (an interceptor's on_done raising) go to.
_log = logging.getLogger("drpc.client")

__all__ = ["Client", "ClientStream", "connect"]

M = TypeVar("M")


class ClientStream(Generic[M]):
    """A streaming call (client-, server- or bidi-streaming); its messages are
    ``M`` (bytes, or the ``response_type`` the call was opened with).

    ``send`` messages, ``close_send`` when done sending, ``recv`` until it
    returns None (or iterate). ``cancel`` gives up on the call. Used as a
    context manager, a stream that has not finished is cancelled on exit.
    Safe to use from several threads (e.g. one sending, one receiving).
    """

    __slots__ = ("_native", "_decode", "__weakref__")

    def __init__(self, native: _native.NativeStream, response_type: Any = None) -> None:
        self._native = native
        self._decode = decoder(response_type)

    @property
    def id(self) -> int:
        """The stream id on the connection."""
        return self._native.id

    @property
    def finished(self) -> bool:
        """Whether the call has ended (completed, failed or cancelled)."""
        return self._native.finished

    def send(self, message: Sendable) -> None:
        """Sends one message (bytes or a protobuf message)."""
        self._native.send(encode(message, "message"))

    def close_send(self) -> None:
        """Tells the server no more messages will be sent."""
        self._native.close_send()

    def recv(self, timeout: Optional[float] = None) -> Optional[M]:
        """The next response, or None once the server finished sending.
        Raises RpcError if the call failed. With ``timeout`` (seconds), raises
        ``TimeoutError`` if nothing arrived in time; the call goes on and the
        next ``recv()`` returns the next message (none is lost). Ctrl-C while
        waiting cancels the call."""
        data = self._native.recv(check_timeout(timeout))
        return decode(data, self._decode)  # type: ignore[no-any-return]

    def cancel(self) -> None:
        """Cancels the call; the connection stays usable."""
        self._native.cancel()

    def __iter__(self) -> Iterator[M]:
        return self

    def __next__(self) -> M:
        data = self._native.recv()
        if data is None:
            raise StopIteration
        return decode(data, self._decode)  # type: ignore[no-any-return]

    def __enter__(self) -> "ClientStream[M]":
        return self

    def __exit__(self, *exc: object) -> None:
        if not self._native.finished:
            self._native.cancel()


class _ObservedClientStream(ClientStream[M]):
    """A ClientStream of an intercepted call: counts what it moves and
    reports the call's outcome to the interceptors once it has ended."""

    __slots__ = ("_observer",)

    def __init__(self, native: _native.NativeStream, response_type: Any, observer: StreamObserver) -> None:
        super().__init__(native, response_type)
        self._observer = observer

    def send(self, message: Sendable) -> None:
        data = encode(message, "message")
        try:
            self._native.send(data)
        except BaseException as exc:
            self._observer.end(exc)
            raise
        self._observer.rec.sent(len(data))

    def _next(self, timeout: Optional[float]) -> Optional[bytes]:
        try:
            data = self._native.recv(timeout)
        except TimeoutError:
            raise  # only this wait gave up; the call goes on
        except BaseException as exc:
            self._observer.end(exc)
            raise
        if data is None:
            self._observer.end(None)
        else:
            self._observer.rec.received(len(data))
        return data

    def recv(self, timeout: Optional[float] = None) -> Optional[M]:
        return decode(self._next(check_timeout(timeout)), self._decode)  # type: ignore[no-any-return]

    def __next__(self) -> M:
        data = self._next(None)
        if data is None:
            raise StopIteration
        return decode(data, self._decode)  # type: ignore[no-any-return]

    def cancel(self) -> None:
        finished = self._native.finished
        self._native.cancel()
        if not finished:
            self._observer.end(_cancelled())

    def __exit__(self, *exc: object) -> None:
        if not self._native.finished:
            self.cancel()


def _cancelled() -> BaseException:
    from .errors import Cancelled

    return Cancelled("cancelled by the caller")


def open_observed_stream(
    links: List[Link],
    call: ClientCallDetails,
    raw: Any,
    response_type: Any,
    log: Any,
) -> Any:
    """Opens a stream through client interceptors; ``raw(call)`` opens the
    native stream as ``call`` says."""
    rec = CallRecord()
    observer = StreamObserver(links, call, rec, log)

    def last(_req: Any, c: ClientCallDetails) -> Any:
        return _ObservedClientStream(raw(c), response_type, observer)

    try:
        return run_chain(links, last, None, call, rec)
    except BaseException as exc:
        observer.end(exc)
        raise


class Client:
    """A DRPC client connection, blocking API.

    ``Client("host:port")`` or ``Client("unix:/path")`` connects at once
    (within ``connect_timeout`` seconds, default
    :data:`DEFAULT_CONNECT_TIMEOUT`; None waits as long as the OS does).
    Calls multiplex over the one connection, unless ``sequential=True`` (at
    most one call at a time, as a ``storj.io/drpc`` server needs).
    ``flow_control=True`` turns on cockroachdb/drpc-compatible per-stream flow
    control (only towards peers that speak it).

    A connection that is lost (server restarted, network failure) is redialled
    on the next call, unless ``reconnect=False``: calls in flight when it
    dropped fail with Unavailable; after a failed redial, calls fail fast with
    Unavailable until the next attempt is due (backoff from 0.2 s doubling to
    10 s, with jitter). A Client is safe to share between threads. Use it as a
    context manager or call ``close()``.

    ``tls=drpc.ClientTLS(ca="ca.pem")`` connects over TLS (a failed handshake
    raises Unavailable naming the TLS reason).

    ``interceptors``: :class:`drpc.ClientInterceptor` objects (or functions)
    wrapping every call, the first outermost. ``send_deadline=False`` keeps
    calls' deadlines off the wire (no ``drpc-timeout`` metadata).
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
        check_address(address)
        self._links = _links(interceptors, False, "calls of a drpc.Client")
        self._native = _native.NativeConn.connect(
            address,
            check_bool(sequential, "sequential"),
            check_max_message_size(max_message_size),
            check_timeout(connect_timeout, "connect_timeout"),
            check_bool(flow_control, "flow_control"),
            check_bool(reconnect, "reconnect"),
            **client_tls_args(tls),
            memory_budget=check_byte_count(memory_budget, "memory_budget", "no limit"),
            read_timeout=check_limit_timeout(read_timeout, "read_timeout"),
            send_deadline=check_bool(send_deadline, "send_deadline"),
        )
        track(self)

    @property
    def address(self) -> str:
        return self._native.address

    @property
    def sequential(self) -> bool:
        return self._native.sequential

    @property
    def closed(self) -> bool:
        """Whether the connection is down: closed by ``close()``, or lost and
        not redialled (yet)."""
        return self._native.closed

    @property
    def redials(self) -> int:
        """How many times the connection was redialled after being lost."""
        return self._native.redials

    @overload
    def invoke(
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
    def invoke(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: MessageType[M],
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> M: ...

    def invoke(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Any:
        """A unary call. ``request`` is bytes or a protobuf message; the
        response is bytes, or ``response_type.FromString(bytes)`` when given.
        ``timeout`` in seconds (DeadlineExceeded when it passes; the server
        learns the deadline through ``drpc-timeout``), ``metadata`` a dict of
        str sent as invoke metadata, ``traceparent`` a W3C trace context sent
        as is. Called from a server handler, the call also ends by the
        handler's deadline and carries its trace context. Ctrl-C cancels the
        call."""
        dec = decoder(response_type)
        if self._links:
            call = ClientCallDetails(
                check_rpc(rpc), "unary", self.address, dict(check_metadata(metadata) or {}), timeout, traceparent
            )
            return client_unary(self._links, call, request, self._raw_unary, dec, _log)
        data = self._native.unary(
            check_rpc(rpc),
            encode(request),
            check_metadata(metadata),
            check_timeout(timeout),
            current_call.get(),
            check_traceparent(traceparent),
        )
        return decode(data, dec)

    def _raw_unary(self, data: bytes, call: ClientCallDetails) -> bytes:
        return self._native.unary(
            check_rpc(call.rpc),
            data,
            check_metadata(call.metadata),
            check_timeout(call.timeout),
            current_call.get(),
            check_traceparent(call.traceparent),
        )

    def _raw_stream(self, call: ClientCallDetails) -> _native.NativeStream:
        return self._native.stream(
            check_rpc(call.rpc),
            check_metadata(call.metadata),
            check_timeout(call.timeout),
            current_call.get(),
            check_traceparent(call.traceparent),
        )

    def metrics(self) -> Metrics:
        """This client's connection counters (summed over its redials)."""
        return Metrics._from_native(self._native.metrics())

    @overload
    def stream(
        self,
        rpc: str,
        *,
        response_type: Optional[Type[bytes]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> ClientStream[bytes]: ...

    @overload
    def stream(
        self,
        rpc: str,
        *,
        response_type: MessageType[M],
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> ClientStream[M]: ...

    def stream(
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
                check_rpc(rpc), "stream", self.address, dict(check_metadata(metadata) or {}), timeout, traceparent
            )
            return open_observed_stream(self._links, call, self._raw_stream, response_type, _log)  # type: ignore[no-any-return]
        native = self._native.stream(
            check_rpc(rpc), check_metadata(metadata), check_timeout(timeout), current_call.get(), check_traceparent(traceparent)
        )
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
    ) -> Iterator[bytes]: ...

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
    ) -> Iterator[M]: ...

    def server_stream(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Iterator[Any]:
        """A server-streaming call: sends ``request``, yields the responses."""
        s = self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout, traceparent=traceparent)
        with s:
            s.send(request)
            s.close_send()
            yield from s

    @overload
    def client_stream(
        self,
        rpc: str,
        requests: Iterable[Sendable],
        *,
        response_type: Optional[Type[bytes]] = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Optional[bytes]: ...

    @overload
    def client_stream(
        self,
        rpc: str,
        requests: Iterable[Sendable],
        *,
        response_type: MessageType[M],
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Optional[M]: ...

    def client_stream(
        self,
        rpc: str,
        requests: Iterable[Sendable],
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
    ) -> Any:
        """A client-streaming call: sends every request, returns the response
        (None if the server sent none)."""
        with self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout, traceparent=traceparent) as s:
            for r in requests:
                s.send(r)
            s.close_send()
            return s.recv()

    def close(self) -> None:
        """Closes the connection; calls in flight fail with Unavailable, and
        it is not redialled."""
        self._native.close()

    def _shutdown_at_exit(self) -> None:
        self._native.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<drpc.Client {self.address!r}{' sequential' if self.sequential else ''}{' closed' if self.closed else ''}>"


def connect(
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
    return Client(
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
