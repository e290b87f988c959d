"""drpc: DRPC (storj.io/drpc-compatible RPC, with stream multiplexing) for
Python, over the Rust drpc-core.

Blocking API: :class:`Channel` (a client for the servers behind a target:
resolution, reconnects, load balancing, retries, health checks), :class:`Client`
(one connection), :class:`Server`; asyncio API: :mod:`drpc.aio`.
Errors: :class:`RpcError` and its per-code subclasses. Requests and responses
are bytes, or protobuf messages (anything with ``SerializeToString`` /
``FromString``).
"""

from . import errors
from ._client import Client, ClientStream, connect
from ._common import (
    DEFAULT_CONNECT_TIMEOUT,
    Message,
    MessageType,
    Sendable,
    configure_runtime,
    runtime_settings,
)
from ._native import DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_MEMORY_BUDGET, ServerContext
from ._intercept import ClientCallDetails, ClientInterceptor, Outcome, ServerInterceptor
from ._metrics import Histogram, Metrics, RpcStats
from ._server import LOGGER_NAME, AsyncServerStream, Server, ServerStream
from .tls import ClientTLS, ServerTLS
from .errors import (
    Aborted,
    AlreadyExists,
    Canceled,
    Cancelled,
    DataLoss,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    OutOfRange,
    PermissionDenied,
    ResourceExhausted,
    RpcError,
    StatusCode,
    Unauthenticated,
    Unavailable,
    Unimplemented,
    Unknown,
)

from . import aio  # noqa: E402  (drpc.aio)
from ._channel import Channel, Health, ServingStatus  # noqa: E402  (after aio: it uses aio.ClientStream)

__version__ = "0.1.0"

__all__ = [
    "ClientTLS",
    "ServerTLS",
    "Channel",
    "Health",
    "ServingStatus",
    "Client",
    "ClientStream",
    "connect",
    "Server",
    "ServerStream",
    "AsyncServerStream",
    "ServerContext",
    "ServerInterceptor",
    "ClientInterceptor",
    "ClientCallDetails",
    "Outcome",
    "Metrics",
    "RpcStats",
    "Histogram",
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_MEMORY_BUDGET",
    "configure_runtime",
    "runtime_settings",
    "DEFAULT_CONNECT_TIMEOUT",
    "LOGGER_NAME",
    "Message",
    "MessageType",
    "Sendable",
    "errors",
    "aio",
    "StatusCode",
    "RpcError",
    "Cancelled",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
]
