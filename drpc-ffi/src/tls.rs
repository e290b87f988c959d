//! TLS for C: server and client TLS configurations (opaque handles), TLS
//! listening with certificate reload, TLS dialing, and the peer identity of
//! server calls and streams.

use crate::client::{drpc_conn, drpc_conn_options, ConnObj, ConnOptionsObj};
use crate::server::{drpc_server, drpc_server_call, ServerCallObj, ServerObj};
use crate::stream::{drpc_stream, StreamObj};
use crate::*;
use drpc_core::{ConnOptions, Peer};
use drpc_tls::{ClientAuth, ClientTlsConfig, Connector, ServerTlsConfig, TlsAcceptor};
use std::sync::{Mutex, OnceLock};

fn tls_fail(e: drpc_tls::TlsError) -> Fail {
    Fail::code(Code::InvalidArgument, format!("TLS: {e}"))
}

/// A server's TLS certificate, key and client verification. Released with
/// `drpc_tls_server_config_free`; only read by the calls that take it.
pub struct drpc_tls_server_config {
    _opaque: [u8; 0],
}

pub(crate) struct ServerConfigObj {
    config: Mutex<ServerTlsConfig>,
}

impl HandleType for ServerConfigObj {
    type C = drpc_tls_server_config;
    const NAME: &'static str = "drpc_tls_server_config";
}

/// A client's trusted CA, server name and (for mutual TLS) certificate.
/// Released with `drpc_tls_client_config_free`.
pub struct drpc_tls_client_config {
    _opaque: [u8; 0],
}

pub(crate) struct ClientConfigObj {
    config: Mutex<ClientTlsConfig>,
}

impl HandleType for ClientConfigObj {
    type C = drpc_tls_client_config;
    const NAME: &'static str = "drpc_tls_client_config";
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A server TLS configuration from a PEM certificate chain (leaf first) and
/// its PEM private key, given as NUL-terminated text or, if `from_files`,
/// as paths of PEM files. Checks the key matches the certificate. On
/// success `*config_out` is a new handle; on failure NULL and
/// `DRPC_INVALID_ARGUMENT` naming the problem. Never blocks (but reads files).
#[no_mangle]
pub unsafe extern "C" fn drpc_tls_server_config_new(
    cert: *const c_char,
    key: *const c_char,
    from_files: bool,
    config_out: *mut *mut drpc_tls_server_config,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(config_out, "config_out")?;
        // SAFETY: valid out pointer.
        unsafe { *config_out = std::ptr::null_mut() };
        // SAFETY: NUL-terminated strings per the contract.
        let (cert, key) = unsafe { (arg_str(cert, "cert")?, arg_str(key, "key")?) };
        let config = if from_files {
            ServerTlsConfig::from_pem_files(cert, key).map_err(tls_fail)?
        } else {
            ServerTlsConfig::from_pem(cert, key)
        };
        config.build().map_err(tls_fail)?;
        // SAFETY: valid out pointer.
        unsafe { *config_out = new_handle(Arc::new(ServerConfigObj { config: Mutex::new(config) })) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// Mutual TLS: verifies client certificates against the CA certificates in
/// `ca` (PEM text, or a PEM file's path if `from_file`); clients must
/// present one if `required`, else they may (calls then show whether they
/// did). Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_tls_server_config_set_client_ca(
    config: *const drpc_tls_server_config,
    ca: *const c_char,
    from_file: bool,
    required: bool,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let obj = get::<ServerConfigObj>(config, "config")?;
        // SAFETY: per the contract.
        let ca = unsafe { arg_str(ca, "ca")? };
        let mut current = locked(&obj.config);
        let auth = if required { ClientAuth::Required } else { ClientAuth::Optional };
        let next = if from_file {
            current.clone().client_ca_file(ca).map_err(tls_fail)?
        } else {
            current.clone().client_ca_pem(ca)
        }
        .client_auth(auth);
        next.build().map_err(tls_fail)?;
        *current = next;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases a server TLS configuration (servers using it keep their copy).
/// NULL is fine.
#[no_mangle]
pub extern "C" fn drpc_tls_server_config_free(config: *mut drpc_tls_server_config) {
    guard((), || drop(take::<ServerConfigObj>(config)))
}

/// A client TLS configuration trusting the CA certificates in `ca` (PEM
/// text, or a PEM file's path if `from_file`), or the system's roots if
/// `ca` is NULL. On failure `*config_out` is NULL. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_tls_client_config_new(
    ca: *const c_char,
    from_file: bool,
    config_out: *mut *mut drpc_tls_client_config,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(config_out, "config_out")?;
        // SAFETY: valid out pointer.
        unsafe { *config_out = std::ptr::null_mut() };
        let config = if ca.is_null() {
            ClientTlsConfig::system_roots()
        } else {
            // SAFETY: per the contract.
            let ca = unsafe { arg_str(ca, "ca")? };
            if from_file {
                ClientTlsConfig::ca_file(ca).map_err(tls_fail)?
            } else {
                ClientTlsConfig::ca_pem(ca)
            }
        };
        config.build().map_err(tls_fail)?;
        // SAFETY: valid out pointer.
        unsafe { *config_out = new_handle(Arc::new(ClientConfigObj { config: Mutex::new(config) })) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// The name the server's certificate must carry (and SNI), instead of the
/// host of the dialed address. Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_tls_client_config_set_server_name(
    config: *const drpc_tls_client_config,
    name: *const c_char,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let obj = get::<ClientConfigObj>(config, "config")?;
        // SAFETY: per the contract.
        let name = unsafe { arg_str(name, "name")? };
        let mut current = locked(&obj.config);
        *current = current.clone().server_name(name);
        Ok(drpc_status::DRPC_OK)
    })
}

/// Mutual TLS: the client certificate chain and key to present (PEM text,
/// or PEM files' paths if `from_files`). Never blocks.
#[no_mangle]
pub unsafe extern "C" fn drpc_tls_client_config_set_identity(
    config: *const drpc_tls_client_config,
    cert: *const c_char,
    key: *const c_char,
    from_files: bool,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let obj = get::<ClientConfigObj>(config, "config")?;
        // SAFETY: per the contract.
        let (cert, key) = unsafe { (arg_str(cert, "cert")?, arg_str(key, "key")?) };
        let mut current = locked(&obj.config);
        let next = if from_files {
            current.clone().identity_files(cert, key).map_err(tls_fail)?
        } else {
            current.clone().identity_pem(cert, key)
        };
        next.build().map_err(tls_fail)?;
        *current = next;
        Ok(drpc_status::DRPC_OK)
    })
}

