//! The 12 client cases every edge client of the matrix runs (the same names
//! and checks as tests/codegen/python/edge_client.py), through the clients
//! drpc-build generated.

use crate::edge::common::{outer::Inner, Outer};
use crate::edge::v1::{request::Detail, EchoClient, KeywordsClient, Reply, Request};
use crate::{PlainClient, PlainMessage};
use drpc_core::{CallOptions, Code, Conn, Status};
use std::time::Duration;

/// Every case, in running order.
pub const CASES: &[&str] = &[
    "echo_unary",
    "echo_server_stream",
    "echo_client_stream",
    "echo_client_stream_empty",
    "echo_bidi",
    "echo_fail",
    "keywords_class",
    "keywords_import",
    "keywords_none",
    "keywords_async",
    "plain_echo",
    "plain_collect",
];

type CaseResult = Result<(), String>;

fn expect(cond: bool, what: impl FnOnce() -> String) -> CaseResult {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn err(status: Status) -> String {
    status.to_string()
}

fn opts() -> CallOptions {
    CallOptions::new().timeout(Duration::from_secs(10))
}

fn inner(value: i64, label: &str) -> Inner {
    Inner { value, label: label.to_string() }
}

fn timestamp() -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: 1_700_000_000, nanos: 5 }
}

/// A request with every field set, keyword-named ones included.
fn request(text: &str, number: i64) -> Request {
    Request {
        text: text.to_string(),
        number,
        tag: 7,
        inner: Some(inner(5, "in")),
        at: Some(timestamp()),
        detail: Some(Detail { notes: vec!["n1".into(), "n2".into()] }),
        class: "c".into(),
        int: 3,
        r#type: "t".into(),
    }
}

fn check_reply(reply: &Reply, text: &str, number: i64, index: i32, metadata_value: &str) -> CaseResult {
    let want = Reply {
        text: format!("unary:{text}"),
        number: number + 1,
        tag: 7,
        outer: Some(Outer { inner: Some(inner(5, "in")), items: vec![inner(3, "c|t")] }),
        at: Some(timestamp()),
        metadata_value: metadata_value.to_string(),
        index,
    };
    expect(*reply == want, || format!("reply {reply:?}, want {want:?}"))
}

fn plain(text: Option<&str>) -> PlainMessage {
    PlainMessage { text: text.map(str::to_string), count: None }
}

/// The edge clients over one connection.
pub struct Cases {
    echo: EchoClient,
    keywords: KeywordsClient,
    plain: PlainClient,
}

impl Cases {
    pub fn new(conn: Conn) -> Cases {
        Cases {
            echo: EchoClient::new(conn.clone()),
            keywords: KeywordsClient::new(conn.clone()),
            plain: PlainClient::new(conn),
        }
    }

    /// Runs one case by name.
    pub async fn run(&self, name: &str) -> CaseResult {
        match name {
            "echo_unary" => self.echo_unary().await,
            "echo_server_stream" => self.echo_server_stream().await,
            "echo_client_stream" => self.echo_client_stream(&["a", "b", "c"], "a,b,c", 6).await,
            "echo_client_stream_empty" => self.echo_client_stream(&[], "", 0).await,
            "echo_bidi" => self.echo_bidi().await,
            "echo_fail" => self.echo_fail().await,
            "keywords_class" => self.keywords_class().await,
            "keywords_import" => self.keywords_import().await,
            "keywords_none" => self.keywords_none().await,
            "keywords_async" => self.keywords_async().await,
            "plain_echo" => self.plain_echo().await,
            "plain_collect" => self.plain_collect().await,
            other => Err(format!("no case {other}")),
        }
    }

    async fn echo_unary(&self) -> CaseResult {
        let reply = self.echo.unary(&request("hi", 41), &opts().metadata("edge-key", "v1")).await.map_err(err)?;
        check_reply(&reply, "hi", 41, 2, "v1")
    }

    async fn echo_server_stream(&self) -> CaseResult {
        let request = Request { text: "s".into(), number: 3, ..Default::default() };
        let stream = self.echo.server_stream(&request, &opts()).await.map_err(err)?;
        let mut got = Vec::new();
        while let Some(reply) = stream.recv().await.map_err(err)? {
            got.push((reply.text, reply.index));
        }
        let want: Vec<(String, i32)> = (0..3).map(|i| ("s".to_string(), i)).collect();
        expect(got == want, || format!("replies {got:?}, want {want:?}"))
    }

