//! Handlers registered by rpc name (`/pkg.Service/Method`): unary,
//! client-streaming, server-streaming and bidi, typed with prost messages or
//! on raw bytes.

use crate::interceptor::{Dispatch, ServerCall, ServerInterceptor, TowerInterceptor};
use crate::status::Status;
use crate::stream::{CallContext, Stream};
use bytes::Bytes;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;
type UnaryFn = dyn Fn(Request) -> BoxFuture<Result<Bytes, Status>> + Send + Sync;
type StreamFn = dyn Fn(Stream) -> BoxFuture<Result<(), Status>> + Send + Sync;

/// A unary request: the message bytes and the call's context.
pub struct Request {
    pub data: Bytes,
    pub context: CallContext,
}

#[derive(Clone)]
pub(crate) enum Handler {
    Unary(Arc<UnaryFn>),
    Stream(Arc<StreamFn>),
}

/// Maps rpc names to handlers. An rpc nobody registered is answered with
/// Unimplemented naming it.
#[derive(Clone, Default)]
pub struct Router {
    handlers: HashMap<String, Handler>,
    interceptors: Vec<Arc<dyn ServerInterceptor>>,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    pub(crate) fn handlers(&self) -> impl Iterator<Item = (&str, &Handler)> {
        self.handlers.iter().map(|(rpc, h)| (rpc.as_str(), h))
    }

    pub fn rpcs(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    pub(crate) fn interceptors(&self) -> &[Arc<dyn ServerInterceptor>] {
        &self.interceptors
    }

    /// Runs `interceptor` around every call, inside those added before it
    /// (the first added is outermost). See [`crate::interceptor`].
    pub fn intercept(mut self, interceptor: impl ServerInterceptor) -> Router {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// Puts a tower layer in the chain, at this place in the order: every
    /// call goes through the service it makes around [`Dispatch`] (one
    /// service for all calls, so a concurrency or rate limit is shared).
    /// Its errors reach the client as their [`Status`] (see
    /// [`crate::interceptor`] for tower's own errors).
    pub fn layer<L>(self, layer: L) -> Router
    where
        L: tower_layer::Layer<Dispatch>,
        L::Service: tower_service::Service<ServerCall, Response = ()> + Clone + Send + Sync + 'static,
        <L::Service as tower_service::Service<ServerCall>>::Error:
            Into<Box<dyn std::error::Error + Send + Sync>>,
        <L::Service as tower_service::Service<ServerCall>>::Future: Send,
    {
        self.intercept(TowerInterceptor::new(layer.layer(Dispatch)))
    }

    fn insert(mut self, rpc: &str, handler: Handler) -> Router {
        let previous = self.handlers.insert(rpc.to_string(), handler);
        assert!(previous.is_none(), "rpc {rpc} registered twice");
        self
    }

    /// A unary handler on raw bytes.
    pub fn unary_raw<F, Fut>(self, rpc: &str, f: F) -> Router
    where
        F: Fn(Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Bytes, Status>> + Send + 'static,
    {
        self.insert(rpc, Handler::Unary(Arc::new(move |req| Box::pin(f(req)))))
    }

    /// A streaming handler on raw bytes (any of the three streaming shapes):
    /// returning `Ok` ends the call with CloseSend, `Err` with an Error frame.
    pub fn stream_raw<F, Fut>(self, rpc: &str, f: F) -> Router
    where
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.insert(rpc, Handler::Stream(Arc::new(move |s| Box::pin(f(s)))))
    }

    /// A unary handler on protobuf messages.
    pub fn unary<Req, Resp, F, Fut>(self, rpc: &str, f: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Req, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.unary_raw(rpc, move |req: Request| {
            let f = f.clone();
            async move {
                let msg = Req::decode(req.data)?;
                Ok(Bytes::from(f(msg, req.context).await?.encode_to_vec()))
            }
        })
    }

    /// A server-streaming handler: one request in, responses sent on the stream.
    pub fn server_streaming<Req, F, Fut>(self, rpc: &str, f: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        F: Fn(Req, Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.stream_raw(rpc, move |stream: Stream| {
            let f = f.clone();
            async move {
                let req = match stream.recv_msg::<Req>().await? {
                    Some(req) => req,
                    None => {
                        return Err(Status::invalid_argument(
                            "server-streaming call without a request",
                        ))
                    }
                };
                f(req, stream).await
            }
        })
    }

    /// A client-streaming handler: reads requests from the stream, returns the
    /// one response.
    pub fn client_streaming<Resp, F, Fut>(self, rpc: &str, f: F) -> Router
    where
        Resp: prost::Message + 'static,
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        let f = Arc::new(f);
        self.stream_raw(rpc, move |stream: Stream| {
            let f = f.clone();
            async move {
                let ctx = stream.ctx.clone();
                let resp = f(stream).await?;
                ctx.send_last(&resp.encode_to_vec()).await
            }
        })
    }

    /// A bidi-streaming handler.
    pub fn bidi<F, Fut>(self, rpc: &str, f: F) -> Router
    where
        F: Fn(Stream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.stream_raw(rpc, f)
    }
}
