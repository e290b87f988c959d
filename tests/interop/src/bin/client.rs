//! drpc-interop-client: runs the cases of shared/interop/CASES.md against a server.
//! Usage: drpc-interop-client --addr HOST:PORT --case NAME|all [--case NAME ...]
//!        [--mode mux|sequential] [--flow-control] [--compression snappy|minlz-fastest]
//!        [--tls-ca FILE [--tls-server-name NAME] [--tls-cert FILE --tls-key FILE]] [--drpcmigrate]
//! --drpcmigrate sends storj.io/drpc drpcmigrate's `DRPC!!!1` header first.

use drpc_core::{Compression, Conn, ConnOptions};
use drpc_interop::cases::{self, Client};
use drpc_interop::parse_args;

#[tokio::main]
async fn main() {
    let mut addr = None;
    let mut names: Vec<String> = Vec::new();
    let mut mux = true;
    let mut flow_control = false;
    let mut compression = None;
    let (mut tls_ca, mut tls_server_name, mut tls_cert, mut tls_key) = (None, None, None, None);
    let mut header = false;
    for (flag, value) in parse_args(std::env::args().skip(1)).unwrap_or_else(|e| usage(&e)) {
        match (flag.as_str(), value) {
            ("addr", Some(v)) => addr = Some(v),
            ("case", Some(v)) => names.push(v),
            ("mode", Some(v)) if v == "mux" => mux = true,
            ("mode", Some(v)) if v == "sequential" => mux = false,
            ("flow-control", None) => flow_control = true,
            ("compression", Some(v)) => match Compression::from_name(&v) {
                Some(c) => compression = Some(c),
                None => usage(&format!("unknown compression {v:?} (snappy, minlz-fastest)")),
            },
            ("drpcmigrate", None) => header = true,
            ("tls-ca", Some(v)) => tls_ca = Some(v),
            ("tls-server-name", Some(v)) => tls_server_name = Some(v),
            ("tls-cert", Some(v)) => tls_cert = Some(v),
            ("tls-key", Some(v)) => tls_key = Some(v),
            (f, _) => usage(&format!("unknown or malformed flag --{f}")),
        }
    }
    let addr = addr.unwrap_or_else(|| usage("--addr is required"));
    if names.is_empty() {
        usage("at least one --case is required");
    }
    let mut run: Vec<String> = Vec::new();
    for name in names {
        if name == "all" {
            run.extend(cases::all_cases(mux, flow_control).iter().map(|s| s.to_string()));
        } else if cases::is_known(&name) {
            run.push(name);
        } else {
            usage(&format!("unknown case {name}"));
        }
    }
    let mut opts = ConnOptions { sequential: !mux, ..ConnOptions::default() };
    if flow_control {
        opts = opts.with_flow_control();
    }
    let connected = match tls_ca {
        Some(ca) => {
            let connector = tls_connector(&ca, tls_server_name, tls_cert, tls_key).drpcmigrate_header(header);
            connector.connect(&addr, opts).await
        }
        None if header => drpc_tls::Connector::plaintext().drpcmigrate_header(true).connect(&addr, opts).await,
        None if tls_server_name.is_none() && tls_cert.is_none() && tls_key.is_none() => Conn::connect(&addr, opts).await,
        None => usage("the --tls-* flags need --tls-ca"),
    };
    let conn = match connected {
        Ok(conn) => conn,
        Err(e) => {
            eprintln!("drpc-interop-client: {e}");
            std::process::exit(1);
        }
    };
    let mut client = Client::new(conn);
    if let Some(c) = compression {
        client.base = client.base.compression(c);
    }
    let mut failed = 0;
    for name in &run {
        match client.run(name).await {
            Ok(()) => println!("PASS {name}"),
            Err(reason) => {
                failed += 1;
                println!("FAIL {name}: {}", reason.replace('\n', "\\n"));
            }
        }
    }
    client.conn.close().await;
    std::process::exit(if failed == 0 { 0 } else { 1 });
}

fn tls_connector(ca: &str, name: Option<String>, cert: Option<String>, key: Option<String>) -> drpc_tls::Connector {
    let built = drpc_tls::ClientTlsConfig::ca_file(ca)
        .map(|c| match name {
            Some(name) => c.server_name(name),
            None => c,
        })
        .and_then(|c| match (cert, key) {
            (Some(cert), Some(key)) => c.identity_files(cert, key),
            (None, None) => Ok(c),
            _ => usage("--tls-cert and --tls-key go together"),
        })
        .and_then(|c| drpc_tls::Connector::tls(&c));
    built.unwrap_or_else(|e| {
        eprintln!("drpc-interop-client: TLS: {e}");
        std::process::exit(1);
    })
}

fn usage(err: &str) -> ! {
    eprintln!(
        "drpc-interop-client: {err}\nusage: drpc-interop-client --addr HOST:PORT --case NAME|all [--mode mux|sequential] [--flow-control] [--compression snappy|minlz-fastest] [--tls-ca FILE [--tls-server-name NAME] [--tls-cert FILE --tls-key FILE]] [--drpcmigrate]"
    );
    std::process::exit(2);
}
