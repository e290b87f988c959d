//! The connection pool: concurrency through several sequential connections,
//! the capacity limit, idle expiry and dead connections.

mod common;

use common::*;
use drpc_core::{CallOptions, Code, Pool, PoolOptions, ServerOptions};
use std::time::Duration;

#[tokio::test]
async fn sequential_pool_spreads_concurrent_calls_over_connections() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let pool = Pool::new(PoolOptions::sequential(4));
    let calls: Vec<_> = (0..16u32)
        .map(|i| {
            let (pool, addr) = (pool.clone(), addr.clone());
            tokio::spawn(async move {
                let r: Counted = pool
                    .invoke(
                        &addr,
                        "/t.S/Slow",
                        &Counted { n: 50 + i },
                        &CallOptions::new(),
                    )
                    .await?;
                assert_eq!(r.n, 50 + i);
                Ok::<_, drpc_core::Status>(())
            })
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    assert_eq!(pool.connections(&addr), 4, "dialled up to the capacity");
    assert!(server.connections() <= 4);
    // Queued calls still honour deadlines.
    let busy: Vec<_> = (0..4)
        .map(|_| {
            let (pool, addr) = (pool.clone(), addr.clone());
            tokio::spawn(async move {
                pool.invoke::<_, Counted>(
                    &addr,
                    "/t.S/Slow",
                    &Counted { n: 300 },
                    &CallOptions::new(),
                )
                .await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let e = pool
        .unary(
            &addr,
            "/t.S/Echo",
            b"",
            &CallOptions::new().timeout(Duration::from_millis(50)),
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded);
    for b in busy {
        b.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn idle_connections_expire_and_dead_ones_are_replaced() {
    let (server, addr, _) = start_server(ServerOptions::default()).await;
    let pool = Pool::new(PoolOptions {
        idle_timeout: Duration::from_millis(100),
        ..PoolOptions::default()
    });
    assert_eq!(
        &pool
            .unary(&addr, "/t.S/Echo", b"a", &CallOptions::new())
            .await
            .unwrap()[..],
        b"a"
    );
    assert_eq!(
        pool.connections(&addr),
        1,
        "a multiplexing pool shares one connection"
    );
    eventually("idle connection closed", || {
        pool.connections(&addr) == 0 && server.connections() == 0
    })
    .await;
    assert_eq!(
        &pool
            .unary(&addr, "/t.S/Echo", b"b", &CallOptions::new())
            .await
            .unwrap()[..],
        b"b"
    );
    pool.close().await;
    assert_eq!(pool.connections(&addr), 0);
    assert_eq!(
        &pool
            .unary(&addr, "/t.S/Echo", b"c", &CallOptions::new())
            .await
            .unwrap()[..],
        b"c"
    );
    let e = pool
        .unary("127.0.0.1:1", "/t.S/Echo", b"", &CallOptions::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unavailable);
}
