//! The README's "from .proto to service" example, kept compiling and running
//! (`cargo run -p drpc-build-edge --example kv`); build.rs compiles kv.proto.
use drpc_core::call::{RecvStream, ResponseSender};
use drpc_core::{CallContext, CallOptions, Conn, ConnOptions, Router, Server, Status};
use kv::{Key, KvClient, KvServer};
use std::time::Duration;

mod kv {
    drpc_core::include_proto!("kv"); // "_" for a file without a package
}

struct Store;
impl kv::Kv for Store {
    async fn get(&self, key: Key, _: CallContext) -> Result<Key, Status> {
        Ok(key)
    }
    async fn watch(&self, key: Key, out: ResponseSender<Key>, _: CallContext) -> Result<(), Status> {
        out.send(&key).await
    }
    async fn put(&self, keys: RecvStream<Key>, _: CallContext) -> Result<Key, Status> {
        let mut last = Key::default();
        while let Some(key) = keys.recv().await? {
            last = key;
        }
        Ok(last)
    }
    async fn sync(&self, keys: RecvStream<Key>, out: ResponseSender<Key>, _: CallContext) -> Result<(), Status> {
        while let Some(key) = keys.recv().await? {
            out.send(&key).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::new(Router::new().service(KvServer::new(Store)));
    let addr = server.listen("127.0.0.1:0").await?;
    let client = KvClient::new(Conn::connect(&addr, ConnOptions::default()).await?);
    let opts = CallOptions::new().timeout(Duration::from_secs(1));
    let key = client.get(&Key { key: "a".into() }, &opts).await?;
    let watched = client.watch(&key, &opts).await?.recv().await?;
    let (tx, rx) = client.sync(&opts).await?;
    tx.send(&key).await?;
    tx.close_send().await?;
    let (synced, end) = (rx.recv().await?, rx.recv().await?);
    let (tx, response) = client.put(&opts).await?;
    tx.send(&key).await?;
    tx.close_send().await?;
    let put = response.recv().await?;
    println!("get {key:?}, watch {watched:?}, sync {synced:?} then {end:?}, put {put:?}");
    let expected = Some(key.clone());
    if watched != expected || synced != expected || end.is_some() || put != key {
        return Err("an rpc answered something else".into());
    }
    server.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
