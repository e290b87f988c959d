"""TLS settings for :class:`drpc.Server` / :class:`drpc.Client` (and their
``drpc.aio`` twins). Every certificate, key or CA is PEM, given as ``bytes``
(the PEM itself) or ``str`` (a PEM file's path)."""

from dataclasses import dataclass
from typing import Any, Dict, Optional, Union

__all__ = ["ServerTLS", "ClientTLS", "Pem"]

Pem = Union[str, bytes]


@dataclass(frozen=True)
class ServerTLS:
    """A server's certificate chain (leaf first) and key; with ``client_ca``,
    mutual TLS: clients must present a certificate that CA signed, unless
    ``client_cert_required=False`` (then handlers see whether they did in
    ``context.peer``)."""

    cert: Pem
    key: Pem
    client_ca: Optional[Pem] = None
    client_cert_required: bool = True

    def _native_args(self) -> Dict[str, Any]:
        return {"cert": self.cert, "key": self.key, "client_ca": self.client_ca,
                "client_cert_required": bool(self.client_cert_required)}


@dataclass(frozen=True)
class ClientTLS:
    """What a client trusts (``ca``; None: the system's roots), the name the
    server's certificate must carry (``server_name``; default: the host of
    the address) and, for mutual TLS, its own ``cert`` and ``key``."""

    ca: Optional[Pem] = None
    server_name: Optional[str] = None
    cert: Optional[Pem] = None
    key: Optional[Pem] = None

    def _native_args(self) -> Dict[str, Any]:
        return {"tls": True, "tls_ca": self.ca, "tls_server_name": self.server_name,
                "tls_cert": self.cert, "tls_key": self.key}


def check_server_tls(tls: Optional[ServerTLS]) -> Optional[ServerTLS]:
    if tls is not None and not isinstance(tls, ServerTLS):
        raise TypeError(f"tls must be a drpc.ServerTLS or None, got {tls!r}")
    return tls


def client_tls_args(tls: Optional[ClientTLS]) -> Dict[str, Any]:
    if tls is None:
        return {}
    if not isinstance(tls, ClientTLS):
        raise TypeError(f"tls must be a drpc.ClientTLS or None, got {tls!r}")
    return tls._native_args()
