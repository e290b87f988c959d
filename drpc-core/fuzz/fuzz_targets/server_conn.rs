//! A whole server connection fed arbitrary bytes as the client: it must never
//! panic or hang, and once the peer is gone every handler and stream is gone.
#![no_main]

use bytes::Bytes;
use drpc_core::{Router, Server, Status, Stream};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn router() -> Router {
    Router::new()
        .unary_raw("/f.S/Echo", |req| async move { Ok::<Bytes, Status>(req.data) })
        .bidi("/f.S/Bidi", |stream: Stream| async move {
            while let Some(m) = stream.recv().await? {
                stream.send(m).await?;
            }
            Ok(())
        })
}

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let server = Server::new(router());
        let (mut peer, transport) = tokio::io::duplex(1 << 16);
        let serving = tokio::spawn({
            let server = server.clone();
            async move { server.serve_transport(transport).await }
        });
        let input = data.to_vec();
        let (mut rd, mut wr) = tokio::io::split(&mut peer);
        let write = async move {
            let _ = wr.write_all(&input).await;
            let _ = wr.shutdown().await;
        };
        let read = async move {
            let mut sink = Vec::new();
            let _ = rd.read_to_end(&mut sink).await;
        };
        let all = async { tokio::join!(write, read) };
        tokio::time::timeout(Duration::from_secs(30), all).await.expect("the server never hung up");
        drop(peer);
        tokio::time::timeout(Duration::from_secs(30), serving).await.expect("connection ended").unwrap();
        server.shutdown(Duration::from_secs(1)).await;
        assert_eq!(server.active_rpcs(), 0);
        assert_eq!(server.connections(), 0);
    });
});
