//! The client side of the edge services: one check per behaviour README.md
//! specifies, run by `edge-client` against any implementation's server.

use crate::edge::common::Tag;
use crate::edge::v1::item::{inner::Kind, Choice, Inner};
use crate::edge::v1::{Item, SelfClient, StoreClient};
use crate::{stubs, EchoClient, Ping};
use drpc_core::{CallOptions, Code, Compression, Conn, Status};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Every check, in running order.
pub const CHECKS: &[&str] = &[
    "unary_keywords",
    "unary_unset_optional",
    "unary_status",
    "unary_deadline",
    "unary_compression",
    "server_streaming",
    "server_streaming_status",
    "client_streaming",
    "client_streaming_abandoned",
    "bidi_streaming",
    "bidi_cancel",
    "well_known_empty",
    "no_package_types",
    "keyword_service",
    "no_package_service",
    "default_stubs",
];

type CheckResult = Result<(), String>;

fn expect(cond: bool, what: impl FnOnce() -> String) -> CheckResult {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

fn expect_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> CheckResult {
    match result {
        Err(status) if status.code() == code => Ok(()),
        other => Err(format!("expected {code}, got {other:?}")),
    }
}

fn opts() -> CallOptions {
    CallOptions::new().timeout(Duration::from_secs(10))
}

fn err(status: Status) -> String {
    status.to_string()
}

/// Runs the checks of the edge services against the server on `conn`.
pub struct Checks {
    conn: Conn,
    store: StoreClient,
    /// Makes this run's uploads recognisable on a server other runs also use.
    label: String,
}

impl Checks {
    pub fn new(conn: Conn) -> Checks {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let label = format!("run {} {nanos}", std::process::id());
        Checks { store: StoreClient::new(conn.clone()), conn, label }
    }

    /// Runs one check by name.
    pub fn run<'a>(&'a self, name: &'a str) -> Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>> {
        Box::pin(async move {
            match name {
                "unary_keywords" => self.unary_keywords().await,
                "unary_unset_optional" => self.unary_unset_optional().await,
                "unary_status" => self.unary_status().await,
                "unary_deadline" => self.unary_deadline().await,
                "unary_compression" => self.unary_compression().await,
                "server_streaming" => self.server_streaming().await,
                "server_streaming_status" => self.server_streaming_status().await,
                "client_streaming" => self.client_streaming().await,
                "client_streaming_abandoned" => self.client_streaming_abandoned().await,
                "bidi_streaming" => self.bidi_streaming().await,
                "bidi_cancel" => self.bidi_cancel().await,
                "well_known_empty" => self.well_known_empty().await,
                "no_package_types" => self.no_package_types().await,
                "keyword_service" => self.keyword_service().await,
                "no_package_service" => self.no_package_service().await,
                "default_stubs" => self.default_stubs().await,
                other => Err(format!("unknown check {other}")),
            }
        })
    }

    async fn unary_keywords(&self) -> CheckResult {
        let item = Item {
            r#type: "plain".into(),
            created: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 7 }),
            tag: Some(Tag { name: "t".into(), count: 3 }),
            inner: Some(Inner { kind: Kind::Match as i32, r#async: vec!["a".into(), "b".into()] }),
            choice: Some(Choice::Fn("f".into())),
            ..Default::default()
        };
        let echoed = self.store.r#type(&item, &opts().metadata("x-self", "me")).await.map_err(err)?;
        expect(echoed.r#ref == Some(5) && echoed.self_.as_deref() == Some("me"), || {
            format!("ref {:?} self {:?}, want Some(5) Some(\"me\")", echoed.r#ref, echoed.self_)
        })?;
        let want = Item { r#ref: Some(5), self_: Some("me".into()), ..item };
        expect(echoed == want, || format!("echoed {echoed:?}, want {want:?}"))
    }

    async fn unary_unset_optional(&self) -> CheckResult {
        let echoed = self.store.r#type(&Item::default(), &opts()).await.map_err(err)?;
        expect(echoed.self_.is_none() && echoed.r#ref == Some(0), || {
            format!("self {:?} ref {:?}, want None Some(0)", echoed.self_, echoed.r#ref)
        })
    }

    async fn unary_status(&self) -> CheckResult {
        let result = self.store.r#type(&Item { r#type: "fail".into(), ..Default::default() }, &opts()).await;
        match result {
            Err(s) if s.code() == Code::FailedPrecondition && s.message() == "asked to fail: ☺" => Ok(()),
            other => Err(format!("expected FailedPrecondition \"asked to fail: ☺\", got {other:?}")),
        }
    }

    async fn unary_deadline(&self) -> CheckResult {
        let sleepy = Item { r#type: "sleep".into(), ..Default::default() };
        let result = self.store.r#type(&sleepy, &CallOptions::new().timeout(Duration::from_millis(100))).await;
        expect_code(result, Code::DeadlineExceeded)
    }

    async fn unary_compression(&self) -> CheckResult {
        let big = Item { r#type: "z".repeat(100_000), ..Default::default() };
        let echoed = self.store.r#type(&big, &opts().compression(Compression::Snappy)).await.map_err(err)?;
        expect(echoed.r#type == big.r#type && echoed.r#ref == Some(100_000), || "the compressed item came back changed".into())
    }

    async fn server_streaming(&self) -> CheckResult {
        let tag = Tag { name: "listed".into(), count: 5 };
        let items = self.store.list(&tag, &opts()).await.map_err(err)?;
        for i in 0..5 {
            let item = items.recv().await.map_err(err)?.ok_or_else(|| format!("the stream ended after {i} items"))?;
            let want = Item { r#type: format!("item {i}"), tag: Some(tag.clone()), choice: Some(Choice::Loop(i)), ..Default::default() };
            expect(item == want, || format!("item {i}: {item:?}, want {want:?}"))?;
        }
        match items.recv().await {
            Ok(None) => Ok(()),
            other => Err(format!("expected the end after 5 items, got {other:?}")),
        }
    }

    async fn server_streaming_status(&self) -> CheckResult {
        let items = self.store.list(&Tag { name: "fail-after".into(), count: 2 }, &opts()).await.map_err(err)?;
        for i in 0..2 {
            items.recv().await.map_err(err)?.ok_or_else(|| format!("the stream ended after {i} items"))?;
        }
        expect_code(items.recv().await, Code::Aborted)
    }

    async fn client_streaming(&self) -> CheckResult {
        let (requests, response) = self.store.upload(&opts()).await.map_err(err)?;
        for i in 0..3 {
            requests.send(&Item { r#type: format!("{} up {i}", self.label), ..Default::default() }).await.map_err(err)?;
        }
        requests.close_send().await.map_err(err)?;
        let batch = response.recv().await.map_err(err)?;
        let names: Vec<_> = batch.items.iter().map(|i| i.r#type.clone()).collect();
        let want: Vec<_> = (0..3).map(|i| format!("{} up {i}", self.label)).collect();
        expect(names == want, || format!("uploaded {names:?}, want {want:?}"))?;
        let took = prost_types::Duration { seconds: 1, nanos: 5 };
        expect(batch.took == Some(took), || format!("took {:?}, want {took:?}", batch.took))
    }

    async fn client_streaming_abandoned(&self) -> CheckResult {
        let (requests, response) = self.store.upload(&opts()).await.map_err(err)?;
        requests.send(&Item { r#type: format!("{} abandoned", self.label), ..Default::default() }).await.map_err(err)?;
        drop(requests);
        expect_code(response.recv().await, Code::Canceled)
    }

    async fn bidi_streaming(&self) -> CheckResult {
        let (requests, answers) = self.store.r#loop(&opts()).await.map_err(err)?;
        for i in 0..20 {
            requests.send(&Inner { kind: Kind::Unspecified as i32, r#async: vec![format!("{i}"), "x".into()] }).await.map_err(err)?;
            let inner = answers.recv().await.map_err(err)?.ok_or("the stream ended early")?;
            let want = Inner { kind: Kind::While as i32, r#async: vec!["x".into(), format!("{i}")] };
            expect(inner == want, || format!("round {i}: {inner:?}, want {want:?}"))?;
        }
        requests.close_send().await.map_err(err)?;
        match answers.recv().await {
            Ok(None) => Ok(()),
            other => Err(format!("expected the end, got {other:?}")),
        }
    }

    async fn bidi_cancel(&self) -> CheckResult {
        let (requests, answers) = self.store.r#loop(&opts()).await.map_err(err)?;
        requests.send(&Inner::default()).await.map_err(err)?;
        answers.recv().await.map_err(err)?.ok_or("no answer")?;
        answers.cancel();
        expect_code(answers.recv().await, Code::Canceled)
    }

    /// Match (Empty in) sees a completed upload and not an abandoned one.
    async fn well_known_empty(&self) -> CheckResult {
        self.store.new_rpc(&(), &opts()).await.map_err(err)?;
        let label = format!("{} kept", self.label);
        let (requests, response) = self.store.upload(&opts()).await.map_err(err)?;
        requests.send(&Item { r#type: label.clone(), ..Default::default() }).await.map_err(err)?;
        requests.close_send().await.map_err(err)?;
        response.recv().await.map_err(err)?;
        let (requests, response) = self.store.upload(&opts()).await.map_err(err)?;
        requests.send(&Item { r#type: format!("{} dropped", self.label), ..Default::default() }).await.map_err(err)?;
        drop(requests);
        expect_code(response.recv().await, Code::Canceled)?;
        let stored = self.store.r#match(&(), &opts()).await.map_err(err)?;
        let mine: Vec<_> = stored.items.iter().map(|i| i.r#type.as_str()).filter(|t| t.starts_with(&self.label)).collect();
        expect(mine.contains(&label.as_str()), || format!("{label:?} not stored: {mine:?}"))?;
        expect(mine.iter().all(|t| !t.ends_with("dropped")), || format!("a cancelled upload was stored: {mine:?}"))
    }

    async fn no_package_types(&self) -> CheckResult {
        let ping = self.store.relay(&Ping { note: "n".into(), hops: None }, &opts()).await.map_err(err)?;
        expect(ping == Ping { note: "n".into(), hops: Some(1) }, || format!("relayed {ping:?}"))
    }

    async fn keyword_service(&self) -> CheckResult {
        let client = SelfClient::new(self.conn.clone());
        let tag = client.descriptor(&Tag { name: "abc".into(), count: 2 }, &opts()).await.map_err(err)?;
        expect(tag == Tag { name: "abc".into(), count: 4 }, || format!("Descriptor answered {tag:?}"))?;
        let tag = client.into_upper(&tag, &opts()).await.map_err(err)?;
        expect(tag == Tag { name: "ABC".into(), count: 4 }, || format!("IntoUpper answered {tag:?}"))
    }

    async fn no_package_service(&self) -> CheckResult {
        let client = EchoClient::new(self.conn.clone());
        let ping = Ping { note: "hi".into(), hops: Some(7) };
        let echoed = client.echo(&ping, &opts()).await.map_err(err)?;
        expect(echoed == ping, || format!("Echo answered {echoed:?}"))?;
        let (requests, answers) = client.chat(&opts()).await.map_err(err)?;
        requests.send(&ping).await.map_err(err)?;
        requests.close_send().await.map_err(err)?;
        let answer = answers.recv().await.map_err(err)?;
        expect(answer == Some(Ping { note: "re: hi".into(), hops: Some(7) }), || format!("Chat answered {answer:?}"))?;
        match answers.recv().await {
            Ok(None) => Ok(()),
            other => Err(format!("expected the end, got {other:?}")),
        }
    }

    /// stubs.proto has no generated client here (build_client(false)): raw calls.
    async fn default_stubs(&self) -> CheckResult {
        let note = stubs::Note { text: "x".into() };
        let same: stubs::Note = self.conn.invoke(stubs::partial_rpc::IMPLEMENTED, &note, &opts()).await.map_err(err)?;
        expect(same == note, || format!("Implemented answered {same:?}"))?;
        let missing = self.conn.invoke::<_, stubs::Note>(stubs::partial_rpc::MISSING, &note, &opts()).await;
        expect_code(missing, Code::Unimplemented)?;
        let stream = self.conn.stream(stubs::partial_rpc::MISSING_STREAM, &opts()).await.map_err(err)?;
        expect_code(stream.recv().await, Code::Unimplemented)
    }
}
