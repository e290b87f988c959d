import threading

import pytest

import drpc
from drpc.interop import test_pb2 as pb


def test_unary_bytes_and_async_handler(client):
    assert client.invoke("/t/Echo", b"hello") == b"hello"
    assert client.invoke("/t/Echo", b"") == b""
    assert client.invoke("/t/Echo", bytearray(b"ba")) == b"ba"
    assert client.invoke("/t/AEcho", memoryview(b"mv")) == b"mv"


def test_unary_protobuf(client):
    req = pb.SimpleRequest(response_size=10, payload=pb.Payload(body=b"abc"))
    resp = client.invoke("/t/Proto", req, response_type=pb.SimpleResponse)
    assert isinstance(resp, pb.SimpleResponse)
    assert resp.payload.body == bytes(10) and resp.request_payload_size == 3


def test_metadata(client):
    out = client.invoke("/t/Meta", b"", metadata={"a": "1", "k": "välue/世界"})
    assert out.decode() == repr([("a", "1"), ("k", "välue/世界")])


@pytest.mark.parametrize(
    "code,cls",
    [(1, drpc.Cancelled), (3, drpc.InvalidArgument), (4, drpc.DeadlineExceeded), (5, drpc.NotFound),
     (8, drpc.ResourceExhausted), (12, drpc.Unimplemented), (13, drpc.Internal), (14, drpc.Unavailable),
     (16, drpc.Unauthenticated)],
)
def test_error_codes(client, code, cls):
    with pytest.raises(cls) as ei:
        client.invoke("/t/Fail", f"{code}:msg {code}".encode())
    assert ei.value.code == code and ei.value.message == f"msg {code}"
    assert isinstance(ei.value, drpc.RpcError)


def test_error_zero_and_custom_codes(client):
    with pytest.raises(drpc.Unknown) as ei:
        client.invoke("/t/Fail", b"0:zero")
    assert ei.value.code == drpc.StatusCode.UNKNOWN and ei.value.message == "zero"
    with pytest.raises(drpc.RpcError) as ei:
        client.invoke("/t/Fail", b"1234:custom")
    assert ei.value.code == 1234 and type(ei.value) is drpc.RpcError


def test_handler_exception_is_unknown(client):
    with pytest.raises(drpc.Unknown) as ei:
        client.invoke("/t/Boom", b"")
    assert ei.value.code == 2 and ei.value.message == "kaboom"
    with pytest.raises(drpc.NotFound, match="async missing"):
        client.invoke("/t/AFail", b"")


def test_unimplemented(client):
    with pytest.raises(drpc.Unimplemented) as ei:
        client.invoke("/no.Such/Method", b"")
    assert "/no.Such/Method" in ei.value.message


@pytest.mark.parametrize("prefix", ["", "A"])
def test_streaming_shapes(client, prefix):
    assert list(client.server_stream(f"/t/{prefix}Count", b"4")) == [b"0", b"1", b"2", b"3"]
    assert client.client_stream(f"/t/{prefix}Sum", [b"1", b"2", b"39"]) == b"42"
    with client.stream(f"/t/{prefix}Upper") as s:
        for w in [b"a", b"bc", b"def"]:
            s.send(w)
            assert s.recv() == w.upper()
        s.close_send()
        assert s.recv() is None
        assert s.finished


def test_raw_stream_and_iteration(client):
    with client.stream("/t/Raw") as s:
        s.send(b"x")
        assert s.recv() == b"got x"
        s.send(b"y")
        s.send(b"z")
        s.close_send()
        assert list(s) == [b"rest 2"]


def test_stream_error_after_message(client):
    s = client.stream("/t/StreamFail")
    s.close_send()
    assert s.recv() == b"one"
    with pytest.raises(drpc.PermissionDenied, match="go away"):
        s.recv()


def test_stream_protobuf_types(server):
    s = drpc.Server()

    @s.bidi_streaming("/p/Dup", request_type=pb.StreamingOutputCallRequest)
    def dup(reqs, ctx):
        for r in reqs:
            for p in r.response_parameters:
                yield pb.StreamingOutputCallResponse(payload=pb.Payload(body=bytes(p.size)))

    addr = s.start("127.0.0.1:0")
    try:
        with drpc.Client(addr) as c, c.stream("/p/Dup", response_type=pb.StreamingOutputCallResponse) as st:
            st.send(pb.StreamingOutputCallRequest(response_parameters=[pb.ResponseParameters(size=3)] * 2))
            st.close_send()
            got = [len(r.payload.body) for r in st]
            assert got == [3, 3]
    finally:
        s.stop()


