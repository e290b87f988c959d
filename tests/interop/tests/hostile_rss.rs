//! The interop server as its own process under attack from 64 raw-socket
//! connections at once, one attack class at a time, at its default limits:
//! its resident memory (RSS, read from /proc) must stay under the default
//! memory budget plus a fixed overhead, and a well-behaved client on a new
//! connection must be served during and after every attack.
//!
//! The Rust interop server by default; `DRPC_HOSTILE_SERVER="prog args..."`
//! attacks another implementation's interop server (tests/matrix/run.sh does
//! so for the C and Python ones).

use drpc_core::wire::{put_frame, FrameHeader, Kind};
use drpc_core::{CallOptions, Conn, ConnOptions};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CONNECTIONS: usize = 64;
/// What the process may hold: the default budget and a fixed overhead (runtime,
/// allocator slack, 64+ connections' tasks). The bar is 512 MiB.
const RSS_LIMIT: u64 = 512 << 20;

struct ServerProcess {
    child: Child,
    addr: String,
}

impl ServerProcess {
    fn start() -> ServerProcess {
        let argv: Vec<String> = match std::env::var("DRPC_HOSTILE_SERVER") {
            Ok(cmd) if !cmd.trim().is_empty() => cmd.split_whitespace().map(String::from).collect(),
            _ => vec![env!("CARGO_BIN_EXE_drpc-interop-server").to_string()],
        };
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the interop server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let addr = line.trim().strip_prefix("listening ").expect("listening line").to_string();
        ServerProcess { child, addr }
    }

    fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kb << 10
    }

    /// Stops it with SIGTERM; it must exit within 6 s.
    fn stop(mut self) {
        let started = std::time::Instant::now();
        sigterm(self.child.id());
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success() || status.code().is_none(), "server exited with {status}");
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(6), "server still running 6 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        // A failed test must not leave the server running (it holds the test's stderr).
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sigterm(pid: u32) {
    Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
}

fn frame(sid: u64, mid: u64, kind: Kind, done: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    put_frame(&mut out, &FrameHeader { stream_id: sid, message_id: mid, kind, control: false, done }, payload);
    out
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn field(number: u64, data: &[u8], out: &mut Vec<u8>) {
    varint(number << 3 | 2, out);
    varint(data.len() as u64, out);
    out.extend_from_slice(data);
}

/// SimpleRequest { sleep_ms }
fn sleeping_request(ms: u64) -> Vec<u8> {
    let mut out = vec![0x20];
    varint(ms, &mut out);
    out
}

/// StreamingOutputCallRequest { response_parameters: [{ size }], payload: { body } }
fn output_request(size: u64, body: usize) -> Vec<u8> {
    let mut params = vec![0x08];
    varint(size, &mut params);
    let mut payload = Vec::new();
    field(1, &vec![0u8; body], &mut payload);
    let mut out = Vec::new();
    field(1, &params, &mut out);
    field(2, &payload, &mut out);
    out
}

/// A healthy client on a fresh connection makes a unary call.
async fn well_behaved_call(addr: &str) {
    let call = async {
        let conn = Conn::connect(addr, ConnOptions::default()).await?;
        conn.unary("/drpc.interop.TestService/EmptyCall", b"", &CallOptions::new()).await
    };
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("a well-behaved client failed: {e}"),
        Err(_) => panic!("a well-behaved client was not answered within 10 s"),
    }
}

/// Writes `bytes` unless the server stops reading for a second; returns false then.
async fn push(tcp: &mut TcpStream, bytes: &[u8]) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(1), tcp.write_all(bytes)).await, Ok(Ok(())))
}

