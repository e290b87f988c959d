import threading

import drpc


def test_32_threads_share_one_client(server, client):
    errors = []
    barrier = threading.Barrier(32)

    def worker(i):
        try:
            barrier.wait()
            for j in range(100):
                payload = f"{i}:{j}".encode() * (1 + (i * j) % 50)
                rpc = "/t/Echo" if j % 3 else "/t/AEcho"
                assert client.invoke(rpc, payload) == payload
            with client.stream("/t/Upper") as s:
                for j in range(20):
                    s.send(b"x%d" % j)
                    assert s.recv() == b"X%d" % j
                s.close_send()
                assert s.recv() is None
            if i % 4 == 0:
                try:
                    client.invoke("/t/Fail", b"5:nf")
                except drpc.NotFound:
                    pass
        except BaseException as e:  # noqa: BLE001
            errors.append((i, repr(e)))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_32_threads_own_clients_and_shared_stream(server):
    errors = []

    def worker(i):
        try:
            with drpc.Client(server.address, sequential=(i % 2 == 0)) as c:
                for j in range(30):
                    assert c.invoke("/t/Echo", b"%d" % j) == b"%d" % j
        except BaseException as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
    [t.start() for t in threads]
    [t.join(60) for t in threads]
    assert errors == []

    # one stream, one thread sending while another receives
    with drpc.Client(server.address) as c, c.stream("/t/Upper") as s:
        got = []
        r = threading.Thread(target=lambda: got.extend(s))
        r.start()
        for j in range(200):
            s.send(b"m%d" % j)
        s.close_send()
        r.join(30)
        assert got == [b"M%d" % j for j in range(200)]
