"""pytest suite of the generators (run by tests/codegen/run.sh, which sets
DRPC_CODEGEN_GEN to the directory of the generated edge modules)."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Iterator

import pytest
from google.protobuf import descriptor_pb2
from google.protobuf.compiler import plugin_pb2

import drpc
import drpc.aio
from drpc.codegen import generate

GEN = os.environ.get("DRPC_CODEGEN_GEN", "")
ROOT = Path(__file__).resolve().parents[3]
C_PLUGIN = ROOT / "codegen" / "c" / "protoc-gen-drpc-c"

needs_gen = pytest.mark.skipif(not GEN, reason="DRPC_CODEGEN_GEN not set (run tests/codegen/run.sh)")
if GEN:
    sys.path.insert(0, GEN)


def _request(*methods: "tuple[str, bool, bool]", package: str = "p") -> plugin_pb2.CodeGeneratorRequest:
    f = descriptor_pb2.FileDescriptorProto(name="x.proto", package=package, syntax="proto3")
    f.message_type.add(name="M")
    svc = f.service.add(name="S")
    for name, cs, ss in methods:
        svc.method.add(name=name, input_type=f".{package}.M", output_type=f".{package}.M", client_streaming=cs, server_streaming=ss)
    req = plugin_pb2.CodeGeneratorRequest(file_to_generate=["x.proto"])
    req.proto_file.append(f)
    return req


def _run_c_plugin(req: plugin_pb2.CodeGeneratorRequest) -> plugin_pb2.CodeGeneratorResponse:
    out = subprocess.run([sys.executable, str(C_PLUGIN)], input=req.SerializeToString(), capture_output=True, check=True)
    return plugin_pb2.CodeGeneratorResponse.FromString(out.stdout)


def test_python_keyword_rpcs_get_a_trailing_underscore() -> None:
    resp = generate(_request(("class", False, False), ("Get", False, True), ("None", True, True)))
    assert not resp.error
    code = resp.file[0].content
    assert resp.file[0].name == "x_drpc.py"
    for name in ("class_", "Get", "None_"):
        assert f"def {name}(self" in code
    compile(code, "x_drpc.py", "exec")  # valid Python


def test_rpcs_colliding_after_renaming_are_refused() -> None:
    resp = generate(_request(("class", False, False), ("class_", False, False)))
    assert "class" in resp.error and "class_" in resp.error and not resp.file
    c = _run_c_plugin(_request(("class", False, False), ("class_", False, False)))
    assert "class_" in c.error and not c.file


def test_plugin_options_are_refused() -> None:
    req = _request(("Get", False, False))
    req.parameter = "bogus=1"
    assert "bogus" in generate(req).error
    assert "bogus" in _run_c_plugin(req).error


def test_both_plugins_declare_proto3_optional() -> None:
    feature = plugin_pb2.CodeGeneratorResponse.FEATURE_PROTO3_OPTIONAL
    req = _request(("Get", False, False))
    assert generate(req).supported_features & feature
    assert _run_c_plugin(req).supported_features & feature


def test_c_plugin_reports_garbage_input() -> None:
    out = subprocess.run([sys.executable, str(C_PLUGIN)], input=b"\x0a\xff", capture_output=True, check=True)
    assert "protoc-gen-drpc-c" in plugin_pb2.CodeGeneratorResponse.FromString(out.stdout).error


def test_console_script_is_on_the_venv_path() -> None:
    script = shutil.which("protoc-gen-drpc_python", path=os.path.dirname(sys.executable))
    assert script is not None
    req = _request(("Get", False, False))
    out = subprocess.run([script], input=req.SerializeToString(), capture_output=True, check=True)
    resp = plugin_pb2.CodeGeneratorResponse.FromString(out.stdout)
    assert resp.file[0].name == "x_drpc.py" and "class SClient" in resp.file[0].content


@needs_gen
def test_file_without_services() -> None:
    from edge import common_drpc

    assert common_drpc.__all__ == []


@needs_gen
@pytest.mark.parametrize("api", ["sync", "aio"])
def test_rpcs_not_overridden_answer_unimplemented_for_every_kind(api: str) -> None:
    from edge import common_pb2, edge_drpc, edge_pb2, plain_pb2
    from google.protobuf import wrappers_pb2

    def calls(echo: Any, kw: Any) -> "list[Any]":
        req = edge_pb2.Request()
        return [
            lambda: echo.Unary(req),
            lambda: list(echo.ServerStream(req)),
            lambda: echo.ClientStream([req]),
            lambda: _bidi_roundtrip(echo.Bidi(), req),
            lambda: kw.class_(wrappers_pb2.Int64Value()),
            lambda: kw.None_([common_pb2.Outer.Inner()]),
            lambda: _bidi_roundtrip(kw.async_(), plain_pb2.PlainMessage()),
        ]

    if api == "sync":
        server = drpc.Server()
        edge_drpc.add_Echo_to_server(edge_drpc.EchoServicer(), server)
        edge_drpc.add_Keywords_to_server(edge_drpc.KeywordsServicer(), server)
        addr = server.start()
        try:
            with drpc.Client(addr) as conn:
                for call in calls(edge_drpc.EchoClient(conn), edge_drpc.KeywordsClient(conn)):
                    with pytest.raises(drpc.Unimplemented):
                        call()
        finally:
            server.stop()
        return

    async def run() -> None:
        server = drpc.aio.Server()
        edge_drpc.add_Echo_to_server(edge_drpc.EchoServicer(), server)
        addr = await server.start()
        try:
            async with drpc.aio.Client(addr) as conn:
                echo = edge_drpc.EchoAsyncClient(conn)
                req = edge_pb2.Request()
                with pytest.raises(drpc.Unimplemented):
                    await echo.Unary(req)
                with pytest.raises(drpc.Unimplemented):
                    [r async for r in echo.ServerStream(req)]
                with pytest.raises(drpc.Unimplemented):
                    await echo.ClientStream([req])
                stream = await echo.Bidi()
                async with stream:
                    with pytest.raises(drpc.Unimplemented):  # at send if the answer is already in
                        await stream.send(req)
                        await stream.recv()
        finally:
            await server.stop()

    asyncio.run(run())


def _bidi_roundtrip(stream: Any, msg: Any) -> Any:
    with stream:
        stream.send(msg)
        stream.close_send()
        return stream.recv()


@needs_gen
def test_only_overridden_rpcs_are_registered() -> None:
    from edge import edge_drpc, edge_pb2

    class OnlyUnary(edge_drpc.EchoServicer):
        def Unary(self, request: edge_pb2.Request, context: drpc.ServerContext) -> edge_pb2.Reply:
            return edge_pb2.Reply(text="mine")

    server = drpc.Server()
    edge_drpc.add_Echo_to_server(OnlyUnary(), server)
    # The rpcs left out are free for another registration.
    server.unary("/edge.v1.Echo/Fail", lambda req, ctx: b"", request_type=edge_pb2.Request)
    addr = server.start()
    try:
        with drpc.Client(addr) as conn:
            echo = edge_drpc.EchoClient(conn)
            assert echo.Unary(edge_pb2.Request()).text == "mine"
            echo.Fail(edge_pb2.Request())
            with pytest.raises(drpc.Unimplemented):
                echo.ClientStream([])
    finally:
        server.stop()
    # The base methods themselves raise Unimplemented (for super() calls).
    with pytest.raises(drpc.Unimplemented, match="/edge.v1.Echo/Bidi is not implemented"):
        edge_drpc.EchoServicer().Bidi(iter([]), None)  # type: ignore[arg-type]


@needs_gen
def test_client_stream_without_a_response_is_internal() -> None:
    from edge import edge_drpc, edge_pb2

    server = drpc.Server()

    @server.client_streaming("/edge.v1.Echo/ClientStream")
    def silent(requests: Iterator[bytes], context: Any) -> None:
        for _ in requests:
            pass
        return None

    addr = server.start()
    try:
        with drpc.Client(addr) as conn:
            with pytest.raises(drpc.Internal, match="without a response"):
                edge_drpc.EchoClient(conn).ClientStream([edge_pb2.Request()])

        async def aio() -> None:
            async with drpc.aio.Client(addr) as conn:
                with pytest.raises(drpc.Internal, match="without a response"):
                    await edge_drpc.EchoAsyncClient(conn).ClientStream([edge_pb2.Request()])

        asyncio.run(aio())
    finally:
        server.stop()


@needs_gen
def test_mypy_rejects_mistyped_calls_and_handlers(tmp_path: Path) -> None:
    """The annotations are real: mypy --strict flags a wrong request type, a
    wrong response type and a servicer override with the wrong request."""
    bad = Path(GEN) / "mistyped_usage.py"
    bad.write_text(
        textwrap.dedent(
            """
            from typing import Iterator
            import drpc
            from edge import edge_drpc, edge_pb2, plain_pb2

            def use(client: edge_drpc.EchoClient) -> None:
                client.Unary(plain_pb2.PlainMessage())  # line 7: wrong request type
                reply: plain_pb2.PlainMessage = client.Unary(edge_pb2.Request())  # line 8: wrong response type
                for r in client.ServerStream(edge_pb2.Request()):
                    r.no_such_field  # line 10

            class Bad(edge_drpc.EchoServicer):
                def Unary(self, request: plain_pb2.PlainMessage, context: drpc.ServerContext) -> edge_pb2.Reply:  # line 13
                    return edge_pb2.Reply()
            """
        )
    )
    try:
        out = subprocess.run(
            [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", "mistyped_usage.py"],
            cwd=GEN,
            capture_output=True,
            text=True,
        )
    finally:
        bad.unlink()
    assert out.returncode == 1, out.stdout
    lines = {int(line.split(":")[1]) for line in out.stdout.splitlines() if line.startswith("mistyped_usage.py:") and ": error:" in line}
    assert {7, 8, 10, 13} <= lines, out.stdout


@needs_gen
@pytest.mark.parametrize("api", ["sync", "aio"])
def test_unfinished_typed_stream_is_cancelled_on_exit(api: str) -> None:
    """Leaving the typed stream's (async) with-block before the call ended
    cancels it on the wire: the server's handler sees the cancellation."""
    import threading

    from edge import edge_drpc, edge_pb2

    cancelled: "list[threading.Event]" = []

    class Echo(edge_drpc.EchoServicer):
        def Bidi(self, requests: Iterator[edge_pb2.Request], context: drpc.ServerContext) -> Iterator[edge_pb2.Reply]:
            seen = threading.Event()
            cancelled.append(seen)
            for request in requests:
                yield edge_pb2.Reply(text=request.text)
                if context.wait_cancelled(timeout=10.0):
                    seen.set()
                    return

    server = drpc.Server()
    edge_drpc.add_Echo_to_server(Echo(), server)
    addr = server.start()
    rounds = 20
    try:
        if api == "sync":
            with drpc.Client(addr) as conn:
                echo = edge_drpc.EchoClient(conn)
                for i in range(rounds):
                    with echo.Bidi(timeout=10.0) as stream:
                        stream.send(edge_pb2.Request(text=str(i)))
                        reply = stream.recv()
                        assert reply is not None and reply.text == str(i)
                    assert stream.finished
        else:

            async def run() -> None:
                async with drpc.aio.Client(addr) as conn:
                    echo = edge_drpc.EchoAsyncClient(conn)
                    for i in range(rounds):
                        async with await echo.Bidi(timeout=10.0) as stream:
                            await stream.send(edge_pb2.Request(text=str(i)))
                            reply = await stream.recv()
                            assert reply is not None and reply.text == str(i)
                        assert stream.finished

            asyncio.run(run())
        assert len(cancelled) == rounds
        assert all(seen.wait(5.0) for seen in cancelled)
    finally:
        server.stop()


def test_services_generating_the_same_python_name_are_refused() -> None:
    req = _request(("Get", False, False))
    svc = req.proto_file[0].service.add(name="SAsync")  # S's async client is SAsyncClient too
    svc.method.add(name="Get", input_type=".p.M", output_type=".p.M")
    assert "SAsyncClient" in generate(req).error