def test_unix_socket(tmp_path):
    s = drpc.Server()
    s.unary("/t/Echo", lambda r, c: r)
    path = f"unix:{tmp_path}/sock"
    with s:
        assert s.start(path) == path
        with drpc.Client(path) as c:
            assert c.invoke("/t/Echo", b"unix") == b"unix"


def test_sequential_mode(server):
    with drpc.Client(server.address, sequential=True) as c:
        assert c.sequential
        results = []

        def call(i):
            results.append(c.invoke("/t/Echo", str(i).encode()))

        ts = [threading.Thread(target=call, args=(i,)) for i in range(8)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert sorted(results) == sorted(str(i).encode() for i in range(8))
        assert list(c.server_stream("/t/Count", b"2")) == [b"0", b"1"]


def test_max_message_size(server):
    with drpc.Client(server.address, max_message_size=1000) as c:
        with pytest.raises(drpc.ResourceExhausted):
            c.invoke("/t/Echo", bytes(2000))
        assert c.invoke("/t/Echo", bytes(500)) == bytes(500)


def test_close_makes_calls_unavailable(server):
    c = drpc.Client(server.address)
    assert not c.closed
    c.close()
    assert c.closed
    with pytest.raises(drpc.Unavailable):
        c.invoke("/t/Echo", b"")
    c.close()  # idempotent


def test_connect_refused():
    s = drpc.Server()
    addr = s.start("127.0.0.1:0")
    s.stop()
    with pytest.raises(drpc.Unavailable):
        drpc.connect(addr)


def test_server_stop_fails_calls(server):
    c = drpc.Client(server.address)
    assert c.invoke("/t/Echo", b"1") == b"1"
    server.stop(0)
    with pytest.raises(drpc.Unavailable):
        c.invoke("/t/Echo", b"2")
    c.close()


def test_server_stop_grace_lets_calls_finish(server):
    c = drpc.Client(server.address)
    out = []
    t = threading.Thread(target=lambda: out.append(c.invoke("/t/Sleep", b"0.3")))
    t.start()
    import time

    time.sleep(0.1)
    assert server.active_rpcs == 1
    server.stop(grace=2.0)
    t.join()
    assert out == [b"slept"]
    c.close()


def test_registration_errors():
    s = drpc.Server()
    s.unary("/a/B", lambda r, c: r)
    with pytest.raises(ValueError, match="already registered"):
        s.unary("/a/B", lambda r, c: r)
    with pytest.raises(TypeError):
        s.unary("/a/C", 42)
    with pytest.raises(TypeError):
        s.unary(b"/a/D", lambda r, c: r)
    with pytest.raises(TypeError):
        s.unary("/a/E", lambda r, c: r, request_type=int)
    s.start("127.0.0.1:0")
    with pytest.raises(RuntimeError):
        s.unary("/a/F", lambda r, c: r)
    s.stop()


def test_handler_bad_return_type(server):
    s = drpc.Server()
    s.unary("/a/Bad", lambda r, c: 42)
    with s:
        addr = s.start("127.0.0.1:0")
        with drpc.Client(addr) as c, pytest.raises(drpc.Unknown, match="bytes or a protobuf message"):
            c.invoke("/a/Bad", b"")


def test_context_properties():
    s = drpc.Server()
    seen = {}

    @s.unary("/ctx/Get")
    def get(req, ctx):
        seen.update(rpc=ctx.rpc, md=ctx.metadata, cancelled=ctx.is_cancelled(), sid=ctx.stream_id)
        return b""

    with s:
        with drpc.Client(s.start("127.0.0.1:0")) as c:
            c.invoke("/ctx/Get", b"", metadata={"x": "y"})
    assert seen == {"rpc": "/ctx/Get", "md": {"x": "y"}, "cancelled": False, "sid": 1}


def test_shared_client_after_server_restart_is_unavailable():
    s = drpc.Server()
    s.unary("/t/Echo", lambda r, c: r)
    addr = s.start("127.0.0.1:0")
    c = drpc.Client(addr)
    s.stop()
    with pytest.raises(drpc.Unavailable):
        c.invoke("/t/Echo", b"")
    c.close()