/// Releases a client TLS configuration (connections made keep theirs).
/// NULL is fine.
#[no_mangle]
pub extern "C" fn drpc_tls_client_config_free(config: *mut drpc_tls_client_config) {
    guard((), || drop(take::<ClientConfigObj>(config)))
}

/// `drpc_conn_dial` over TLS with `tls`. A handshake failure (untrusted
/// certificate, name mismatch, plaintext server, ...) is `DRPC_UNAVAILABLE`
/// with the TLS reason in the message. Blocks until connected.
#[no_mangle]
pub unsafe extern "C" fn drpc_conn_dial_tls(
    addr: *const c_char,
    tls: *const drpc_tls_client_config,
    opts: *const drpc_conn_options,
    conn_out: *mut *mut drpc_conn,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        arg_out(conn_out, "conn_out")?;
        // SAFETY: valid out pointer.
        unsafe { *conn_out = std::ptr::null_mut() };
        // SAFETY: NUL-terminated string.
        let addr = unsafe { arg_str(addr, "addr")? };
        let config = locked(&get::<ClientConfigObj>(tls, "tls")?.config).clone();
        let (opts, interceptors) = if opts.is_null() {
            (ConnOptions::default(), Vec::new().into())
        } else {
            let o = get::<ConnOptionsObj>(opts, "opts")?;
            (crate::client::options_of(&o), crate::client::interceptors_of(&o))
        };
        check_may_block()?;
        let connector = Connector::tls(&config).map_err(tls_fail)?;
        let conn = block_on(connector.connect(addr, opts))??;
        // SAFETY: valid out pointer.
        unsafe { *conn_out = new_handle(Arc::new(ConnObj::new(conn, interceptors, addr))) };
        Ok(drpc_status::DRPC_OK)
    })
}

