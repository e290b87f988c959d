//! Writes a throwaway test CA and certificates into a directory, for the
//! cross-language TLS tests (matrix, C, Go, Python):
//!   ca.pem                      the CA
//!   server.pem, server-key.pem  CN=drpc-server, SANs localhost, 127.0.0.1, ::1
//!   client.pem, client-key.pem  CN=drpc-client (for mutual TLS)
//!   other-ca.pem                an unrelated CA (wrong-CA tests)
//!   expired.pem, expired-key.pem  a server certificate that expired in 2001
//! Usage: cargo run -p drpc-tls --example gen-test-certs -- DIR

#[path = "../testcerts.rs"]
mod testcerts;

#[allow(unused_imports)]
use testcerts::{TestCa, Validity};

fn main() {
    let dir = std::env::args().nth(1).expect("usage: gen-test-certs DIR");
    std::fs::create_dir_all(&dir).expect("create the directory");
    let write = |name: &str, data: &str| std::fs::write(format!("{dir}/{name}"), data).expect("write");
    let ca = TestCa::new("drpc test CA");
    let server = ca.issue("drpc-server", &["localhost"], Validity::Now);
    let client = ca.issue("drpc-client", &["client.drpc.test"], Validity::Now);
    let expired = ca.issue("drpc-server", &["localhost"], Validity::Expired);
    write("ca.pem", &ca.pem());
    write("server.pem", &server.cert_pem);
    write("server-key.pem", &server.key_pem);
    write("client.pem", &client.cert_pem);
    write("client-key.pem", &client.key_pem);
    write("expired.pem", &expired.cert_pem);
    write("expired-key.pem", &expired.key_pem);
    write("other-ca.pem", &TestCa::new("unrelated CA").pem());
}
