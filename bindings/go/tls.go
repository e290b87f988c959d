package drpc

/*
#include <stdlib.h>
#include "drpc.h"
*/
import "C"

import (
	"context"
	"crypto/x509"
	"fmt"
	"unsafe"
)

// ServerTLS is a server's certificate, key and (for mutual TLS) client CA,
// each from PEM bytes or a PEM file (bytes win when both are set).
type ServerTLS struct {
	CertPEM, KeyPEM   []byte // certificate chain (leaf first) and its key
	CertFile, KeyFile string
	// ClientCAPEM / ClientCAFile: verify client certificates against this
	// CA; clients must present one unless ClientCertOptional.
	ClientCAPEM        []byte
	ClientCAFile       string
	ClientCertOptional bool
}

// ClientTLS is what a client trusts and, for mutual TLS, presents.
type ClientTLS struct {
	// CAPEM / CAFile: the CA certificates to trust; neither means the
	// system's roots.
	CAPEM  []byte
	CAFile string
	// ServerName overrides the name checked in the server's certificate
	// (and sent as SNI); the default is the host of the dialed address.
	ServerName        string
	CertPEM, KeyPEM   []byte
	CertFile, KeyFile string
}

// pick returns a C string of the PEM bytes if set, else of the file path,
// and whether it is a path.
func pick(pem []byte, file string) (*C.char, bool) {
	if len(pem) > 0 {
		return cString(string(pem)), false
	}
	if file != "" {
		return cString(file), true
	}
	return nil, false
}

func (t ServerTLS) config() (*C.drpc_tls_server_config, error) {
	cert, certIsFile := pick(t.CertPEM, t.CertFile)
	key, keyIsFile := pick(t.KeyPEM, t.KeyFile)
	defer C.free(unsafe.Pointer(cert))
	defer C.free(unsafe.Pointer(key))
	if cert == nil || key == nil {
		return nil, &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: ServerTLS needs a certificate and a key"}
	}
	if certIsFile != keyIsFile {
		return nil, &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: ServerTLS: give certificate and key both as PEM or both as files"}
	}
	var cfg *C.drpc_tls_server_config
	var cerr *C.drpc_error
	if st := C.drpc_tls_server_config_new(cert, key, C.bool(certIsFile), &cfg, &cerr); st != C.DRPC_OK {
		return nil, takeError(st, cerr)
	}
	if ca, isFile := pick(t.ClientCAPEM, t.ClientCAFile); ca != nil {
		defer C.free(unsafe.Pointer(ca))
		if st := C.drpc_tls_server_config_set_client_ca(cfg, ca, C.bool(isFile), C.bool(!t.ClientCertOptional), &cerr); st != C.DRPC_OK {
			C.drpc_tls_server_config_free(cfg)
			return nil, takeError(st, cerr)
		}
	}
	return cfg, nil
}

func (t ClientTLS) config() (*C.drpc_tls_client_config, error) {
	ca, caIsFile := pick(t.CAPEM, t.CAFile)
	defer C.free(unsafe.Pointer(ca))
	var cfg *C.drpc_tls_client_config
	var cerr *C.drpc_error
	if st := C.drpc_tls_client_config_new(ca, C.bool(caIsFile), &cfg, &cerr); st != C.DRPC_OK {
		return nil, takeError(st, cerr)
	}
	fail := func(st C.drpc_status) (*C.drpc_tls_client_config, error) {
		C.drpc_tls_client_config_free(cfg)
		return nil, takeError(st, cerr)
	}
	if t.ServerName != "" {
		name := cString(t.ServerName)
		defer C.free(unsafe.Pointer(name))
		if st := C.drpc_tls_client_config_set_server_name(cfg, name, &cerr); st != C.DRPC_OK {
			return fail(st)
		}
	}
	cert, certIsFile := pick(t.CertPEM, t.CertFile)
	key, keyIsFile := pick(t.KeyPEM, t.KeyFile)
	defer C.free(unsafe.Pointer(cert))
	defer C.free(unsafe.Pointer(key))
	if (cert == nil) != (key == nil) || (cert != nil && certIsFile != keyIsFile) {
		C.drpc_tls_client_config_free(cfg)
		return nil, &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: ClientTLS: certificate and key go together, both PEM or both files"}
	}
	if cert != nil {
		if st := C.drpc_tls_client_config_set_identity(cfg, cert, key, C.bool(certIsFile), &cerr); st != C.DRPC_OK {
			return fail(st)
		}
	}
	return cfg, nil
}

