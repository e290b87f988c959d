import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

import drpc
from drpc.interop import test_pb2 as pb

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent.parent  # bindings/python/tests -> repo root


def make_server(**kw):
    """A server with a few handlers of each flavour (sync and async)."""
    s = drpc.Server(**kw)
    s.unary("/t/Echo", lambda req, ctx: req)
    s.unary("/t/Meta", lambda req, ctx: repr(sorted(ctx.metadata.items())).encode())

    @s.unary("/t/Fail")
    def fail(req, ctx):
        code, _, msg = req.decode().partition(":")
        raise drpc.RpcError(int(code), msg)

    @s.unary("/t/Boom")
    def boom(req, ctx):
        raise ValueError("kaboom")

    @s.unary("/t/Sleep")
    def sleep(req, ctx):
        secs = float(req.decode() or "5")
        if ctx.wait_cancelled(secs):
            s.cancelled_calls.append(ctx.rpc)
            raise drpc.Cancelled("saw cancel")
        return b"slept"

    @s.unary("/t/Proto", request_type=pb.SimpleRequest)
    def proto(req, ctx):
        return pb.SimpleResponse(payload=pb.Payload(body=bytes(req.response_size)),
                                 request_payload_size=len(req.payload.body))

    @s.unary("/t/AEcho")
    async def aecho(req, ctx):
        await asyncio.sleep(0)
        return req

    @s.unary("/t/ASleep")
    async def asleep(req, ctx):
        try:
            await asyncio.sleep(float(req.decode() or "5"))
        except asyncio.CancelledError:
            s.cancelled_calls.append(ctx.rpc)
            raise
        return b"slept"

    @s.unary("/t/AFail")
    async def afail(req, ctx):
        raise drpc.NotFound("async missing")

    @s.server_streaming("/t/Count")
    def count(req, ctx):
        for i in range(int(req)):
            yield str(i).encode()

    @s.server_streaming("/t/ACount")
    async def acount(req, ctx):
        for i in range(int(req)):
            yield str(i).encode()

    @s.client_streaming("/t/Sum")
    def total(reqs, ctx):
        return str(sum(int(r) for r in reqs)).encode()

    @s.client_streaming("/t/ASum")
    async def atotal(reqs, ctx):
        n = 0
        async for r in reqs:
            n += int(r)
        return str(n).encode()

    @s.bidi_streaming("/t/Upper")
    def upper(reqs, ctx):
        for r in reqs:
            yield r.upper()

    @s.bidi_streaming("/t/AUpper")
    async def aupper(reqs, ctx):
        async for r in reqs:
            yield r.upper()

    @s.stream("/t/Raw")
    def raw(stream):
        first = stream.recv()
        stream.send(b"got " + first)
        rest = list(stream)
        return b"rest %d" % len(rest)

    @s.stream("/t/StreamFail")
    def stream_fail(stream):
        stream.send(b"one")
        raise drpc.PermissionDenied("go away")

    s.cancelled_calls = []
    return s


@pytest.fixture
def server():
    s = make_server()
    s.address = s.start("127.0.0.1:0")
    yield s
    s.stop(0)


@pytest.fixture
def client(server):
    with drpc.Client(server.address) as c:
        yield c


def _build_rust():
    bindir = os.environ.get("DRPC_INTEROP_BIN_DIR") or str(REPO / "target" / "release")
    server = Path(bindir) / "drpc-interop-server"
    client = Path(bindir) / "drpc-interop-client"
    if not (server.exists() and client.exists()):
        if not (REPO / "Cargo.toml").exists():
            pytest.skip("Rust interop binaries not found and no workspace to build them")
        r = subprocess.run(
            ["cargo", "build", "--release", "-p", "drpc-interop"], cwd=REPO, capture_output=True, text=True
        )
        if r.returncode != 0:
            pytest.fail("cargo build --release -p drpc-interop failed:\n" + r.stderr[-3000:])
    return server, client


@pytest.fixture(scope="session")
def rust_bins():
    return _build_rust()


PY = sys.executable
