/work/wt-python/bindings/python/target-base/release/deps/drpc_core-52b5e6d3f4a164c0.d: /tmp/pybase/drpc-core/src/lib.rs /tmp/pybase/drpc-core/src/compress.rs /tmp/pybase/drpc-core/src/metadata.rs /tmp/pybase/drpc-core/src/packet.rs /tmp/pybase/drpc-core/src/state.rs /tmp/pybase/drpc-core/src/status.rs /tmp/pybase/drpc-core/src/wire.rs /tmp/pybase/drpc-core/src/client.rs /tmp/pybase/drpc-core/src/conn.rs /tmp/pybase/drpc-core/src/pool.rs /tmp/pybase/drpc-core/src/router.rs /tmp/pybase/drpc-core/src/server.rs /tmp/pybase/drpc-core/src/stream.rs /tmp/pybase/drpc-core/src/tasks.rs /tmp/pybase/drpc-core/src/transport.rs /tmp/pybase/drpc-core/src/writer.rs

/work/wt-python/bindings/python/target-base/release/deps/libdrpc_core-52b5e6d3f4a164c0.rlib: /tmp/pybase/drpc-core/src/lib.rs /tmp/pybase/drpc-core/src/compress.rs /tmp/pybase/drpc-core/src/metadata.rs /tmp/pybase/drpc-core/src/packet.rs /tmp/pybase/drpc-core/src/state.rs /tmp/pybase/drpc-core/src/status.rs /tmp/pybase/drpc-core/src/wire.rs /tmp/pybase/drpc-core/src/client.rs /tmp/pybase/drpc-core/src/conn.rs /tmp/pybase/drpc-core/src/pool.rs /tmp/pybase/drpc-core/src/router.rs /tmp/pybase/drpc-core/src/server.rs /tmp/pybase/drpc-core/src/stream.rs /tmp/pybase/drpc-core/src/tasks.rs /tmp/pybase/drpc-core/src/transport.rs /tmp/pybase/drpc-core/src/writer.rs

/work/wt-python/bindings/python/target-base/release/deps/libdrpc_core-52b5e6d3f4a164c0.rmeta: /tmp/pybase/drpc-core/src/lib.rs /tmp/pybase/drpc-core/src/compress.rs /tmp/pybase/drpc-core/src/metadata.rs /tmp/pybase/drpc-core/src/packet.rs /tmp/pybase/drpc-core/src/state.rs /tmp/pybase/drpc-core/src/status.rs /tmp/pybase/drpc-core/src/wire.rs /tmp/pybase/drpc-core/src/client.rs /tmp/pybase/drpc-core/src/conn.rs /tmp/pybase/drpc-core/src/pool.rs /tmp/pybase/drpc-core/src/router.rs /tmp/pybase/drpc-core/src/server.rs /tmp/pybase/drpc-core/src/stream.rs /tmp/pybase/drpc-core/src/tasks.rs /tmp/pybase/drpc-core/src/transport.rs /tmp/pybase/drpc-core/src/writer.rs

/tmp/pybase/drpc-core/src/lib.rs:
/tmp/pybase/drpc-core/src/compress.rs:
/tmp/pybase/drpc-core/src/metadata.rs:
/tmp/pybase/drpc-core/src/packet.rs:
/tmp/pybase/drpc-core/src/state.rs:
/tmp/pybase/drpc-core/src/status.rs:
/tmp/pybase/drpc-core/src/wire.rs:
/tmp/pybase/drpc-core/src/client.rs:
/tmp/pybase/drpc-core/src/conn.rs:
/tmp/pybase/drpc-core/src/pool.rs:
/tmp/pybase/drpc-core/src/router.rs:
/tmp/pybase/drpc-core/src/server.rs:
/tmp/pybase/drpc-core/src/stream.rs:
/tmp/pybase/drpc-core/src/tasks.rs:
/tmp/pybase/drpc-core/src/transport.rs:
/tmp/pybase/drpc-core/src/writer.rs:
