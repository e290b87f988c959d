//! A client connection whose server answers with arbitrary bytes: concurrent
//! calls must each end (with some status) before their deadline, and once the
//! connection closes no stream is left.
#![no_main]

use drpc_core::{CallOptions, Conn, ConnOptions};
use libfuzzer_sys::fuzz_target;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let (transport, mut peer) = tokio::io::duplex(1 << 16);
        let conn = Conn::new(transport, ConnOptions::default());
        let input = data.to_vec();
        let fake_server = tokio::spawn(async move {
            let (mut rd, mut wr) = tokio::io::split(&mut peer);
            let drain = async move {
                let mut sink = [0u8; 4096];
                while matches!(rd.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let answer = async move {
                let _ = wr.write_all(&input).await;
            };
            tokio::join!(drain, answer);
        });
        let opts = CallOptions::new().timeout(Duration::from_secs(5));
        let calls = async {
            let unary = conn.unary("/f.S/Echo", b"hello", &opts);
            let stream = async {
                let s = conn.stream("/f.S/Bidi", &opts).await?;
                s.send(b"x").await?;
                while s.recv().await?.is_some() {}
                Ok::<(), drpc_core::Status>(())
            };
            let unary2 = conn.unary("/f.S/Echo", b"again", &opts);
            let _ = tokio::join!(unary, stream, unary2);
        };
        tokio::time::timeout(Duration::from_secs(10), calls).await.expect("a call outlived its deadline");
        conn.close().await;
        assert_eq!(conn.active_streams(), 0);
        fake_server.abort();
    });
});
