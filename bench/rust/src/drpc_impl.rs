//! drpc-rs through its Rust API (drpc-core), default options on both sides.

use crate::common::{allocs, parse_stream_request, serve_until_stdin_closes, text_payload, Params};
use crate::workloads::{self, Bidi, Client};
use bytes::Bytes;
use drpc_core::{CallOptions, Conn, ConnOptions, Router, Server, Status, Stream};
use std::time::Instant;

/// Messages up to 64 MiB on both sides (the 16 MiB streaming workload;
/// DRPC's default limit is 4 MiB).
const MAX_MESSAGE: usize = 64 << 20;

fn conn_options() -> ConnOptions {
    ConnOptions { max_message_size: MAX_MESSAGE, ..ConnOptions::default() }
}

pub const UNARY: &str = "/bench.Bench/Unary";
pub const STREAM: &str = "/bench.Bench/Stream";
pub const BIDI: &str = "/bench.Bench/Bidi";
pub const STATS: &str = "/bench.Bench/Stats";
/// Client streaming: counts the messages and bytes until CloseSend, answers
/// "messages bytes".
pub const UPLOAD: &str = "/bench.Bench/Upload";

/// The certificates directory of the TLS contender (gen-test-certs output),
/// from `DRPC_BENCH_CERTS`.
fn certs() -> String {
    std::env::var("DRPC_BENCH_CERTS").expect("DRPC_BENCH_CERTS: directory made by gen-test-certs")
}

/// What a server or client runs with besides the defaults.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    Plain,
    /// TLS (rustls, TLS 1.3) with the certificates of `certs()`.
    Tls,
    /// Issue 16's per-call features all on: every call carries a deadline
    /// (`drpc-timeout`) and a trace context (`traceparent`), the server runs
    /// it under a deadline timer, with an inherited context and through an
    /// interceptor that reads the metadata and observes the messages.
    Telemetry,
}

/// A pass-through observer: sees every message and the end.
struct Observe;

impl drpc_core::interceptor::MessageObserver for Observe {}

struct Telemetry;

impl drpc_core::interceptor::ServerInterceptor for Telemetry {
    fn intercept<'a>(
        &'a self,
        mut call: drpc_core::interceptor::ServerCall,
        next: drpc_core::interceptor::Next,
    ) -> drpc_core::interceptor::BoxFuture<'a, Result<(), Status>> {
        if call.metadata().contains_key("authorization") {
            return Box::pin(std::future::ready(Err(Status::new(drpc_core::Code::PermissionDenied, "no"))));
        }
        call.observe(Observe);
        next.run(call)
    }
}

pub fn server(rt: &tokio::runtime::Runtime, addr: &str, variant: Variant) {
    let tls = variant == Variant::Tls;
    let addr = rt.block_on(async {
        let router = Router::new()
            .unary_raw(UNARY, |req| async move { Ok::<Bytes, Status>(req.data) })
            .unary_raw(STATS, |_req| async move { Ok::<Bytes, Status>(Bytes::from(allocs().to_string())) })
            .stream_raw(STREAM, |s: Stream| async move {
                let req = s.recv().await?.ok_or_else(|| Status::invalid_argument("no request"))?;
                let (size, dur) = parse_stream_request(&req);
                let msg = Bytes::from(text_payload(size));
                let end = Instant::now() + dur;
                while Instant::now() < end {
                    // As the API suggests: small messages by copy, large ones
                    // by reference (no copy, a vectored write).
                    if msg.len() < 16 * 1024 {
                        s.send(&msg[..]).await?;
                    } else {
                        s.send_bytes(msg.clone()).await?;
                    }
                }
                Ok(())
            })
            .stream_raw(BIDI, |s: Stream| async move {
                while let Some(m) = s.recv().await? {
                    s.send_bytes(m).await?;
                }
                Ok(())
            })
            .stream_raw(UPLOAD, |s: Stream| async move {
                let (mut msgs, mut bytes) = (0u64, 0u64);
                while let Some(m) = s.recv().await? {
                    msgs += 1;
                    bytes += m.len() as u64;
                }
                s.send(format!("{msgs} {bytes}")).await
            });
        let router = if variant == Variant::Telemetry { router.intercept(Telemetry) } else { router };
        let opts = drpc_core::ServerOptions { conn: conn_options(), ..drpc_core::ServerOptions::default() };
        let server = Box::leak(Box::new(Server::with_options(router, opts)));
        if tls {
            let dir = certs();
            let config = drpc_tls::ServerTlsConfig::from_pem_files(format!("{dir}/server.pem"), format!("{dir}/server-key.pem"))
                .expect("certificates");
            let acceptor = drpc_tls::TlsAcceptor::new(&config).expect("TLS config");
            return drpc_tls::listen_tls(server, addr, acceptor).await.expect("listen");
        }
        server.listen(addr).await.expect("listen")
    });
    serve_until_stdin_closes(&addr);
}

