//! Certificates, keys and roots from PEM (files or memory), turned into
//! rustls configurations restricted to TLS 1.2/1.3 with ring's suites
//! (AEAD only: AES-GCM and ChaCha20-Poly1305, ECDHE key exchange).

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// The ALPN protocol our clients offer and our servers accept.
pub const ALPN_DRPC: &[u8] = b"drpc";

/// A TLS configuration error: unreadable files, bad PEM, a key that does not
/// match its certificate, an empty CA, ...
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(pub String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

impl From<TlsError> for std::io::Error {
    fn from(e: TlsError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, e.0)
    }
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("reading {what} {}: {e}", path.display())))
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("{what}: bad PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("{what}: no CERTIFICATE block in the PEM")));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| TlsError(format!("private key: no usable PEM key: {e}")))
}

fn root_store(pem: &[u8], what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in parse_certs(pem, what)? {
        roots.add(cert).map_err(|e| TlsError(format!("{what}: {e}")))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

const VERSIONS: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Whether a server asks clients for a certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// No client certificate is requested.
    None,
    /// A client certificate is requested and verified if sent; clients
    /// without one are served too (`ctx.peer()` shows which).
    Optional,
    /// Clients must present a certificate signed by the client CA.
    Required,
}

/// A server's certificate, key and client verification.
#[derive(Clone)]
pub struct ServerTlsConfig {
    cert_chain_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    client_auth: ClientAuth,
    alpn: Vec<Vec<u8>>,
}

impl ServerTlsConfig {
    /// The certificate chain (leaf first) and its private key (PKCS#8,
    /// PKCS#1 or SEC1), in PEM.
    pub fn from_pem(cert_chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> ServerTlsConfig {
        ServerTlsConfig {
            cert_chain_pem: cert_chain_pem.into(),
            key_pem: key_pem.into(),
            client_ca_pem: None,
            client_auth: ClientAuth::None,
            alpn: vec![ALPN_DRPC.to_vec()],
        }
    }

    /// [`from_pem`](Self::from_pem) from files.
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ServerTlsConfig, TlsError> {
        Ok(ServerTlsConfig::from_pem(
            read_file(cert_chain.as_ref(), "certificate")?,
            read_file(key.as_ref(), "private key")?,
        ))
    }

    /// Verifies client certificates against these CA certificates (PEM) and
    /// requires one (mutual TLS); see [`client_auth`](Self::client_auth).
    pub fn client_ca_pem(mut self, pem: impl Into<Vec<u8>>) -> ServerTlsConfig {
        self.client_ca_pem = Some(pem.into());
        self.client_auth = ClientAuth::Required;
        self
    }

    /// [`client_ca_pem`](Self::client_ca_pem) from a file.
    pub fn client_ca_file(self, path: impl AsRef<Path>) -> Result<ServerTlsConfig, TlsError> {
        let pem = read_file(path.as_ref(), "client CA")?;
        Ok(self.client_ca_pem(pem))
    }

    /// Required (the default once a client CA is set) or optional client
    /// certificates; anything but `None` needs a client CA.
    pub fn client_auth(mut self, auth: ClientAuth) -> ServerTlsConfig {
        self.client_auth = auth;
        self
    }

    /// The ALPN protocols accepted, preferred first (default: `drpc`). A
    /// client offering ALPN but none of these is refused; a client offering
    /// none is served.
    pub fn alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> ServerTlsConfig {
        self.alpn = protocols;
        self
    }

    /// The rustls configuration; checks the key matches the certificate.
    pub fn build(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let chain = parse_certs(&self.cert_chain_pem, "certificate")?;
        let key = parse_key(&self.key_pem)?;
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError(e.to_string()))?;
        let builder = match (self.client_auth, &self.client_ca_pem) {
            (ClientAuth::None, _) => builder.with_no_client_auth(),
            (_, None) => return Err(TlsError("client certificates need a client CA".into())),
            (auth, Some(pem)) => {
                let roots = Arc::new(root_store(pem, "client CA")?);
                let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
                let verifier = if auth == ClientAuth::Optional { verifier.allow_unauthenticated() } else { verifier };
                builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError(format!("client CA: {e}")))?)
            }
        };
        let mut config = builder
            .with_single_cert(chain, key)
            .map_err(|e| TlsError(format!("certificate and key: {e}")))?;
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

/// The certificates a client trusts.
#[derive(Clone, Debug)]
pub enum Roots {
    /// The operating system's trust store.
    System,
    /// These CA certificates (PEM).
    Pem(Vec<u8>),
}

/// A client's trust, server name and (for mutual TLS) identity.
#[derive(Clone)]
pub struct ClientTlsConfig {
    roots: Roots,
    server_name: Option<String>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    alpn: Vec<Vec<u8>>,
}

impl ClientTlsConfig {
    /// Trusts the operating system's roots.
    pub fn system_roots() -> ClientTlsConfig {
        ClientTlsConfig::with_roots(Roots::System)
    }

    /// Trusts only these CA certificates (PEM).
    pub fn ca_pem(pem: impl Into<Vec<u8>>) -> ClientTlsConfig {
        ClientTlsConfig::with_roots(Roots::Pem(pem.into()))
    }

    /// Trusts only the CA certificates in this PEM file.
    pub fn ca_file(path: impl AsRef<Path>) -> Result<ClientTlsConfig, TlsError> {
        Ok(ClientTlsConfig::ca_pem(read_file(path.as_ref(), "CA")?))
    }

    pub fn with_roots(roots: Roots) -> ClientTlsConfig {
        ClientTlsConfig { roots, server_name: None, identity: None, alpn: vec![ALPN_DRPC.to_vec()] }
    }

    /// The name the server's certificate must carry (and SNI), instead of
    /// the host of the dialed address.
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTlsConfig {
        self.server_name = Some(name.into());
        self
    }

    /// Presents this certificate chain and key (PEM) to servers that ask.
    pub fn identity_pem(mut self, cert_chain_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> ClientTlsConfig {
        self.identity = Some((cert_chain_pem.into(), key_pem.into()));
        self
    }

    /// [`identity_pem`](Self::identity_pem) from files.
    pub fn identity_files(self, cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<ClientTlsConfig, TlsError> {
        let cert = read_file(cert_chain.as_ref(), "certificate")?;
        let key = read_file(key.as_ref(), "private key")?;
        Ok(self.identity_pem(cert, key))
    }

    /// The ALPN protocols offered (default: `drpc`; empty offers none).
    pub fn alpn_protocols(mut self, protocols: Vec<Vec<u8>>) -> ClientTlsConfig {
        self.alpn = protocols;
        self
    }

    pub(crate) fn server_name_override(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The rustls configuration.
    pub fn build(&self) -> Result<Arc<rustls::ClientConfig>, TlsError> {
        let roots = match &self.roots {
            Roots::Pem(pem) => root_store(pem, "CA")?,
            Roots::System => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                let (added, _ignored) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    let why = found.errors.first().map(|e| format!(": {e}")).unwrap_or_default();
                    return Err(TlsError(format!("no usable system root certificates{why}")));
                }
                roots
            }
        };
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(roots);
        let mut config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((cert, key)) => builder
                .with_client_auth_cert(parse_certs(cert, "client certificate")?, parse_key(key)?)
                .map_err(|e| TlsError(format!("client certificate and key: {e}")))?,
        };
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}
