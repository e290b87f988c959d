import pickle

import pytest

import drpc
from drpc.errors import _from_status


def test_rpc_error_forms():
    e = drpc.RpcError(7, "denied")
    assert e.code == drpc.StatusCode.PERMISSION_DENIED and e.message == "denied"
    assert str(e) == "PERMISSION_DENIED: denied"
    e = drpc.NotFound("missing")
    assert e.code == 5 and e.message == "missing" and isinstance(e, drpc.RpcError)
    assert drpc.NotFound().message == ""
    assert drpc.NotFound(message="m").message == "m"
    assert drpc.Canceled is drpc.Cancelled
    assert drpc.RpcError(99, "x").code == 99
    with pytest.raises(TypeError):
        drpc.RpcError("x", 1)
    with pytest.raises(ValueError):
        drpc.RpcError(-1, "x")


def test_from_status_and_pickle():
    assert type(_from_status(4, 4, "late")) is drpc.DeadlineExceeded
    assert type(_from_status(2, 0, "z")) is drpc.Unknown
    e = _from_status(2, 777, "custom")
    assert type(e) is drpc.RpcError and e.code == 777
    e2 = pickle.loads(pickle.dumps(drpc.Unavailable("gone")))
    assert type(e2) is drpc.Unavailable and e2.message == "gone"


@pytest.mark.parametrize(
    "kwargs,exc",
    [
        (dict(rpc=1, request=b""), TypeError),
        (dict(rpc="", request=b""), ValueError),
        (dict(rpc="/t/Echo", request="text"), TypeError),
        (dict(rpc="/t/Echo", request=123), TypeError),
        (dict(rpc="/t/Echo", request=b"", metadata=["a"]), TypeError),
        (dict(rpc="/t/Echo", request=b"", metadata={"a": 1}), TypeError),
        (dict(rpc="/t/Echo", request=b"", metadata={1: "a"}), TypeError),
        (dict(rpc="/t/Echo", request=b"", timeout=-1), ValueError),
        (dict(rpc="/t/Echo", request=b"", timeout=float("nan")), ValueError),
        (dict(rpc="/t/Echo", request=b"", timeout="1"), TypeError),
        (dict(rpc="/t/Echo", request=b"", response_type=int), TypeError),
    ],
)
def test_bad_invoke_arguments(client, kwargs, exc):
    with pytest.raises(exc):
        client.invoke(**kwargs)


def test_bad_stream_arguments(client):
    with pytest.raises(TypeError):
        client.stream(None)
    with client.stream("/t/Upper") as s:
        with pytest.raises(TypeError):
            s.send("str is not bytes")
        s.send(b"ok")
        assert s.recv() == b"OK"


@pytest.mark.parametrize(
    "addr,exc",
    [(123, TypeError), ("nohost", ValueError), ("host:notaport", ValueError), ("unix:", ValueError),
     ("h:99999", ValueError)],
)
def test_bad_addresses(addr, exc):
    with pytest.raises(exc):
        drpc.Client(addr)
    with pytest.raises(exc):
        drpc.Server().start(addr)


def test_bad_options():
    with pytest.raises(ValueError):
        drpc.Client("127.0.0.1:1", max_message_size=0)
    with pytest.raises(TypeError):
        drpc.Client("127.0.0.1:1", max_message_size="big")
    with pytest.raises(TypeError):
        drpc.Client("127.0.0.1:1", sequential="yes")
    with pytest.raises(ValueError):
        drpc.Server(max_message_size=-5)
    with pytest.raises(ValueError):
        drpc.Server().stop(grace=-1)


def test_listen_error():
    s = drpc.Server()
    addr = s.start("127.0.0.1:0")
    try:
        with pytest.raises(OSError):
            drpc.Server().start(addr)
    finally:
        s.stop()


def test_rpc_error_code_as_name_or_enum():
    e = drpc.RpcError("NOT_FOUND", "no key")
    assert type(e) is drpc.NotFound and e.code == drpc.StatusCode.NOT_FOUND and e.message == "no key"
    assert isinstance(drpc.RpcError("not_found"), drpc.NotFound)
    assert drpc.RpcError("not_found").message == ""
    assert type(drpc.RpcError(drpc.StatusCode.PERMISSION_DENIED, "x")) is drpc.PermissionDenied
    assert type(drpc.RpcError("CANCELED")) is drpc.Cancelled
    assert type(drpc.RpcError(5)) is drpc.NotFound
    assert type(drpc.RpcError(99, "custom")) is drpc.RpcError
    assert drpc.NotFound("NOT_FOUND", "m").message == "m"
    assert drpc.NotFound(5, "m").code == 5
    # A subclass's single str argument is its message, whatever it says.
    assert drpc.Unknown("unknown").message == "unknown"
    with pytest.raises(ValueError, match="not a StatusCode name"):
        drpc.RpcError("NOPE", "x")
    with pytest.raises(ValueError, match="has code 5"):
        drpc.NotFound("INTERNAL", "x")
    with pytest.raises(TypeError):
        drpc.RpcError(1.5, "x")
    with pytest.raises(TypeError):
        drpc.RpcError(True, "x")
    assert pickle.loads(pickle.dumps(drpc.RpcError("NOT_FOUND", "p"))).message == "p"


def test_handler_raising_rpc_error_with_a_code_name(server):
    s = drpc.Server()

    @s.unary("/t/Named")
    def named(req, ctx):
        raise drpc.RpcError(req.decode(), "by name")

    addr = s.start("127.0.0.1:0")
    try:
        with drpc.Client(addr) as c:
            with pytest.raises(drpc.NotFound, match="by name"):
                c.invoke("/t/Named", b"NOT_FOUND")
            with pytest.raises(drpc.Unavailable):
                c.invoke("/t/Named", b"unavailable")
            # A bad code name is the handler's bug: Unknown, with the reason.
            with pytest.raises(drpc.Unknown, match="not a StatusCode name"):
                c.invoke("/t/Named", b"NO_SUCH_CODE")
    finally:
        s.stop(0)
