"""Channels: a client for the servers behind a target (name resolution,
lazy connections with reconnect backoff, load balancing, retries, health
checks), blocking and asyncio, and the health service servers run."""

from __future__ import annotations

import enum
from typing import Any, AsyncIterator, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from . import _native
from ._client import ClientStream
from ._common import (
    Sendable,
    await_native,
    check_bool,
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
from ._client import _log, open_observed_stream
from ._intercept import ClientCallDetails, _links, check_traceparent, client_unary, client_unary_async
from .aio import ClientStream as AsyncClientStream, _client_log, open_observed_stream_async
from .errors import Unavailable

LOAD_BALANCING = ("round_robin", "pick_first", "power_of_two_choices")


def _wait(value: Any) -> Optional[bool]:
    return None if value is None else check_bool(value, "wait_for_ready")


class _ChannelBase:
    def __init__(
        self,
        target: str,
        *,
        load_balancing: str = "round_robin",
        max_attempts: int = 3,
        initial_backoff: float = 0.05,
        max_backoff: float = 1.0,
        retry_budget: Optional[Tuple[float, float]] = (10.0, 0.1),
        wait_for_ready: bool = False,
        health_check: Optional[str] = None,
        connect_backoff: Tuple[float, float] = (1.0, 120.0),
        idle_timeout: float = 1800.0,
        tcp_keepalive: Optional[float] = 60.0,
        sequential: bool = False,
        max_message_size: Optional[int] = None,
        flow_control: bool = False,
        max_conns_per_endpoint: int = 1,
        resolve_interval: float = 30.0,
        interceptors: Optional[Sequence[Any]] = None,
    ) -> None:
        self._links = _links(interceptors, isinstance(self, AsyncChannel), f"calls of a {type(self).__name__}")
        if not isinstance(target, str) or not target:
            raise TypeError(f"target must be a non-empty str, got {target!r}")
        if load_balancing not in LOAD_BALANCING:
            raise ValueError(f"load_balancing must be one of {LOAD_BALANCING}, got {load_balancing!r}")
        if health_check is not None and not isinstance(health_check, str):
            raise TypeError("health_check must be a service name (str) or None")
        self._sequential = check_bool(sequential, "sequential")
        self._native: Optional[_native.NativeChannel] = _native.NativeChannel(
            target,
            load_balancing,
            int(max_attempts),
            float(initial_backoff),
            float(max_backoff),
            retry_budget,
            check_bool(wait_for_ready, "wait_for_ready"),
            health_check,
            (float(connect_backoff[0]), float(connect_backoff[1])),
            float(idle_timeout),
            tcp_keepalive,
            self._sequential,
            check_max_message_size(max_message_size),
            check_bool(flow_control, "flow_control"),
            int(max_conns_per_endpoint),
            float(resolve_interval),
        )
        self._target = target
        track(self)

    def _channel(self) -> _native.NativeChannel:
        native = self._native
        if native is None:
            raise Unavailable("channel closed")
        return native

    @property
    def target(self) -> str:
        return self._target

    @property
    def sequential(self) -> bool:
        return self._sequential

    @property
    def closed(self) -> bool:
        return self._native is None

    def stats(self) -> Dict[str, int]:
        """Attempts (first tries and retries), retries, retries refused by
        the budget, and resolutions so far."""
        return self._channel().stats()

    def endpoints(self) -> List[Tuple[str, str]]:
        """``(address, state)`` per endpoint, in resolver order; states are
        idle, connecting, ready, not_serving and transient_failure."""
        return self._channel().endpoints()

    def close(self) -> None:
        """Releases the channel: later calls fail with Unavailable; calls in
        flight finish, then the connections close."""
        self._native = None

    def _shutdown_at_exit(self) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<drpc.{type(self).__name__} {self._target!r}{' closed' if self.closed else ''}>"


class Channel(_ChannelBase):
    """A client for the servers behind ``target``, blocking API; the way to
    call a service (:class:`Client` is one connection to one address).

    ``target`` is ``dns:///host:port`` (or ``host:port``: every address of
    the name, re-resolved every ``resolve_interval`` seconds and after
    failures), ``unix:/path``, ``ipv4:1.2.3.4:5,6.7.8.9:10`` or
    ``ipv6:[::1]:5,...``. Nothing connects until the first call. Lost
    connections reconnect with exponential backoff and jitter
    (``connect_backoff``: gRPC's 1 s growing to 120 s). Calls go to ready
    endpoints per ``load_balancing``; calls failing with Unavailable are
    retried up to ``max_attempts`` in all (unary calls, and streams while
    opening), within the call's one ``timeout`` and a ``retry_budget``
    ``(max_tokens, token_ratio)`` like gRPC's retry throttling. With no ready
    endpoint a call fails fast with Unavailable, or with
    ``wait_for_ready=True`` (per channel or per call) waits until its
    timeout. ``health_check="svc"`` ("" for the whole server) takes
    endpoints whose health service reports NOT_SERVING out of rotation.
    Safe to share between threads.
    """

    def invoke(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
        wait_for_ready: Optional[bool] = None,
    ) -> Any:
        """A unary call, as :meth:`Client.invoke`; retried per the policy."""
        dec = decoder(response_type)
        wait = _wait(wait_for_ready)
        if self._links:
            call = ClientCallDetails(check_rpc(rpc), "unary", self._target, dict(check_metadata(metadata) or {}), timeout, traceparent)
            return client_unary(self._links, call, request, lambda data, c: self._raw_unary(data, c, wait), dec, _log)
        data = self._channel().unary(
            check_rpc(rpc),
            encode(request),
            check_metadata(metadata),
            check_timeout(timeout),
            wait,
            current_call.get(),
            check_traceparent(traceparent),
        )
        return decode(data, dec)

    def _raw_unary(self, data: bytes, c: ClientCallDetails, wait: Optional[bool]) -> bytes:
        return self._channel().unary(
            check_rpc(c.rpc), data, check_metadata(c.metadata), check_timeout(c.timeout), wait,
            current_call.get(), check_traceparent(c.traceparent),
        )

    def _raw_stream(self, c: ClientCallDetails, wait: Optional[bool]) -> _native.NativeStream:
        return self._channel().stream(
            check_rpc(c.rpc), check_metadata(c.metadata), check_timeout(c.timeout), wait,
            current_call.get(), check_traceparent(c.traceparent),
        )

    def stream(
        self,
        rpc: str,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
        wait_for_ready: Optional[bool] = None,
    ) -> ClientStream[Any]:
        """Opens a streaming call on a ready endpoint (opening is retried;
        once open, failures are the caller's)."""
        decoder(response_type)
        wait = _wait(wait_for_ready)
        if self._links:
            call = ClientCallDetails(check_rpc(rpc), "stream", self._target, dict(check_metadata(metadata) or {}), timeout, traceparent)
            return open_observed_stream(self._links, call, lambda c: self._raw_stream(c, wait), response_type, _log)  # type: ignore[no-any-return]
        native = self._channel().stream(
            check_rpc(rpc), check_metadata(metadata), check_timeout(timeout), wait,
            current_call.get(), check_traceparent(traceparent),
        )
        return ClientStream(native, response_type)

    def server_stream(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
        wait_for_ready: Optional[bool] = None,
    ) -> Iterator[Any]:
        """A server-streaming call: sends ``request``, yields the responses."""
        s = self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout, traceparent=traceparent, wait_for_ready=wait_for_ready)
        with s:
            s.send(request)
            s.close_send()
            yield from s

    def client_stream(
        self,
        rpc: str,
        requests: Iterable[Sendable],
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
        wait_for_ready: Optional[bool] = None,
    ) -> Any:
        """A client-streaming call: sends every request, returns the response."""
        with self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout, traceparent=traceparent, wait_for_ready=wait_for_ready) as s:
            for r in requests:
                s.send(r)
            s.close_send()
            return s.recv()

    def ready(self, timeout: float = 30.0) -> None:
        """Starts connecting and blocks until an endpoint is ready
        (DeadlineExceeded after ``timeout`` seconds)."""
        self._channel().ready(float(timeout))

    def __enter__(self) -> "Channel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncChannel(_ChannelBase):
    """:class:`Channel` for asyncio (``drpc.aio.Channel``): the same options,
    awaitable calls; cancelling the awaiting task cancels the call."""

    async def invoke(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
        wait_for_ready: Optional[bool] = None,
    ) -> Any:
        dec = decoder(response_type)
        wait = _wait(wait_for_ready)
        if self._links:
            call = ClientCallDetails(check_rpc(rpc), "unary", self._target, dict(check_metadata(metadata) or {}), timeout, traceparent)
            return await client_unary_async(
                self._links, call, request, lambda data, c: self._raw_unary(data, c, wait), dec, _client_log
            )
        ch = self._channel()
        name, data = check_rpc(rpc), encode(request)
        md, to = check_metadata(metadata), check_timeout(timeout)
        parent, tp = current_call.get(), check_traceparent(traceparent)
        reply = await await_native(lambda cb: ch.unary_async(name, data, cb, md, to, wait, parent, tp))
        return decode(reply, dec)

    async def _raw_unary(self, data: bytes, c: ClientCallDetails, wait: Optional[bool]) -> bytes:
        ch = self._channel()
        name, md, to = check_rpc(c.rpc), check_metadata(c.metadata), check_timeout(c.timeout)
        parent, tp = current_call.get(), check_traceparent(c.traceparent)
        reply: bytes = await await_native(lambda cb: ch.unary_async(name, data, cb, md, to, wait, parent, tp))
        return reply

    async def _raw_stream(self, c: ClientCallDetails, wait: Optional[bool]) -> _native.NativeStream:
        ch = self._channel()
        name, md, to = check_rpc(c.rpc), check_metadata(c.metadata), check_timeout(c.timeout)
        parent, tp = current_call.get(), check_traceparent(c.traceparent)
        native: _native.NativeStream = await await_native(lambda cb: ch.stream_async(name, cb, md, to, wait, parent, tp))
        return native

    async def stream(
        self,
        rpc: str,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
        wait_for_ready: Optional[bool] = None,
    ) -> AsyncClientStream[Any]:
        decoder(response_type)
        wait = _wait(wait_for_ready)
        if self._links:
            call = ClientCallDetails(check_rpc(rpc), "stream", self._target, dict(check_metadata(metadata) or {}), timeout, traceparent)
            return await open_observed_stream_async(  # type: ignore[no-any-return]
                self._links, call, lambda c: self._raw_stream(c, wait), response_type, _client_log
            )
        ch = self._channel()
        name, md, to = check_rpc(rpc), check_metadata(metadata), check_timeout(timeout)
        parent, tp = current_call.get(), check_traceparent(traceparent)
        native = await await_native(lambda cb: ch.stream_async(name, cb, md, to, wait, parent, tp))
        return AsyncClientStream(native, response_type)

    async def server_stream(
        self,
        rpc: str,
        request: Sendable,
        *,
        response_type: Any = None,
        metadata: Optional[Mapping[str, str]] = None,
        timeout: Optional[float] = None,
        traceparent: Optional[str] = None,
        wait_for_ready: Optional[bool] = None,
    ) -> AsyncIterator[Any]:
        s = await self.stream(rpc, response_type=response_type, metadata=metadata, timeout=timeout, traceparent=traceparent, wait_for_ready=wait_for_ready)
        async with s:
            await s.send(request)
            await s.close_send()
            async for item in s:
                yield item

    async def __aenter__(self) -> "AsyncChannel":
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class ServingStatus(enum.IntEnum):
    """``grpc.health.v1.HealthCheckResponse.ServingStatus``."""

    UNKNOWN = 0
    SERVING = 1
    NOT_SERVING = 2
    SERVICE_UNKNOWN = 3


class Health:
    """Per-service health statuses a server reports with the
    ``grpc.health.v1.Health`` Check and Watch rpcs (``health.register(server)``
    before it starts). The whole server (``""``) starts SERVING. For a
    graceful shutdown: ``health.shutdown()`` (everything NOT_SERVING, so
    health-checking channels move away), wait a moment, then stop the server."""

    def __init__(self) -> None:
        self._native = _native.NativeHealth()

    def set_status(self, service: str, status: ServingStatus) -> None:
        self._native.set_status(service, int(status))

    def status(self, service: str = "") -> Optional[ServingStatus]:
        s = self._native.status(service)
        return None if s is None else ServingStatus(s)

    def shutdown(self) -> None:
        self._native.shutdown()

    def register(self, server: Any) -> None:
        """Serves these statuses on ``server`` (a :class:`drpc.Server` or
        :class:`drpc.aio.Server`, before it starts)."""
        self._native.register(server._native)
