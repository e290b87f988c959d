"""Type stubs for the drpc._native extension (PyO3 over drpc-core).

Most users want the wrappers in :mod:`drpc` and :mod:`drpc.aio` instead.
Callbacks ``cb(value, exc)`` of ``*_async`` methods are called once, from a
runtime thread, with exactly one of the two arguments not None.
"""

from typing import Any, Callable, Dict, List, Optional, Tuple, Union, final

_Callback = Callable[[Any, Optional[BaseException]], None]

__all__ = [
    "NativeConn",
    "NativeChannel",
    "NativeHealth",
    "NativeStream",
    "NativeServer",
    "ServerContext",
    "Completion",
    "Task",
    "_quiesce",
    "configure_runtime",
    "runtime_settings",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MEMORY_BUDGET",
]

DEFAULT_MAX_MESSAGE_SIZE: int
DEFAULT_MEMORY_BUDGET: int

@final
class Task:
    """A background operation started by an ``*_async`` method."""

    def cancel(self) -> None: ...
    def done(self) -> bool: ...

@final
class ServerContext:
    """What a server handler sees of its call besides the messages."""

    @property
    def rpc(self) -> str: ...
    @property
    def metadata(self) -> Dict[str, str]:
        """The invoke metadata, the same dict on every access (interceptors
        may change it for the handler)."""
    @property
    def stream_id(self) -> int: ...
    @property
    def deadline(self) -> Optional[float]:
        """When the call must be done, on the ``time.monotonic()`` clock."""
    def time_remaining(self) -> Optional[float]:
        """Seconds left until the deadline (0.0 once passed), or None."""
    @property
    def traceparent(self) -> Optional[str]:
        """The W3C trace context of this call's server span, or None."""
    @property
    def trace_id(self) -> Optional[str]: ...
    @property
    def tracestate(self) -> Optional[str]: ...
    @property
    def peer(self) -> Dict[str, Any]:
        """``address`` (str or None) and ``tls`` (None, or a dict: version,
        alpn, server_name, subject, dns_names, ip_addresses, uris, emails,
        certificates: the verified chain in DER, leaf first)."""
    def is_cancelled(self) -> bool: ...
    def wait_cancelled(self, timeout: Optional[float] = None) -> bool:
        """Blocks (GIL released) until the call is cancelled or ``timeout``
        seconds passed; returns whether it was cancelled."""
    def cancelled_async(self, callback: _Callback) -> Task: ...

@final
class NativeStream:
    @property
    def id(self) -> int: ...
    @property
    def finished(self) -> bool: ...
    @property
    def context(self) -> ServerContext: ...
    def send(self, data: bytes) -> None: ...
    def send_nowait(self, data: bytes, callback: _Callback) -> Optional[Task]: ...
    def close_send(self) -> None: ...
    def recv(self, timeout: Optional[float] = None) -> Optional[bytes]:
        """Blocks for the next message (None at the end); TimeoutError after
        ``timeout`` seconds, losing nothing."""
    def poll_recv(self) -> Tuple[bool, Optional[bytes]]:
        """``(True, message | None)`` when one is ready (taking it), else ``(False, None)``."""
    def wait_recv_async(self, callback: _Callback) -> Task:
        """Calls ``cb(None, None)`` once ``poll_recv()`` has something; cancelling loses nothing."""
    def cancel(self) -> None: ...

