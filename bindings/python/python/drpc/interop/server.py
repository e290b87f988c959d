"""The interop test server (TestService of test.proto) on drpc.

Usage: ``python -m drpc.interop.server --addr HOST:PORT [--api aio|sync]
[--flow-control] [--forward HOST:PORT]``. Prints ``listening HOST:PORT`` first (flushed), serves
until SIGTERM/SIGINT, then stops gracefully (2 s for running RPCs, then
cancelling them) and exits 0 within 6 s, leaving handlers that ignore
cancellation behind if it must. ``--api`` picks
asyncio handlers on ``drpc.aio.Server`` (default) or blocking handlers on
``drpc.Server``. ``--flow-control`` turns on per-stream flow control; ``--memory-budget``
sets the server's memory budget (default 128 MiB, see _MEMORY_BUDGET).
``--forward HOST:PORT`` forwards UnaryCalls that ask to echo a metadata key
to that server, from inside the handler (so its deadline and trace context
travel on), and returns the answer as is.
The handlers are servicers of the generated ``test_drpc`` module (see
``bindings/python/gen_proto.sh``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any, Iterator, Optional

import drpc
import drpc.aio

from . import SERVICE, test_drpc
from . import test_pb2 as pb


FORWARDED_RPC = SERVICE + "UnaryCall"


class Stats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = 0
        self.active = 0
        self.cancelled = 0
        self.peak = 0

    def enter(self) -> None:
        with self._lock:
            self.total += 1
            self.active += 1
            self.peak = max(self.peak, self.active)

    def leave(self) -> None:
        with self._lock:
            self.active -= 1

    def cancel(self) -> None:
        with self._lock:
            self.cancelled += 1

    @contextlib.contextmanager
    def tracking(self) -> Iterator[None]:
        """Counts a running rpc for as long as the block runs."""
        self.enter()
        try:
            yield
        finally:
            self.leave()

    def message(self) -> Any:
        with self._lock:
            return pb.ServerStats(
                total_rpcs=self.total, active_rpcs=self.active, cancelled_rpcs=self.cancelled, peak_active_rpcs=self.peak
            )


def _fail_with(status: Any) -> None:
    if status is not None and status.code != 0:
        raise drpc.RpcError(status.code, status.message)


def _simple_response(req: Any, ctx: Any) -> Any:
    resp = pb.SimpleResponse(request_payload_size=len(req.payload.body))
    resp.payload.body = bytes(req.response_size)
    if req.echo_metadata_key:
        resp.metadata_value = ctx.metadata.get(req.echo_metadata_key, "")
    return resp


def _responses(req: Any) -> Any:
    """(parameters, serialized response) for each response asked for. Yielded
    serialized (the stream sends bytes as they are): the message itself, a
    copy of a payload of up to several MiB, is freed before the send waits
    for the peer, so a stalled peer holds one copy per stream, not two."""
    for p in req.response_parameters:
        yield p, pb.StreamingOutputCallResponse(payload=pb.Payload(body=bytes(p.size))).SerializeToString()


class _SyncService(test_drpc.TestServiceServicer):
    """Blocking handlers: plain methods and generators on worker threads.
    UnimplementedCall is not overridden, so it is not registered."""

    def __init__(self, stats: Stats, forward: Optional[str] = None) -> None:
        self._stats = stats
        self._forward = forward
        self._forward_client: Optional[drpc.Client] = None
        self._forward_lock = threading.Lock()

    def _forwarded(self, req: Any) -> bytes:
        """UnaryCall on the --forward server, from inside this handler: the
        client inherits the handler's deadline and trace context."""
        with self._forward_lock:
            if self._forward_client is None:
                assert self._forward is not None
                self._forward_client = drpc.Client(self._forward, connect_timeout=5.0)
            client = self._forward_client
        return client.invoke(FORWARDED_RPC, req.SerializeToString())

    def EmptyCall(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            return pb.Empty()

    def UnaryCall(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            if self._forward and req.echo_metadata_key:
                return self._forwarded(req)
            if req.sleep_ms > 0 and ctx.wait_cancelled(req.sleep_ms / 1000.0):
                self._stats.cancel()
                raise drpc.Cancelled("cancelled while sleeping")
            _fail_with(req.response_status)
            return _simple_response(req, ctx)

    def _output(self, req: Any, ctx: Any) -> Any:
        for p, resp in _responses(req):
            if p.interval_ms > 0 and ctx.wait_cancelled(p.interval_ms / 1000.0):
                self._stats.cancel()
                raise drpc.Cancelled("cancelled")
            yield resp
        _fail_with(req.response_status)

    def StreamingOutputCall(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            yield from self._output(req, ctx)

    def StreamingInputCall(self, reqs: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            total = 0
            for r in reqs:
                total += len(r.payload.body)
            return pb.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, reqs: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            for req in reqs:
                yield from self._output(req, ctx)

    def HalfDuplexCall(self, reqs: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            for req in list(reqs):
                yield from self._output(req, ctx)

    def GetStats(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            return self._stats.message()


class _AsyncService(test_drpc.TestServiceServicer):
    """asyncio handlers: coroutines and async generators on the server's
    loop. UnimplementedCall is not overridden, so it is not registered."""

    def __init__(self, stats: Stats, forward: Optional[str] = None) -> None:
        self._stats = stats
        self._forward = forward
        self._forward_client: Optional[drpc.aio.Client] = None

    async def _forwarded(self, req: Any) -> bytes:
        """UnaryCall on the --forward server, from inside this handler's task:
        the call inherits the handler's deadline and trace context."""
        if self._forward_client is None:
            assert self._forward is not None
            self._forward_client = drpc.aio.Client(self._forward, connect_timeout=5.0)
        client = await self._forward_client.connect()
        return await client.invoke(FORWARDED_RPC, req.SerializeToString())

    async def _sleep(self, ms: int) -> None:
        try:
            await asyncio.sleep(ms / 1000.0)
        except asyncio.CancelledError:
            self._stats.cancel()
            raise

    async def EmptyCall(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            return pb.Empty()

    async def UnaryCall(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            if self._forward and req.echo_metadata_key:
                return await self._forwarded(req)
            if req.sleep_ms > 0:
                await self._sleep(req.sleep_ms)
            _fail_with(req.response_status)
            return _simple_response(req, ctx)

    async def _output(self, req: Any) -> Any:
        for p, resp in _responses(req):
            if p.interval_ms > 0:
                await self._sleep(p.interval_ms)
            yield resp
        _fail_with(req.response_status)

    async def StreamingOutputCall(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            async for resp in self._output(req):
                yield resp

    async def StreamingInputCall(self, reqs: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            total = 0
            async for r in reqs:
                total += len(r.payload.body)
            return pb.StreamingInputCallResponse(aggregated_payload_size=total)

    async def FullDuplexCall(self, reqs: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            async for req in reqs:
                async for resp in self._output(req):
                    yield resp

    async def HalfDuplexCall(self, reqs: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            for req in [r async for r in reqs]:
                async for resp in self._output(req):
                    yield resp

    async def GetStats(self, req: Any, ctx: Any) -> Any:
        with self._stats.tracking():
            return self._stats.message()


def build_sync(
    stats: Stats, flow_control: bool = False, memory_budget: Optional[int] = None, forward: Optional[str] = None
) -> drpc.Server:
    server = drpc.Server(flow_control=flow_control, memory_budget=memory_budget)
    test_drpc.add_TestService_to_server(_SyncService(stats, forward), server)
    return server


def build_aio(
    stats: Stats, flow_control: bool = False, memory_budget: Optional[int] = None, forward: Optional[str] = None
) -> drpc.aio.Server:
    server = drpc.aio.Server(flow_control=flow_control, memory_budget=memory_budget)
    test_drpc.add_TestService_to_server(_AsyncService(stats, forward), server)
    return server


# SIGTERM must end the process within 6 s in every state (issue 11): a 2 s
# grace for running RPCs, then cancellation; stopping (and exiting) is given
# _STOP_LIMIT in all.
_GRACE = 2.0
_STOP_LIMIT = 4.0


_EXIT_DEADLINE = 5.0

# Half the library's default budget (256 MiB): a handler blocked sending to a
# stalled peer holds its serialized response (up to 4 MiB here) outside the
# budget until the send is accepted, one per stream, and the process must stay
# under 512 MiB with 64 such peers (issue 11).
_MEMORY_BUDGET = 128 << 20


def _exit_now() -> None:
    """Ends the process at once. Only when stopping overran _STOP_LIMIT:
    Python cannot interrupt a plain-function handler (or a coroutine that
    ignores cancellation), and stop() would wait for it without end."""
    sys.stderr.write(f"interop server: still stopping {_STOP_LIMIT:.0f} s after SIGTERM; exiting anyway\n")
    sys.stderr.flush()
    os._exit(0)


def _arm_exit_deadline() -> None:
    """Called on SIGTERM/SIGINT: whatever the event loop or the interpreter
    is busy with (thousands of handlers to cancel, finalization), the process
    ends in time. A watchdog thread exits at _STOP_LIMIT; should it not get
    the GIL (a thread cannot take it once finalization began), the kernel
    ends the process with SIGALRM at _EXIT_DEADLINE."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.setitimer(signal.ITIMER_REAL, _EXIT_DEADLINE)
    watchdog = threading.Timer(_STOP_LIMIT, _exit_now)
    watchdog.daemon = True
    watchdog.start()


def _announce(addr: str) -> None:
    sys.stdout.write(f"listening {addr}\n")
    sys.stdout.flush()


async def _serve_aio(
    addr: str, flow_control: bool, tls: Optional[drpc.ServerTLS], budget: int, forward: Optional[str]
) -> None:
    server = build_aio(Stats(), flow_control, budget, forward)
    bound = await server.start(addr, tls=tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        _arm_exit_deadline()
        stop.set()

    # loop.add_signal_handler, not signal.signal: the signal may land on a
    # runtime thread, and only the loop's wakeup fd wakes the main thread then.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    _announce(bound)
    await stop.wait()
    await server.stop(grace=_GRACE)


def _serve_sync(
    addr: str, flow_control: bool, tls: Optional[drpc.ServerTLS], budget: int, forward: Optional[str]
) -> None:
    server = build_sync(Stats(), flow_control, budget, forward)
    stop = threading.Event()

    def on_signal(*_: Any) -> None:
        _arm_exit_deadline()
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    bound = server.start(addr, tls=tls)
    _announce(bound)
    while not stop.wait(0.2):
        pass
    server.stop(grace=_GRACE)


def _return_large_buffers_to_the_os() -> None:
    """glibc raises its mmap threshold each time a large block is freed, after
    which multi-MiB messages (4 MiB responses, built and serialized in Python)
    are carved from per-thread arenas that keep the memory: under load the
    process grows far past the server's memory budget. A fixed threshold
    (glibc's default value) keeps every block over 128 KiB in its own mapping,
    unmapped when freed. A no-op off glibc."""
    import ctypes
    import ctypes.util

    m_mmap_threshold = -3
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt(ctypes.c_int(m_mmap_threshold), ctypes.c_int(128 << 10))
    except (OSError, AttributeError):
        pass


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drpc.interop.server", description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:0", help="HOST:PORT (port 0 picks one) or unix:/path")
    ap.add_argument("--api", choices=["aio", "sync"], default="aio", help="handler flavour")
    ap.add_argument("--flow-control", action="store_true", help="per-stream flow control (default window)")
    ap.add_argument(
        "--memory-budget",
        type=int,
        default=_MEMORY_BUDGET,
        help="bytes all connections together may hold (default %(default)s; 0: no limit)",
    )
    ap.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    ap.add_argument("--tls-client-ca", help="PEM CA: require client certificates it signed")
    ap.add_argument(
        "--forward",
        metavar="HOST:PORT",
        help="forward UnaryCalls with an echo_metadata_key to this server's UnaryCall (deadline and trace inherited)",
    )
    args = ap.parse_args(argv)
    _return_large_buffers_to_the_os()
    if (args.tls_cert is None) != (args.tls_key is None) or (args.tls_client_ca and not args.tls_cert):
        ap.error("--tls-cert and --tls-key go together (and --tls-client-ca needs them)")
    tls = drpc.ServerTLS(args.tls_cert, args.tls_key, client_ca=args.tls_client_ca) if args.tls_cert else None
    if args.api == "aio":
        asyncio.run(_serve_aio(args.addr, args.flow_control, tls, args.memory_budget, args.forward))
    else:
        _serve_sync(args.addr, args.flow_control, tls, args.memory_budget, args.forward)
    return 0


if __name__ == "__main__":
    sys.exit(main())
