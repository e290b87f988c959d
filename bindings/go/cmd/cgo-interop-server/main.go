// Command cgo-interop-server serves the interop service (test.proto) with the
// libdrpc cgo binding (a multiplexing server), following the program
// contract of shared/interop/CASES.md. The service code is the storj.io/drpc
// one of tests/go/interop, run through bindings/go/drpcstorj.
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/drpcstorj"
	"drpc-rs/tests/go/interop"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "HOST:PORT to listen on (port 0 picks one)")
	flowControl := flag.Bool("flow-control", false, "per-stream flow control (not offered by the C ABI yet)")
	flag.Parse()
	if *flowControl {
		fmt.Fprintln(os.Stderr, "cgo-interop-server: --flow-control: the libdrpc C ABI has no flow-control option")
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	srv := drpc.NewServer()
	h, _ := interop.NewHandler()
	if err := drpcstorj.Register(srv, h, interop.ServiceRPCs(), []string{"x-drpc-test"}); err != nil {
		fmt.Fprintln(os.Stderr, "cgo-interop-server:", err)
		os.Exit(1)
	}
	bound, err := srv.Listen(*addr)
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
