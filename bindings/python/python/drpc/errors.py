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
from typing import Dict, Optional, Type, Union

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


class RpcError(Exception):
    """A failed RPC: ``code`` and ``message``.

    Raise it (or a subclass) from a handler to fail the call with that code:
    ``raise drpc.RpcError(7, "denied")`` or ``raise drpc.NotFound("no such key")``.
    """

    #: The code a subclass stands for (None on RpcError itself).
    CODE: Optional[StatusCode] = None

    def __init__(self, code: Union[int, str, None] = None, message: Optional[str] = None) -> None:
        if self.CODE is not None and not isinstance(code, int):
            # Subclass form: NotFound("message") or NotFound(message="...").
            if message is None:
                message = code  # type: ignore[assignment]
            code = int(self.CODE)
        if isinstance(code, bool) or not isinstance(code, int):
            raise TypeError(f"RpcError code must be an int, got {type(code).__name__}")
        if code < 0:
            raise ValueError(f"RpcError code must be non-negative, got {code}")
        if message is None:
            message = ""
        if not isinstance(message, str):
            raise TypeError(f"RpcError message must be a str, got {type(message).__name__}")
        super().__init__(code, message)
        self.code: Union[StatusCode, int] = _code(code)
        self.message: str = message

    def __str__(self) -> str:
        name = self.code.name if isinstance(self.code, StatusCode) else str(self.code)
        return f"{name}: {self.message}" if self.message else name

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={int(self.code)}, message={self.message!r})"

    def __reduce__(self):  # picklable across processes
        return (_from_status, (int(self.code), int(self.code), self.message))


def _subclass(name: str, code: StatusCode, doc: str) -> Type[RpcError]:
    cls = type(name, (RpcError,), {"CODE": code, "__doc__": doc, "__module__": __name__})
    return cls


Cancelled = _subclass("Cancelled", StatusCode.CANCELLED, "The call was cancelled (code 1).")
Canceled = Cancelled
Unknown = _subclass("Unknown", StatusCode.UNKNOWN, "Unknown error, e.g. a handler's plain exception (code 2).")
InvalidArgument = _subclass("InvalidArgument", StatusCode.INVALID_ARGUMENT, "Invalid argument (code 3).")
DeadlineExceeded = _subclass("DeadlineExceeded", StatusCode.DEADLINE_EXCEEDED, "The deadline passed (code 4).")
NotFound = _subclass("NotFound", StatusCode.NOT_FOUND, "Not found (code 5).")
AlreadyExists = _subclass("AlreadyExists", StatusCode.ALREADY_EXISTS, "Already exists (code 6).")
PermissionDenied = _subclass("PermissionDenied", StatusCode.PERMISSION_DENIED, "Permission denied (code 7).")
ResourceExhausted = _subclass(
    "ResourceExhausted", StatusCode.RESOURCE_EXHAUSTED, "Resource exhausted, e.g. a message over the size limit (code 8)."
)
FailedPrecondition = _subclass("FailedPrecondition", StatusCode.FAILED_PRECONDITION, "Failed precondition (code 9).")
Aborted = _subclass("Aborted", StatusCode.ABORTED, "Aborted (code 10).")
OutOfRange = _subclass("OutOfRange", StatusCode.OUT_OF_RANGE, "Out of range (code 11).")
Unimplemented = _subclass("Unimplemented", StatusCode.UNIMPLEMENTED, "The rpc is not implemented by the server (code 12).")
Internal = _subclass("Internal", StatusCode.INTERNAL, "Internal error (code 13).")
Unavailable = _subclass(
    "Unavailable", StatusCode.UNAVAILABLE, "The connection is closed, lost or refused (code 14; retryable)."
)
DataLoss = _subclass("DataLoss", StatusCode.DATA_LOSS, "Data loss (code 15).")
Unauthenticated = _subclass("Unauthenticated", StatusCode.UNAUTHENTICATED, "Unauthenticated (code 16).")

_BY_CODE: Dict[int, Type[RpcError]] = {
    int(c.CODE): c  # type: ignore[arg-type]
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
