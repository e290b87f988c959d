//! The Rust pair of the matrix in-process, so `cargo test` covers it too:
//! every case against the Rust server, and the cases fail against a server
//! that answers differently.

use drpc_codegen_edge::cases::{Cases, CASES};
use drpc_codegen_edge::edge::v1::EchoServer;
use drpc_codegen_edge::{service, Plain, PlainMessage, PlainServer};
use drpc_core::call::RecvStream;
use drpc_core::{CallContext, Conn, ConnOptions, Router, Server, Status};
use std::time::Duration;

async fn run_all(router: Router) -> Vec<(&'static str, Result<(), String>)> {
    let server = Server::new(router);
    let addr = server.listen("127.0.0.1:0").await.expect("listen");
    let conn = Conn::connect(&addr, ConnOptions::default()).await.expect("connect");
    let cases = Cases::new(conn.clone());
    let mut results = Vec::new();
    for name in CASES {
        results.push((*name, cases.run(name).await));
    }
    conn.close().await;
    server.shutdown(Duration::from_secs(1)).await;
    results
}

#[tokio::test]
async fn every_case_passes_against_the_rust_server() {
    for (name, result) in run_all(service::router()).await {
        assert_eq!(result, Ok(()), "{name}");
    }
}

/// Plain/Collect joining with "," instead of "+": only plain_collect fails,
/// and Keywords, not served, fails its four cases with Unimplemented.
struct WrongPlain;

impl Plain for WrongPlain {
    async fn echo(&self, message: PlainMessage, ctx: CallContext) -> Result<PlainMessage, Status> {
        service::PlainImpl.echo(message, ctx).await
    }

    async fn collect(&self, messages: RecvStream<PlainMessage>, _: CallContext) -> Result<PlainMessage, Status> {
        let mut texts = Vec::new();
        while let Some(message) = messages.recv().await? {
            texts.push(message.text.unwrap_or_default());
        }
        Ok(PlainMessage { text: Some(texts.join(",")), count: Some(texts.len() as i64) })
    }
}

#[tokio::test]
async fn cases_fail_against_a_server_answering_otherwise() {
    let router = Router::new().service(EchoServer::new(service::EchoImpl)).service(PlainServer::new(WrongPlain));
    let failed: Vec<&str> = run_all(router).await.into_iter().filter(|(_, r)| r.is_err()).map(|(name, _)| name).collect();
    assert_eq!(failed, ["keywords_class", "keywords_import", "keywords_none", "keywords_async", "plain_collect"]);
}
