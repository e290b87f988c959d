//! TLS, mutual TLS, reload, peer identity, bad input and the shared-port
//! listener, over real sockets with certificates made by rcgen.

#[path = "../testcerts.rs"]
mod testcerts;

use bytes::Bytes;
use drpc_core::{CallOptions, Code, ConnOptions, Request, Router, Server, ServerOptions, Status, Stream};
use drpc_tls::{ClientAuth, ClientTlsConfig, Connector, SharedPort, TlsAcceptor, ServerTlsConfig, DRPC_HEADER};
use std::time::Duration;
use testcerts::{TestCa, TestCert, Validity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Unary `/t/Whoami` answers with the peer as text; `/t/Echo` streams back
/// what it gets; `/t/Admin` lets in only the client certificate `drpc-client`.
fn router() -> Router {
    Router::new()
        .unary_raw("/t/Whoami", |req: Request| async move {
            let peer = req.context.peer().ok_or_else(|| Status::internal("no peer"))?;
            let tls = peer.tls.as_ref();
            Ok(Bytes::from(format!(
                "addr={} tls={} version={} alpn={} subject={} dns={} ip={} uri={} chain={}",
                peer.addr.as_deref().unwrap_or("-"),
                tls.is_some(),
                tls.map(|t| t.version.as_str()).unwrap_or("-"),
                tls.and_then(|t| t.alpn.as_deref()).unwrap_or("-"),
                tls.and_then(|t| t.subject.as_deref()).unwrap_or("-"),
                tls.map(|t| t.dns_names.join(",")).unwrap_or_default(),
                tls.map(|t| t.ip_addresses.join(",")).unwrap_or_default(),
                tls.map(|t| t.uris.join(",")).unwrap_or_default(),
                tls.map(|t| t.certificates.len()).unwrap_or(0),
            )))
        })
        .unary_raw("/t/Admin", |req: Request| async move {
            let tls = req.context.peer().and_then(|p| p.tls.as_ref());
            match tls.and_then(|t| t.subject.as_deref()) {
                Some(subject) if subject.contains("CN=drpc-client") => Ok(Bytes::from_static(b"welcome")),
                Some(subject) => Err(Status::new(Code::PermissionDenied, format!("{subject} is not an admin"))),
                None => Err(Status::new(Code::Unauthenticated, "a client certificate is required")),
            }
        })
        .stream_raw("/t/Echo", |stream: Stream| async move {
            while let Some(msg) = stream.recv().await? {
                stream.send(msg).await?;
            }
            Ok(())
        })
}

struct Pki {
    ca: TestCa,
    server: TestCert,
    client: TestCert,
}

fn pki() -> Pki {
    let ca = TestCa::new("drpc test CA");
    let server = ca.issue("drpc-server", &["localhost"], Validity::Now);
    let client = ca.issue("drpc-client", &["client.drpc.test"], Validity::Now);
    Pki { ca, server, client }
}

fn server_config(pki: &Pki) -> ServerTlsConfig {
    ServerTlsConfig::from_pem(pki.server.cert_pem.clone(), pki.server.key_pem.clone())
}

fn client_config(pki: &Pki) -> ClientTlsConfig {
    ClientTlsConfig::ca_pem(pki.ca.pem()).server_name("localhost")
}

fn options(handshake_timeout: Duration) -> ServerOptions {
    let mut opts = ServerOptions::default();
    opts.conn.handshake_timeout = handshake_timeout;
    opts
}

async fn tls_server(config: &ServerTlsConfig) -> (Server, String, TlsAcceptor) {
    let server = Server::with_options(router(), options(Duration::from_secs(5)));
    let acceptor = TlsAcceptor::new(config).expect("server config");
    let addr = drpc_tls::listen_tls(&server, "127.0.0.1:0", acceptor.clone()).await.expect("listen");
    (server, addr, acceptor)
}

async fn whoami(connector: &Connector, addr: &str) -> Result<String, Status> {
    let conn = connector.connect(addr, ConnOptions::default()).await?;
    let reply = conn.unary("/t/Whoami", b"", &CallOptions::new().timeout(Duration::from_secs(5))).await;
    conn.close().await;
    reply.map(|b| String::from_utf8_lossy(&b).into_owned())
}

async fn expect_failure(connector: &Connector, addr: &str, cause: &str) -> Status {
    let status = whoami(connector, addr).await.expect_err("the connection must fail");
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains(cause), "{status} does not name {cause}");
    status
}

