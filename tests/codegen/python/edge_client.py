"""Calls every rpc of the edge-case services (tests/codegen/proto/edge/)
through the code drpc.codegen generated and checks the answers (semantics:
tests/codegen/README.md); the same cases as tests/codegen/c/edge_client.c.

    python edge_client.py --gen DIR --addr HOST:PORT [--api sync|aio]

Prints "PASS case" / "FAIL case: why" per case; exits 1 if any failed.
--api sync uses <Service>Client over drpc.Client, --api aio
<Service>AsyncClient over drpc.aio.Client.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import traceback
from typing import Any, AsyncIterator, Awaitable, Callable, List

import drpc
import drpc.aio

TIMEOUT = 10.0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen", required=True)
    parser.add_argument("--addr", required=True)
    parser.add_argument("--api", choices=["sync", "aio"], default="sync")
    opts = parser.parse_args()
    sys.path.insert(0, opts.gen)
    from edge import common_pb2, edge_drpc, edge_pb2, plain_drpc, plain_pb2
    from google.protobuf import wrappers_pb2

    def request(text: str, number: int) -> edge_pb2.Request:
        req = edge_pb2.Request(
            text=text,
            number=number,
            tag=7,
            inner=common_pb2.Outer.Inner(value=5, label="in"),
            detail=edge_pb2.Request.Detail(notes=["n1", "n2"]),
            type="t",
        )
        setattr(req, "class", "c")  # keyword field names: through getattr/setattr
        setattr(req, "int", 3)
        req.at.seconds, req.at.nanos = 1700000000, 5
        return req

    def check_reply(r: edge_pb2.Reply, text: str, number: int, index: int, md: str) -> None:
        assert r.text == "unary:" + text, f"text {r.text!r}"
        assert r.number == number + 1, f"number {r.number}"
        assert r.tag == 7, f"tag {r.tag}"
        assert r.outer.inner == common_pb2.Outer.Inner(value=5, label="in"), "outer.inner not echoed"
        assert list(r.outer.items) == [common_pb2.Outer.Inner(value=3, label="c|t")], "keyword fields not folded"
        assert (r.at.seconds, r.at.nanos) == (1700000000, 5), "at not echoed"
        assert r.metadata_value == md, f"metadata_value {r.metadata_value!r}"
        assert r.index == index, f"index {r.index}"

    def plain(text: Any = None) -> plain_pb2.PlainMessage:
        return plain_pb2.PlainMessage() if text is None else plain_pb2.PlainMessage(text=text)

    def check_async(replies: List[plain_pb2.PlainMessage]) -> None:
        assert [(r.HasField("text"), r.text, r.count) for r in replies] == [
            (True, "AB", 0), (False, "", 1), (True, "CD", 2)
        ], replies

    failures: List[str] = []

    def report(name: str, exc: Any) -> None:
        if exc is None:
            print(f"PASS {name}", flush=True)
        else:
            failures.append(name)
            print(f"FAIL {name}: {exc!r}", flush=True)
            traceback.print_exception(type(exc), exc, exc.__traceback__, file=sys.stderr)

    if opts.api == "sync":
        conn = drpc.Client(opts.addr)
        echo = edge_drpc.EchoClient(conn)
        kw = edge_drpc.KeywordsClient(conn)
        pl = plain_drpc.PlainClient(conn)

        def echo_unary() -> None:
            check_reply(echo.Unary(request("hi", 41), metadata={"edge-key": "v1"}, timeout=TIMEOUT), "hi", 41, 2, "v1")

        def echo_server_stream() -> None:
            replies = list(echo.ServerStream(edge_pb2.Request(text="s", number=3), timeout=TIMEOUT))
            assert [(r.text, r.index) for r in replies] == [("s", 0), ("s", 1), ("s", 2)], replies

        def echo_client_stream() -> None:
            reqs = [edge_pb2.Request(text=t, number=i + 1) for i, t in enumerate("abc")]
            r = echo.ClientStream(iter(reqs), timeout=TIMEOUT)
            assert (r.text, r.number, r.index) == ("a,b,c", 6, 3), r

        def echo_client_stream_empty() -> None:
            r = echo.ClientStream([], timeout=TIMEOUT)
            assert (r.text, r.number, r.index) == ("", 0, 0), r

        def echo_bidi() -> None:
            with echo.Bidi(metadata={"edge-key": "bidi"}, timeout=TIMEOUT) as stream:
                for i, t in enumerate("xyz"):
                    stream.send(request(t, i))
                    reply = stream.recv()
                    assert reply is not None, "stream ended early"
                    check_reply(reply, t, i, i, "bidi")
                stream.close_send()
                assert stream.recv() is None, "no end after close_send"

        def echo_fail() -> None:
            try:
                echo.Fail(edge_pb2.Request(text="no such key", number=5), timeout=TIMEOUT)
            except drpc.NotFound as e:
                assert e.message == "no such key", e.message
            else:
                raise AssertionError("Fail did not fail")

        def keywords_class() -> None:
            ts = kw.class_(wrappers_pb2.Int64Value(value=42), timeout=TIMEOUT)
            assert (ts.seconds, ts.nanos) == (42, 7), ts

        def keywords_import() -> None:
            got = [v.value for v in kw.import_(wrappers_pb2.StringValue(value="abc"), timeout=TIMEOUT)]
            assert got == ["a", "b", "c"], got

        def keywords_none() -> None:
            items = [common_pb2.Outer.Inner(value=1, label="x"), common_pb2.Outer.Inner(value=2, label="y")]
            outer = kw.None_(items, timeout=TIMEOUT)
            assert list(outer.items) == items, outer

        def keywords_async() -> None:
            with kw.async_(timeout=TIMEOUT) as stream:
                for text in ("ab", None, "cd"):
                    stream.send(plain(text))
                stream.close_send()
                replies = list(stream)
            check_async(replies)

        def plain_echo() -> None:
            r = pl.Echo(plain("hello"), timeout=TIMEOUT)
            assert r.text == "hello" and r.HasField("count") and r.count == 5, r
            r = pl.Echo(plain(), timeout=TIMEOUT)
            assert not r.HasField("text") and r.HasField("count") and r.count == 0, r

        def plain_collect() -> None:
            r = pl.Collect([plain("a"), plain("b")], timeout=TIMEOUT)
            assert r.text == "a+b" and r.count == 2, r

        cases: List[Callable[[], Any]] = [
            echo_unary, echo_server_stream, echo_client_stream, echo_client_stream_empty, echo_bidi, echo_fail,
            keywords_class, keywords_import, keywords_none, keywords_async, plain_echo, plain_collect,
        ]
        for case in cases:
            try:
                case()
                report(case.__name__, None)
            except Exception as e:  # noqa: BLE001 - reported as FAIL
                report(case.__name__, e)
        conn.close()
        return 1 if failures else 0

    async def run_aio() -> int:
        async with drpc.aio.Client(opts.addr) as conn:
            echo = edge_drpc.EchoAsyncClient(conn)
            kw = edge_drpc.KeywordsAsyncClient(conn)
            pl = plain_drpc.PlainAsyncClient(conn)

            async def echo_unary() -> None:
                r = await echo.Unary(request("hi", 41), metadata={"edge-key": "v1"}, timeout=TIMEOUT)
                check_reply(r, "hi", 41, 2, "v1")

            async def echo_server_stream() -> None:
                replies = [r async for r in echo.ServerStream(edge_pb2.Request(text="s", number=3), timeout=TIMEOUT)]
                assert [(r.text, r.index) for r in replies] == [("s", 0), ("s", 1), ("s", 2)], replies

            async def echo_client_stream() -> None:
                async def reqs() -> AsyncIterator[edge_pb2.Request]:
                    for i, t in enumerate("abc"):
                        yield edge_pb2.Request(text=t, number=i + 1)

                r = await echo.ClientStream(reqs(), timeout=TIMEOUT)
                assert (r.text, r.number, r.index) == ("a,b,c", 6, 3), r

            async def echo_client_stream_empty() -> None:
                r = await echo.ClientStream([], timeout=TIMEOUT)
                assert (r.text, r.number, r.index) == ("", 0, 0), r

            async def echo_bidi() -> None:
                async with await echo.Bidi(metadata={"edge-key": "bidi"}, timeout=TIMEOUT) as stream:
                    for i, t in enumerate("xyz"):
                        await stream.send(request(t, i))
                        reply = await stream.recv()
                        assert reply is not None, "stream ended early"
                        check_reply(reply, t, i, i, "bidi")
                    await stream.close_send()
                    assert await stream.recv() is None, "no end after close_send"

            async def echo_fail() -> None:
                try:
                    await echo.Fail(edge_pb2.Request(text="no such key", number=5), timeout=TIMEOUT)
                except drpc.NotFound as e:
                    assert e.message == "no such key", e.message
                else:
                    raise AssertionError("Fail did not fail")

            async def keywords_class() -> None:
                ts = await kw.class_(wrappers_pb2.Int64Value(value=42), timeout=TIMEOUT)
                assert (ts.seconds, ts.nanos) == (42, 7), ts

            async def keywords_import() -> None:
                got = [v.value async for v in kw.import_(wrappers_pb2.StringValue(value="abc"), timeout=TIMEOUT)]
                assert got == ["a", "b", "c"], got

            async def keywords_none() -> None:
                items = [common_pb2.Outer.Inner(value=1, label="x"), common_pb2.Outer.Inner(value=2, label="y")]
                outer = await kw.None_(items, timeout=TIMEOUT)
                assert list(outer.items) == items, outer

            async def keywords_async() -> None:
                async with await kw.async_(timeout=TIMEOUT) as stream:
                    for text in ("ab", None, "cd"):
                        await stream.send(plain(text))
                    await stream.close_send()
                    replies = [r async for r in stream]
                check_async(replies)

            async def plain_echo() -> None:
                r = await pl.Echo(plain("hello"), timeout=TIMEOUT)
                assert r.text == "hello" and r.HasField("count") and r.count == 5, r
                r = await pl.Echo(plain(), timeout=TIMEOUT)
                assert not r.HasField("text") and r.HasField("count") and r.count == 0, r

            async def plain_collect() -> None:
                r = await pl.Collect([plain("a"), plain("b")], timeout=TIMEOUT)
                assert r.text == "a+b" and r.count == 2, r

            cases: List[Callable[[], Awaitable[None]]] = [
                echo_unary, echo_server_stream, echo_client_stream, echo_client_stream_empty, echo_bidi, echo_fail,
                keywords_class, keywords_import, keywords_none, keywords_async, plain_echo, plain_collect,
            ]
            for case in cases:
                try:
                    await case()
                    report(case.__name__, None)
                except Exception as e:  # noqa: BLE001 - reported as FAIL
                    report(case.__name__, e)
        return 1 if failures else 0

    return asyncio.run(run_aio())


if __name__ == "__main__":
    sys.exit(main())
