"""Interceptors (server and client, blocking and asyncio), the outcome they
observe, and the call details a client interceptor sees and may change.

An interceptor wraps every call of a server or client, in the order given
(the first is outermost)::

    class Auth(drpc.ServerInterceptor):
        def intercept(self, method, request, context):
            if context.metadata.get("authorization") != "Bearer s3cret":
                raise drpc.Unauthenticated("missing or bad token")   # handler not run
            return method(request, context)

        def on_done(self, context, outcome):                       # optional
            print(context.rpc, outcome.code, outcome.duration)

Plain functions (``intercept`` alone) work as interceptors too; an ``async
def`` one wraps ``async def`` handlers (``drpc.aio.ServerInterceptor``).
Nothing here runs for a server or client without interceptors.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .errors import RpcError, StatusCode, _code

__all__ = [
    "Outcome",
    "ServerInterceptor",
    "AsyncServerInterceptor",
    "ClientInterceptor",
    "AsyncClientInterceptor",
    "ClientCallDetails",
]


@dataclass(frozen=True)
class Outcome:
    """How a call ended, as an interceptor's ``on_done`` sees it.

    ``code`` is OK, the code of the :class:`RpcError` raised (by the handler,
    an interceptor or the transport), Unknown for any other exception,
    Cancelled or DeadlineExceeded for a call cancelled (by the peer, a
    timeout or its deadline). ``duration`` is in seconds from the first
    interceptor's start. Bytes and messages count serialized messages, from
    this side's point of view."""

    rpc: str
    code: Union[StatusCode, int]
    message: str
    duration: float
    bytes_sent: int
    bytes_received: int
    messages_sent: int
    messages_received: int

    @property
    def ok(self) -> bool:
        return self.code == StatusCode.OK


class ServerInterceptor:
    """Wraps the blocking (plain-function) handlers of a server.

    ``intercept(method, request, context)`` runs on the handler's thread,
    before the handler: ``method(request, context)`` calls the rest of the
    chain and the handler and returns its result. ``request`` is the decoded
    request of a unary or server-streaming rpc, the iterator of requests of a
    client-streaming or bidi rpc, the :class:`ServerStream` of a raw
    ``stream`` handler; the result is the response, or the iterable of
    responses of a server-streaming or bidi rpc. So an interceptor can

    - read ``context.rpc``, ``context.peer``, ``context.deadline``,
      ``context.traceparent``, and change ``context.metadata`` (a dict the
      handler sees),
    - reject the call by raising :class:`drpc.RpcError` (the handler never
      runs; the client gets that code and message),
    - wrap ``request`` or the result to observe or change messages.

    ``on_done(context, outcome)`` is called once the call has ended, for the
    interceptors whose ``intercept`` ran, innermost first. (A call cancelled
    before its handler started, such as an ``async def`` handler's call whose
    deadline passed while it waited for the event loop, runs none.)"""

    def intercept(self, method: Callable[[Any, Any], Any], request: Any, context: Any) -> Any:
        return method(request, context)

    def on_done(self, context: Any, outcome: Outcome) -> None:
        pass


class AsyncServerInterceptor:
    """:class:`ServerInterceptor` for ``async def`` handlers
    (``drpc.aio.ServerInterceptor``): ``await method(request, context)``
    returns the response, or the async iterator of responses of a
    server-streaming or bidi rpc; the requests of a client-streaming or bidi
    rpc are an async iterator. Runs on the server's event loop.

    A class may serve both kinds of handler by defining ``intercept`` (plain)
    and ``intercept_async`` (``async def``); one that only defines
    ``on_done`` (an observer) serves both kinds as it is."""

    async def intercept(self, method: Callable[[Any, Any], Awaitable[Any]], request: Any, context: Any) -> Any:
        return await method(request, context)

    def on_done(self, context: Any, outcome: Outcome) -> None:
        pass


@dataclass
class ClientCallDetails:
    """A client call as its interceptors see it; they may change
    ``metadata``, ``timeout`` and ``traceparent`` before calling on.
    ``kind`` is ``"unary"`` or ``"stream"``; ``address`` the server's (a
    Client's address or a Channel's target)."""

    rpc: str
    kind: str
    address: str
    metadata: Dict[str, str] = field(default_factory=dict)
    timeout: Optional[float] = None
    traceparent: Optional[str] = None


class ClientInterceptor:
    """Wraps the calls of a blocking client (``drpc.Client(...,
    interceptors=[...])``, also ``drpc.Channel``).

    ``intercept(method, request, call)``: ``call`` is the
    :class:`ClientCallDetails`; ``method(request, call)`` makes the call (with
    ``call`` as the interceptors left it) and returns the response, or for a
    streaming call (``request`` is None) the :class:`ClientStream`, which an
    interceptor may wrap. Raising rejects the call before it is sent.
    ``on_done(call, outcome)`` is called once the call has ended (a stream:
    when it was read to the end, failed or was cancelled)."""

    def intercept(self, method: Callable[[Any, ClientCallDetails], Any], request: Any, call: ClientCallDetails) -> Any:
        return method(request, call)

    def on_done(self, call: ClientCallDetails, outcome: Outcome) -> None:
        pass