/// `drpc_server_listen` with TLS: every connection accepted on `addr` runs
/// the TLS handshake (on its own task, within the server's handshake
/// timeout) with the configuration in force at that moment; see
/// `drpc_server_reload_tls`. Blocks briefly (bind only).
#[no_mangle]
pub unsafe extern "C" fn drpc_server_listen_tls(
    server: *const drpc_server,
    addr: *const c_char,
    tls: *const drpc_tls_server_config,
    bound_out: *mut *mut c_char,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        if !bound_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *bound_out = std::ptr::null_mut() };
        }
        let s = get::<ServerObj>(server, "server")?;
        // SAFETY: per the contract.
        let addr = unsafe { arg_str(addr, "addr")? };
        let config = locked(&get::<ServerConfigObj>(tls, "tls")?.config).clone();
        check_may_block()?;
        let acceptor = TlsAcceptor::new(&config).map_err(tls_fail)?;
        let srv = s.started()?;
        s.add_tls_acceptor(acceptor.clone());
        let bound = block_on(drpc_tls::listen_tls(&srv, addr, acceptor))?
            .map_err(|e| Fail::code(Code::Unavailable, format!("listening on {addr}: {e}")))?;
        if !bound_out.is_null() {
            // SAFETY: valid out pointer.
            unsafe { *bound_out = cstring_lossy(&bound).into_raw() };
        }
        Ok(drpc_status::DRPC_OK)
    })
}

/// Takes a new certificate, key or client CA on every TLS address of the
/// server, for the connections accepted from now on (established ones keep
/// theirs). On error nothing changes. Never blocks (but reads no files:
/// the configuration has them already).
#[no_mangle]
pub extern "C" fn drpc_server_reload_tls(
    server: *const drpc_server,
    tls: *const drpc_tls_server_config,
    err_out: *mut *mut drpc_error,
) -> drpc_status {
    ffi(err_out, || {
        let s = get::<ServerObj>(server, "server")?;
        let config = locked(&get::<ServerConfigObj>(tls, "tls")?.config).clone();
        let acceptors = s.tls_acceptors();
        if acceptors.is_empty() {
            return Err(Fail::code(Code::FailedPrecondition, "the server has no TLS address"));
        }
        // Build once so a bad configuration changes no address.
        let built = config.build().map_err(tls_fail)?;
        for acceptor in acceptors {
            acceptor.replace(built.clone());
        }
        Ok(drpc_status::DRPC_OK)
    })
}

/// What `drpc_server_call_peer` and `drpc_stream_peer` return.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum drpc_peer_field {
    /// `ip:port` (TCP) or `unix:...`; one value.
    DRPC_PEER_ADDR = 0,
    /// The verified client certificate's subject, e.g. `CN=alice, O=Example`;
    /// none without TLS or without a client certificate.
    DRPC_PEER_SUBJECT = 1,
    /// DNS-name SANs of the client certificate.
    DRPC_PEER_DNS_NAME = 2,
    /// IP-address SANs, as text.
    DRPC_PEER_IP_ADDRESS = 3,
    /// URI SANs (SPIFFE ids, ...).
    DRPC_PEER_URI = 4,
    /// E-mail SANs.
    DRPC_PEER_EMAIL = 5,
    /// `TLSv1.3` or `TLSv1.2`; none without TLS.
    DRPC_PEER_TLS_VERSION = 6,
    /// The negotiated ALPN protocol (`drpc`), if any.
    DRPC_PEER_ALPN = 7,
    /// The server name the client asked for (SNI), if any.
    DRPC_PEER_SERVER_NAME = 8,
}

/// A peer as C sees it: NUL-terminated copies, built on first use.
pub(crate) struct PeerView {
    fields: Vec<Vec<CString>>,
    certificates: Vec<Vec<u8>>,
}

impl PeerView {
    fn new(peer: Option<&Peer>) -> PeerView {
        let mut fields: Vec<Vec<CString>> = vec![Vec::new(); 9];
        let mut certificates = Vec::new();
        if let Some(peer) = peer {
            let one = |s: &Option<String>| s.iter().map(|v| cstring_lossy(v)).collect::<Vec<_>>();
            let all = |v: &[String]| v.iter().map(|s| cstring_lossy(s)).collect::<Vec<_>>();
            fields[0] = one(&peer.addr);
            if let Some(tls) = &peer.tls {
                fields[1] = one(&tls.subject);
                fields[2] = all(&tls.dns_names);
                fields[3] = all(&tls.ip_addresses);
                fields[4] = all(&tls.uris);
                fields[5] = all(&tls.emails);
                fields[6] = vec![cstring_lossy(&tls.version)];
                fields[7] = one(&tls.alpn);
                fields[8] = one(&tls.server_name);
                certificates = tls.certificates.clone();
            }
        }
        PeerView { fields, certificates }
    }
}

