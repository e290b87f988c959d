//! Memory per open stream: the futures a task holding a stream awaits are
//! part of that task's allocation for its whole life, so they must stay
//! small (the rare waits are boxed). Bounds with some margin over today's
//! sizes (send 200–248, recv 96, Conn::stream 160, Stream 104 bytes).

use drpc_core::{CallOptions, Conn, ConnOptions};

#[tokio::test]
async fn futures_held_by_per_stream_tasks_stay_small() {
    let (ours, _theirs) = tokio::io::duplex(1 << 16);
    let conn = Conn::new(ours, ConnOptions::default());
    let opts = CallOptions::new();
    let open = conn.stream("/t.S/Bidi", &opts);
    eprintln!("Conn::stream future: {} bytes", std::mem::size_of_val(&open));
    assert!(std::mem::size_of_val(&open) <= 256, "Conn::stream future: {} bytes", std::mem::size_of_val(&open));
    let stream = open.await.unwrap();
    let sizes = [
        ("send", std::mem::size_of_val(&stream.send(b"x"))),
        ("send_bytes", std::mem::size_of_val(&stream.send_bytes(bytes::Bytes::new()))),
        ("send_msg", std::mem::size_of_val(&stream.send_msg(&()))),
        ("recv", std::mem::size_of_val(&stream.recv())),
    ];
    for (what, size) in sizes {
        eprintln!("{what} future: {size} bytes");
        assert!(size <= 320, "{what} future: {size} bytes");
    }
    let stream_size = std::mem::size_of::<drpc_core::Stream>();
    eprintln!("Stream: {stream_size} bytes");
    assert!(stream_size <= 160, "Stream: {stream_size} bytes");
}
