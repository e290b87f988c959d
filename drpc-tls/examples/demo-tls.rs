//! `make demo TLS=1`: the main demo over mutual TLS. One server, one client,
//! ONE TLS connection (rustls, certificates made now by rcgen), and over it
//! 1,000 concurrent unary calls and several bidi streams; every handler
//! checks the client certificate's identity before answering.

#[path = "../testcerts.rs"]
mod testcerts;

use bytes::Bytes;
use drpc_core::{CallOptions, Code, ConnOptions, Router, Server, Status, Stream};
use drpc_tls::{ClientTlsConfig, Connector, ServerTlsConfig, TlsAcceptor};
use std::time::{Duration, Instant};
use testcerts::{TestCa, Validity};

const UNARY_CALLS: usize = 1000;
const BIDI_STREAMS: usize = 8;
const BIDI_ROUNDS: usize = 100;

/// Authorization in a handler: only the certificate `CN=demo-client` may call.
fn authorize(ctx: &drpc_core::CallContext) -> Result<(), Status> {
    let tls = ctx.peer().and_then(|p| p.tls.as_ref());
    match tls.and_then(|t| t.subject.as_deref()) {
        Some(subject) if subject.contains("CN=demo-client") => Ok(()),
        Some(subject) => Err(Status::new(Code::PermissionDenied, format!("{subject} may not call"))),
        None => Err(Status::new(Code::Unauthenticated, "a client certificate is required")),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let ca = TestCa::new("demo CA");
    let server_cert = ca.issue("demo-server", &["localhost"], Validity::Now);
    let client_cert = ca.issue("demo-client", &["client.demo"], Validity::Now);

    let router = Router::new()
        .unary_raw("/demo.Echo/Unary", |req| async move {
            authorize(&req.context)?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<Bytes, Status>(req.data)
        })
        .bidi("/demo.Echo/Bidi", |stream: Stream| async move {
            authorize(stream.context())?;
            while let Some(msg) = stream.recv().await? {
                stream.send(msg).await?;
            }
            Ok(())
        });
    let server = Server::new(router);
    let tls = ServerTlsConfig::from_pem(server_cert.cert_pem, server_cert.key_pem).client_ca_pem(ca.pem());
    let addr = drpc_tls::listen_tls(&server, "127.0.0.1:0", TlsAcceptor::new(&tls)?).await?;
    println!("server listening on {addr} (TLS, client certificates required)");

    let client = ClientTlsConfig::ca_pem(ca.pem())
        .server_name("localhost")
        .identity_pem(client_cert.cert_pem, client_cert.key_pem);
    let conn = Connector::tls(&client)?.connect(&addr, ConnOptions::default()).await?;
    let start = Instant::now();
    let unary = (0..UNARY_CALLS).map(|i| {
        let conn = conn.clone();
        tokio::spawn(async move {
            let request = format!("request {i}");
            let response = conn.unary("/demo.Echo/Unary", request.as_bytes(), &CallOptions::new()).await?;
            if response != request.as_bytes() {
                return Err(Status::internal(format!("call {i} got another call's response")));
            }
            Ok(())
        })
    });
    let bidi = (0..BIDI_STREAMS).map(|s| {
        let conn = conn.clone();
        tokio::spawn(async move {
            let stream = conn.stream("/demo.Echo/Bidi", &CallOptions::new()).await?;
            for round in 0..BIDI_ROUNDS {
                let msg = format!("stream {s} round {round}");
                stream.send(msg.as_bytes()).await?;
                if stream.recv().await?.as_deref() != Some(msg.as_bytes()) {
                    return Err(Status::internal(format!("stream {s} round {round}: wrong echo")));
                }
            }
            stream.close_send().await?;
            Ok(())
        })
    });
    let handles: Vec<_> = unary.chain(bidi).collect();
    let mut errors = 0;
    for handle in handles {
        if let Err(e) = handle.await? {
            errors += 1;
            eprintln!("error: {e}");
        }
    }
    let elapsed = start.elapsed();
    println!(
        "{UNARY_CALLS} unary calls and {BIDI_STREAMS} bidi streams x {BIDI_ROUNDS} round trips over ONE TLS connection in {elapsed:.2?}"
    );
    println!("connections used: {} (server side)", server.connections());

    // A client without a certificate is refused during the handshake.
    let anonymous = Connector::tls(&ClientTlsConfig::ca_pem(ca.pem()).server_name("localhost"))?;
    let refused = match anonymous.connect(&addr, ConnOptions::default()).await {
        Ok(c) => c.unary("/demo.Echo/Unary", b"x", &CallOptions::new()).await.err(),
        Err(e) => Some(e),
    };
    println!("client without a certificate: {}", refused.as_ref().map_or("served (unexpected)".into(), |e| e.to_string()));

    let connections = server.connections();
    conn.close().await;
    server.shutdown(Duration::from_secs(1)).await;
    if errors > 0 || connections != 1 || refused.is_none() {
        return Err(format!("demo failed: {errors} errors, {connections} connections").into());
    }
    Ok(())
}
