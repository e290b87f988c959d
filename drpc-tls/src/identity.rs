//! The peer identity a TLS handshake established, for handlers.

use drpc_core::TlsPeer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// What `conn` (a finished handshake, either side) says about its peer:
/// the verified chain, the leaf's subject and SANs, version, ALPN and SNI.
pub fn tls_peer(conn: &rustls::CommonState, server_name: Option<&str>) -> TlsPeer {
    let certificates: Vec<Vec<u8>> =
        conn.peer_certificates().unwrap_or_default().iter().map(|c| c.as_ref().to_vec()).collect();
    let mut peer = TlsPeer {
        version: match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
            Some(other) => format!("{other:?}"),
            None => String::new(),
        },
        alpn: conn.alpn_protocol().map(|p| String::from_utf8_lossy(p).into_owned()),
        server_name: server_name.map(str::to_string),
        ..TlsPeer::default()
    };
    if let Some(leaf) = certificates.first() {
        describe_leaf(leaf, &mut peer);
    }
    peer.certificates = certificates;
    peer
}

fn describe_leaf(der: &[u8], peer: &mut TlsPeer) {
    // rustls verified the chain already; a leaf x509-parser cannot read just
    // leaves the names empty.
    let Ok((_, cert)) = X509Certificate::from_der(der) else { return };
    peer.subject = Some(cert.subject().to_string());
    let Ok(Some(san)) = cert.subject_alternative_name() else { return };
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => peer.dns_names.push(d.to_string()),
            GeneralName::URI(u) => peer.uris.push(u.to_string()),
            GeneralName::RFC822Name(e) => peer.emails.push(e.to_string()),
            GeneralName::IPAddress(ip) => {
                if let Ok(v4) = <[u8; 4]>::try_from(*ip) {
                    peer.ip_addresses.push(std::net::Ipv4Addr::from(v4).to_string());
                } else if let Ok(v6) = <[u8; 16]>::try_from(*ip) {
                    peer.ip_addresses.push(std::net::Ipv6Addr::from(v6).to_string());
                }
            }
            _ => {}
        }
    }
}