// ListenTLS is Listen with TLS: every connection runs the handshake (on its
// own task, within the server's handshake timeout) with the configuration
// in force when it arrives; see ReloadTLS.
func (srv *Server) ListenTLS(addr string, t ServerTLS) (string, error) {
	srv.freeze()
	cfg, err := t.config()
	if err != nil {
		return "", err
	}
	defer C.drpc_tls_server_config_free(cfg)
	caddr := cString(addr)
	defer C.free(unsafe.Pointer(caddr))
	var bound *C.char
	var cerr *C.drpc_error
	if st := C.drpc_server_listen_tls(srv.s, caddr, cfg, &bound, &cerr); st != C.DRPC_OK {
		return "", takeError(st, cerr)
	}
	defer C.drpc_string_free(bound)
	return C.GoString(bound), nil
}

// ReloadTLS takes a new certificate, key or client CA on every TLS address,
// for connections accepted from now on. On error nothing changes.
func (srv *Server) ReloadTLS(t ServerTLS) error {
	cfg, err := t.config()
	if err != nil {
		return err
	}
	defer C.drpc_tls_server_config_free(cfg)
	var cerr *C.drpc_error
	if st := C.drpc_server_reload_tls(srv.s, cfg, &cerr); st != C.DRPC_OK {
		return takeError(st, cerr)
	}
	return nil
}

// DialTLS is Dial over TLS. A failed handshake is an Unavailable *Error
// whose message carries the TLS reason (unknown issuer, name mismatch, ...).
func DialTLS(ctx context.Context, addr string, t ClientTLS, opts ...DialOption) (*Conn, error) {
	cfg, err := t.config()
	if err != nil {
		return nil, err
	}
	return dial(ctx, addr, opts, func(caddr *C.char, o *C.drpc_conn_options, c **C.drpc_conn, cerr **C.drpc_error) C.drpc_status {
		defer C.drpc_tls_client_config_free(cfg)
		return C.drpc_conn_dial_tls(caddr, cfg, o, c, cerr)
	})
}

// Peer is the other end of a server call.
type Peer struct {
	Addr string   // "ip:port" or "unix:..."
	TLS  *TLSPeer // nil on a plaintext connection
}

// TLSPeer is what the TLS handshake established about the peer.
type TLSPeer struct {
	Version    string // "TLSv1.3" or "TLSv1.2"
	ALPN       string
	ServerName string // SNI the client sent
	// The client certificate's subject ("CN=alice, O=Example") and SANs;
	// empty without a client certificate.
	Subject                             string
	DNSNames, IPAddresses, URIs, Emails []string
	// The verified chain, leaf first (nil without a client certificate).
	Certificates []*x509.Certificate
}

// Peer returns the call's peer: its address and, over TLS, its verified
// identity (for authorization in a handler).
func (s *ServerStream) Peer() (Peer, error) {
	field := func(f C.drpc_peer_field) []string {
		n := int(C.drpc_stream_peer_count(s.s, f))
		out := make([]string, 0, n)
		for i := 0; i < n; i++ {
			out = append(out, C.GoString(C.drpc_stream_peer(s.s, f, C.size_t(i))))
		}
		return out
	}
	first := func(f C.drpc_peer_field) string {
		if v := C.drpc_stream_peer(s.s, f, 0); v != nil {
			return C.GoString(v)
		}
		return ""
	}
	p := Peer{Addr: first(C.DRPC_PEER_ADDR)}
	if C.drpc_stream_peer_count(s.s, C.DRPC_PEER_TLS_VERSION) == 0 {
		return p, nil
	}
	t := &TLSPeer{
		Version: first(C.DRPC_PEER_TLS_VERSION), ALPN: first(C.DRPC_PEER_ALPN),
		ServerName: first(C.DRPC_PEER_SERVER_NAME), Subject: first(C.DRPC_PEER_SUBJECT),
		DNSNames: field(C.DRPC_PEER_DNS_NAME), IPAddresses: field(C.DRPC_PEER_IP_ADDRESS),
		URIs: field(C.DRPC_PEER_URI), Emails: field(C.DRPC_PEER_EMAIL),
	}
	for i := 0; ; i++ {
		var n C.size_t
		der := C.drpc_stream_peer_certificate(s.s, C.size_t(i), &n)
		if der == nil {
			break
		}
		cert, err := x509.ParseCertificate(C.GoBytes(unsafe.Pointer(der), C.int(n)))
		if err != nil {
			return p, fmt.Errorf("drpc: peer certificate %d: %w", i, err)
		}
		t.Certificates = append(t.Certificates, cert)
	}
	p.TLS = t
	return p, nil
}