#[tokio::test]
async fn tls_unary_and_stream_with_peer_identity() {
    let pki = pki();
    let (server, addr, _) = tls_server(&server_config(&pki)).await;
    let connector = Connector::tls(&client_config(&pki)).unwrap();
    let me = whoami(&connector, &addr).await.unwrap();
    assert!(me.contains("tls=true version=TLSv1.3 alpn=drpc subject=- "), "{me}");
    assert!(me.starts_with("addr=127.0.0.1:"), "{me}");

    let conn = connector.connect(&addr, ConnOptions::default()).await.unwrap();
    let stream = conn.stream("/t/Echo", &CallOptions::new()).await.unwrap();
    for i in 0..50u32 {
        let msg = vec![i as u8; 1 + i as usize * 700];
        stream.send(&msg).await.unwrap();
        assert_eq!(stream.recv().await.unwrap().unwrap().as_ref(), msg.as_slice());
    }
    stream.close_send().await.unwrap();
    assert!(stream.recv().await.unwrap().is_none());
    // Many calls at once over one TLS connection.
    let calls = (0..200).map(|i| {
        let conn = conn.clone();
        async move {
            let s = conn.stream("/t/Echo", &CallOptions::new()).await?;
            s.send(format!("m{i}")).await?;
            let got = s.recv().await?.unwrap();
            s.close_send().await?;
            assert_eq!(got.as_ref(), format!("m{i}").as_bytes());
            Ok::<_, Status>(())
        }
    });
    for r in futures_join_all(calls).await {
        r.unwrap();
    }
    conn.close().await;
    server.shutdown(Duration::from_secs(1)).await;
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn tls12_only_client_is_served() {
    let pki = pki();
    let (_server, addr, _) = tls_server(&server_config(&pki)).await;
    let mut roots = rustls::RootCertStore::empty();
    let ca_der = rustls_pki_types::CertificateDer::from(pki.ca.cert.der().to_vec());
    roots.add(ca_der).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(&addr).await.unwrap();
    let tls = tokio_rustls_connect(config, tcp).await;
    let conn = drpc_core::Conn::new(tls, ConnOptions::default());
    let me = conn.unary("/t/Whoami", b"", &CallOptions::new()).await.unwrap();
    let me = String::from_utf8_lossy(&me);
    // No ALPN offered: still served.
    assert!(me.contains("version=TLSv1.2 alpn=- "), "{me}");
}

async fn tokio_rustls_connect(config: rustls::ClientConfig, tcp: TcpStream) -> impl tokio::io::AsyncRead + tokio::io::AsyncWrite {
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    connector.connect("localhost".try_into().unwrap(), tcp).await.unwrap()
}

#[tokio::test]
async fn mutual_tls_identity_reaches_the_handler() {
    let pki = pki();
    let config = server_config(&pki).client_ca_pem(pki.ca.pem());
    let (_server, addr, _) = tls_server(&config).await;
    let with_cert = Connector::tls(&client_config(&pki).identity_pem(pki.client.cert_pem.clone(), pki.client.key_pem.clone())).unwrap();
    let me = whoami(&with_cert, &addr).await.unwrap();
    assert!(me.contains("subject=CN=drpc-client, O=drpc-rs tests"), "{me}");
    assert!(me.contains("dns=client.drpc.test ip=127.0.0.1,::1 uri=spiffe://drpc.test/drpc-client chain=1"), "{me}");
    let conn = with_cert.connect(&addr, ConnOptions::default()).await.unwrap();
    assert_eq!(conn.unary("/t/Admin", b"", &CallOptions::new()).await.unwrap().as_ref(), b"welcome");

    // A certificate from the same CA but another name is authenticated, not authorized.
    let other = pki.ca.issue("mallory", &["mallory.test"], Validity::Now);
    let mallory = Connector::tls(&client_config(&pki).identity_pem(other.cert_pem, other.key_pem)).unwrap();
    let conn = mallory.connect(&addr, ConnOptions::default()).await.unwrap();
    let denied = conn.unary("/t/Admin", b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied, "{denied}");

    // No certificate: refused (TLS 1.3 reports it on the first read).
    let anonymous = Connector::tls(&client_config(&pki)).unwrap();
    let status = expect_failure(&anonymous, &addr, "CertificateRequired").await;
    assert!(status.message().contains("TLS: ") && status.message().contains("requires a client certificate"), "{status}");
    // A certificate from another CA: refused.
    let rogue_ca = TestCa::new("rogue CA");
    let rogue = rogue_ca.issue("drpc-client", &["client.drpc.test"], Validity::Now);
    let rogue = Connector::tls(&client_config(&pki).identity_pem(rogue.cert_pem, rogue.key_pem)).unwrap();
    expect_failure(&rogue, &addr, "alert").await;
    // And the server still serves.
    assert!(whoami(&with_cert, &addr).await.unwrap().contains("CN=drpc-client"));
}

#[tokio::test]
async fn optional_client_certificates() {
    let pki = pki();
    let config = server_config(&pki).client_ca_pem(pki.ca.pem()).client_auth(ClientAuth::Optional);
    let (_server, addr, _) = tls_server(&config).await;
    let anonymous = Connector::tls(&client_config(&pki)).unwrap();
    let conn = anonymous.connect(&addr, ConnOptions::default()).await.unwrap();
    let denied = conn.unary("/t/Admin", b"", &CallOptions::new()).await.unwrap_err();
    assert_eq!(denied.code(), Code::Unauthenticated, "{denied}");
    let with_cert = Connector::tls(&client_config(&pki).identity_pem(pki.client.cert_pem.clone(), pki.client.key_pem.clone())).unwrap();
    let conn = with_cert.connect(&addr, ConnOptions::default()).await.unwrap();
    assert_eq!(conn.unary("/t/Admin", b"", &CallOptions::new()).await.unwrap().as_ref(), b"welcome");
}

#[tokio::test]
async fn client_side_verification_failures_name_the_cause() {
    let pki = pki();
    let (_server, addr, _) = tls_server(&server_config(&pki)).await;
    let wrong_ca = Connector::tls(&ClientTlsConfig::ca_pem(TestCa::new("other").pem()).server_name("localhost")).unwrap();
    expect_failure(&wrong_ca, &addr, "UnknownIssuer").await;
    let wrong_name = Connector::tls(&ClientTlsConfig::ca_pem(pki.ca.pem()).server_name("example.com")).unwrap();
    expect_failure(&wrong_name, &addr, "not valid for name").await;
    // By default the name is the dialed host; 127.0.0.1 is in the certificate's SANs.
    let by_ip = Connector::tls(&ClientTlsConfig::ca_pem(pki.ca.pem())).unwrap();
    whoami(&by_ip, &addr).await.unwrap();

    for (validity, cause) in [(Validity::Expired, "certificate expired"), (Validity::NotYetValid, "not valid")] {
        let cert = pki.ca.issue("drpc-server", &["localhost"], validity);
        let (_s, bad_addr, _) = tls_server(&ServerTlsConfig::from_pem(cert.cert_pem, cert.key_pem)).await;
        expect_failure(&Connector::tls(&client_config(&pki)).unwrap(), &bad_addr, cause).await;
    }
    whoami(&Connector::tls(&client_config(&pki)).unwrap(), &addr).await.unwrap();
}

#[tokio::test]
async fn server_config_errors_are_reported() {
    let pki = pki();
    let other = pki.ca.issue("x", &["x"], Validity::Now);
    let mismatched = ServerTlsConfig::from_pem(pki.server.cert_pem.clone(), other.key_pem);
    assert!(TlsAcceptor::new(&mismatched).is_err());
    assert!(TlsAcceptor::new(&ServerTlsConfig::from_pem("junk", "junk")).err().unwrap().0.contains("certificate"));
    let no_ca = server_config(&pki).client_auth(ClientAuth::Required);
    assert!(TlsAcceptor::new(&no_ca).err().unwrap().0.contains("client CA"));
    assert!(ServerTlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").is_err());
}

#[tokio::test]
async fn plaintext_and_tls_mixups_fail_clearly() {
    let pki = pki();
    let (_server, tls_addr, _) = tls_server(&server_config(&pki)).await;
    // A plaintext client on the TLS port is told TLS is required.
    let conn = drpc_core::Conn::connect(&tls_addr, ConnOptions::default()).await.unwrap();
    let status = conn.unary("/t/Whoami", b"", &CallOptions::new().timeout(Duration::from_secs(5))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status}");
    assert!(status.message().contains("requires TLS"), "{status}");

    // A TLS client on a plaintext port.
    let plain = Server::new(router());
    let plain_addr = plain.listen("127.0.0.1:0").await.unwrap();
    let status = expect_failure(&Connector::tls(&client_config(&pki)).unwrap(), &plain_addr, "TLS handshake").await;
    assert!(status.message().contains("TLS"), "{status}");

    // Garbage instead of a ClientHello: closed, and the port keeps serving.
    for garbage in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0x16, 0x03, 0x01, 0xff, 0xff, 0, 0, 0, 0, 0][..], &[0u8; 64][..]] {
        let mut tcp = TcpStream::connect(&tls_addr).await.unwrap();
        tcp.write_all(garbage).await.unwrap();
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "garbage {garbage:?} left the connection open");
    }
    whoami(&Connector::tls(&client_config(&pki)).unwrap(), &tls_addr).await.unwrap();
}

