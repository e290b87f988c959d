//! Raw TCP loopback baselines (blocking std sockets, one thread per side):
//! `stream` = one side writes `size`-byte buffers for the duration, the other
//! reads (the bandwidth ceiling for server streaming); `unary_lat` = a
//! length-prefixed ping-pong (the round-trip floor).

use crate::common::{emit, parse_stream_request, pct_us, serve_until_stdin_closes, stream_request, Params};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

pub fn server(addr: &str) {
    let l = TcpListener::bind(addr).expect("bind");
    let local = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let s = s.expect("accept");
            std::thread::spawn(move || {
                let _ = handle(s);
            });
        }
    });
    serve_until_stdin_closes(&local);
}

fn handle(mut s: TcpStream) -> std::io::Result<()> {
    s.set_nodelay(true)?;
    let mut mode = [0u8; 1];
    s.read_exact(&mut mode)?;
    if mode[0] == b'S' {
        let mut req = [0u8; 16];
        s.read_exact(&mut req)?;
        let (size, dur) = parse_stream_request(&req);
        let buf = vec![0xa5u8; size];
        let end = Instant::now() + dur;
        while Instant::now() < end {
            s.write_all(&buf)?;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        let mut sink = [0u8; 16];
        let _ = s.read(&mut sink);
    } else {
        let mut len = [0u8; 4];
        let mut buf = Vec::new();
        loop {
            if s.read_exact(&mut len).is_err() {
                return Ok(());
            }
            buf.resize(u32::from_be_bytes(len) as usize, 0);
            s.read_exact(&mut buf)?;
            s.write_all(&len)?;
            s.write_all(&buf)?;
        }
    }
    Ok(())
}

fn stream_once(addr: &str, size: usize, dur: std::time::Duration) -> (u64, f64) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).unwrap();
    let start = Instant::now();
    s.write_all(b"S").unwrap();
    s.write_all(&stream_request(size, dur)).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    (total, start.elapsed().as_secs_f64())
}

pub fn client(p: &Params) {
    match p.workload.as_str() {
        "stream" => {
            stream_once(&p.addr, p.size, p.warmup);
            for rep in 0..p.reps {
                let (bytes, secs) = stream_once(&p.addr, p.size, p.duration);
                emit(json!({"rep": rep, "msgs": bytes / p.size.max(1) as u64, "bytes": bytes, "secs": secs}));
            }
        }
        "unary_lat" => {
            let mut s = TcpStream::connect(&p.addr).expect("connect");
            s.set_nodelay(true).unwrap();
            s.write_all(b"P").unwrap();
            let msg = vec![0x5au8; p.size];
            let mut back = vec![0u8; p.size];
            let mut rt = |s: &mut TcpStream| {
                let mut frame = (p.size as u32).to_be_bytes().to_vec();
                frame.extend_from_slice(&msg);
                s.write_all(&frame).unwrap();
                let mut len = [0u8; 4];
                s.read_exact(&mut len).unwrap();
                s.read_exact(&mut back).unwrap();
            };
            let end = Instant::now() + p.warmup;
            while Instant::now() < end {
                rt(&mut s);
            }
            for rep in 0..p.reps {
                let mut lat = Vec::with_capacity(100_000);
                let start = Instant::now();
                let end = start + p.duration;
                loop {
                    let t = Instant::now();
                    if t >= end {
                        break;
                    }
                    rt(&mut s);
                    lat.push(t.elapsed().as_nanos() as u64);
                }
                let secs = start.elapsed().as_secs_f64();
                lat.sort_unstable();
                emit(json!({"rep": rep, "calls": lat.len(), "secs": secs,
                            "p50_us": pct_us(&lat, 50.0), "p99_us": pct_us(&lat, 99.0)}));
            }
        }
        w => panic!("tcp: unknown workload {w}"),
    }
}

/// The same ping-pong over tokio (multi-thread runtime, one task per side):
/// the floor for any RPC stack built on tokio's reactor, which adds an
/// `epoll_wait` and a task wake-up to each side of a round trip.
pub fn tokio_server(rt: &tokio::runtime::Runtime, addr: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = rt.block_on(tokio::net::TcpListener::bind(addr)).expect("bind");
    let local = l.local_addr().unwrap().to_string();
    rt.spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.expect("accept");
            tokio::spawn(async move {
                s.set_nodelay(true)?;
                let mut len = [0u8; 4];
                let mut buf = Vec::new();
                loop {
                    if s.read_exact(&mut len).await.is_err() {
                        return Ok::<(), std::io::Error>(());
                    }
                    buf.resize(4 + u32::from_be_bytes(len) as usize, 0);
                    s.read_exact(&mut buf[4..]).await?;
                    buf[..4].copy_from_slice(&len);
                    s.write_all(&buf).await?;
                }
            });
        }
    });
    serve_until_stdin_closes(&local);
}

pub fn tokio_client(rt: &tokio::runtime::Runtime, p: &Params) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    assert_eq!(p.workload, "unary_lat", "tokio-tcp: only unary_lat");
    let p = p.clone();
    rt.block_on(rt.spawn(async move {
        let s = tokio::net::TcpStream::connect(&p.addr).await.expect("connect");
        s.set_nodelay(true).unwrap();
        let mut frame = (p.size as u32).to_be_bytes().to_vec();
        frame.extend(std::iter::repeat(0x5au8).take(p.size));
        let back = vec![0u8; 4 + p.size];
        crate::workloads::latency_reps(&p, (s, frame, back), |(mut s, frame, mut back)| async move {
            s.write_all(&frame).await.unwrap();
            s.read_exact(&mut back).await.unwrap();
            (s, frame, back)
        })
        .await;
    }))
    .unwrap();
}
