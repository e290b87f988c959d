//! edge-server and edge-client as other languages' tests run them: separate
//! processes, the address read from "listening HOST:PORT", SIGTERM to stop.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn edge_client_passes_every_check_against_edge_server() {
    let mut server = Command::new(env!("CARGO_BIN_EXE_edge-server"))
        .args(["--addr", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start edge-server");
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("listening ").unwrap_or_else(|| panic!("server said {line:?}")).to_string();

    let client = Command::new(env!("CARGO_BIN_EXE_edge-client")).args(["--addr", &addr]).output().unwrap();
    let stdout = String::from_utf8_lossy(&client.stdout);
    let passed = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    assert!(client.status.success(), "edge-client failed:\n{stdout}");
    assert_eq!(passed, drpc_build_edge::checks::CHECKS.len(), "{stdout}");

    let unknown = Command::new(env!("CARGO_BIN_EXE_edge-client")).args(["--addr", &addr, "--check", "nope"]).output().unwrap();
    assert_eq!(unknown.status.code(), Some(2), "an unknown check is a usage error");

    let term = Command::new("kill").args(["-TERM", &server.id().to_string()]).status().unwrap();
    assert!(term.success());
    assert!(server.wait().unwrap().success(), "edge-server did not exit cleanly on SIGTERM");
}
