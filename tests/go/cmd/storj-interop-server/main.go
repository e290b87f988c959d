// Command storj-interop-server serves the interop service (test.proto) with the
// real storj.io/drpc, following the program contract of shared/interop/CASES.md.
// --tls-cert/--tls-key [--tls-client-ca] serve over Go's crypto/tls (mutual
// TLS with a client CA); --drpcmigrate serves behind drpcmigrate.ListenMux
// (DRPC after the DRPC!!!1 header, HTTP otherwise).
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"drpc-rs/tests/go/interop"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "HOST:PORT to listen on (port 0 picks one)")
	flowControl := flag.Bool("flow-control", false, "per-stream flow control (not supported by storj.io/drpc)")
	tlsCert := flag.String("tls-cert", "", "PEM certificate chain: serve TLS")
	tlsKey := flag.String("tls-key", "", "PEM private key of --tls-cert")
	tlsClientCA := flag.String("tls-client-ca", "", "PEM CA: require client certificates it signed")
	shared := flag.Bool("drpcmigrate", false, "share the port: DRPC after the DRPC!!!1 header, HTTP otherwise")
	flag.Parse()
	if *flowControl {
		fmt.Fprintln(os.Stderr, "storj-interop-server: --flow-control is not supported by storj.io/drpc")
		os.Exit(2)
	}
	if (*tlsCert == "") != (*tlsKey == "") || (*tlsClientCA != "" && *tlsCert == "") {
		fmt.Fprintln(os.Stderr, "storj-interop-server: --tls-cert and --tls-key go together (and --tls-client-ca needs them)")
		os.Exit(2)
	}
	var cfg *tls.Config
	if *tlsCert != "" {
		var err error
		if cfg, err = interop.ServerTLSConfig(*tlsCert, *tlsKey, *tlsClientCA); err != nil {
			fmt.Fprintln(os.Stderr, "storj-interop-server: TLS:", err)
			os.Exit(1)
		}
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storj-interop-server:", err)
		os.Exit(1)
	}
	// os.Stdout is unbuffered: the line is written at once.
	fmt.Printf("listening %s\n", lis.Addr())

	switch {
	case *shared:
		err = interop.ServeShared(ctx, lis, cfg)
	case cfg != nil:
		err = interop.ServeTLS(ctx, lis, cfg)
	default:
		err = interop.Serve(ctx, lis)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "storj-interop-server:", err)
		os.Exit(1)
	}
}
