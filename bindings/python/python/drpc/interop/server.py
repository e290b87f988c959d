"""The interop test server (TestService of test.proto) on drpc.

Usage: ``python -m drpc.interop.server --addr HOST:PORT [--api aio|sync]
[--flow-control]``. Prints ``listening HOST:PORT`` first (flushed), serves
until SIGTERM/SIGINT, then stops gracefully and exits 0. ``--api`` picks
asyncio handlers on ``drpc.aio.Server`` (default) or blocking handlers on
``drpc.Server``. ``--flow-control`` turns on per-stream flow control.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from typing import Any

import drpc
import drpc.aio

from . import SERVICE
from . import test_pb2 as pb


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
    for p in req.response_parameters:
        yield p, pb.StreamingOutputCallResponse(payload=pb.Payload(body=bytes(p.size)))


def build_sync(stats: Stats, flow_control: bool = False) -> drpc.Server:
    server = drpc.Server(flow_control=flow_control)

    def tracked(gen_fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            stats.enter()
            try:
                yield from gen_fn(*args)
            finally:
                stats.leave()
        return wrapper

    def tracked_unary(fn: Any) -> Any:
        def wrapper(req: Any, ctx: Any) -> Any:
            stats.enter()
            try:
                return fn(req, ctx)
            finally:
                stats.leave()
        return wrapper

    def empty(req: Any, ctx: Any) -> Any:
        return pb.Empty()

    def unary(req: Any, ctx: Any) -> Any:
        if req.sleep_ms > 0 and ctx.wait_cancelled(req.sleep_ms / 1000.0):
            stats.cancel()
            raise drpc.Cancelled("cancelled while sleeping")
        _fail_with(req.response_status)
        return _simple_response(req, ctx)

    def streaming_output(req: Any, ctx: Any) -> Any:
        for p, resp in _responses(req):
            if p.interval_ms > 0 and ctx.wait_cancelled(p.interval_ms / 1000.0):
                stats.cancel()
                raise drpc.Cancelled("cancelled")
            yield resp
        _fail_with(req.response_status)

    def streaming_input(reqs: Any, ctx: Any) -> Any:
        total = 0
        for r in reqs:
            total += len(r.payload.body)
        return pb.StreamingInputCallResponse(aggregated_payload_size=total)

    def full_duplex(reqs: Any, ctx: Any) -> Any:
        for req in reqs:
            yield from streaming_output(req, ctx)

    def half_duplex(reqs: Any, ctx: Any) -> Any:
        for req in list(reqs):
            yield from streaming_output(req, ctx)

    def get_stats(req: Any, ctx: Any) -> Any:
        return stats.message()

    server.unary(SERVICE + "EmptyCall", tracked_unary(empty), request_type=pb.Empty)
    server.unary(SERVICE + "UnaryCall", tracked_unary(unary), request_type=pb.SimpleRequest)
    server.server_streaming(
        SERVICE + "StreamingOutputCall", tracked(streaming_output), request_type=pb.StreamingOutputCallRequest
    )
    server.client_streaming(
        SERVICE + "StreamingInputCall", tracked_unary(streaming_input), request_type=pb.StreamingInputCallRequest
    )
    server.bidi_streaming(SERVICE + "FullDuplexCall", tracked(full_duplex), request_type=pb.StreamingOutputCallRequest)
    server.bidi_streaming(SERVICE + "HalfDuplexCall", tracked(half_duplex), request_type=pb.StreamingOutputCallRequest)
    server.unary(SERVICE + "GetStats", tracked_unary(get_stats), request_type=pb.Empty)
    return server


def build_aio(stats: Stats, flow_control: bool = False) -> drpc.aio.Server:
    server = drpc.aio.Server(flow_control=flow_control)

    async def sleep(ms: int) -> None:
        try:
            await asyncio.sleep(ms / 1000.0)
        except asyncio.CancelledError:
            stats.cancel()
            raise

    @server.unary(SERVICE + "EmptyCall", request_type=pb.Empty)
    async def empty(req: Any, ctx: Any) -> Any:
        stats.enter()
        stats.leave()
        return pb.Empty()

    @server.unary(SERVICE + "UnaryCall", request_type=pb.SimpleRequest)
    async def unary(req: Any, ctx: Any) -> Any:
        stats.enter()
        try:
            if req.sleep_ms > 0:
                await sleep(req.sleep_ms)
            _fail_with(req.response_status)
            return _simple_response(req, ctx)
        finally:
            stats.leave()

    async def output(stream: Any, req: Any) -> None:
        for p, resp in _responses(req):
            if p.interval_ms > 0:
                await sleep(p.interval_ms)
            await stream.send(resp)
        _fail_with(req.response_status)

    @server.stream(SERVICE + "StreamingOutputCall", request_type=pb.StreamingOutputCallRequest)
    async def streaming_output(stream: Any) -> None:
        stats.enter()
        try:
            req = await stream.recv()
            if req is None:
                raise drpc.InvalidArgument("no request")
            await output(stream, req)
        finally:
            stats.leave()

    @server.client_streaming(SERVICE + "StreamingInputCall", request_type=pb.StreamingInputCallRequest)
    async def streaming_input(reqs: Any, ctx: Any) -> Any:
        stats.enter()
        try:
            total = 0
            async for r in reqs:
                total += len(r.payload.body)
            return pb.StreamingInputCallResponse(aggregated_payload_size=total)
        finally:
            stats.leave()

    @server.stream(SERVICE + "FullDuplexCall", request_type=pb.StreamingOutputCallRequest)
    async def full_duplex(stream: Any) -> None:
        stats.enter()
        try:
            async for req in stream:
                await output(stream, req)
        finally:
            stats.leave()

    @server.stream(SERVICE + "HalfDuplexCall", request_type=pb.StreamingOutputCallRequest)
    async def half_duplex(stream: Any) -> None:
        stats.enter()
        try:
            reqs = [r async for r in stream]
            for req in reqs:
                await output(stream, req)
        finally:
            stats.leave()

    @server.unary(SERVICE + "GetStats", request_type=pb.Empty)
    async def get_stats(req: Any, ctx: Any) -> Any:
        stats.enter()
        try:
            return stats.message()
        finally:
            stats.leave()

    return server


def _announce(addr: str) -> None:
    sys.stdout.write(f"listening {addr}\n")
    sys.stdout.flush()


async def _serve_aio(addr: str, flow_control: bool) -> None:
    server = build_aio(Stats(), flow_control)
    bound = await server.start(addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    _announce(bound)
    await stop.wait()
    await server.stop(grace=2.0)


def _serve_sync(addr: str, flow_control: bool) -> None:
    server = build_sync(Stats(), flow_control)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    bound = server.start(addr)
    _announce(bound)
    while not stop.wait(0.2):
        pass
    server.stop(grace=2.0)


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drpc.interop.server", description=__doc__.splitlines()[0])
    ap.add_argument("--addr", default="127.0.0.1:0", help="HOST:PORT (port 0 picks one) or unix:/path")
    ap.add_argument("--api", choices=["aio", "sync"], default="aio", help="handler flavour")
    ap.add_argument("--flow-control", action="store_true", help="per-stream flow control (default window)")
    args = ap.parse_args(argv)
    if args.api == "aio":
        asyncio.run(_serve_aio(args.addr, args.flow_control))
    else:
        _serve_sync(args.addr, args.flow_control)
    return 0


if __name__ == "__main__":
    sys.exit(main())