#[tokio::test]
async fn stalled_handshakes_time_out_and_never_block_accepting() {
    let pki = pki();
    let server = Server::with_options(router(), options(Duration::from_millis(400)));
    let acceptor = TlsAcceptor::new(&server_config(&pki)).unwrap();
    let addr = drpc_tls::listen_tls(&server, "127.0.0.1:0", acceptor).await.unwrap();
    // 100 peers open TLS and stall: one sends nothing, the others half a record.
    let mut stalled = Vec::new();
    for i in 0..100 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        if i > 0 {
            tcp.write_all(&[0x16, 0x03, 0x01, 0x01, 0x00, 0x01]).await.unwrap();
        }
        stalled.push(tcp);
    }
    // Meanwhile a real client connects at once.
    let started = std::time::Instant::now();
    whoami(&Connector::tls(&client_config(&pki)).unwrap(), &addr).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(400), "accepting was blocked");
    // Every stalled peer is closed after the handshake timeout.
    for mut tcp in stalled {
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(3), tcp.read(&mut buf)).await.expect("closed in time");
        assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    }
    // A client whose TLS handshake stalls gives up with a clear error.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let connector = Connector::tls(&client_config(&pki)).unwrap().handshake_timeout(Duration::from_millis(300));
    expect_failure(&connector, &silent_addr, "timed out").await;
}

