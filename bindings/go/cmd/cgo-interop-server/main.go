// Command cgo-interop-server serves the interop service (test.proto) with the
// libdrpc cgo binding (a multiplexing server), following the program
// contract of shared/interop/CASES.md. The service code is the storj.io/drpc
// one of tests/go/interop, run through bindings/go/drpcstorj. --forward
// HOST:PORT sends UnaryCall requests that ask to echo a metadata key on to
// that server from inside the handler, with the handler's context (so its
// deadline and trace context go along), and returns the answer as-is
// (tests/matrix/trace_chain.sh).
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/protobuf/proto"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/drpcstorj"
	"drpc-rs/tests/go/interop"
	pb "drpc-rs/tests/go/interoppb"
)

const rpcUnaryCall = "/drpc.interop.TestService/UnaryCall"

// forwarder answers UnaryCall requests with a non-empty echo_metadata_key
// by calling the same rpc on target with the handler's context; other calls
// go to the handler.
func forwarder(target string) drpc.StreamServerInterceptor {
	return func(ss *drpc.ServerStream, handler drpc.StreamHandler) error {
		if ss.RPC() != rpcUnaryCall {
			return handler(ss)
		}
		in, err := ss.Recv()
		if err != nil {
			return err
		}
		req := &pb.SimpleRequest{}
		if err := proto.Unmarshal(in, req); err != nil || req.EchoMetadataKey == "" {
			ss.Unrecv(in)
			return handler(ss)
		}
		conn, err := drpc.Dial(ss.Context(), target)
		if err != nil {
			return err
		}
		defer conn.Close()
		out, err := conn.Invoke(ss.Context(), rpcUnaryCall, in, nil)
		if err != nil {
			return err
		}
		return ss.Send(out)
	}
}

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "HOST:PORT to listen on (port 0 picks one)")
	flowControl := flag.Bool("flow-control", false, "per-stream flow control (clients must have it too)")
	maxStreams := flag.Int("max-concurrent-streams", 0, "streams a client may have open at once per connection (0: default)")
	tlsCert := flag.String("tls-cert", "", "PEM certificate chain: serve TLS")
	tlsKey := flag.String("tls-key", "", "PEM private key of --tls-cert")
	tlsClientCA := flag.String("tls-client-ca", "", "PEM CA: require client certificates it signed")
	forward := flag.String("forward", "", "HOST:PORT: forward UnaryCall requests with an echo_metadata_key there")
	flag.Parse()
	if (*tlsCert == "") != (*tlsKey == "") || (*tlsClientCA != "" && *tlsCert == "") {
		fmt.Fprintln(os.Stderr, "cgo-interop-server: --tls-cert and --tls-key go together (and --tls-client-ca needs them)")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	// libdrpc's log events (handler failures with rpc and peer, protocol
	// errors with the peer) go to stderr.
	drpc.SetLogger(drpc.LogWarn, func(level drpc.LogLevel, target, msg string) {
		fmt.Fprintf(os.Stderr, "level=%d %s: %s\n", level, target, msg)
	})
	srv := drpc.NewServer()
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "cgo-interop-server:", err)
		srv.Shutdown(0)
		os.Exit(2)
	}
	if *flowControl {
		if err := srv.SetFlowControl(true); err != nil {
			fail(err)
		}
	}
	if *maxStreams != 0 {
		if err := srv.SetMaxConcurrentStreams(*maxStreams); err != nil {
			fail(fmt.Errorf("--max-concurrent-streams %d: %w", *maxStreams, err))
		}
	}
	if *forward != "" {
		if err := srv.AddStreamInterceptors(forwarder(*forward)); err != nil {
			fail(err)
		}
	}
	h, _ := interop.NewHandler()
	if err := drpcstorj.Register(srv, h, interop.ServiceRPCs()); err != nil {
		fmt.Fprintln(os.Stderr, "cgo-interop-server:", err)
		os.Exit(1)
	}
	var bound string
	var err error
	if *tlsCert != "" {
		bound, err = srv.ListenTLS(*addr, drpc.ServerTLS{CertFile: *tlsCert, KeyFile: *tlsKey, ClientCAFile: *tlsClientCA})
	} else {
		bound, err = srv.Listen(*addr)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cgo-interop-server:", err)
		os.Exit(1)
	}
	fmt.Printf("listening %s\n", bound)
	<-sigs
	if err := srv.Shutdown(2 * time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "cgo-interop-server: shutdown:", err)
		os.Exit(1)
	}
}
