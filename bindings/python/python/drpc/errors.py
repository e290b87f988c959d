"""Errors raised by drpc calls, and raised by handlers to fail a call.

Every failed call raises :class:`RpcError` (or the subclass for its code), with
``.code`` (a :class:`StatusCode` when the code is known, else the raw int) and
``.message``. A server handler that raises an :class:`RpcError` fails its call
with that code and message; any other exception becomes ``Unknown`` with the
exception's text.

Codes use the gRPC numbering (DESIGN.md section 5).
"""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Dict, Optional, Tuple, Type, Union

__all__ = [
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


class StatusCode(enum.IntEnum):
    """DRPC status codes (gRPC numbering)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


StatusCode.CANCELED = StatusCode.CANCELLED  # type: ignore[attr-defined]


def _code(value: int) -> Union[StatusCode, int]:
    try:
        return StatusCode(value)
    except ValueError:
        return value


def _parse_code(code: object) -> int:
    """A code given as an int (or StatusCode) or a StatusCode name such as
    ``"NOT_FOUND"`` (any case; ``"CANCELED"`` too)."""
    if isinstance(code, bool):
        raise TypeError("RpcError code must be an int, a StatusCode or a StatusCode name, got bool")
    if isinstance(code, int):
        if code < 0:
            raise ValueError(f"RpcError code must be non-negative, got {code}")
        return int(code)
    if isinstance(code, str):
        name = code.strip().upper()
        if name == "CANCELED":
            name = "CANCELLED"
        try:
            return int(StatusCode[name])
        except KeyError:
            raise ValueError(f"{code!r} is not a StatusCode name (such as 'NOT_FOUND')") from None
    raise TypeError(f"RpcError code must be an int, a StatusCode or a StatusCode name, got {type(code).__name__}")


class RpcError(Exception):
    """A failed RPC: ``code`` and ``message``.

    Raise it (or a subclass) from a handler to fail the call with that code:
    ``raise drpc.RpcError(7, "denied")``, ``raise drpc.RpcError("NOT_FOUND",
    "no such key")``, ``raise drpc.RpcError(drpc.StatusCode.NOT_FOUND, ...)``
    or ``raise drpc.NotFound("no such key")``. ``RpcError(code, ...)`` with a
    known code makes an instance of the subclass for it, so ``except
    drpc.NotFound`` catches ``RpcError("NOT_FOUND")``.
    """

    #: The code a subclass stands for (None on RpcError itself).
    CODE: ClassVar[Optional[StatusCode]] = None

    code: Union[StatusCode, int]
    message: str
    _code_first: bool

    def __new__(cls, code: Union[int, str, None] = None, message: Optional[str] = None) -> "RpcError":
        target = cls
        if cls is RpcError:
            try:
                target = _BY_CODE.get(_parse_code(code), cls)
            except (TypeError, ValueError):
                pass  # __init__ reports it
        self = super().__new__(target)
        # Made through RpcError(code, ...): __init__ reads the first argument
        # as the code even on the subclass.
        self._code_first = target is not cls
        return self

    def __init__(self, code: Union[int, str, None] = None, message: Optional[str] = None) -> None:
        if self.CODE is not None and not getattr(self, "_code_first", False):
            # Subclass forms: NotFound("message"), NotFound(message="..."),
            # NotFound(5, "message"), NotFound("NOT_FOUND", "message").
            if message is None and not isinstance(code, int):
                message, code = code, None
            if code is None:
                code = int(self.CODE)
        if message is None:
            message = ""
        if not isinstance(message, str):
            raise TypeError(f"RpcError message must be a str, got {type(message).__name__}")
        number = _parse_code(code)
        if self.CODE is not None and number != int(self.CODE):
            raise ValueError(f"{type(self).__name__} has code {int(self.CODE)}, got {code!r}")
        super().__init__(number, message)
        self.code = _code(number)
        self.message = message

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, StatusCode) else str(self.code)
        return f"{name}: {self.message}" if self.message else name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={int(self.code)}, message={self.message!r})"

    def __reduce__(self) -> Tuple[Any, Tuple[int, int, str]]:  # picklable across processes
        return (_from_status, (int(self.code), int(self.code), self.message))


class Cancelled(RpcError):
    """The call was cancelled (code 1)."""

    CODE = StatusCode.CANCELLED


Canceled = Cancelled


class Unknown(RpcError):
    """Unknown error, e.g. a handler's plain exception (code 2)."""

    CODE = StatusCode.UNKNOWN


class InvalidArgument(RpcError):
    """Invalid argument (code 3)."""

    CODE = StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(RpcError):
    """The deadline passed (code 4)."""

    CODE = StatusCode.DEADLINE_EXCEEDED


class NotFound(RpcError):
    """Not found (code 5)."""

    CODE = StatusCode.NOT_FOUND


class AlreadyExists(RpcError):
    """Already exists (code 6)."""

    CODE = StatusCode.ALREADY_EXISTS


class PermissionDenied(RpcError):
    """Permission denied (code 7)."""

    CODE = StatusCode.PERMISSION_DENIED


class ResourceExhausted(RpcError):
    """Resource exhausted, e.g. a message over the size limit (code 8)."""

    CODE = StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(RpcError):
    """Failed precondition (code 9)."""

    CODE = StatusCode.FAILED_PRECONDITION


class Aborted(RpcError):
    """Aborted (code 10)."""

    CODE = StatusCode.ABORTED


class OutOfRange(RpcError):
    """Out of range (code 11)."""

    CODE = StatusCode.OUT_OF_RANGE


class Unimplemented(RpcError):
    """The rpc is not implemented by the server (code 12)."""

    CODE = StatusCode.UNIMPLEMENTED


class Internal(RpcError):
    """Internal error (code 13)."""

    CODE = StatusCode.INTERNAL


class Unavailable(RpcError):
    """The connection is closed, lost or refused (code 14; retryable)."""

    CODE = StatusCode.UNAVAILABLE


class DataLoss(RpcError):
    """Data loss (code 15)."""

    CODE = StatusCode.DATA_LOSS


class Unauthenticated(RpcError):
    """Unauthenticated (code 16)."""

    CODE = StatusCode.UNAUTHENTICATED


_BY_CODE: Dict[int, Type[RpcError]] = {
    int(c.CODE): c
    for c in (
        Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists, PermissionDenied,
        ResourceExhausted, FailedPrecondition, Aborted, OutOfRange, Unimplemented, Internal, Unavailable,
        DataLoss, Unauthenticated,
    )
}


def _from_status(code: int, wire_code: int, message: str) -> RpcError:
    """The exception for a status (called by the extension)."""
    # A remote code this library does not know keeps its number.
    if wire_code not in (0, code) and wire_code not in _BY_CODE:
        return RpcError(wire_code, message)
    cls = _BY_CODE.get(code)
    if cls is None:
        return RpcError(code, message)
    return cls(message)