    async fn echo_client_stream(&self, texts: &[&str], want_text: &str, want_sum: i64) -> CaseResult {
        let (tx, response) = self.echo.client_stream(&opts()).await.map_err(err)?;
        for (number, text) in (1..).zip(texts) {
            tx.send(&Request { text: text.to_string(), number, ..Default::default() }).await.map_err(err)?;
        }
        tx.close_send().await.map_err(err)?;
        let reply = response.recv().await.map_err(err)?;
        let want = Reply { text: want_text.into(), number: want_sum, index: texts.len() as i32, ..Default::default() };
        expect(reply == want, || format!("reply {reply:?}, want {want:?}"))
    }

    async fn echo_bidi(&self) -> CaseResult {
        let (tx, rx) = self.echo.bidi(&opts().metadata("edge-key", "bidi")).await.map_err(err)?;
        for (index, text) in (0..).zip(["x", "y", "z"]) {
            tx.send(&request(text, i64::from(index))).await.map_err(err)?;
            let reply = rx.recv().await.map_err(err)?.ok_or("stream ended early")?;
            check_reply(&reply, text, i64::from(index), index, "bidi")?;
        }
        tx.close_send().await.map_err(err)?;
        let end = rx.recv().await.map_err(err)?;
        expect(end.is_none(), || format!("{end:?} after close_send, want the end"))
    }

    async fn echo_fail(&self) -> CaseResult {
        match self.echo.fail(&Request { text: "no such key".into(), number: 5, ..Default::default() }, &opts()).await {
            Err(status) if status.code() == Code::NotFound && status.message() == "no such key" => Ok(()),
            other => Err(format!("got {other:?}, want NotFound \"no such key\"")),
        }
    }

    async fn keywords_class(&self) -> CaseResult {
        let ts = self.keywords.class(&42, &opts()).await.map_err(err)?;
        expect(ts == prost_types::Timestamp { seconds: 42, nanos: 7 }, || format!("got {ts:?}"))
    }

    async fn keywords_import(&self) -> CaseResult {
        let stream = self.keywords.import(&"abc".to_string(), &opts()).await.map_err(err)?;
        let mut got = Vec::new();
        while let Some(value) = stream.recv().await.map_err(err)? {
            got.push(value);
        }
        expect(got == ["a", "b", "c"], || format!("got {got:?}"))
    }

    async fn keywords_none(&self) -> CaseResult {
        let items = vec![inner(1, "x"), inner(2, "y")];
        let (tx, response) = self.keywords.none(&opts()).await.map_err(err)?;
        for item in &items {
            tx.send(item).await.map_err(err)?;
        }
        tx.close_send().await.map_err(err)?;
        let outer = response.recv().await.map_err(err)?;
        expect(outer == Outer { inner: None, items }, || format!("got {outer:?}"))
    }

    async fn keywords_async(&self) -> CaseResult {
        let (tx, rx) = self.keywords.r#async(&opts()).await.map_err(err)?;
        for text in [Some("ab"), None, Some("cd")] {
            tx.send(&plain(text)).await.map_err(err)?;
        }
        tx.close_send().await.map_err(err)?;
        let mut got = Vec::new();
        while let Some(message) = rx.recv().await.map_err(err)? {
            got.push(message);
        }
        let want = [(Some("AB"), 0), (None, 1), (Some("CD"), 2)]
            .map(|(text, count)| PlainMessage { text: text.map(str::to_string), count: Some(count) });
        expect(got == want, || format!("got {got:?}, want {want:?}"))
    }

    async fn plain_echo(&self) -> CaseResult {
        let reply = self.plain.echo(&plain(Some("hello")), &opts()).await.map_err(err)?;
        let want = PlainMessage { text: Some("hello".into()), count: Some(5) };
        expect(reply == want, || format!("got {reply:?}, want {want:?}"))?;
        let reply = self.plain.echo(&plain(None), &opts()).await.map_err(err)?;
        let want = PlainMessage { text: None, count: Some(0) };
        expect(reply == want, || format!("got {reply:?}, want {want:?}"))
    }

    async fn plain_collect(&self) -> CaseResult {
        let (tx, response) = self.plain.collect(&opts()).await.map_err(err)?;
        for text in ["a", "b"] {
            tx.send(&plain(Some(text))).await.map_err(err)?;
        }
        tx.close_send().await.map_err(err)?;
        let reply = response.recv().await.map_err(err)?;
        let want = PlainMessage { text: Some("a+b".into()), count: Some(2) };
        expect(reply == want, || format!("got {reply:?}, want {want:?}"))
    }
}
