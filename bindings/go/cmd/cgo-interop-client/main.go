// Command cgo-interop-client runs the interop cases of shared/interop/CASES.md
// with the libdrpc cgo binding as client (through bindings/go/drpcstorj and
// the generated storj.io/drpc client code). --mode mux (default) also allows
// the multiplexing cases; --mode sequential dials a sequential connection.
// --flow-control turns on per-stream flow control (the server must have it
// too); then "all" in mux mode includes slow_reader_isolation. "all" also
// runs the project cases deadline_propagation and trace_context (between
// drpc-rs implementations only); trace_chain runs when named.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/drpcstorj"
	"drpc-rs/tests/go/interop"
)

type caseList []string

func (c *caseList) String() string     { return strings.Join(*c, ",") }
func (c *caseList) Set(v string) error { *c = append(*c, v); return nil }

func main() {
	var cases caseList
	addr := flag.String("addr", "", "HOST:PORT of the interop server")
	mode := flag.String("mode", "mux", "mux|sequential")
	flowControl := flag.Bool("flow-control", false, "per-stream flow control (the server must have it too)")
	flag.Var(&cases, "case", "case name (repeatable) or all")
	tlsCA := flag.String("tls-ca", "", "PEM CA to trust: dial TLS")
	tlsServerName := flag.String("tls-server-name", "", "name the server certificate must carry (default: the host)")
	tlsCert := flag.String("tls-cert", "", "PEM client certificate (mutual TLS)")
	tlsKey := flag.String("tls-key", "", "PEM private key of --tls-cert")
	flag.Parse()
	if (*tlsCert == "") != (*tlsKey == "") || (*tlsCA == "" && (*tlsServerName != "" || *tlsCert != "")) {
		fmt.Fprintln(os.Stderr, "cgo-interop-client: --tls-cert and --tls-key go together; the --tls-* flags need --tls-ca")
		os.Exit(2)
	}
	switch {
	case *addr == "":
		fmt.Fprintln(os.Stderr, "cgo-interop-client: --addr is required")
		os.Exit(2)
	case *mode != "mux" && *mode != "sequential":
		fmt.Fprintf(os.Stderr, "cgo-interop-client: --mode %s: want mux or sequential\n", *mode)
		os.Exit(2)
	}
	if len(cases) == 0 {
		cases = caseList{"all"}
	}
	ctx := context.Background()
	var opts []drpc.DialOption
	if *mode == "sequential" {
		opts = append(opts, drpc.Sequential())
	}
	if *flowControl {
		opts = append(opts, drpc.FlowControl())
	}
	var conn *drpc.Conn
	var err error
	if *tlsCA != "" {
		tls := drpc.ClientTLS{CAFile: *tlsCA, ServerName: *tlsServerName, CertFile: *tlsCert, KeyFile: *tlsKey}
		conn, err = drpc.DialTLS(ctx, *addr, tls, opts...)
	} else {
		conn, err = drpc.Dial(ctx, *addr, opts...)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cgo-interop-client:", err)
		os.Exit(1)
	}
	var cl *interop.Client
	if *mode == "mux" {
		cl = interop.NewMuxClient(drpcstorj.NewConn(conn))
	} else {
		cl = interop.NewClient(drpcstorj.NewConn(conn))
	}
	cl.FlowControl = *flowControl
	failed := false
	report := func(name string, err error) {
		if err != nil {
			failed = true
			fmt.Printf("FAIL %s: %s\n", name, strings.ReplaceAll(err.Error(), "\n", `\n`))
		} else {
			fmt.Printf("PASS %s\n", name)
		}
	}
	// The shared cases through tests/go/interop; the project cases
	// (project.go) after "all"'s and wherever named.
	for _, name := range cases {
		if f, ok := projectCases[name]; ok {
			report(name, f(ctx, conn))
			continue
		}
		for _, r := range cl.RunAll(ctx, []string{name}) {
			report(r.Name, r.Err)
		}
		if name == "all" {
			for _, p := range projectInAll {
				report(p, projectCases[p](ctx, conn))
			}
		}
	}
	conn.Close()
	if failed {
		os.Exit(1)
	}
}
