//! The generated clients and servers of edge.proto talking over TCP: every
//! rpc kind, errors, per-call options, a pool, the file without a package,
//! descriptors, docs, the descriptor set, and the `edge-client` checks
//! (default stubs among them).

use drpc_build_edge::edge::common::Tag;
use drpc_build_edge::edge::v1::item::{inner::Kind, Inner};
use drpc_build_edge::edge::v1::{self as v1, Item, SelfClient, StoreClient, StoreServer};
use drpc_build_edge::service::{self, StoreImpl};
use drpc_build_edge::{EchoClient, Ping};
use drpc_core::call::{RpcKind, Service};
use drpc_core::{CallOptions, CancelToken, Code, Compression, Conn, ConnOptions, Pool, PoolOptions, Server, Status};
use prost::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

struct Running {
    server: Server,
    addr: String,
    store: Arc<StoreImpl>,
}

async fn serve() -> Running {
    let store = Arc::new(StoreImpl::default());
    let server = Server::new(service::router(store.clone()));
    let addr = server.listen("127.0.0.1:0").await.expect("listen");
    Running { server, addr, store }
}

async fn connect(addr: &str) -> Conn {
    Conn::connect(addr, ConnOptions::default()).await.expect("connect")
}

fn opts() -> CallOptions {
    CallOptions::new().timeout(Duration::from_secs(10))
}