class AsyncClientInterceptor:
    """:class:`ClientInterceptor` for asyncio clients
    (``drpc.aio.ClientInterceptor``): ``await method(request, call)``."""

    async def intercept(
        self, method: Callable[[Any, ClientCallDetails], Awaitable[Any]], request: Any, call: ClientCallDetails
    ) -> Any:
        return await method(request, call)

    def on_done(self, call: ClientCallDetails, outcome: Outcome) -> None:
        pass


# -- chains -------------------------------------------------------------------

#: (intercept function, on_done function or None), outermost first.
Link = Tuple[Callable[..., Any], Optional[Callable[[Any, Outcome], None]]]


def _links(interceptors: Any, want_async: bool, what: str) -> List[Link]:
    """The interceptors' functions for handlers (or calls) of one kind;
    TypeError for an interceptor that has none for that kind (a handler it
    cannot wrap would silently bypass it: an auth check, say)."""
    if interceptors is None:
        return []
    if isinstance(interceptors, (str, bytes)) or not isinstance(interceptors, Sequence):
        raise TypeError(f"interceptors must be a list of interceptors, got {type(interceptors).__name__}")
    links: List[Link] = []
    for icp in interceptors:
        fn = _intercept_fn(icp, want_async)
        if fn is None:
            kind = "async def" if want_async else "plain (blocking)"
            raise TypeError(
                f"interceptor {icp!r} has no {kind} intercept for the {what}; "
                f"give it {'an async intercept (or intercept_async)' if want_async else 'a plain intercept'}"
            )
        done = getattr(icp, "on_done", None)
        links.append((fn, done if callable(done) else None))
    return links


def _pass_through(method: Callable[[Any, Any], Any], request: Any, subject: Any) -> Any:
    return method(request, subject)


async def _pass_through_async(method: Callable[[Any, Any], Awaitable[Any]], request: Any, subject: Any) -> Any:
    return await method(request, subject)


def _overrides(icp: Any, name: str) -> bool:
    """Whether ``icp`` has its own ``name`` (not the base classes' pass-through)."""
    own = getattr(type(icp), name, None)
    if own is None:
        return False
    bases = (ServerInterceptor, AsyncServerInterceptor, ClientInterceptor, AsyncClientInterceptor)
    return all(own is not getattr(base, name, None) for base in bases)


def _intercept_fn(icp: Any, want_async: bool) -> Optional[Callable[..., Any]]:
    if inspect.isfunction(icp) or inspect.ismethod(icp):
        return icp if inspect.iscoroutinefunction(icp) == want_async else None
    fn = getattr(icp, "intercept", None)
    alt = getattr(icp, "intercept_async", None)
    if fn is None and alt is None and not callable(getattr(icp, "on_done", None)):
        raise TypeError(f"an interceptor needs an intercept or on_done method (or is a function), got {icp!r}")
    if not _overrides(icp, "intercept") and not _overrides(icp, "intercept_async"):
        # Only observes (on_done): it wraps handlers and calls of every kind.
        return _pass_through_async if want_async else _pass_through
    if want_async:
        if alt is not None and inspect.iscoroutinefunction(alt):
            return alt  # type: ignore[no-any-return]
        if fn is not None and inspect.iscoroutinefunction(fn):
            return fn  # type: ignore[no-any-return]
        return None
    if fn is not None and callable(fn) and not inspect.iscoroutinefunction(fn):
        return fn  # type: ignore[no-any-return]
    return None


