"""The edge-case services (tests/codegen/proto/edge/) served with the code
drpc.codegen generated (semantics: tests/codegen/README.md).

    python edge_server.py --gen DIR --addr HOST:PORT [--api sync|aio]

DIR holds the generated edge/*_pb2.py and edge/*_drpc.py. Prints
"listening HOST:PORT", serves until SIGTERM/SIGINT, then exits 0.
--api sync serves with drpc.Server and mostly plain methods and generators
(Keywords mixes in a coroutine and an async generator); --api aio serves
with drpc.aio.Server and only coroutines and async generators.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
from typing import AsyncIterator, Iterator, Optional

import drpc
import drpc.aio


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gen", required=True)
    parser.add_argument("--addr", default="127.0.0.1:0")
    parser.add_argument("--api", choices=["sync", "aio"], default="sync")
    opts = parser.parse_args()
    sys.path.insert(0, opts.gen)
    from edge import common_pb2, edge_drpc, edge_pb2, plain_drpc, plain_pb2
    from google.protobuf import empty_pb2, timestamp_pb2, wrappers_pb2

    def unary_reply(request: edge_pb2.Request, metadata_value: Optional[str], index: int) -> edge_pb2.Reply:
        reply = edge_pb2.Reply(
            text="unary:" + request.text,
            number=request.number + 1,
            tag=request.tag,
            metadata_value=metadata_value or "",
            index=index,
        )
        if request.HasField("inner"):
            reply.outer.inner.CopyFrom(request.inner)
        reply.outer.items.add(value=getattr(request, "int"), label=getattr(request, "class") + "|" + request.type)
        if request.HasField("at"):
            reply.at.CopyFrom(request.at)
        return reply

    def fail(request: edge_pb2.Request) -> drpc.RpcError:
        return drpc.RpcError(int(request.number), request.text)

    def upper(msg: plain_pb2.PlainMessage, position: int) -> plain_pb2.PlainMessage:
        out = plain_pb2.PlainMessage(count=position)
        if msg.HasField("text"):
            out.text = msg.text.upper()
        return out

    class SyncEcho(edge_drpc.EchoServicer):
        def Unary(self, request: edge_pb2.Request, context: drpc.ServerContext) -> edge_pb2.Reply:
            return unary_reply(request, context.metadata.get("edge-key"), len(request.detail.notes))

        def ServerStream(self, request: edge_pb2.Request, context: drpc.ServerContext) -> Iterator[edge_pb2.Reply]:
            for i in range(request.number):
                yield edge_pb2.Reply(text=request.text, index=i)

        def ClientStream(self, requests: Iterator[edge_pb2.Request], context: drpc.ServerContext) -> edge_pb2.Reply:
            items = list(requests)
            return edge_pb2.Reply(
                text=",".join(r.text for r in items), number=sum(r.number for r in items), index=len(items)
            )

        def Bidi(self, requests: Iterator[edge_pb2.Request], context: drpc.ServerContext) -> Iterator[edge_pb2.Reply]:
            md = context.metadata.get("edge-key")
            for i, request in enumerate(requests):
                yield unary_reply(request, md, i)

        def Fail(self, request: edge_pb2.Request, context: drpc.ServerContext) -> empty_pb2.Empty:
            raise fail(request)

    class SyncKeywords(edge_drpc.KeywordsServicer):
        async def class_(self, request: wrappers_pb2.Int64Value, context: drpc.ServerContext) -> timestamp_pb2.Timestamp:
            return timestamp_pb2.Timestamp(seconds=request.value, nanos=7)

        async def import_(
            self, request: wrappers_pb2.StringValue, context: drpc.ServerContext
        ) -> AsyncIterator[wrappers_pb2.StringValue]:
            for ch in request.value:
                yield wrappers_pb2.StringValue(value=ch)

        def None_(self, requests: Iterator[common_pb2.Outer.Inner], context: drpc.ServerContext) -> common_pb2.Outer:
            return common_pb2.Outer(items=list(requests))

        def async_(
            self, requests: Iterator[plain_pb2.PlainMessage], context: drpc.ServerContext
        ) -> Iterator[plain_pb2.PlainMessage]:
            for i, msg in enumerate(requests):
                yield upper(msg, i)

    class SyncPlain(plain_drpc.PlainServicer):
        def Echo(self, request: plain_pb2.PlainMessage, context: drpc.ServerContext) -> plain_pb2.PlainMessage:
            out = plain_pb2.PlainMessage(count=len(request.text))
            if request.HasField("text"):
                out.text = request.text
            return out

        def Collect(
            self, requests: Iterator[plain_pb2.PlainMessage], context: drpc.ServerContext
        ) -> plain_pb2.PlainMessage:
            texts = [m.text for m in requests]
            return plain_pb2.PlainMessage(text="+".join(texts), count=len(texts))

    class AsyncEcho(edge_drpc.EchoServicer):
        async def Unary(self, request: edge_pb2.Request, context: drpc.ServerContext) -> edge_pb2.Reply:
            return unary_reply(request, context.metadata.get("edge-key"), len(request.detail.notes))

        async def ServerStream(
            self, request: edge_pb2.Request, context: drpc.ServerContext
        ) -> AsyncIterator[edge_pb2.Reply]:
            for i in range(request.number):
                yield edge_pb2.Reply(text=request.text, index=i)

        async def ClientStream(
            self, requests: AsyncIterator[edge_pb2.Request], context: drpc.ServerContext
        ) -> edge_pb2.Reply:
            items = [r async for r in requests]
            return edge_pb2.Reply(
                text=",".join(r.text for r in items), number=sum(r.number for r in items), index=len(items)
            )

        async def Bidi(
            self, requests: AsyncIterator[edge_pb2.Request], context: drpc.ServerContext
        ) -> AsyncIterator[edge_pb2.Reply]:
            md = context.metadata.get("edge-key")
            i = 0
            async for request in requests:
                yield unary_reply(request, md, i)
                i += 1

        async def Fail(self, request: edge_pb2.Request, context: drpc.ServerContext) -> empty_pb2.Empty:
            raise fail(request)

    class AsyncKeywords(edge_drpc.KeywordsServicer):
        async def class_(self, request: wrappers_pb2.Int64Value, context: drpc.ServerContext) -> timestamp_pb2.Timestamp:
            return timestamp_pb2.Timestamp(seconds=request.value, nanos=7)

        async def import_(
            self, request: wrappers_pb2.StringValue, context: drpc.ServerContext
        ) -> AsyncIterator[wrappers_pb2.StringValue]:
            for ch in request.value:
                yield wrappers_pb2.StringValue(value=ch)

        async def None_(
            self, requests: AsyncIterator[common_pb2.Outer.Inner], context: drpc.ServerContext
        ) -> common_pb2.Outer:
            return common_pb2.Outer(items=[r async for r in requests])

        async def async_(
            self, requests: AsyncIterator[plain_pb2.PlainMessage], context: drpc.ServerContext
        ) -> AsyncIterator[plain_pb2.PlainMessage]:
            i = 0
            async for msg in requests:
                yield upper(msg, i)
                i += 1

    class AsyncPlain(plain_drpc.PlainServicer):
        async def Echo(self, request: plain_pb2.PlainMessage, context: drpc.ServerContext) -> plain_pb2.PlainMessage:
            out = plain_pb2.PlainMessage(count=len(request.text))
            if request.HasField("text"):
                out.text = request.text
            return out

        async def Collect(
            self, requests: AsyncIterator[plain_pb2.PlainMessage], context: drpc.ServerContext
        ) -> plain_pb2.PlainMessage:
            texts = [m.text async for m in requests]
            return plain_pb2.PlainMessage(text="+".join(texts), count=len(texts))

    if opts.api == "sync":
        server = drpc.Server()
        edge_drpc.add_Echo_to_server(SyncEcho(), server)
        edge_drpc.add_Keywords_to_server(SyncKeywords(), server)
        plain_drpc.add_Plain_to_server(SyncPlain(), server)
        print("listening", server.start(opts.addr), flush=True)
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        while not stop.wait(0.2):
            pass
        server.stop(grace=1.0)
        return 0

    async def serve() -> None:
        server = drpc.aio.Server()
        edge_drpc.add_Echo_to_server(AsyncEcho(), server)
        edge_drpc.add_Keywords_to_server(AsyncKeywords(), server)
        plain_drpc.add_Plain_to_server(AsyncPlain(), server)
        print("listening", await server.start(opts.addr), flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        await stop.wait()
        await server.stop(grace=1.0)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