#[tokio::test]
async fn handshakes_count_against_the_memory_budget() {
    let pki = pki();
    let mut opts = options(Duration::from_millis(500));
    opts.memory_budget = drpc_core::HANDSHAKE_OVERHEAD + (12 << 10);
    let server = Server::with_options(router(), opts);
    let acceptor = TlsAcceptor::new(&server_config(&pki)).unwrap();
    let addr = drpc_tls::listen_tls(&server, "127.0.0.1:0", acceptor).await.unwrap();
    let stalled = TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(server.memory_budget().used() >= drpc_core::HANDSHAKE_OVERHEAD);
    // The budget holds one handshake: the next connection is refused at once.
    let mut refused = TcpStream::connect(&addr).await.unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_millis(300), refused.read(&mut buf)).await.expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)));
    // Once the stalled handshake times out, its memory is back.
    tokio::time::sleep(Duration::from_millis(700)).await;
    drop(stalled);
    assert!(server.memory_budget().used() < drpc_core::HANDSHAKE_OVERHEAD);
}

#[tokio::test]
async fn reload_changes_the_certificate_for_new_connections() {
    let pki = pki();
    let (_server, addr, acceptor) = tls_server(&server_config(&pki)).await;
    let old_client = Connector::tls(&client_config(&pki)).unwrap();
    let kept = old_client.connect(&addr, ConnOptions::default()).await.unwrap();

    let next_ca = TestCa::new("next CA");
    let next = next_ca.issue("drpc-server-2", &["localhost"], Validity::Now);
    assert!(acceptor.reload(&ServerTlsConfig::from_pem("bad", "bad")).is_err());
    whoami(&old_client, &addr).await.unwrap();
    acceptor.reload(&ServerTlsConfig::from_pem(next.cert_pem, next.key_pem)).unwrap();

    expect_failure(&old_client, &addr, "UnknownIssuer").await;
    let new_client = Connector::tls(&ClientTlsConfig::ca_pem(next_ca.pem()).server_name("localhost")).unwrap();
    whoami(&new_client, &addr).await.unwrap();
    // The connection made before the reload keeps working.
    kept.unary("/t/Whoami", b"", &CallOptions::new()).await.unwrap();
}

