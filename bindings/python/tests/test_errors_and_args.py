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
