//! The edge services as every implementation serves them (the behaviour
//! `edge-client` and the README specify): one implementation per service of
//! edge.proto, nopkg.proto and stubs.proto.

use crate::edge::common::Tag;
use crate::edge::v1::item::{inner::Kind, Inner};
use crate::edge::v1::{self as v1, Batch, Item};
use crate::{stubs, Ping};
use drpc_core::call::{RecvStream, ResponseSender};
use drpc_core::{CallContext, Code, Router, Status};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct StoreImpl {
    items: Mutex<Vec<Item>>,
    /// Handlers that saw their call cancelled.
    pub cancelled: AtomicUsize,
}

impl v1::Store for StoreImpl {
    async fn r#type(&self, mut request: Item, ctx: CallContext) -> Result<Item, Status> {
        match request.r#type.as_str() {
            "fail" => return Err(Status::new(Code::FailedPrecondition, "asked to fail: ☺")),
            "sleep" => {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(10)) => {}
                    _ = ctx.cancelled() => {
                        self.cancelled.fetch_add(1, Ordering::SeqCst);
                        return Err(Status::canceled("cancelled while sleeping"));
                    }
                }
            }
            _ => {}
        }
        request.r#ref = Some(request.r#type.len() as i64);
        request.self_ = ctx.metadata().get("x-self").cloned();
        Ok(request)
    }

    async fn r#match(&self, _request: (), _ctx: CallContext) -> Result<Batch, Status> {
        let items = self.items.lock().unwrap().clone();
        Ok(Batch { items, took: None })
    }

    async fn list(&self, request: Tag, responses: ResponseSender<Item>, _ctx: CallContext) -> Result<(), Status> {
        for i in 0..request.count {
            let choice = Some(v1::item::Choice::Loop(i as i32));
            responses.send(&Item { r#type: format!("item {i}"), tag: Some(request.clone()), choice, ..Default::default() }).await?;
        }
        if request.name == "fail-after" {
            return Err(Status::new(Code::Aborted, "failed after the items"));
        }
        Ok(())
    }

    async fn upload(&self, requests: RecvStream<Item>, _ctx: CallContext) -> Result<Batch, Status> {
        let mut received = Vec::new();
        while let Some(item) = requests.recv().await? {
            received.push(item);
        }
        self.items.lock().unwrap().extend(received.iter().cloned());
        Ok(Batch { items: received, took: Some(prost_types::Duration { seconds: 1, nanos: 5 }) })
    }

    async fn r#loop(
        &self,
        requests: RecvStream<Inner>,
        responses: ResponseSender<Inner>,
        ctx: CallContext,
    ) -> Result<(), Status> {
        loop {
            let next = tokio::select! {
                next = requests.recv() => next,
                _ = ctx.cancelled() => {
                    self.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(Status::canceled("loop cancelled"));
                }
            };
            let Some(mut inner) = next? else { return Ok(()) };
            inner.r#async.reverse();
            inner.kind = Kind::While as i32;
            responses.send(&inner).await?;
        }
    }

    async fn new(&self, _request: (), ctx: CallContext) -> Result<(), Status> {
        match ctx.rpc() {
            v1::store_rpc::NEW => Ok(()),
            other => Err(Status::internal(format!("routed as {other}"))),
        }
    }

    async fn relay(&self, mut request: Ping, _ctx: CallContext) -> Result<Ping, Status> {
        request.hops = Some(request.hops.unwrap_or(0) + 1);
        Ok(request)
    }
}

pub struct SelfImpl;

impl v1::Self_ for SelfImpl {
    async fn descriptor(&self, request: Tag, _ctx: CallContext) -> Result<Tag, Status> {
        Ok(Tag { name: request.name.clone(), count: request.count * 2 })
    }

    async fn into_upper(&self, request: Tag, _ctx: CallContext) -> Result<Tag, Status> {
        Ok(Tag { name: request.name.to_uppercase(), count: request.count })
    }
}

pub struct EchoImpl;

impl crate::Echo for EchoImpl {
    async fn echo(&self, request: Ping, _ctx: CallContext) -> Result<Ping, Status> {
        Ok(request)
    }

    async fn chat(&self, requests: RecvStream<Ping>, responses: ResponseSender<Ping>, _ctx: CallContext) -> Result<(), Status> {
        while let Some(ping) = requests.recv().await? {
            responses.send(&Ping { note: format!("re: {}", ping.note), hops: ping.hops }).await?;
        }
        Ok(())
    }
}

pub struct PartialImpl;

impl stubs::Partial for PartialImpl {
    async fn implemented(&self, request: stubs::Note, _ctx: CallContext) -> Result<stubs::Note, Status> {
        Ok(request)
    }
}

pub struct IdleImpl;
impl v1::Idle for IdleImpl {}

/// Every edge service on one router; `store` is shared so tests can look at it.
pub fn router(store: Arc<StoreImpl>) -> Router {
    Router::new()
        .service(v1::StoreServer::from_arc(store))
        .service(v1::SelfServer::new(SelfImpl))
        .service(v1::IdleServer::new(IdleImpl))
        .service(crate::EchoServer::new(EchoImpl))
        .service(stubs::PartialServer::new(PartialImpl))
}