#[tokio::test]
async fn every_rpc_kind_round_trips() {
    let running = serve().await;
    let store = StoreClient::new(connect(&running.addr).await);

    // Unary with keyword names, optional fields, a well-known type, imports.
    let item = Item {
        r#type: "plain".into(),
        created: Some(prost_types::Timestamp { seconds: 1_700_000_000, nanos: 7 }),
        tag: Some(Tag { name: "t".into(), count: 0 }),
        inner: Some(Inner { kind: Kind::Match as i32, r#async: vec!["a".into()] }),
        choice: Some(v1::item::Choice::Fn("f".into())),
        ..Default::default()
    };
    let echoed = store.r#type(&item, &opts().metadata("x-self", "me")).await.unwrap();
    assert_eq!(echoed.r#ref, Some("plain".len() as i64));
    assert_eq!(echoed.self_.as_deref(), Some("me"));
    assert_eq!((echoed.created, echoed.tag, echoed.inner, echoed.choice), (item.created, item.tag, item.inner, item.choice));
    let bare = store.r#type(&Item::default(), &opts()).await.unwrap();
    assert_eq!(bare.self_, None, "an optional field left unset stays unset");

    // Server-streaming.
    let tag = Tag { name: "listed".into(), count: 5 };
    let listed = store.list(&tag, &opts()).await.unwrap();
    for i in 0..5 {
        let item = listed.recv().await.unwrap().expect("an item");
        assert_eq!((item.r#type, item.tag.as_ref()), (format!("item {i}"), Some(&tag)));
        assert_eq!(item.choice, Some(v1::item::Choice::Loop(i)));
    }
    assert_eq!(listed.recv().await.unwrap(), None);

    // Client-streaming.
    let (tx, rx) = store.upload(&opts()).await.unwrap();
    for i in 0..3 {
        tx.send(&Item { r#type: format!("up {i}"), ..Default::default() }).await.unwrap();
    }
    tx.close_send().await.unwrap();
    let batch = rx.recv().await.unwrap();
    assert_eq!(batch.items.iter().map(|i| i.r#type.as_str()).collect::<Vec<_>>(), ["up 0", "up 1", "up 2"]);
    assert_eq!(batch.took, Some(prost_types::Duration { seconds: 1, nanos: 5 }));

    // google.protobuf.Empty in (as `()`), a message out.
    let stored = store.r#match(&(), &opts()).await.unwrap();
    assert_eq!(stored.items.len(), 3);

    // Bidi, the halves driven from two tasks.
    let (tx, rx) = store.r#loop(&opts()).await.unwrap();
    let sender = tokio::spawn(async move {
        for i in 0..50 {
            tx.send(&Inner { kind: Kind::Unspecified as i32, r#async: vec![format!("{i}"), "x".into()] }).await?;
        }
        tx.close_send().await
    });
    for i in 0..50 {
        let inner = rx.recv().await.unwrap().expect("an answer");
        assert_eq!(inner.r#async, ["x".to_string(), format!("{i}")]);
        assert_eq!(inner.kind(), Kind::While);
    }
    assert_eq!(rx.recv().await.unwrap(), None);
    sender.await.unwrap().unwrap();

    // The rpc clashing with `new`, and the one into the file without a package.
    store.new_rpc(&(), &opts()).await.unwrap();
    let ping = store.relay(&Ping { note: "n".into(), hops: None }, &opts()).await.unwrap();
    assert_eq!(ping.hops, Some(1));

    // The service named `Self`, with rpcs named `Descriptor` and `IntoUpper`.
    let selfish = SelfClient::new(store.channel().clone());
    let tag = selfish.descriptor(&Tag { name: "abc".into(), count: 2 }, &opts()).await.unwrap();
    assert_eq!(tag, Tag { name: "abc".into(), count: 4 });
    let tag = selfish.into_upper(&tag, &opts()).await.unwrap();
    assert_eq!(tag, Tag { name: "ABC".into(), count: 4 });
    running.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn statuses_and_call_options_reach_the_other_side() {
    let running = serve().await;
    let conn = connect(&running.addr).await;
    let store = StoreClient::new(conn.clone());

    let err = store.r#type(&Item { r#type: "fail".into(), ..Default::default() }, &opts()).await.unwrap_err();
    assert_eq!((err.code(), err.message()), (Code::FailedPrecondition, "asked to fail: ☺"));

    let listed = store.list(&Tag { name: "fail-after".into(), count: 2 }, &opts()).await.unwrap();
    assert!(listed.recv().await.unwrap().is_some() && listed.recv().await.unwrap().is_some());
    assert_eq!(listed.recv().await.unwrap_err().code(), Code::Aborted);

    let sleepy = Item { r#type: "sleep".into(), ..Default::default() };
    let err = store.r#type(&sleepy, &CallOptions::new().timeout(Duration::from_millis(50))).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded);

    let token = CancelToken::new();
    let cancel = {
        let token = token.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            token.cancel();
        }
    };
    let cancellable = CallOptions::new().cancel_token(token);
    let (result, ()) = tokio::join!(store.r#type(&sleepy, &cancellable), cancel);
    assert_eq!(result.unwrap_err().code(), Code::Canceled);

    // Cancelling a bidi call from its receiving half reaches the handler.
    let (tx, rx) = store.r#loop(&opts()).await.unwrap();
    tx.send(&Inner::default()).await.unwrap();
    assert!(rx.recv().await.unwrap().is_some());
    rx.cancel();
    assert_eq!(rx.recv().await.unwrap_err().code(), Code::Canceled);
    assert_eq!(tx.send(&Inner::default()).await.unwrap_err().code(), Code::Canceled);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while running.store.cancelled.load(Ordering::SeqCst) < 2 {
        assert!(tokio::time::Instant::now() < deadline, "the handlers never saw their cancellations");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Dropping a request half before closing it cancels the call: the
    // server never sees an abandoned upload as a complete one.
    let (tx, rx) = store.upload(&opts()).await.unwrap();
    tx.send(&Item { r#type: "partial".into(), ..Default::default() }).await.unwrap();
    drop(tx);
    assert_eq!(rx.recv().await.unwrap_err().code(), Code::Canceled);
    let (tx, rx) = store.r#loop(&opts()).await.unwrap();
    drop(tx);
    assert_eq!(rx.recv().await.unwrap_err().code(), Code::Canceled);
    let stored = store.r#match(&(), &opts()).await.unwrap();
    assert!(stored.items.iter().all(|i| i.r#type != "partial"), "the abandoned upload was stored");

    // Compression, both ways, on a message that compresses.
    let big = Item { r#type: "z".repeat(100_000), ..Default::default() };
    for codec in [Compression::Snappy, Compression::MinLzFastest] {
        let echoed = store.r#type(&big, &opts().compression(codec)).await.unwrap();
        assert_eq!(echoed.r#type, big.r#type);
    }
    running.server.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_pool_channel_and_the_file_without_a_package() {
    let running = serve().await;
    let pool = Pool::new(PoolOptions::sequential(4));
    let echo = EchoClient::new(pool.channel(running.addr.clone()));
    assert_eq!(echo.channel().addr(), running.addr);
    let calls = (0..8).map(|i| {
        let echo = echo.clone();
        tokio::spawn(async move { echo.echo(&Ping { note: format!("{i}"), hops: Some(i) }, &opts()).await })
    });
    for (i, call) in calls.enumerate() {
        let ping = call.await.unwrap().unwrap();
        assert_eq!((ping.note, ping.hops), (i.to_string(), Some(i as u32)));
    }
    assert!(pool.connections(&running.addr) >= 1);

    let (tx, rx) = echo.chat(&opts()).await.unwrap();
    tx.send(&Ping { note: "hi".into(), hops: None }).await.unwrap();
    assert_eq!(rx.recv().await.unwrap().map(|p| p.note).as_deref(), Some("re: hi"));
    tx.close_send().await.unwrap();
    assert_eq!(rx.recv().await.unwrap(), None);
    pool.close().await;
    running.server.shutdown(Duration::from_secs(1)).await;
}

#[test]
fn descriptors_describe_the_proto() {
    let store = &v1::store_rpc::DESCRIPTOR;
    assert_eq!((store.name, store.package), ("edge.v1.Store", "edge.v1"));
    let kinds: Vec<_> = store.methods.iter().map(|m| (m.name, m.kind)).collect();
    assert_eq!(
        kinds,
        [
            ("Type", RpcKind::Unary),
            ("Match", RpcKind::Unary),
            ("List", RpcKind::ServerStreaming),
            ("Upload", RpcKind::ClientStreaming),
            ("Loop", RpcKind::BidiStreaming),
            ("New", RpcKind::Unary),
            ("Relay", RpcKind::Unary),
        ]
    );
    let matching = store.method("Match").unwrap();
    assert_eq!((matching.rpc, matching.input_type, matching.output_type), ("/edge.v1.Store/Match", "google.protobuf.Empty", "edge.v1.Batch"));
    assert_eq!(store.by_rpc(v1::store_rpc::LOOP).unwrap().input_type, "edge.v1.Item.Inner");
    assert_eq!(store.method("Relay").unwrap().input_type, "Ping");
    assert_eq!(<StoreServer<StoreImpl> as Service>::DESCRIPTOR, store);
    assert_eq!(v1::self_rpc::DESCRIPTOR_RPC, "/edge.v1.Self/Descriptor");
    assert_eq!(v1::self_rpc::INTO_UPPER, "/edge.v1.Self/IntoUpper");
    assert!(v1::idle_rpc::DESCRIPTOR.methods.is_empty());
    assert_eq!((drpc_build_edge::echo_rpc::SERVICE_NAME, drpc_build_edge::echo_rpc::CHAT), ("Echo", "/Echo/Chat"));
    assert_eq!(drpc_build_edge::echo_rpc::DESCRIPTOR.package, "");
}

#[test]
fn proto_comments_and_attributes_reach_the_generated_code() {
    let source = drpc_build_edge::EDGE_V1_SOURCE;
    for doc in [
        "/// The store: one rpc of each streaming kind, named with keywords.",
        "/// Server-streaming: `count` items tagged `tag`, then the end.",
        "/// Bidi-streaming: answers each nested message as it arrives.",
        "/// A second service in the file, named as a keyword, whose rpc names clash",
        "/// Set only when known (proto3 `optional`).",
        "(a field attribute from build.rs)",
    ] {
        assert!(source.contains(doc), "missing from the generated code: {doc}");
    }
    assert!(!source.contains("detached comment"), "a detached comment became documentation");
    // The type attribute derived Eq and Hash for Tag.
    let tags: std::collections::HashSet<Tag> = [Tag::default(), Tag::default()].into_iter().collect();
    assert_eq!(tags.len(), 1);
}

#[test]
fn the_descriptor_set_is_written_with_imports_and_source_info() {
    let fds = prost_types::FileDescriptorSet::decode(drpc_build_edge::EDGE_FDS).unwrap();
    let names: Vec<_> = fds.file.iter().map(|f| f.name()).collect();
    for name in ["edge.proto", "common/common.proto", "nopkg.proto", "google/protobuf/timestamp.proto"] {
        assert!(names.contains(&name), "{name} not in {names:?}");
    }
    let edge = fds.file.iter().find(|f| f.name() == "edge.proto").unwrap();
    assert!(edge.source_code_info.as_ref().is_some_and(|i| !i.location.is_empty()));
    assert_eq!(edge.service.iter().map(|s| s.name()).collect::<Vec<_>>(), ["Store", "Self", "Idle"]);
}

/// Halves driven from separate tasks, and abandoned request halves, hundreds
/// of times on one connection: every completed upload is answered in full,
/// every abandoned one is cancelled and never stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn halves_race_across_tasks() {
    let running = serve().await;
    let store = StoreClient::new(connect(&running.addr).await);
    let rounds = (0..300).map(|round| {
        let store = store.clone();
        tokio::spawn(async move {
            let (tx, rx) = store.upload(&opts()).await?;
            let label = format!("round {round}");
            let abandon = round % 3 == 0;
            let sender = tokio::spawn({
                let label = label.clone();
                async move {
                    for _ in 0..3 {
                        tx.send(&Item { r#type: label.clone(), ..Default::default() }).await?;
                    }
                    if abandon {
                        drop(tx);
                        return Ok(());
                    }
                    tx.close_send().await
                }
            });
            let answer = rx.recv().await;
            sender.await.expect("sender task")?;
            match (abandon, answer) {
                (false, Ok(batch)) if batch.items.len() == 3 && batch.items.iter().all(|i| i.r#type == label) => Ok(()),
                (true, Err(status)) if status.code() == Code::Canceled => Ok(()),
                (abandon, other) => Err(Status::internal(format!("{label} (abandoned: {abandon}): {other:?}"))),
            }
        })
    });
    let rounds: Vec<_> = rounds.collect();
    for round in rounds {
        round.await.unwrap().unwrap();
    }
    let stored = store.r#match(&(), &opts()).await.unwrap();
    assert_eq!(stored.items.len(), 200 * 3, "only the completed uploads are stored");
    for round in (0..300).step_by(3) {
        let label = format!("round {round}");
        assert!(stored.items.iter().all(|i| i.r#type != label), "{label} was abandoned but stored");
    }
    running.server.shutdown(Duration::from_secs(1)).await;
}

/// What `edge-client` runs against other implementations' servers, against
/// this one.
#[tokio::test]
async fn the_edge_client_checks_pass() {
    let running = serve().await;
    let checks = drpc_build_edge::checks::Checks::new(connect(&running.addr).await);
    for name in drpc_build_edge::checks::CHECKS {
        checks.run(name).await.unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    running.server.shutdown(Duration::from_secs(1)).await;
}
