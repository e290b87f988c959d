"""TLS: mutual TLS with the peer's identity in handlers (sync and asyncio
servers), refusals that name the TLS cause, certificate reload, and the
Python client against the Rust interop server over TLS. Certificates come
from drpc-tls's gen-test-certs example (throwaway, made per session)."""

import asyncio
import subprocess

import pytest

import drpc
import drpc.aio

from conftest import REPO


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")
    r = subprocess.run(
        ["cargo", "run", "-q", "--release", "-p", "drpc-tls", "--example", "gen-test-certs", "--", str(out)],
        cwd=REPO, capture_output=True, text=True,
    )
    if r.returncode != 0:
        pytest.fail("gen-test-certs failed:\n" + r.stderr[-3000:])
    return out


def server_tls(certs, **kw):
    return drpc.ServerTLS(str(certs / "server.pem"), str(certs / "server-key.pem"), client_ca=str(certs / "ca.pem"), **kw)


def client_tls(certs, ca="ca.pem", identity=True, server_name="localhost"):
    if identity:
        return drpc.ClientTLS(ca=str(certs / ca), server_name=server_name,
                              cert=str(certs / "client.pem"), key=(certs / "client-key.pem").read_bytes())
    return drpc.ClientTLS(ca=str(certs / ca), server_name=server_name)


def whoami(req, ctx):
    tls = ctx.peer["tls"]
    if tls is None or not tls["certificates"]:
        raise drpc.Unauthenticated("a client certificate is required")
    if "CN=drpc-client" not in tls["subject"]:
        raise drpc.PermissionDenied(tls["subject"] + " may not")
    return "|".join([tls["subject"], ",".join(tls["dns_names"]), tls["version"], tls["alpn"] or "-",
                     str(ctx.peer["address"].startswith("127.0.0.1:")), str(tls["certificates"][0][:1] == b"\x30")]).encode()


def test_mutual_tls_identity_refusals_and_reload(certs):
    server = drpc.Server()
    server.unary("/t/Whoami")(whoami)
    addr = server.start("127.0.0.1:0", tls=server_tls(certs))
    try:
        with drpc.Client(addr, tls=client_tls(certs)) as c:
            got = c.invoke("/t/Whoami", b"").decode()
            assert got == "CN=drpc-client, O=drpc-rs tests|client.drpc.test|TLSv1.3|drpc|True|True"
        with pytest.raises(drpc.Unavailable, match="CertificateRequired"):
            with drpc.Client(addr, tls=client_tls(certs, identity=False)) as c:
                c.invoke("/t/Whoami", b"")
        with pytest.raises(drpc.Unavailable, match="UnknownIssuer"):
            drpc.Client(addr, tls=client_tls(certs, ca="other-ca.pem"))
        with pytest.raises(drpc.Unavailable, match="not valid for name"):
            drpc.Client(addr, tls=client_tls(certs, server_name="example.com"))
        # A plaintext client is told TLS is required.
        with pytest.raises(drpc.Unavailable, match="requires TLS"):
            with drpc.Client(addr) as c:
                c.invoke("/t/Whoami", b"", timeout=5)
        # Reload to an expired certificate: new connections fail, naming it.
        server.reload_tls(drpc.ServerTLS(str(certs / "expired.pem"), str(certs / "expired-key.pem"),
                                         client_ca=str(certs / "ca.pem")))
        with pytest.raises(drpc.Unavailable, match="expired"):
            drpc.Client(addr, tls=client_tls(certs))
        with pytest.raises(ValueError, match="TLS"):
            server.reload_tls(drpc.ServerTLS(b"junk", b"junk"))
        server.reload_tls(server_tls(certs))
        with drpc.Client(addr, tls=client_tls(certs)) as c:
            assert c.invoke("/t/Whoami", b"").startswith(b"CN=drpc-client")
    finally:
        server.stop(grace=1.0)


def test_bad_tls_arguments(certs):
    with pytest.raises(TypeError):
        drpc.Client("127.0.0.1:1", tls="ca.pem")
    with pytest.raises(ValueError, match="cert and key"):
        drpc.Client("127.0.0.1:1", tls=drpc.ClientTLS(ca=str(certs / "ca.pem"), cert=str(certs / "client.pem")))
    with pytest.raises(OSError):
        drpc.Client("127.0.0.1:1", tls=drpc.ClientTLS(ca="/nonexistent/ca.pem"))
    server = drpc.Server()
    with pytest.raises(ValueError, match="TLS"):
        server.start("127.0.0.1:0", tls=drpc.ServerTLS(str(certs / "server.pem"), str(certs / "client-key.pem")))
    with pytest.raises(RuntimeError, match="no TLS address"):
        server.reload_tls(server_tls(certs))
    server.stop()


def test_asyncio_server_and_client_over_tls(certs):
    async def main():
        server = drpc.aio.Server()

        @server.unary("/t/Peer")
        async def peer(req, ctx):
            return ctx.peer["tls"]["subject"].encode()

        addr = await server.start("127.0.0.1:0", tls=server_tls(certs))
        try:
            async with drpc.aio.Client(addr, tls=client_tls(certs)) as c:
                replies = await asyncio.gather(*[c.invoke("/t/Peer", b"") for _ in range(50)])
                assert all(r == b"CN=drpc-client, O=drpc-rs tests" for r in replies)
        finally:
            await server.stop(grace=1.0)

    asyncio.run(main())


def test_python_client_rust_server_over_tls(certs, rust_bins):
    rust_server, _ = rust_bins
    proc = subprocess.Popen([str(rust_server), "--addr", "127.0.0.1:0", "--tls-cert", str(certs / "server.pem"),
                             "--tls-key", str(certs / "server-key.pem"), "--tls-client-ca", str(certs / "ca.pem")],
                            stdout=subprocess.PIPE, text=True)
    try:
        addr = proc.stdout.readline().split()[1]
        r = subprocess.run(
            [__import__("sys").executable, "-m", "drpc.interop.client", "--addr", addr, "--mode", "mux",
             "--tls-ca", str(certs / "ca.pem"), "--tls-server-name", "localhost",
             "--tls-cert", str(certs / "client.pem"), "--tls-key", str(certs / "client-key.pem")],
            capture_output=True, text=True, timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.count("PASS ") >= 20, r.stdout
    finally:
        proc.terminate()
        assert proc.wait(10) == 0