/// Lazily built peer view of a call or stream.
#[derive(Default)]
pub(crate) struct PeerSlot(OnceLock<PeerView>);

impl PeerSlot {
    pub(crate) fn view(&self, peer: Option<&Peer>) -> &PeerView {
        self.0.get_or_init(|| PeerView::new(peer))
    }
}

fn peer_value(view: &PeerView, field: drpc_peer_field, index: usize) -> *const c_char {
    view.fields[field as usize].get(index).map_or(std::ptr::null(), |s| s.as_ptr())
}

fn peer_cert(view: &PeerView, index: usize, len_out: *mut usize) -> *const u8 {
    let cert = view.certificates.get(index);
    if !len_out.is_null() {
        // SAFETY: the caller passes NULL or a valid pointer.
        unsafe { *len_out = cert.map_or(0, Vec::len) };
    }
    cert.map_or(std::ptr::null(), |c| c.as_ptr())
}

/// Value `index` of `field` of the peer of a server call, NUL-terminated and
/// owned by the call (valid while the call handle is); NULL when there is
/// no such value (plaintext connection, no client certificate, index past
/// the end) or `call` is invalid. Count them with `drpc_server_call_peer_count`.
/// Authorization belongs here: a mutual-TLS client's subject and SANs are
/// verified against the server's client CA. Never blocks; thread-safe.
#[no_mangle]
pub extern "C" fn drpc_server_call_peer(
    call: *const drpc_server_call,
    field: drpc_peer_field,
    index: usize,
) -> *const c_char {
    guard(std::ptr::null(), || {
        try_get::<ServerCallObj>(call).map_or(std::ptr::null(), |c| peer_value(c.peer_view(), field, index))
    })
}

/// How many values `field` of the call's peer has (0 if `call` is invalid).
#[no_mangle]
pub extern "C" fn drpc_server_call_peer_count(call: *const drpc_server_call, field: drpc_peer_field) -> usize {
    guard(0, || try_get::<ServerCallObj>(call).map_or(0, |c| c.peer_view().fields[field as usize].len()))
}

/// Certificate `index` (0 is the leaf) of the verified chain the call's
/// peer presented, in DER, owned by the call; `*len_out` is its length (0
/// and NULL returned past the end or without TLS). `len_out` may be NULL.
#[no_mangle]
pub extern "C" fn drpc_server_call_peer_certificate(
    call: *const drpc_server_call,
    index: usize,
    len_out: *mut usize,
) -> *const u8 {
    guard(std::ptr::null(), || {
        let view = try_get::<ServerCallObj>(call);
        match &view {
            Some(c) => peer_cert(c.peer_view(), index, len_out),
            None => peer_cert(&PeerView::new(None), index, len_out),
        }
    })
}

/// `drpc_server_call_peer` for a server stream (NULL for client streams).
#[no_mangle]
pub extern "C" fn drpc_stream_peer(stream: *const drpc_stream, field: drpc_peer_field, index: usize) -> *const c_char {
    guard(std::ptr::null(), || {
        try_get::<StreamObj>(stream).map_or(std::ptr::null(), |s| peer_value(s.peer_view(), field, index))
    })
}

/// `drpc_server_call_peer_count` for a server stream.
#[no_mangle]
pub extern "C" fn drpc_stream_peer_count(stream: *const drpc_stream, field: drpc_peer_field) -> usize {
    guard(0, || try_get::<StreamObj>(stream).map_or(0, |s| s.peer_view().fields[field as usize].len()))
}

/// `drpc_server_call_peer_certificate` for a server stream.
#[no_mangle]
pub extern "C" fn drpc_stream_peer_certificate(
    stream: *const drpc_stream,
    index: usize,
    len_out: *mut usize,
) -> *const u8 {
    guard(std::ptr::null(), || {
        let view = try_get::<StreamObj>(stream);
        match &view {
            Some(s) => peer_cert(s.peer_view(), index, len_out),
            None => peer_cert(&PeerView::new(None), index, len_out),
        }
    })
}