/// One attack from one connection: keeps sending until the server stops
/// reading it (or the attack is spent), then holds the connection open.
async fn attack(addr: String, class: &'static str) -> Option<TcpStream> {
    let mut tcp = TcpStream::connect(&addr).await.ok()?;
    let chunk = vec![0x5au8; 60 << 10];
    match class {
        "unknown rpc names, errors never read" => {
            let name = format!("/x.Y/{}", "n".repeat(60 << 10));
            for i in 0..1000u64 {
                if !push(&mut tcp, &frame(1 + 2 * i, 1, Kind::INVOKE, true, name.as_bytes())).await {
                    break;
                }
            }
        }
        "invoke metadata without invoke" => {
            let mut md = Vec::new();
            let mut entry = Vec::new();
            field(1, b"key", &mut entry);
            field(2, &vec![b'v'; 60 << 10], &mut entry);
            field(1, &entry, &mut md);
            for i in 0..1000u64 {
                if !push(&mut tcp, &frame(1 + 2 * i, 1, Kind::INVOKE_METADATA, true, &md)).await {
                    break;
                }
            }
        }
        "bidi handler blocked on send, requests unread" => {
            tcp.write_all(&frame(1, 1, Kind::INVOKE, true, b"/drpc.interop.TestService/FullDuplexCall")).await.ok()?;
            let request = output_request(4 << 20, 60 << 10);
            for mid in 2..2000u64 {
                if !push(&mut tcp, &frame(1, mid, Kind::MESSAGE, true, &request)).await {
                    break;
                }
            }
        }
        "sleeping unary handler, messages keep coming" => {
            let mut open = frame(1, 1, Kind::INVOKE, true, b"/drpc.interop.TestService/UnaryCall");
            open.extend(frame(1, 2, Kind::MESSAGE, true, &sleeping_request(120_000)));
            tcp.write_all(&open).await.ok()?;
            for mid in 3..2000u64 {
                if !push(&mut tcp, &frame(1, mid, Kind::MESSAGE, true, &chunk)).await {
                    break;
                }
            }
        }
        "frames sent halfway" => {
            // A stream whose 4 MiB message frame stops halfway.
            let mut header = Vec::new();
            put_frame(&mut header, &FrameHeader { stream_id: 1, message_id: 1, kind: Kind::INVOKE, control: false, done: true }, b"/drpc.interop.TestService/StreamingInputCall");
            tcp.write_all(&header).await.ok()?;
            let mut whole = frame(1, 2, Kind::MESSAGE, true, &vec![1u8; 4 << 20]);
            whole.truncate(whole.len() - (2 << 20));
            let _ = push(&mut tcp, &whole).await;
        }
        "stream floods" => {
            let mut batch = Vec::new();
            for i in 0..20_000u64 {
                let sid = 1 + 2 * i;
                batch.extend(frame(sid, 1, Kind::INVOKE, true, b"/drpc.interop.TestService/UnaryCall"));
                batch.extend(frame(sid, 2, Kind::MESSAGE, true, &sleeping_request(120_000)));
                batch.extend(frame(sid, 3, Kind::CLOSE_SEND, true, b""));
                if batch.len() > 256 << 10 {
                    if !push(&mut tcp, &batch).await {
                        break;
                    }
                    batch.clear();
                }
            }
        }
        "silent connections" => {}
        other => panic!("unknown attack {other}"),
    }
    Some(tcp)
}

async fn run_attack(class: &'static str, connections: usize) {
    let server = ServerProcess::start();
    let addr = server.addr.clone();
    well_behaved_call(&addr).await;
    let base = server.rss();
    let attacks: Vec<_> = (0..connections).map(|_| tokio::spawn(attack(addr.clone(), class))).collect();
    // Serve a newcomer while the attack is under way.
    well_behaved_call(&addr).await;
    let mut held = Vec::new();
    let mut peak = server.rss();
    for a in attacks {
        held.push(a.await.unwrap());
        peak = peak.max(server.rss());
    }
    // Let the server settle with every attacker still connected.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        peak = peak.max(server.rss());
    }
    well_behaved_call(&addr).await;
    let mb = |b: u64| b >> 20;
    eprintln!("{class} x{connections}: RSS {} MiB before, peak {} MiB", mb(base), mb(peak));
    assert!(peak < RSS_LIMIT, "{class}: RSS reached {} MiB (limit {} MiB)", mb(peak), mb(RSS_LIMIT));
    drop(held);
    well_behaved_call(&addr).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(debug_assertions, ignore = "an optimized server is what users run: `make test-interop` runs this in release")]
async fn the_interop_server_stays_within_its_budget_under_every_attack() {
    for class in [
        "unknown rpc names, errors never read",
        "invoke metadata without invoke",
        "bidi handler blocked on send, requests unread",
        "sleeping unary handler, messages keep coming",
        "frames sent halfway",
        "stream floods",
    ] {
        run_attack(class, CONNECTIONS).await;
    }
    run_attack("silent connections", 2000).await;
}
