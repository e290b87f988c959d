package interop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// testCerts writes a throwaway CA (ca.pem), a server certificate for
// localhost/127.0.0.1 (server.pem, server-key.pem) and a client certificate
// (client.pem, client-key.pem), made with crypto/x509, into a temp dir.
func testCerts(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, kind string, der []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "interop test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	write("ca.pem", "CERTIFICATE", caDER)
	for i, name := range []string{"server", "client"} {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(int64(i + 2)), Subject: pkix.Name{CommonName: "drpc-" + name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
			DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
			KeyUsage:    x509.KeyUsageDigitalSignature,
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		write(name+".pem", "CERTIFICATE", der)
		write(name+"-key.pem", "PRIVATE KEY", keyDER)
	}
	return dir
}

// startStorjTLSServer serves the interop service with storj.io/drpc: over
// crypto/tls (mutual TLS with the test CA) when cfgDir is set, behind a
// drpcmigrate ListenMux when shared.
func startStorjTLSServer(t *testing.T, certs string, shared bool) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		switch {
		case shared && certs == "":
			done <- ServeShared(ctx, lis, nil)
		case shared:
			cfg, err := ServerTLSConfig(filepath.Join(certs, "server.pem"), filepath.Join(certs, "server-key.pem"), filepath.Join(certs, "ca.pem"))
			if err != nil {
				done <- err
				return
			}
			done <- ServeShared(ctx, lis, cfg)
		default:
			cfg, err := ServerTLSConfig(filepath.Join(certs, "server.pem"), filepath.Join(certs, "server-key.pem"), filepath.Join(certs, "ca.pem"))
			if err != nil {
				done <- err
				return
			}
			done <- ServeTLS(ctx, lis, cfg)
		}
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("storj server: %v", err)
		}
	})
	return lis.Addr().String()
}

func tlsServerFlags(certs string) []string {
	return []string{"--tls-cert", filepath.Join(certs, "server.pem"), "--tls-key", filepath.Join(certs, "server-key.pem"),
		"--tls-client-ca", filepath.Join(certs, "ca.pem")}
}

func tlsClientFlags(certs string) []string {
	return []string{"--tls-ca", filepath.Join(certs, "ca.pem"), "--tls-server-name", "localhost",
		"--tls-cert", filepath.Join(certs, "client.pem"), "--tls-key", filepath.Join(certs, "client-key.pem")}
}

func runGoClientWith(t *testing.T, addr, peer, certs string, header bool) {
	t.Helper()
	var dial = Dialer(nil, header)
	if certs != "" {
		cfg, err := ClientTLSConfig(filepath.Join(certs, "ca.pem"), "localhost", filepath.Join(certs, "client.pem"), filepath.Join(certs, "client-key.pem"))
		if err != nil {
			t.Fatal(err)
		}
		dial = Dialer(cfg, header)
	}
	results, err := RunCasesWith(context.Background(), addr, []string{"all"}, dial)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if len(results) != len(EveryPeerCases) {
		t.Fatalf("ran %d cases, want %d", len(results), len(EveryPeerCases))
	}
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("storj.io/drpc client vs %s: FAIL %s: %v", peer, r.Name, r.Err)
		}
	}
}

// TestTLSStorjClientRustServer: storj.io/drpc over Go's crypto/tls (mutual
// TLS) against the Rust interop server (rustls).
func TestTLSStorjClientRustServer(t *testing.T) {
	certs := testCerts(t)
	addr := startServer(t, rustBinary(t, "drpc-interop-server"), tlsServerFlags(certs)...)
	runGoClientWith(t, addr, "Rust server over TLS", certs, false)
}

// TestTLSRustClientStorjServer: the Rust interop client (rustls) against
// storj.io/drpc over Go's crypto/tls, mutual TLS.
func TestTLSRustClientStorjServer(t *testing.T) {
	certs := testCerts(t)
	addr := startStorjTLSServer(t, certs, false)
	runClientProgram(t, rustBinary(t, "drpc-interop-client"), addr, "Rust TLS client vs storj.io/drpc over crypto/tls", tlsClientFlags(certs)...)
}

// TestDrpcmigrateGoClientRustServer: drpcmigrate.DialWithHeader (plain and
// under TLS) against the Rust shared-port server; an HTTP request on the
// same port reaches its HTTP fallback.
func TestDrpcmigrateGoClientRustServer(t *testing.T) {
	bin := rustBinary(t, "drpc-interop-server")
	addr := startServer(t, bin, "--drpcmigrate")
	runGoClientWith(t, addr, "Rust shared-port server", "", true)
	resp, err := http.Get("http://" + addr + "/hello")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "not drpc: GET /hello HTTP/1.1" {
		t.Errorf("HTTP on the shared port: %q", body)
	}
	certs := testCerts(t)
	tlsAddr := startServer(t, bin, append(tlsServerFlags(certs), "--drpcmigrate")...)
	runGoClientWith(t, tlsAddr, "Rust shared-port server over TLS", certs, true)
}

// TestDrpcmigrateRustClientGoServer: the Rust client sending the header
// (plain and under TLS) against drpcmigrate.ListenMux; HTTP on the same port.
func TestDrpcmigrateRustClientGoServer(t *testing.T) {
	bin := rustBinary(t, "drpc-interop-client")
	addr := startStorjTLSServer(t, "", true)
	runClientProgram(t, bin, addr, "Rust client with the header vs drpcmigrate.ListenMux", "--drpcmigrate")
	resp, err := http.Get("http://" + addr + "/x")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.HasPrefix(string(body), "not drpc: GET /x") {
		t.Errorf("HTTP on the Go shared port: %q", body)
	}
	certs := testCerts(t)
	tlsAddr := startStorjTLSServer(t, certs, true)
	runClientProgram(t, bin, tlsAddr, "Rust TLS client with the header vs drpcmigrate.ListenMux + crypto/tls",
		append(tlsClientFlags(certs), "--drpcmigrate")...)
}
