//! Typed calls, the runtime side of the code `drpc-build` generates (usable by
//! hand too): the [`Channel`] a generated client calls through (a [`Conn`], or
//! one address of a [`Pool`]), typed stream halves, typed streaming handlers
//! on a [`Router`], and service descriptions.

use crate::client::{CallOptions, Conn};
use crate::pool::Pool;
use crate::router::Router;
use crate::status::Status;
use crate::stream::{CallContext, Stream};
use bytes::Bytes;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What a generated client calls through: a [`Conn`], or a [`PoolChannel`]
/// (one address of a [`Pool`]).
pub trait Channel: Clone + Send + Sync + 'static {
    /// A unary call with raw message bytes.
    fn unary(
        &self,
        rpc: &str,
        request: &[u8],
        opts: &CallOptions,
    ) -> impl Future<Output = Result<Bytes, Status>> + Send;

    /// Opens a streaming call.
    fn stream(
        &self,
        rpc: &str,
        opts: &CallOptions,
    ) -> impl Future<Output = Result<Stream, Status>> + Send;
}

impl Channel for Conn {
    fn unary(
        &self,
        rpc: &str,
        request: &[u8],
        opts: &CallOptions,
    ) -> impl Future<Output = Result<Bytes, Status>> + Send {
        Conn::unary(self, rpc, request, opts)
    }

    fn stream(
        &self,
        rpc: &str,
        opts: &CallOptions,
    ) -> impl Future<Output = Result<Stream, Status>> + Send {
        Conn::stream(self, rpc, opts)
    }
}

/// One address of a [`Pool`]: each call goes to a pooled connection to it.
#[derive(Clone)]
pub struct PoolChannel {
    pool: Pool,
    addr: Arc<str>,
}

impl Pool {
    /// A [`Channel`] calling `addr` through this pool.
    pub fn channel(&self, addr: impl Into<String>) -> PoolChannel {
        PoolChannel {
            pool: self.clone(),
            addr: addr.into().into(),
        }
    }
}

impl PoolChannel {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl std::fmt::Debug for PoolChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolChannel")
            .field("addr", &self.addr)
            .finish()
    }
}

impl Channel for PoolChannel {
    fn unary(
        &self,
        rpc: &str,
        request: &[u8],
        opts: &CallOptions,
    ) -> impl Future<Output = Result<Bytes, Status>> + Send {
        self.pool.unary(&self.addr, rpc, request, opts)
    }

    fn stream(
        &self,
        rpc: &str,
        opts: &CallOptions,
    ) -> impl Future<Output = Result<Stream, Status>> + Send {
        self.pool.stream(&self.addr, rpc, opts)
    }
}

/// The sending half of a client's streaming call, typed with the request
/// message. Dropping it before [`SendStream::close_send`] cancels the call, so
/// an abandoned request stream is never taken for a complete one.
pub struct SendStream<T> {
    stream: Arc<Stream>,
    closed: AtomicBool,
    _message: PhantomData<fn(&T)>,
}

impl<T: prost::Message> SendStream<T> {
    /// Sends one message; waits while the connection's writer is full or,
    /// with flow control, while the stream has no credit.
    pub async fn send(&self, message: &T) -> Result<(), Status> {
        self.stream.send_msg(message).await
    }

    /// Tells the server the requests are complete. Later calls do nothing.
    pub async fn close_send(&self) -> Result<(), Status> {
        self.stream.close_send().await?;
        self.closed.store(true, Ordering::Release);
        Ok(())
    }
}

impl<T> SendStream<T> {
    fn new(stream: Arc<Stream>) -> SendStream<T> {
        SendStream {
            stream,
            closed: AtomicBool::new(false),
            _message: PhantomData,
        }
    }

    /// Cancels the whole call, both halves (a Cancel frame tells the server).
    pub fn cancel(&self) {
        self.stream.cancel();
    }

    pub fn context(&self) -> &CallContext {
        self.stream.context()
    }
}

impl<T> Drop for SendStream<T> {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            self.stream.cancel();
        }
    }
}

impl<T> std::fmt::Debug for SendStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SendStream").field(&self.stream).finish()
    }
}

/// The receiving half of a streaming call, typed with the message it
/// receives: a client's responses or a server handler's requests.
pub struct RecvStream<T> {
    stream: Arc<Stream>,
    _message: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> RecvStream<T> {
    /// The next message, or `None` once the remote finished sending.
    pub async fn recv(&self) -> Result<Option<T>, Status> {
        self.stream.recv_msg().await
    }
}

impl<T> RecvStream<T> {
    /// Cancels the whole call, both halves (a Cancel frame tells the remote).
    pub fn cancel(&self) {
        self.stream.cancel();
    }

    pub fn context(&self) -> &CallContext {
        self.stream.context()
    }
}

impl<T> std::fmt::Debug for RecvStream<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RecvStream").field(&self.stream).finish()
    }
}

