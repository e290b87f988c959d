"""Typed snapshots of a server's or a client's counters (``server.metrics()``,
``client.metrics()``): what the Rust core counts, read in one go."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Mapping, Tuple

__all__ = ["Metrics", "RpcStats", "Histogram"]


@dataclass(frozen=True)
class Histogram:
    """A latency histogram with fixed exponential buckets: ``counts[i]``
    calls took at most ``bounds_us[i]`` microseconds (and more than the
    bound before); the last count is everything above the last bound."""

    bounds_us: Tuple[int, ...]
    counts: Tuple[int, ...]
    sum_us: int

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> Tuple[Tuple[float, int], ...]:
        """``(upper bound in seconds, calls at or below it)`` per bucket, the
        last bound ``inf``: Prometheus' ``le`` buckets."""
        out = []
        total = 0
        for i, n in enumerate(self.counts):
            total += n
            bound = self.bounds_us[i] / 1e6 if i < len(self.bounds_us) else float("inf")
            out.append((bound, total))
        return tuple(out)


@dataclass(frozen=True)
class RpcStats:
    """One rpc's calls on a server: how many ended, how many failed, and
    their latency."""

    rpc: str
    count: int
    failed: int
    latency: Histogram


@dataclass(frozen=True)
class Metrics:
    """Counters since the server or client was made (``active_*`` and
    ``queued_bytes``: now). ``streams_failed`` counts streams ended with an
    error, ``failed_by_code`` them by code; ``recv_blocked``: receives that
    had to wait for the peer (back-pressure), ``send_blocked``: sends that
    waited on the writer's cap. ``rpcs`` (server side) by rpc name."""

    bytes_sent: int
    bytes_received: int
    streams_opened: int
    streams_closed: int
    streams_failed: int
    failed_by_code: Mapping[int, int]
    active_streams: int
    recv_blocked: int
    send_blocked: int
    queued_bytes: int
    connections_opened: int
    active_connections: int
    rpcs: Mapping[str, RpcStats]

    @classmethod
    def _from_native(cls, raw: Mapping[str, Any]) -> "Metrics":
        rpcs: Dict[str, RpcStats] = {}
        for name, count, failed, bounds, counts, sum_us in raw["rpcs"]:
            rpcs[name] = RpcStats(name, count, failed, Histogram(tuple(bounds), tuple(counts), sum_us))
        scalars = {k: v for k, v in raw.items() if k not in ("rpcs", "failed_by_code")}
        return cls(failed_by_code=dict(raw["failed_by_code"]), rpcs=rpcs, **scalars)
