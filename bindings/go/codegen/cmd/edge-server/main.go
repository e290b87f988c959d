// Command edge-server serves the edge-case services of tests/codegen with
// protoc-gen-go-drpc's generated code over the cgo binding (drpcstorj).
//
//	edge-server --addr HOST:PORT    prints "listening HOST:PORT"; SIGTERM stops it (exit 0)
package main

import (
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/codegen"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:0", "address to listen on")
	flag.Parse()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	srv := drpc.NewServer()
	if err := codegen.Register(srv); err != nil {
		fmt.Fprintln(os.Stderr, "edge-server:", err)
		os.Exit(1)
	}
	bound, err := srv.Listen(*addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge-server:", err)
		os.Exit(1)
	}
	fmt.Println("listening", bound)
	<-sigs
	if err := srv.Shutdown(time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "edge-server: shutdown:", err)
		os.Exit(1)
	}
}
