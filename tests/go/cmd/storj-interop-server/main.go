// Command storj-interop-server serves the interop service (test.proto) with the
// real storj.io/drpc, following the program contract of shared/interop/CASES.md.
package main

import (
	"context"
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
	flag.Parse()
	if *flowControl {
		fmt.Fprintln(os.Stderr, "storj-interop-server: --flow-control is not supported by storj.io/drpc")
		os.Exit(2)
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

	if err := interop.Serve(ctx, lis); err != nil {
		fmt.Fprintln(os.Stderr, "storj-interop-server:", err)
		os.Exit(1)
	}
}
