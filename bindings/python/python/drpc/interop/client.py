"""The interop test client: runs the cases of CASES.md against a TestService
server, with the asyncio API of drpc.

Usage: ``python -m drpc.interop.client --addr HOST:PORT --case NAME|all
[--case ...] --mode mux|sequential [--flow-control]``. Prints ``PASS name`` or
``FAIL name: reason`` per case and exits non-zero if any failed.
Multiplexing-only cases are skipped in sequential mode. ``--flow-control``
turns on per-stream flow control (DESIGN.md section 4, default window); ``all``
includes ``slow_reader_isolation`` only then.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Optional, TypeVar

import drpc
import drpc.aio

from . import SERVICE
from . import test_pb2 as pb

SIZES = [31415, 9, 2653, 58979]

#: The invoke metadata key of a call's deadline (gRPC's timeout grammar).
TIMEOUT_KEY = "drpc-timeout"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
_TIMEOUT_UNITS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


def parse_timeout(value: str) -> Optional[float]:
    """Seconds of a gRPC timeout value (1-8 digits and a unit), else None."""
    digits, unit = value[:-1], value[-1:]
    if not (1 <= len(digits) <= 8) or not digits.isdigit() or not digits.isascii() or unit not in _TIMEOUT_UNITS:
        return None
    return int(digits) * _TIMEOUT_UNITS[unit]


T = TypeVar("T")


class CaseFailed(Exception):
    pass


def check(cond: bool, reason: str) -> None:
    if not cond:
        raise CaseFailed(reason)


def present(value: Optional[T], reason: str) -> T:
    """`value`, which must not be None."""
    if value is None:
        raise CaseFailed(reason)
    return value


def simple(**kw: Any) -> Any:
    body = kw.pop("body", None)
    req = pb.SimpleRequest(**kw)
    if body is not None:
        req.payload.body = body
    return req


def out_req(*sizes: int) -> Any:
    return pb.StreamingOutputCallRequest(response_parameters=[pb.ResponseParameters(size=s) for s in sizes])


class Cases:
    def __init__(self, client: drpc.aio.Client) -> None:
        self.c = client

    async def unary(self, req: Any, **kw: Any) -> Any:
        return await self.c.invoke(SERVICE + "UnaryCall", req, response_type=pb.SimpleResponse, **kw)

    async def stats(self) -> Any:
        return await self.c.invoke(SERVICE + "GetStats", pb.Empty(), response_type=pb.ServerStats)

    async def expect_error(self, aw: Awaitable[Any], code: int, message: Any = None) -> None:
        try:
            await aw
        except drpc.RpcError as e:
            check(int(e.code) == code, f"code {int(e.code)} ({e.message!r}), want {code}")
            if message is not None:
                check(e.message == message, f"message {e.message!r}, want {message!r}")
            return
        raise CaseFailed(f"succeeded, want code {code}")

    # -- cases for every peer ------------------------------------------------

    async def empty_unary(self) -> None:
        resp = await self.c.invoke(SERVICE + "EmptyCall", pb.Empty(), response_type=pb.Empty)
        check(resp == pb.Empty(), "not Empty")

    async def large_unary(self) -> None:
        resp = await self.unary(simple(response_size=314159, body=bytes(271828)))
        check(resp.payload.body == bytes(314159), f"body of {len(resp.payload.body)} bytes, want 314159 zeros")
        check(resp.request_payload_size == 271828, f"request_payload_size {resp.request_payload_size}")

    async def client_streaming(self) -> None:
        s = await self.c.stream(SERVICE + "StreamingInputCall", response_type=pb.StreamingInputCallResponse)
        async with s:
            for n in [27182, 8, 1828, 45904]:
                await s.send(pb.StreamingInputCallRequest(payload=pb.Payload(body=bytes(n))))
            await s.close_send()
            resp = present(await s.recv(), "no response")
            check(resp.aggregated_payload_size == 74922, f"aggregated_payload_size {resp.aggregated_payload_size}")
            check(await s.recv() is None, "more than one response")

    async def server_streaming(self) -> None:
        got = [
            len(r.payload.body)
            async for r in self.c.server_stream(
                SERVICE + "StreamingOutputCall", out_req(*SIZES), response_type=pb.StreamingOutputCallResponse
            )
        ]
        check(got == SIZES, f"response sizes {got}, want {SIZES}")

    async def ping_pong(self) -> None:
        s = await self.c.stream(SERVICE + "FullDuplexCall", response_type=pb.StreamingOutputCallResponse)
        async with s:
            for n in SIZES:
                await s.send(out_req(n))
                r = present(await s.recv(), f"no response to {n}")
                check(len(r.payload.body) == n, f"response of {len(r.payload.body)}, want {n}")
            await s.close_send()
            check(await s.recv() is None, "no clean end")

    async def half_duplex(self) -> None:
        s = await self.c.stream(SERVICE + "HalfDuplexCall", response_type=pb.StreamingOutputCallResponse)
        async with s:
            for n in SIZES:
                await s.send(out_req(n))
            await s.close_send()
            got = [len(r.payload.body) async for r in s]
            check(got == SIZES, f"response sizes {got}, want {SIZES}")

    async def empty_stream(self) -> None:
        s = await self.c.stream(SERVICE + "FullDuplexCall", response_type=pb.StreamingOutputCallResponse)
        async with s:
            await s.close_send()
            check(await s.recv() is None, "got a response")

    async def custom_metadata(self) -> None:
        value = "hello/世界"
        resp = await self.unary(simple(echo_metadata_key="x-drpc-test"), metadata={"x-drpc-test": value})
        check(resp.metadata_value == value, f"metadata_value {resp.metadata_value!r}")

    async def _status(self, message: str) -> None:
        status = pb.EchoStatus(code=2, message=message)
        await self.expect_error(self.unary(pb.SimpleRequest(response_status=status)), 2, message)

        async def duplex() -> None:
            s = await self.c.stream(SERVICE + "FullDuplexCall", response_type=pb.StreamingOutputCallResponse)
            async with s:
                await s.send(pb.StreamingOutputCallRequest(response_status=status))
                await s.close_send()
                while await s.recv() is not None:
                    pass

        await self.expect_error(duplex(), 2, message)

    async def status_code_and_message(self) -> None:
        await self._status("test status message")

    async def special_status_message(self) -> None:
        await self._status("\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n")

    async def unimplemented_method(self) -> None:
        await self.expect_error(self.c.invoke(SERVICE + "UnimplementedCall", pb.Empty()), 12)

    async def cancel_after_begin(self) -> None:
        s = await self.c.stream(SERVICE + "StreamingInputCall", response_type=pb.StreamingInputCallResponse)
        s.cancel()
        await self.expect_error(s.recv(), 1)

    async def cancel_after_first_response(self) -> None:
        s = await self.c.stream(SERVICE + "FullDuplexCall", response_type=pb.StreamingOutputCallResponse)
        await s.send(out_req(31415))
        r = await s.recv()
        check(r is not None and len(r.payload.body) == 31415, "bad first response")
        s.cancel()
        await self.expect_error(s.recv(), 1)

    async def timeout_on_sleeping_server(self) -> None:
        t0 = time.monotonic()
        await self.expect_error(self.unary(simple(sleep_ms=5000), timeout=0.1), 4)
        took = time.monotonic() - t0
        check(took < 1.0, f"took {took:.2f}s")

    async def _cancelled_unary(self, req: Any, after: float) -> None:
        """A UnaryCall cancelled after `after` seconds: fails with code 1."""
        s = await self.c.stream(SERVICE + "UnaryCall", response_type=pb.SimpleResponse)
        await s.send(req)
        await s.close_send()
        asyncio.get_running_loop().call_later(after, s.cancel)
        await self.expect_error(s.recv(), 1)

    async def server_cancel_propagation(self) -> None:
        before = (await self.stats()).cancelled_rpcs
        await self._cancelled_unary(simple(sleep_ms=10000), 0.1)
        await self._wait_cancelled_rpcs(before + 1, 2.0)

    async def deadline_propagation(self) -> None:
        # (a) A drpc-timeout set by hand, no deadline of our own: the server
        # must end the call (code 4) and cancel its handler.
        before = (await self.stats()).cancelled_rpcs
        t0 = time.monotonic()
        await self.expect_error(self.unary(simple(sleep_ms=5000), metadata={TIMEOUT_KEY: "100m"}), 4)
        took = time.monotonic() - t0
        check(took < 1.0, f"took {took:.2f}s, want < 1 s (the server must apply drpc-timeout)")
        await self._wait_cancelled_rpcs(before + 1, 2.0)
        # (b) Our own 5 s deadline reaches the server as drpc-timeout.
        resp = await self.unary(simple(echo_metadata_key=TIMEOUT_KEY), timeout=5.0)
        sent = parse_timeout(resp.metadata_value)
        check(sent is not None, f"drpc-timeout {resp.metadata_value!r} is not in the gRPC timeout grammar")
        check(sent is not None and 3.0 < sent <= 5.0, f"drpc-timeout {resp.metadata_value!r}, want (3 s, 5 s]")

    async def trace_context(self) -> None:
        resp = await self.unary(simple(echo_metadata_key="traceparent"), metadata={"traceparent": TRACEPARENT})
        check(resp.metadata_value == TRACEPARENT, f"traceparent echoed as {resp.metadata_value!r}, want {TRACEPARENT!r}")

    async def trace_chain(self) -> None:
        """Through forwarding servers: the trace goes on (same trace id, a new
        parent span) and the deadline shrinks on the way."""
        resp = await self.unary(simple(echo_metadata_key="traceparent"), timeout=5.0, traceparent=TRACEPARENT)
        got = resp.metadata_value
        parts = got.split("-")
        check(len(parts) == 4 and len(got) == 55, f"echoed traceparent {got!r} is not a W3C traceparent")
        want_id = TRACEPARENT.split("-")[1]
        check(parts[1] == want_id, f"trace id {parts[1]!r}, want {want_id!r}")
        check(parts[2] != TRACEPARENT.split("-")[2], "the parent span id did not change along the chain")
        resp = await self.unary(simple(echo_metadata_key=TIMEOUT_KEY), timeout=5.0, traceparent=TRACEPARENT)
        left = parse_timeout(resp.metadata_value)
        check(left is not None and left < 5.0, f"drpc-timeout at the end of the chain {resp.metadata_value!r}, want < 5 s")

    async def _wait_cancelled_rpcs(self, want: int, within: float) -> None:
        deadline = time.monotonic() + within
        while True:
            now = (await self.stats()).cancelled_rpcs
            if now >= want:
                return
            check(time.monotonic() < deadline, f"cancelled_rpcs {now}, want {want}")
            await asyncio.sleep(0.02)

    async def connection_reuse(self) -> None:
        check(not self.c.closed, "connection closed")
        await self.empty_unary()

    # -- multiplexing only ---------------------------------------------------

    async def concurrent_unary(self) -> None:
        async def one(i: int) -> None:
            req = simple(response_size=1000 + i, body=bytes(i + 1), sleep_ms=i % 51)
            resp = await self.unary(req)
            check(len(resp.payload.body) == 1000 + i, f"call {i}: response of {len(resp.payload.body)}")
            check(resp.request_payload_size == i + 1, f"call {i}: request_payload_size {resp.request_payload_size}")

        await asyncio.gather(*(one(i) for i in range(200)))
        peak = (await self.stats()).peak_active_rpcs
        check(peak >= 2, f"peak_active_rpcs {peak}")

    async def interleaved_streams(self) -> None:
        async def one(k: int) -> None:
            s = await self.c.stream(SERVICE + "FullDuplexCall", response_type=pb.StreamingOutputCallResponse)
            async with s:
                for r in range(50):
                    n = 1 + k * 1000 + r
                    await s.send(out_req(n))
                    resp = present(await s.recv(), f"stream {k} round {r}: no response")
                    check(len(resp.payload.body) == n, f"stream {k} round {r}: {len(resp.payload.body)} bytes, want {n}")
                await s.close_send()
                check(await s.recv() is None, f"stream {k}: no clean end")

        await asyncio.gather(*(one(k) for k in range(16)))

    async def large_interleaved(self) -> None:
        size = 3 << 20

        async def one(i: int) -> None:
            body = bytes([i + 1]) * size
            resp = await self.unary(simple(response_size=size, body=body))
            check(resp.request_payload_size == size, f"call {i}: request_payload_size {resp.request_payload_size}")
            check(resp.payload.body == bytes(size), f"call {i}: response body not {size} zeros")

        await asyncio.gather(*(one(i) for i in range(4)))

    async def cancel_one_of_many(self) -> None:
        async def ok(i: int) -> None:
            resp = await self.unary(simple(sleep_ms=500, response_size=i))
            check(len(resp.payload.body) == i, f"call {i}: wrong response")

        await asyncio.gather(self._cancelled_unary(simple(sleep_ms=500), 0.05), *(ok(i) for i in range(1, 10)))
        await self.empty_unary()

    async def slow_reader_isolation(self) -> None:
        req = pb.StreamingOutputCallRequest(response_parameters=[pb.ResponseParameters(size=65536)] * 4096)
        a = await self.c.stream(SERVICE + "StreamingOutputCall", response_type=pb.StreamingOutputCallResponse)
        try:
            await a.send(req)
            await a.close_send()
            t0 = time.monotonic()

            async def empties() -> None:
                for _ in range(500):
                    await self.c.invoke(SERVICE + "EmptyCall", pb.Empty(), timeout=10.0)

            try:
                await asyncio.wait_for(empties(), 10.0)
            except asyncio.TimeoutError:
                raise CaseFailed("500 EmptyCalls did not finish within 10 s")
            check(time.monotonic() - t0 < 10.0, "too slow")
        finally:
            a.cancel()

    async def no_leaks(self) -> None:
        # Polls: a cancelled asyncio handler can take a while to unwind on a
        # loaded machine; a leak still fails (it never reaches 1).
        deadline = time.monotonic() + 5.0
        while True:
            active = (await self.stats()).active_rpcs
            if active == 1:
                return
            check(time.monotonic() < deadline, f"active_rpcs {active}, want 1")
            await asyncio.sleep(0.02)


COMMON = [
    "empty_unary",
    "large_unary",
    "client_streaming",
    "server_streaming",
    "ping_pong",
    "half_duplex",
    "empty_stream",
    "custom_metadata",
    "status_code_and_message",
    "special_status_message",
    "unimplemented_method",
    "cancel_after_begin",
    "cancel_after_first_response",
    "timeout_on_sleeping_server",
    "server_cancel_propagation",
    "deadline_propagation",
    "trace_context",
]
MUX_ONLY = [
    "concurrent_unary",
    "interleaved_streams",
    "large_interleaved",
    "cancel_one_of_many",
    "slow_reader_isolation",
    "no_leaks",
]
# connection_reuse runs after everything but no_leaks ("after all of the above").
ALL = COMMON + MUX_ONLY[:-1] + ["connection_reuse", "no_leaks"]
# Run only when named (tests/matrix/trace_chain.sh): it needs forwarding servers.
NAMED_ONLY = ["trace_chain"]


def select(names: List[str], mode: str, flow_control: bool) -> List[str]:
    if "all" in names:
        chosen = [n for n in ALL if flow_control or n != "slow_reader_isolation"]
    else:
        chosen = names
    if mode == "sequential":
        chosen = [n for n in chosen if n not in MUX_ONLY]
    return chosen


async def run(
    addr: str, names: List[str], mode: str, case_timeout: float, flow_control: bool, tls: Optional[drpc.ClientTLS] = None
) -> int:
    failed = 0
    client = drpc.aio.Client(
        addr, sequential=(mode == "sequential"), connect_timeout=10.0, flow_control=flow_control, tls=tls
    )
    try:
        await client.connect()
    except drpc.RpcError as e:
        for name in names:
            print(f"FAIL {name}: cannot connect to {addr}: {e}", flush=True)
        return 1
    async with client:
        cases = Cases(client)
        for name in names:
            fn: Callable[[], Awaitable[None]] = getattr(cases, name)
            try:
                await asyncio.wait_for(fn(), case_timeout)
            except asyncio.TimeoutError:
                failed += 1
                print(f"FAIL {name}: timed out after {case_timeout:.0f} s", flush=True)
            except CaseFailed as e:
                failed += 1
                print(f"FAIL {name}: {e}", flush=True)
            except Exception as e:  # noqa: BLE001 - report anything as a failure
                failed += 1
                print(f"FAIL {name}: {type(e).__name__}: {e!r}", flush=True)
            else:
                print(f"PASS {name}", flush=True)
    return 1 if failed else 0


def main(argv: Any = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m drpc.interop.client", description=__doc__.splitlines()[0])
    ap.add_argument("--addr", required=True, help="HOST:PORT or unix:/path of the server")
    ap.add_argument("--case", action="append", default=[], help="case name (repeatable) or 'all'")
    ap.add_argument("--mode", choices=["mux", "sequential"], default="mux")
    ap.add_argument("--flow-control", action="store_true", help="per-stream flow control (default window)")
    ap.add_argument("--case-timeout", type=float, default=30.0, help="seconds before a case counts as failed")
    ap.add_argument("--tls-ca", help="PEM CA to trust: connect over TLS")
    ap.add_argument("--tls-server-name", help="name the server certificate must carry (default: the host)")
    ap.add_argument("--tls-cert", help="PEM client certificate (mutual TLS)")
    ap.add_argument("--tls-key", help="PEM private key of --tls-cert")
    args = ap.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        ap.error("--tls-cert and --tls-key go together")
    if args.tls_ca is None and (args.tls_server_name or args.tls_cert):
        ap.error("the --tls-* flags need --tls-ca")
    tls = (
        drpc.ClientTLS(ca=args.tls_ca, server_name=args.tls_server_name, cert=args.tls_cert, key=args.tls_key)
        if args.tls_ca
        else None
    )
    names = args.case or ["all"]
    unknown = [n for n in names if n != "all" and n not in ALL + NAMED_ONLY]
    if unknown:
        ap.error(f"unknown case(s): {', '.join(unknown)}; known: all, {', '.join(ALL + NAMED_ONLY)}")
    chosen = select(names, args.mode, args.flow_control)
    return asyncio.run(run(args.addr, chosen, args.mode, args.case_timeout, args.flow_control, tls))


if __name__ == "__main__":
    sys.exit(main())