@final
class NativeConn:
    @staticmethod
    def connect(
        addr: str,
        sequential: bool = False,
        max_message_size: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        flow_control: bool = False,
        reconnect: bool = True,
        tls: bool = False,
        tls_ca: Optional[Union[str, bytes]] = None,
        tls_server_name: Optional[str] = None,
        tls_cert: Optional[Union[str, bytes]] = None,
        tls_key: Optional[Union[str, bytes]] = None,
        memory_budget: Optional[int] = None,
        read_timeout: Optional[float] = None,
        send_deadline: bool = True,
    ) -> "NativeConn": ...
    @staticmethod
    def connect_async(
        addr: str,
        callback: _Callback,
        sequential: bool = False,
        max_message_size: Optional[int] = None,
        connect_timeout: Optional[float] = None,
        flow_control: bool = False,
        reconnect: bool = True,
        tls: bool = False,
        tls_ca: Optional[Union[str, bytes]] = None,
        tls_server_name: Optional[str] = None,
        tls_cert: Optional[Union[str, bytes]] = None,
        tls_key: Optional[Union[str, bytes]] = None,
        memory_budget: Optional[int] = None,
        read_timeout: Optional[float] = None,
        send_deadline: bool = True,
    ) -> Task: ...
    @property
    def address(self) -> str: ...
    @property
    def sequential(self) -> bool: ...
    @property
    def closed(self) -> bool: ...
    @property
    def redials(self) -> int: ...
    def active_streams(self) -> int: ...
    def metrics(self) -> Dict[str, Any]: ...
    def unary(
        self,
        rpc: str,
        request: bytes,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> bytes: ...
    def unary_async(
        self,
        rpc: str,
        request: bytes,
        callback: _Callback,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> Task: ...
    def stream(
        self,
        rpc: str,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> NativeStream: ...
    def stream_async(
        self,
        rpc: str,
        callback: _Callback,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> Task: ...
    def close(self) -> None: ...
    def close_async(self, callback: _Callback) -> Task: ...

@final
class Completion:
    def __call__(self, result: Optional[bytes] = None, exc: Optional[BaseException] = None) -> None: ...

@final
class NativeServer:
    def __new__(
        cls,
        max_message_size: Optional[int] = None,
        flow_control: bool = False,
        memory_budget: Optional[int] = None,
        connection_memory: Optional[int] = None,
        handshake_timeout: Optional[float] = None,
        idle_timeout: Optional[float] = None,
        read_timeout: Optional[float] = None,
        max_deadline: Optional[float] = None,
        ignore_deadlines: bool = False,
    ) -> "NativeServer": ...
    def add_unary(self, name: str, func: Callable[..., Any], is_async: bool, inline: bool = False) -> None: ...
    def add_stream(self, name: str, func: Callable[..., Any], is_async: bool) -> None: ...
    def start(self, addr: str) -> str: ...
    def start_async(self, addr: str, callback: _Callback) -> Task: ...
    def start_tls(
        self,
        addr: str,
        cert: Union[str, bytes],
        key: Union[str, bytes],
        client_ca: Optional[Union[str, bytes]] = None,
        client_cert_required: bool = True,
    ) -> str: ...
    def start_tls_async(
        self,
        addr: str,
        callback: _Callback,
        cert: Union[str, bytes],
        key: Union[str, bytes],
        client_ca: Optional[Union[str, bytes]] = None,
        client_cert_required: bool = True,
    ) -> Task: ...
    def reload_tls(
        self,
        cert: Union[str, bytes],
        key: Union[str, bytes],
        client_ca: Optional[Union[str, bytes]] = None,
        client_cert_required: bool = True,
    ) -> None: ...
    def stop(self, grace: Optional[float] = None) -> None: ...
    def stop_async(self, callback: _Callback, grace: Optional[float] = None) -> Task: ...
    def wait_handlers(self, timeout: Optional[float] = None, include_async: bool = True, own_async: int = 0) -> bool:
        """Blocks until the handlers (but ``own_async`` async ones) have
        returned or ``timeout`` passed; whether they all returned."""
    def wait_handlers_async(
        self, callback: _Callback, timeout: Optional[float] = None, include_async: bool = True, own_async: int = 0
    ) -> Task: ...
    def running_handlers(self) -> int: ...
    def active_rpcs(self) -> int: ...
    def connections(self) -> int: ...
    def metrics(self) -> Dict[str, Any]: ...

def _quiesce(timeout: float = 2.0) -> bool:
    """At interpreter exit: stop runtime threads entering Python, wait for those inside."""

def configure_runtime(worker_threads: Optional[int] = None, handler_threads: Optional[int] = None) -> None:
    """Sets the runtime's thread counts before its first use (None keeps a
    value); RuntimeError once it has started."""

def runtime_settings() -> Tuple[int, int]:
    """``(worker_threads, handler_threads)`` in effect; starts the runtime."""

@final
class NativeChannel:
    """A client for the servers behind a target (drpc-channel)."""

    def __new__(
        cls,
        target: str,
        load_balancing: str = "round_robin",
        max_attempts: int = 3,
        initial_backoff: float = 0.05,
        max_backoff: float = 1.0,
        retry_budget: Optional[Tuple[float, float]] = ...,
        wait_for_ready: bool = False,
        health_check: Optional[str] = None,
        connect_backoff: Tuple[float, float] = ...,
        idle_timeout: float = 1800.0,
        tcp_keepalive: Optional[float] = ...,
        sequential: bool = False,
        max_message_size: Optional[int] = None,
        flow_control: bool = False,
        max_conns_per_endpoint: int = 1,
        resolve_interval: float = 30.0,
    ) -> "NativeChannel": ...
    @property
    def target(self) -> str: ...
    def ready(self, timeout: float) -> None: ...
    def stats(self) -> Dict[str, int]: ...
    def endpoints(self) -> List[Tuple[str, str]]: ...
    def unary(
        self,
        rpc: str,
        request: bytes,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        wait_for_ready: Optional[bool] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> bytes: ...
    def unary_async(
        self,
        rpc: str,
        request: bytes,
        callback: _Callback,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        wait_for_ready: Optional[bool] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> Task: ...
    def stream(
        self,
        rpc: str,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        wait_for_ready: Optional[bool] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> NativeStream: ...
    def stream_async(
        self,
        rpc: str,
        callback: _Callback,
        metadata: Optional[Dict[str, str]] = None,
        timeout: Optional[float] = None,
        wait_for_ready: Optional[bool] = None,
        parent: Optional[ServerContext] = None,
        traceparent: Optional[str] = None,
    ) -> Task: ...

@final
class NativeHealth:
    """grpc.health.v1 statuses served by a NativeServer."""

    def __new__(cls) -> "NativeHealth": ...
    def set_status(self, service: str, status: int) -> None: ...
    def status(self, service: str) -> Optional[int]: ...
    def shutdown(self) -> None: ...
    def register(self, server: NativeServer) -> None: ...
