//! The edge services answering as tests/codegen/README.md's table says, so
//! every other language's client can check them.

use crate::edge::common::{outer::Inner, Outer};
use crate::edge::v1::{self as v1, Reply, Request};
use crate::PlainMessage;
use drpc_core::call::{RecvStream, ResponseSender};
use drpc_core::{CallContext, Code, Router, Status};

/// The Unary answer; Bidi gives each request the same one with its position.
fn unary_reply(request: Request, metadata_value: Option<&String>, index: i32) -> Reply {
    let folded = Inner { value: i64::from(request.int), label: format!("{}|{}", request.class, request.r#type) };
    Reply {
        text: format!("unary:{}", request.text),
        number: request.number + 1,
        tag: request.tag,
        outer: Some(Outer { inner: request.inner, items: vec![folded] }),
        at: request.at,
        metadata_value: metadata_value.cloned().unwrap_or_default(),
        index,
    }
}

fn edge_key(ctx: &CallContext) -> Option<&String> {
    ctx.metadata().get("edge-key")
}

pub struct EchoImpl;

impl v1::Echo for EchoImpl {
    async fn unary(&self, request: Request, ctx: CallContext) -> Result<Reply, Status> {
        let notes = request.detail.as_ref().map_or(0, |d| d.notes.len());
        let index = i32::try_from(notes).map_err(|_| Status::invalid_argument("too many notes"))?;
        Ok(unary_reply(request, edge_key(&ctx), index))
    }

    async fn server_stream(&self, request: Request, out: ResponseSender<Reply>, _: CallContext) -> Result<(), Status> {
        for index in 0..request.number {
            let index = i32::try_from(index).map_err(|_| Status::invalid_argument("number out of range"))?;
            out.send(&Reply { text: request.text.clone(), index, ..Default::default() }).await?;
        }
        Ok(())
    }

    async fn client_stream(&self, requests: RecvStream<Request>, _: CallContext) -> Result<Reply, Status> {
        let (mut texts, mut sum, mut count) = (Vec::new(), 0i64, 0i32);
        while let Some(request) = requests.recv().await? {
            texts.push(request.text);
            sum = sum.wrapping_add(request.number);
            count += 1;
        }
        Ok(Reply { text: texts.join(","), number: sum, index: count, ..Default::default() })
    }

    async fn bidi(&self, requests: RecvStream<Request>, out: ResponseSender<Reply>, ctx: CallContext) -> Result<(), Status> {
        let mut index = 0;
        while let Some(request) = requests.recv().await? {
            out.send(&unary_reply(request, edge_key(&ctx), index)).await?;
            index += 1;
        }
        Ok(())
    }

    async fn fail(&self, request: Request, _: CallContext) -> Result<(), Status> {
        let code = u64::try_from(request.number).map_or(Code::Unknown, Code::from_u64);
        Err(Status::new(code, request.text))
    }
}

pub struct KeywordsImpl;

impl v1::Keywords for KeywordsImpl {
    async fn class(&self, value: i64, _: CallContext) -> Result<prost_types::Timestamp, Status> {
        Ok(prost_types::Timestamp { seconds: value, nanos: 7 })
    }

    async fn import(&self, value: String, out: ResponseSender<String>, _: CallContext) -> Result<(), Status> {
        for ch in value.chars() {
            out.send(&ch.to_string()).await?;
        }
        Ok(())
    }

    async fn none(&self, requests: RecvStream<Inner>, _: CallContext) -> Result<Outer, Status> {
        let mut items = Vec::new();
        while let Some(inner) = requests.recv().await? {
            items.push(inner);
        }
        Ok(Outer { inner: None, items })
    }

    async fn r#async(
        &self,
        requests: RecvStream<PlainMessage>,
        out: ResponseSender<PlainMessage>,
        _: CallContext,
    ) -> Result<(), Status> {
        let mut position = 0;
        while let Some(message) = requests.recv().await? {
            // Absent text stays absent: presence is part of the answer.
            out.send(&PlainMessage { text: message.text.map(|t| t.to_uppercase()), count: Some(position) }).await?;
            position += 1;
        }
        Ok(())
    }
}

pub struct PlainImpl;

impl crate::Plain for PlainImpl {
    async fn echo(&self, message: PlainMessage, _: CallContext) -> Result<PlainMessage, Status> {
        let length = message.text.as_ref().map_or(0, String::len);
        let count = i64::try_from(length).map_err(|_| Status::invalid_argument("text too long"))?;
        Ok(PlainMessage { text: message.text, count: Some(count) })
    }

    async fn collect(&self, messages: RecvStream<PlainMessage>, _: CallContext) -> Result<PlainMessage, Status> {
        let mut texts = Vec::new();
        while let Some(message) = messages.recv().await? {
            texts.push(message.text.unwrap_or_default());
        }
        let count = i64::try_from(texts.len()).map_err(|_| Status::invalid_argument("too many messages"))?;
        Ok(PlainMessage { text: Some(texts.join("+")), count: Some(count) })
    }
}

/// The three edge services on one router.
pub fn router() -> Router {
    Router::new()
        .service(v1::EchoServer::new(EchoImpl))
        .service(v1::KeywordsServer::new(KeywordsImpl))
        .service(crate::PlainServer::new(PlainImpl))
}
