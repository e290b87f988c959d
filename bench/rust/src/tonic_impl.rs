//! gRPC as tonic 0.14: the same service on raw bytes through a pass-through
//! codec (what tonic-build would generate, written by hand so no protoc is
//! needed). Default tonic options on both sides.

use crate::common::{allocs, parse_stream_request, serve_until_stdin_closes, Params};
use crate::workloads::{self, Bidi, Client};
use bytes::{Buf, BufMut, Bytes};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Request, Response, Status, Streaming};

#[derive(Clone, Copy, Default)]
pub struct RawCodec;
pub struct RawEnc;
pub struct RawDec;

impl Encoder for RawEnc {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawDec {
    type Item = Bytes;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEnc;
    type Decoder = RawDec;
    fn encoder(&mut self) -> RawEnc {
        RawEnc
    }
    fn decoder(&mut self) -> RawDec {
        RawDec
    }
}

type BoxFut<T, E> = Pin<Box<dyn std::future::Future<Output = Result<T, E>> + Send + 'static>>;
type BoxStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<Bytes, Status>> + Send + 'static>>;

#[derive(Clone, Default)]
pub struct BenchService;

impl tonic::server::NamedService for BenchService {
    const NAME: &'static str = "bench.Bench";
}

struct UnarySvc(bool);
impl tonic::server::UnaryService<Bytes> for UnarySvc {
    type Response = Bytes;
    type Future = BoxFut<Response<Bytes>, Status>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let stats = self.0;
        Box::pin(async move {
            if stats {
                Ok(Response::new(Bytes::from(allocs().to_string())))
            } else {
                Ok(Response::new(req.into_inner()))
            }
        })
    }
}

struct StreamSvc;
impl tonic::server::ServerStreamingService<Bytes> for StreamSvc {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future = BoxFut<Response<BoxStream>, Status>;
    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        Box::pin(async move {
            let (size, dur) = parse_stream_request(&req.into_inner());
            let msg = Bytes::from(vec![0xa5u8; size]);
            let end = Instant::now() + dur;
            // A generator-like stream: yields the message until the time is up.
            let s = futures_util::stream::unfold((), move |()| {
                let msg = msg.clone();
                async move {
                    if Instant::now() < end {
                        Some((Ok(msg), ()))
                    } else {
                        None
                    }
                }
            });
            Ok(Response::new(Box::pin(s) as BoxStream))
        })
    }
}

struct BidiSvc;
impl tonic::server::StreamingService<Bytes> for BidiSvc {
    type Response = Bytes;
    type ResponseStream = BoxStream;
    type Future = BoxFut<Response<BoxStream>, Status>;
    fn call(&mut self, req: Request<Streaming<Bytes>>) -> Self::Future {
        Box::pin(async move {
            let inbound = req.into_inner();
            // echo: the response stream is the request stream
            Ok(Response::new(Box::pin(inbound) as BoxStream))
        })
    }
}

impl<B> tower_service::Service<http::Request<B>> for BenchService
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFut<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        match req.uri().path() {
            "/bench.Bench/Unary" => Box::pin(async move {
                Ok(tonic::server::Grpc::new(RawCodec).unary(UnarySvc(false), req).await)
            }),
            "/bench.Bench/Stats" => Box::pin(async move {
                Ok(tonic::server::Grpc::new(RawCodec).unary(UnarySvc(true), req).await)
            }),
            "/bench.Bench/Stream" => Box::pin(async move {
                Ok(tonic::server::Grpc::new(RawCodec).server_streaming(StreamSvc, req).await)
            }),
            "/bench.Bench/Bidi" => Box::pin(async move {
                Ok(tonic::server::Grpc::new(RawCodec).streaming(BidiSvc, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such rpc").into_http()) }),
        }
    }
}

pub fn server(rt: &tokio::runtime::Runtime, addr: &str) {
    let addr = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let local = listener.local_addr().unwrap().to_string();
        // What tonic's Server::serve(addr) does by default: TCP_NODELAY on.
        let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(BenchService)
                .serve_with_incoming(incoming)
                .await
                .expect("serve")
        });
        local
    });
    serve_until_stdin_closes(&addr);
}

#[derive(Clone)]
struct TonicClient {
    grpc: tonic::client::Grpc<tonic::transport::Channel>,
}

fn path(p: &'static str) -> http::uri::PathAndQuery {
    http::uri::PathAndQuery::from_static(p)
}

pub struct TonicBidi {
    tx: Option<mpsc::Sender<Bytes>>,
    rx: Streaming<Bytes>,
}

impl Client for TonicClient {
    type Bidi = TonicBidi;
    async fn unary(&self, data: Bytes) -> Bytes {
        let mut g = self.grpc.clone();
        g.ready().await.expect("ready");
        g.unary(Request::new(data), path("/bench.Bench/Unary"), RawCodec).await.expect("unary").into_inner()
    }
    async fn server_stream(&self, req: Vec<u8>) -> (u64, u64) {
        let mut g = self.grpc.clone();
        g.ready().await.expect("ready");
        let mut s = g
            .server_streaming(Request::new(Bytes::from(req)), path("/bench.Bench/Stream"), RawCodec)
            .await
            .expect("stream")
            .into_inner();
        let (mut n, mut b) = (0, 0);
        while let Some(m) = s.message().await.expect("recv") {
            n += 1;
            b += m.len() as u64;
        }
        (n, b)
    }
    async fn bidi(&self) -> TonicBidi {
        let mut g = self.grpc.clone();
        g.ready().await.expect("ready");
        let (tx, rx) = mpsc::channel(16);
        let resp = g
            .streaming(Request::new(ReceiverStream::new(rx)), path("/bench.Bench/Bidi"), RawCodec)
            .await
            .expect("bidi")
            .into_inner();
        TonicBidi { tx: Some(tx), rx: resp }
    }
    async fn server_allocs(&self) -> u64 {
        let mut g = self.grpc.clone();
        g.ready().await.expect("ready");
        let r = g.unary(Request::new(Bytes::new()), path("/bench.Bench/Stats"), RawCodec).await.expect("stats");
        std::str::from_utf8(r.get_ref()).unwrap().parse().unwrap()
    }
}

impl Bidi for TonicBidi {
    async fn rt(&mut self, data: &Bytes) {
        self.tx.as_ref().unwrap().send(data.clone()).await.expect("send");
        self.rx.message().await.expect("recv").expect("echo");
    }
    async fn finish(mut self) {
        self.tx.take();
        while self.rx.message().await.expect("drain").is_some() {}
    }
}

pub fn client(rt: &tokio::runtime::Runtime, p: &Params) {
    let p = p.clone();
    // The workload runs as a task on the runtime, as callers in a service do
    // (not in block_on on the main thread, which would add a thread hand-off
    // to every call).
    rt.block_on(rt.spawn(async move {
        let p = &p;
        let ch = tonic::transport::Endpoint::from_shared(format!("http://{}", p.addr))
            .unwrap()
            .connect()
            .await
            .expect("connect");
        let c = TonicClient { grpc: tonic::client::Grpc::new(ch) };
        workloads::run(c, p).await;
    }))
    .unwrap();
}