/// Calls through a bare `Conn`, or a `drpc_channel::Channel` (the generated
/// clients' `Channel` trait covers both).
#[derive(Clone)]
struct DrpcClient<Ch> {
    conn: Ch,
    opts: std::sync::Arc<CallOptions>,
}

impl<Ch: drpc_core::call::Channel> Client for DrpcClient<Ch> {
    type Bidi = Stream;
    async fn unary(&self, data: Bytes) -> Bytes {
        self.conn.unary(UNARY, &data, &self.opts).await.expect("unary")
    }
    async fn server_stream(&self, req: Vec<u8>) -> (u64, u64) {
        let s = self.conn.stream(STREAM, &self.opts).await.expect("stream");
        s.send(&req).await.expect("send");
        s.close_send().await.expect("close_send");
        let (mut n, mut b) = (0, 0);
        while let Some(m) = s.recv().await.expect("recv") {
            n += 1;
            b += m.len() as u64;
        }
        (n, b)
    }
    async fn bidi(&self) -> Stream {
        self.conn.stream(BIDI, &self.opts).await.expect("bidi")
    }
    async fn server_allocs(&self) -> u64 {
        let r = self.conn.unary(STATS, b"", &self.opts).await.expect("stats");
        std::str::from_utf8(&r).unwrap().parse().unwrap()
    }
    async fn upload(&self, msg: Bytes, until: Instant) -> Option<(u64, u64)> {
        let s = self.conn.stream(UPLOAD, &self.opts).await.expect("upload");
        while Instant::now() < until {
            s.send_bytes(msg.clone()).await.expect("send");
        }
        s.close_send().await.expect("close_send");
        let r = s.recv().await.expect("recv").expect("the server's count");
        let text = std::str::from_utf8(&r).unwrap();
        let (msgs, bytes) = text.split_once(' ').unwrap();
        Some((msgs.parse().unwrap(), bytes.parse().unwrap()))
    }
}

impl Bidi for Stream {
    async fn rt(&mut self, data: &Bytes) {
        self.send(data).await.expect("send");
        let r = self.recv().await.expect("recv").expect("echo");
        debug_assert_eq!(r.len(), data.len());
    }
    async fn finish(self) {
        self.close_send().await.expect("close_send");
        while self.recv().await.expect("drain").is_some() {}
    }
}

pub fn client(rt: &tokio::runtime::Runtime, p: &Params, variant: Variant) {
    let tls = variant == Variant::Tls;
    let p = p.clone();
    // The workload runs as a task on the runtime, as callers in a service do
    // (not in block_on on the main thread, which would add a thread hand-off
    // to every call).
    rt.block_on(rt.spawn(async move {
        let p = &p;
        let conn = if tls {
            let dir = certs();
            let config = drpc_tls::ClientTlsConfig::ca_file(format!("{dir}/ca.pem")).expect("CA").server_name("localhost");
            let connector = drpc_tls::Connector::tls(&config).expect("TLS config");
            connector.connect(&p.addr, conn_options()).await.expect("connect")
        } else {
            Conn::connect(&p.addr, conn_options()).await.expect("connect")
        };
        let opts = match variant {
            Variant::Telemetry => call_options(p)
                .timeout(std::time::Duration::from_secs(600))
                .trace(drpc_core::TraceContext::new_root()),
            _ => call_options(p),
        };
        let c = DrpcClient { conn: conn.clone(), opts: std::sync::Arc::new(opts) };
        workloads::run(c, p).await;
        conn.close().await;
    }))
    .unwrap();
}

fn call_options(p: &Params) -> CallOptions {
    match &p.compress {
        Some(name) => CallOptions::new().compression(drpc_core::Compression::from_name(name).expect("--compress: snappy or minlz-fastest")),
        None => CallOptions::new(),
    }
}

/// The same workloads through a `drpc_channel::Channel` with one endpoint
/// (round-robin, retries and budget at their defaults).
pub fn channel_client(rt: &tokio::runtime::Runtime, p: &Params) {
    let p = p.clone();
    rt.block_on(rt.spawn(async move {
        let p = &p;
        let channel = drpc_channel::Channel::new(&p.addr, drpc_channel::ChannelOptions::default()).expect("channel");
        channel.ready(std::time::Duration::from_secs(10)).await.expect("ready");
        let c = DrpcClient { conn: channel, opts: std::sync::Arc::new(CallOptions::new()) };
        workloads::run(c, p).await;
    }))
    .unwrap();
}
