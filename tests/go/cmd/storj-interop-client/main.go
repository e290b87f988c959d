// Command storj-interop-client runs the interop cases of shared/interop/CASES.md
// with the real storj.io/drpc client. storj.io/drpc is a sequential peer: only
// the "every peer" cases apply and only --mode sequential is accepted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	"drpc-rs/tests/go/interop"
)

type caseList []string

func (c *caseList) String() string     { return strings.Join(*c, ",") }
func (c *caseList) Set(v string) error { *c = append(*c, v); return nil }

func main() {
	var cases caseList
	addr := flag.String("addr", "", "HOST:PORT of the interop server")
	mode := flag.String("mode", "sequential", "mux|sequential (storj.io/drpc supports only sequential)")
	flowControl := flag.Bool("flow-control", false, "per-stream flow control (not supported by storj.io/drpc)")
	flag.Var(&cases, "case", "case name (repeatable) or all")
	flag.Parse()
	switch {
	case *addr == "":
		fmt.Fprintln(os.Stderr, "storj-interop-client: --addr is required")
		os.Exit(2)
	case *mode != "sequential":
		fmt.Fprintf(os.Stderr, "storj-interop-client: --mode %s: storj.io/drpc is sequential, only --mode sequential is supported\n", *mode)
		os.Exit(2)
	case *flowControl:
		fmt.Fprintln(os.Stderr, "storj-interop-client: --flow-control is not supported by storj.io/drpc")
		os.Exit(2)
	}
	if len(cases) == 0 {
		cases = caseList{"all"}
	}

	results, err := interop.RunCases(context.Background(), *addr, cases)
	if err != nil {
		fmt.Fprintln(os.Stderr, "storj-interop-client:", err)
		os.Exit(1)
	}
	failed := false
	for _, r := range results {
		if r.Err != nil {
			failed = true
			fmt.Printf("FAIL %s: %s\n", r.Name, strings.ReplaceAll(r.Err.Error(), "\n", `\n`))
		} else {
			fmt.Printf("PASS %s\n", r.Name)
		}
	}
	if failed {
		os.Exit(1)
	}
}
