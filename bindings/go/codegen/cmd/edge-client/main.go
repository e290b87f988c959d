// Command edge-client runs the edge-case client cases of tests/codegen with
// protoc-gen-go-drpc's generated clients over the cgo binding (drpcstorj).
// Prints "PASS case" / "FAIL case: why"; exits 1 if any failed.
//
//	edge-client --addr HOST:PORT
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"time"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/codegen"
	"drpc-rs/bindings/go/drpcstorj"
)

func main() {
	addr := flag.String("addr", "", "server address")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := drpc.Dial(ctx, *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "edge-client:", err)
		os.Exit(1)
	}
	defer conn.Close()
	failed := 0
	for _, r := range codegen.RunClient(ctx, drpcstorj.NewConn(conn)) {
		if r.Err != nil {
			failed++
			fmt.Printf("FAIL %s: %v\n", r.Name, r.Err)
		} else {
			fmt.Printf("PASS %s\n", r.Name)
		}
	}
	if failed > 0 {
		conn.Close()
		os.Exit(1)
	}
}
