//! Who is at the other end of a server connection: its address and, over
//! TLS, its verified certificate chain. Set when the connection is accepted
//! and given to every call on it, so authorization can be written in a
//! handler.

use crate::stream::CallContext;

/// The other end of a server connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    /// `ip:port` for TCP, `unix:` (and the peer's path, if bound) for a Unix
    /// socket; `None` for a transport that has no address.
    pub addr: Option<String>,
    /// Set when the connection is TLS.
    pub tls: Option<TlsPeer>,
}

/// What a TLS handshake established about the peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsPeer {
    /// The verified certificate chain the peer presented, leaf first, in DER;
    /// empty when the peer sent no certificate (client certificates optional).
    pub certificates: Vec<Vec<u8>>,
    /// The leaf certificate's subject, its attributes in the certificate's
    /// order (`CN=alice, O=Example`).
    pub subject: Option<String>,
    /// The leaf certificate's DNS-name SANs.
    pub dns_names: Vec<String>,
    /// The leaf certificate's IP-address SANs, as text.
    pub ip_addresses: Vec<String>,
    /// The leaf certificate's URI SANs (SPIFFE ids and the like).
    pub uris: Vec<String>,
    /// The leaf certificate's e-mail SANs.
    pub emails: Vec<String>,
    /// The negotiated TLS version (`TLSv1.3` or `TLSv1.2`).
    pub version: String,
    /// The negotiated ALPN protocol, if any.
    pub alpn: Option<String>,
    /// The server name the client asked for (SNI), if any.
    pub server_name: Option<String>,
}

impl TlsPeer {
    /// Whether the peer presented a certificate (always verified when present).
    pub fn is_authenticated(&self) -> bool {
        !self.certificates.is_empty()
    }
}

impl CallContext {
    /// The peer of a call a server received; `None` on the client side.
    pub fn peer(&self) -> Option<&Peer> {
        self.peer.as_deref()
    }
}