/// The single response of a client-streaming call.
pub struct ResponseReceiver<T> {
    stream: Arc<Stream>,
    _message: PhantomData<fn() -> T>,
}

impl<T: prost::Message + Default> ResponseReceiver<T> {
    /// Waits for the response; the server sends it once the requests are
    /// complete, so [`SendStream::close_send`] first.
    pub async fn recv(self) -> Result<T, Status> {
        let Some(response) = self.stream.recv_msg::<T>().await? else {
            return Err(Status::internal(
                "the server ended the call without a response",
            ));
        };
        match self.stream.recv().await? {
            None => Ok(response),
            Some(_) => {
                self.stream.cancel();
                Err(Status::internal(
                    "the server sent more than one response to a client-streaming call",
                ))
            }
        }
    }
}

impl<T> ResponseReceiver<T> {
    /// Cancels the whole call, both halves (a Cancel frame tells the server).
    pub fn cancel(&self) {
        self.stream.cancel();
    }

    pub fn context(&self) -> &CallContext {
        self.stream.context()
    }
}

impl<T> std::fmt::Debug for ResponseReceiver<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ResponseReceiver")
            .field(&self.stream)
            .finish()
    }
}

/// How a server-streaming or bidi handler sends its responses; the handler
/// ends the call by returning (`Ok` closes the stream, `Err` fails it).
pub struct ResponseSender<T> {
    stream: Arc<Stream>,
    _message: PhantomData<fn(&T)>,
}

impl<T: prost::Message> ResponseSender<T> {
    /// Sends one response; waits while the connection's writer is full or,
    /// with flow control, while the stream has no credit.
    pub async fn send(&self, message: &T) -> Result<(), Status> {
        self.stream.send_msg(message).await
    }
}

impl<T> ResponseSender<T> {
    pub fn context(&self) -> &CallContext {
        self.stream.context()
    }
}

impl<T> std::fmt::Debug for ResponseSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ResponseSender").field(&self.stream).finish()
    }
}

/// A typed unary call.
pub async fn unary<C, Req, Resp>(
    channel: &C,
    rpc: &str,
    request: &Req,
    opts: &CallOptions,
) -> Result<Resp, Status>
where
    C: Channel,
    Req: prost::Message,
    Resp: prost::Message + Default,
{
    let response = channel.unary(rpc, &request.encode_to_vec(), opts).await?;
    Ok(Resp::decode(response)?)
}

/// A typed server-streaming call: sends `request`, closes the sending side
/// and returns the responses.
pub async fn server_streaming<C, Req, Resp>(
    channel: &C,
    rpc: &str,
    request: &Req,
    opts: &CallOptions,
) -> Result<RecvStream<Resp>, Status>
where
    C: Channel,
    Req: prost::Message,
{
    let stream = channel.stream(rpc, opts).await?;
    stream.send_msg(request).await?;
    stream.close_send().await?;
    Ok(RecvStream {
        stream: Arc::new(stream),
        _message: PhantomData,
    })
}

/// A typed client-streaming call: the request half and the one response.
pub async fn client_streaming<C, Req, Resp>(
    channel: &C,
    rpc: &str,
    opts: &CallOptions,
) -> Result<(SendStream<Req>, ResponseReceiver<Resp>), Status>
where
    C: Channel,
{
    let stream = Arc::new(channel.stream(rpc, opts).await?);
    let sender = SendStream::new(stream.clone());
    Ok((
        sender,
        ResponseReceiver {
            stream,
            _message: PhantomData,
        },
    ))
}

/// A typed bidi-streaming call: the request and response halves, usable from
/// different tasks.
pub async fn bidi_streaming<C, Req, Resp>(
    channel: &C,
    rpc: &str,
    opts: &CallOptions,
) -> Result<(SendStream<Req>, RecvStream<Resp>), Status>
where
    C: Channel,
{
    let stream = Arc::new(channel.stream(rpc, opts).await?);
    let sender = SendStream::new(stream.clone());
    Ok((
        sender,
        RecvStream {
            stream,
            _message: PhantomData,
        },
    ))
}

