package interop

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"

	"storj.io/drpc/drpcmigrate"
	"storj.io/drpc/drpcserver"
)

// ServerTLSConfig is a Go crypto/tls server configuration from PEM files:
// mutual TLS (client certificates required) when clientCA is set.
func ServerTLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCA != "" {
		pool, err := loadPool(clientCA)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs = pool
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLSConfig is a Go crypto/tls client configuration trusting the CA
// in caFile, checking serverName, presenting certFile/keyFile if set.
func ClientTLSConfig(caFile, serverName, certFile, keyFile string) (*tls.Config, error) {
	pool, err := loadPool(caFile)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}
	if certFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no certificate", file)
	}
	return pool, nil
}

// Dialer makes client connections: TCP, then the drpcmigrate header if
// header, then TLS if cfg is set (the order drpcmigrate.HeaderConn gives).
func Dialer(cfg *tls.Config, header bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		var err error
		if header {
			conn, err = drpcmigrate.DialWithHeader(ctx, network, addr, drpcmigrate.DRPCHeader)
		} else {
			var d net.Dialer
			conn, err = d.DialContext(ctx, network, addr)
		}
		if err != nil || cfg == nil {
			return conn, err
		}
		tc := tls.Client(conn, cfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
}

// ServeShared serves the interop service on lis behind a drpcmigrate
// ListenMux: connections with the DRPC header are DRPC (TLS after the
// header when cfg is set); others reach an HTTP server answering
// "not drpc: <method> <path>".
func ServeShared(ctx context.Context, lis net.Listener, cfg *tls.Config) error {
	mux := drpcmigrate.NewListenMux(lis, len(drpcmigrate.DRPCHeader))
	drpcLis := mux.Route(drpcmigrate.DRPCHeader)
	if cfg != nil {
		drpcLis = tls.NewListener(drpcLis, cfg)
	}
	httpServer := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "not drpc: %s %s", r.Method, r.URL.Path)
	})}
	h, _ := NewHandler()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 3)
	go func() { errs <- mux.Run(ctx) }()
	go func() { errs <- drpcserver.New(h).Serve(ctx, drpcLis) }()
	go func() {
		err := httpServer.Serve(mux.Default())
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		errs <- err
	}()
	<-ctx.Done()
	httpServer.Close()
	var first error
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil && first == nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, context.Canceled) {
			first = err
		}
	}
	return first
}

// ServeTLS serves the interop service with storj.io/drpc over crypto/tls.
func ServeTLS(ctx context.Context, lis net.Listener, cfg *tls.Config) error {
	return Serve(ctx, tls.NewListener(lis, cfg))
}