/// Answers every connection with a fixed HTTP response.
async fn http_fallback(mut io: drpc_tls::Prefixed<drpc_core::Socket>, _peer: drpc_core::Peer) {
    let mut buf = [0u8; 1024];
    let mut got = Vec::new();
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match io.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    let body = format!("saw {}", String::from_utf8_lossy(&got[..got.iter().position(|&b| b == b'\r').unwrap()]));
    let reply = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    let _ = io.write_all(reply.as_bytes()).await;
    let _ = io.shutdown().await;
}

async fn http_get(addr: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn shared_port_routes_by_the_drpcmigrate_header() {
    let pki = pki();
    let server = Server::new(router());
    let addr = SharedPort::new().fallback(http_fallback).listen(&server, "127.0.0.1:0").await.unwrap();
    let with_header = Connector::plaintext().drpcmigrate_header(true);
    assert!(whoami(&with_header, &addr).await.unwrap().contains("tls=false"));
    assert!(http_get(&addr).await.ends_with("saw GET /hello HTTP/1.1"));
    // Without a fallback and without serve_headerless, headerless DRPC is refused.
    let strict = SharedPort::new().listen(&server, "127.0.0.1:0").await.unwrap();
    assert!(whoami(&Connector::plaintext(), &strict).await.is_err());
    whoami(&with_header, &strict).await.unwrap();
    // serve_headerless: old clients keep working during a migration.
    let lenient = SharedPort::new().serve_headerless(true).listen(&server, "127.0.0.1:0").await.unwrap();
    whoami(&Connector::plaintext(), &lenient).await.unwrap();
    whoami(&with_header, &lenient).await.unwrap();
    // TLS after the header, beside HTTP on the same port.
    let tls = SharedPort::new()
        .tls(TlsAcceptor::new(&server_config(&pki)).unwrap())
        .fallback(http_fallback)
        .listen(&server, "127.0.0.1:0")
        .await
        .unwrap();
    let tls_header = Connector::tls(&client_config(&pki)).unwrap().drpcmigrate_header(true);
    assert!(whoami(&tls_header, &tls).await.unwrap().contains("tls=true"));
    assert!(http_get(&tls).await.ends_with("saw GET /hello HTTP/1.1"));
    // A header sent byte by byte is still recognized.
    let mut tcp = TcpStream::connect(&addr).await.unwrap();
    for b in DRPC_HEADER {
        tcp.write_all(&[*b]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let conn = drpc_core::Conn::new(tcp, ConnOptions::default());
    conn.unary("/t/Whoami", b"", &CallOptions::new()).await.unwrap();
}

/// The "requires TLS" answer reaches every plaintext client: 200 at once,
/// each with a large request still queued when the server answers.
#[tokio::test]
async fn plaintext_clients_always_get_the_tls_required_answer() {
    let pki = pki();
    let (_server, addr, _) = tls_server(&server_config(&pki)).await;
    let attempts = (0..200).map(|i| {
        let addr = addr.clone();
        async move {
            let conn = drpc_core::Conn::connect(&addr, ConnOptions::default()).await.unwrap();
            // A large request, so unread input is still queued when the server answers.
            let request = vec![i as u8; 200_000];
            let status = conn.unary("/t/Whoami", &request, &CallOptions::new().timeout(Duration::from_secs(10))).await;
            status.expect_err("plaintext must be refused")
        }
    });
    for attempt in futures_join_all(attempts).await {
        assert!(attempt.message().contains("requires TLS"), "{attempt}");
    }
}