class CallRecord:
    """One intercepted call's bookkeeping: when it began, how far into the
    chain it got, what it moved."""

    __slots__ = (
        "start",
        "entered",
        "bytes_sent",
        "bytes_received",
        "messages_sent",
        "messages_received",
        "reported",
        "_lock",
    )

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.entered = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self.reported = False
        # A stream may send on one thread and receive on another.
        self._lock = threading.Lock()

    def sent(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n
            self.messages_sent += 1

    def received(self, n: int) -> None:
        with self._lock:
            self.bytes_received += n
            self.messages_received += 1

    def claim_report(self) -> bool:
        """True for the one caller that reports the outcome."""
        with self._lock:
            if self.reported:
                return False
            self.reported = True
            return True

    def outcome(self, rpc: str, code: int, message: str) -> Outcome:
        return Outcome(
            rpc=rpc,
            code=_code(code),
            message=message,
            duration=time.monotonic() - self.start,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            messages_sent=self.messages_sent,
            messages_received=self.messages_received,
        )

    def report(self, links: List[Link], subject: Any, outcome: Outcome, log: Any) -> None:
        """``on_done`` of the interceptors that ran, innermost first; once."""
        if not self.claim_report():
            return
        for _, done in reversed(links[: self.entered]):
            if done is None:
                continue
            try:
                done(subject, outcome)
            except Exception:  # noqa: BLE001 - an observer must not change the call
                log.exception("interceptor on_done raised for %s", outcome.rpc)


def run_chain(links: List[Link], last: Callable[[Any, Any], Any], request: Any, subject: Any, rec: CallRecord) -> Any:
    """Calls ``links[0](method, request, subject)`` where each method calls the
    next interceptor and finally ``last``. Works for async chains too: the
    intercept functions are then coroutine functions, and so is ``last``."""

    def step(i: int) -> Callable[[Any, Any], Any]:
        if i == len(links):
            return last
        fn = links[i][0]
        following = step(i + 1)

        def method(req: Any, subj: Any) -> Any:
            rec.entered = i + 1
            return fn(following, req, subj)

        return method

    return step(0)(request, subject)


def error_code(exc: BaseException) -> Tuple[int, str]:
    """The code and message a failed call ends with, from its exception."""
    if isinstance(exc, RpcError):
        return int(exc.code), exc.message
    text = str(exc)
    return int(StatusCode.UNKNOWN), text or type(exc).__name__


def server_end_code(exc: Optional[BaseException], context: Any) -> Tuple[int, str]:
    """A server call's code: its exception's, unless the call was cancelled
    (peer cancel: Cancelled; its deadline passed: DeadlineExceeded)."""
    if context.is_cancelled():
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            return int(StatusCode.DEADLINE_EXCEEDED), "deadline exceeded (server)"
        if exc is None or not isinstance(exc, RpcError):
            return int(StatusCode.CANCELLED), "cancelled"
    if exc is None:
        return 0, ""
    return error_code(exc)


def client_end_code(exc: Optional[BaseException]) -> Tuple[int, str]:
    """A client call's code from how it ended."""
    if exc is None:
        return 0, ""
    if isinstance(exc, (KeyboardInterrupt, asyncio.CancelledError)):
        return int(StatusCode.CANCELLED), "cancelled by the caller"
    return error_code(exc)


def check_traceparent(value: Any) -> Optional[str]:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"traceparent must be a str ('00-<trace id>-<span id>-<flags>') or None, got {type(value).__name__}")
    return value


def client_unary(
    links: List[Link], call: ClientCallDetails, request: Any, raw: Callable[[bytes, ClientCallDetails], bytes], dec: Any, log: Any
) -> Any:
    """A blocking unary call through client interceptors; ``raw(data, call)``
    makes the call as ``call`` says."""
    from ._common import decode, encode

    rec = CallRecord()
    failure: Optional[BaseException] = None

    def last(req: Any, c: ClientCallDetails) -> Any:
        data = encode(req)
        rec.sent(len(data))
        reply = raw(data, c)
        rec.received(len(reply))
        return decode(reply, dec)

    try:
        return run_chain(links, last, request, call, rec)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        code, message = client_end_code(failure)
        failure = None  # no frame -> exception -> traceback -> frame cycle
        rec.report(links, call, rec.outcome(call.rpc, code, message), log)


async def client_unary_async(
    links: List[Link],
    call: ClientCallDetails,
    request: Any,
    raw: Callable[[bytes, ClientCallDetails], Awaitable[bytes]],
    dec: Any,
    log: Any,
) -> Any:
    """:func:`client_unary` for asyncio clients."""
    from ._common import decode, encode

    rec = CallRecord()
    failure: Optional[BaseException] = None

    async def last(req: Any, c: ClientCallDetails) -> Any:
        data = encode(req)
        rec.sent(len(data))
        reply = await raw(data, c)
        rec.received(len(reply))
        return decode(reply, dec)

    try:
        return await run_chain(links, last, request, call, rec)
    except BaseException as exc:
        failure = exc
        raise
    finally:
        code, message = client_end_code(failure)
        failure = None  # no frame -> exception -> traceback -> frame cycle
        rec.report(links, call, rec.outcome(call.rpc, code, message), log)


class StreamObserver:
    """Reports an intercepted client stream's outcome once it has ended."""

    __slots__ = ("links", "call", "rec", "log")

    def __init__(self, links: List[Link], call: ClientCallDetails, rec: CallRecord, log: Any) -> None:
        self.links = links
        self.call = call
        self.rec = rec
        self.log = log

    def end(self, failure: Optional[BaseException]) -> None:
        if self.rec.reported:  # cheap check first; report() decides under the lock
            return
        code, message = client_end_code(failure)
        self.rec.report(self.links, self.call, self.rec.outcome(self.call.rpc, code, message), self.log)