impl Router {
    /// A server-streaming handler with typed responses.
    pub fn server_streaming_typed<Req, Resp, F, Fut>(self, rpc: &str, f: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(Req, ResponseSender<Resp>, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.server_streaming(rpc, move |request: Req, stream: Stream| {
            let ctx = stream.context().clone();
            let stream = Arc::new(stream);
            f(
                request,
                ResponseSender {
                    stream,
                    _message: PhantomData,
                },
                ctx,
            )
        })
    }

    /// A client-streaming handler with typed requests; the response it
    /// returns ends the call.
    pub fn client_streaming_typed<Req, Resp, F, Fut>(self, rpc: &str, f: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(RecvStream<Req>, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Resp, Status>> + Send + 'static,
    {
        self.client_streaming(rpc, move |stream: Stream| {
            let ctx = stream.context().clone();
            let stream = Arc::new(stream);
            f(
                RecvStream {
                    stream,
                    _message: PhantomData,
                },
                ctx,
            )
        })
    }

    /// A bidi-streaming handler with typed requests and responses.
    pub fn bidi_typed<Req, Resp, F, Fut>(self, rpc: &str, f: F) -> Router
    where
        Req: prost::Message + Default + 'static,
        Resp: prost::Message + 'static,
        F: Fn(RecvStream<Req>, ResponseSender<Resp>, CallContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Status>> + Send + 'static,
    {
        self.bidi(rpc, move |stream: Stream| {
            let ctx = stream.context().clone();
            let stream = Arc::new(stream);
            let sender = ResponseSender {
                stream: stream.clone(),
                _message: PhantomData,
            };
            f(
                RecvStream {
                    stream,
                    _message: PhantomData,
                },
                sender,
                ctx,
            )
        })
    }

    /// Registers every rpc of a service (a generated `<Service>Server`).
    pub fn service<S: Service>(self, service: S) -> Router {
        service.register(self)
    }
}

/// A set of rpcs registered together, with its description; generated
/// `<Service>Server` types implement it.
pub trait Service {
    const DESCRIPTOR: &'static ServiceDescriptor;

    /// Adds a handler for every rpc of the service to `router`.
    fn register(self, router: Router) -> Router;
}

/// Whether each side of an rpc sends one message or a stream of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RpcKind {
    Unary,
    ServerStreaming,
    ClientStreaming,
    BidiStreaming,
}

impl RpcKind {
    pub const fn new(client_streaming: bool, server_streaming: bool) -> RpcKind {
        match (client_streaming, server_streaming) {
            (false, false) => RpcKind::Unary,
            (false, true) => RpcKind::ServerStreaming,
            (true, false) => RpcKind::ClientStreaming,
            (true, true) => RpcKind::BidiStreaming,
        }
    }

    pub const fn client_streaming(self) -> bool {
        matches!(self, RpcKind::ClientStreaming | RpcKind::BidiStreaming)
    }

    pub const fn server_streaming(self) -> bool {
        matches!(self, RpcKind::ServerStreaming | RpcKind::BidiStreaming)
    }
}

/// One rpc of a service, as declared in its `.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// The method name as declared (`GetStats`).
    pub name: &'static str,
    /// The name on the wire (`/pkg.Service/GetStats`).
    pub rpc: &'static str,
    pub kind: RpcKind,
    /// Fully qualified protobuf name of the request message (`pkg.Empty`).
    pub input_type: &'static str,
    /// Fully qualified protobuf name of the response message.
    pub output_type: &'static str,
}

/// A service as declared in its `.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// The fully qualified service name (`pkg.Service`; `Service` without a package).
    pub name: &'static str,
    /// The protobuf package, empty when the file has none.
    pub package: &'static str,
    pub methods: &'static [MethodDescriptor],
}

impl ServiceDescriptor {
    /// The method declared as `name` (`GetStats`).
    pub fn method(&self, name: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.name == name)
    }

    /// The method whose wire name is `rpc` (`/pkg.Service/GetStats`).
    pub fn by_rpc(&self, rpc: &str) -> Option<&'static MethodDescriptor> {
        self.methods.iter().find(|m| m.rpc == rpc)
    }
}

/// Includes the code `drpc-build` generated for a protobuf package into the
/// current module: `drpc_core::include_proto!("kv");` (for a file without a
/// package, `include_proto!("_")`).
#[macro_export]
macro_rules! include_proto {
    ($package:tt) => {
        include!(concat!(env!("OUT_DIR"), concat!("/", $package, ".rs")));
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_kind_round_trips_its_flags() {
        for (client, server) in [(false, false), (false, true), (true, false), (true, true)] {
            let kind = RpcKind::new(client, server);
            assert_eq!(
                (kind.client_streaming(), kind.server_streaming()),
                (client, server),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn descriptor_lookups() {
        const METHODS: &[MethodDescriptor] = &[MethodDescriptor {
            name: "Get",
            rpc: "/kv.KV/Get",
            kind: RpcKind::Unary,
            input_type: "kv.GetRequest",
            output_type: "kv.GetResponse",
        }];
        let service = ServiceDescriptor {
            name: "kv.KV",
            package: "kv",
            methods: METHODS,
        };
        assert_eq!(service.method("Get").map(|m| m.rpc), Some("/kv.KV/Get"));
        assert_eq!(service.by_rpc("/kv.KV/Get").map(|m| m.name), Some("Get"));
        assert!(service.method("Put").is_none() && service.by_rpc("/kv.KV/Put").is_none());
    }
}
