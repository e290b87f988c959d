package drpc_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/drpcstorj"
	"drpc-rs/tests/go/interop"
)

// testPKI is a throwaway CA with a server and a client certificate, made by
// crypto/x509 and written as PEM files into a temporary directory.
type testPKI struct {
	dir    string
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	serial int64
}

func newPKI(t *testing.T, name string) *testPKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{dir: t.TempDir(), ca: ca, key: key, serial: 1}
	p.write(t, "ca.pem", "CERTIFICATE", der)
	return p
}

func (p *testPKI) write(t *testing.T, name, kind string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes NAME.pem and NAME-key.pem: a leaf with CommonName cn, DNS
// SANs dns, IP SAN 127.0.0.1 and URI SAN spiffe://drpc.test/cn.
func (p *testPKI) issue(t *testing.T, name, cn string, dns ...string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.serial++
	uri, _ := url.Parse("spiffe://drpc.test/" + cn)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn, Organization: []string{"drpc-rs go tests"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		DNSNames: dns, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, URIs: []*url.URL{uri},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "PRIVATE KEY", keyDER)
}

func (p *testPKI) caFile() string { return filepath.Join(p.dir, "ca.pem") }

// TestTLSPeerIdentity: a binding server over mutual TLS whose handler
// authorizes by the client certificate; binding clients with and without
// a certificate, with a wrong CA and a wrong name; reload.
func TestTLSPeerIdentity(t *testing.T) {
	checkNoLeaks(t)
	pki := newPKI(t, "go test CA")
	serverCert, serverKey := pki.issue(t, "server", "drpc-server", "localhost")
	clientCert, clientKey := pki.issue(t, "client", "drpc-client", "client.drpc.test")
	srv := drpc.NewServer()
	defer srv.Shutdown(time.Second)
	err := srv.Handle("/t/Whoami", func(s *drpc.ServerStream) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		peer, err := s.Peer()
		if err != nil {
			return err
		}
		if peer.TLS == nil || len(peer.TLS.Certificates) == 0 {
			return &drpc.Error{Code: drpc.Unauthenticated, WireCode: uint64(drpc.Unauthenticated), Message: "no client certificate"}
		}
		leaf := peer.TLS.Certificates[0]
		if leaf.Subject.CommonName != "drpc-client" {
			return &drpc.Error{Code: drpc.PermissionDenied, WireCode: uint64(drpc.PermissionDenied), Message: leaf.Subject.CommonName + " may not"}
		}
		return s.Send([]byte(strings.Join([]string{peer.TLS.Subject, strings.Join(peer.TLS.DNSNames, ","),
			strings.Join(peer.TLS.IPAddresses, ","), strings.Join(peer.TLS.URIs, ","), peer.TLS.Version, peer.TLS.ALPN,
			peer.TLS.ServerName, boolString(strings.HasPrefix(peer.Addr, "127.0.0.1:"))}, "|")))
	})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.ListenTLS("127.0.0.1:0", drpc.ServerTLS{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: pki.caFile()})
	if err != nil {
		t.Fatal(err)
	}
	call := func(cfg drpc.ClientTLS) (string, error) {
		conn, err := drpc.DialTLS(context.Background(), addr, cfg)
		if err != nil {
			return "", err
		}
		defer conn.Close()
		out, err := conn.Invoke(context.Background(), "/t/Whoami", nil, nil)
		return string(out), err
	}
	good := drpc.ClientTLS{CAFile: pki.caFile(), ServerName: "localhost", CertFile: clientCert, KeyFile: clientKey}
	got, err := call(good)
	want := "O=drpc-rs go tests, CN=drpc-client|client.drpc.test|127.0.0.1|spiffe://drpc.test/drpc-client|TLSv1.3|drpc|localhost|true"
	if err != nil || got != want {
		t.Fatalf("whoami: %q, %v; want %q", got, err, want)
	}
	expectUnavailable := func(what string, cfg drpc.ClientTLS, cause string) {
		t.Helper()
		_, err := call(cfg)
		var e *drpc.Error
		if !errors.As(err, &e) || e.Code != drpc.Unavailable || !strings.Contains(e.Message, cause) {
			t.Errorf("%s: got %v, want Unavailable naming %q", what, err, cause)
		}
	}
	expectUnavailable("no client certificate", drpc.ClientTLS{CAFile: pki.caFile(), ServerName: "localhost"}, "CertificateRequired")
	expectUnavailable("name mismatch", drpc.ClientTLS{CAFile: pki.caFile(), ServerName: "example.com", CertFile: clientCert, KeyFile: clientKey}, "not valid for name")
	other := newPKI(t, "other CA")
	expectUnavailable("wrong CA", drpc.ClientTLS{CAFile: other.caFile(), ServerName: "localhost", CertFile: clientCert, KeyFile: clientKey}, "UnknownIssuer")
	// Another client of the same CA is authenticated but not authorized.
	mallory, malloryKey := pki.issue(t, "mallory", "mallory")
	if _, err := call(drpc.ClientTLS{CAFile: pki.caFile(), ServerName: "localhost", CertFile: mallory, KeyFile: malloryKey}); drpc.CodeOf(err) != drpc.PermissionDenied {
		t.Errorf("mallory: %v, want PermissionDenied", err)
	}
	// Reload: a certificate from another CA for new connections.
	newCert, newKey := other.issue(t, "server2", "drpc-server-2", "localhost")
	if err := srv.ReloadTLS(drpc.ServerTLS{CertFile: newCert, KeyFile: newKey, ClientCAFile: pki.caFile()}); err != nil {
		t.Fatal(err)
	}
	expectUnavailable("old CA after reload", good, "UnknownIssuer")
	good.CAFile = other.caFile()
	if _, err := call(good); err != nil {
		t.Errorf("after reload: %v", err)
	}
	if err := srv.ReloadTLS(drpc.ServerTLS{CertFile: "/nonexistent", KeyFile: "/nonexistent"}); err == nil {
		t.Error("reload with missing files succeeded")
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// TestTLSWithStorj: the real storj.io/drpc over Go's crypto/tls against the
// binding both ways, every sequential-peer case, mutual TLS.
func TestTLSWithStorj(t *testing.T) {
	checkNoLeaks(t)
	pki := newPKI(t, "go test CA")
	serverCert, serverKey := pki.issue(t, "server", "drpc-server", "localhost")
	clientCert, clientKey := pki.issue(t, "client", "drpc-client")

	t.Run("storj client, binding server", func(t *testing.T) {
		srv := drpc.NewServer()
		h, _ := interop.NewHandler()
		if err := drpcstorj.Register(srv, h, interop.ServiceRPCs()); err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown(time.Second)
		addr, err := srv.ListenTLS("127.0.0.1:0", drpc.ServerTLS{CertFile: serverCert, KeyFile: serverKey, ClientCAFile: pki.caFile()})
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := interop.ClientTLSConfig(pki.caFile(), "localhost", clientCert, clientKey)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := interop.DialWith(context.Background(), addr, interop.Dialer(cfg, false))
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		runCases(t, cl, "storj client over crypto/tls vs binding server")
	})

	t.Run("binding client, storj server", func(t *testing.T) {
		cfg, err := interop.ServerTLSConfig(serverCert, serverKey, pki.caFile())
		if err != nil {
			t.Fatal(err)
		}
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- interop.ServeTLS(ctx, lis, cfg) }()
		defer func() {
			cancel()
			<-done
		}()
		conn, err := drpc.DialTLS(context.Background(), lis.Addr().String(),
			drpc.ClientTLS{CAFile: pki.caFile(), ServerName: "localhost", CertFile: clientCert, KeyFile: clientKey}, drpc.Sequential())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		runCases(t, interop.NewClient(drpcstorj.NewConn(conn)), "binding client vs storj server over crypto/tls")
	})
}
