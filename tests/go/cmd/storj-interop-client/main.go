// Command storj-interop-client runs the interop cases of shared/interop/CASES.md
// with the real storj.io/drpc client. storj.io/drpc is a sequential peer: only
// the "every peer" cases apply and only --mode sequential is accepted.
// --tls-ca [--tls-server-name] [--tls-cert --tls-key] dial with Go's
// crypto/tls; --drpcmigrate sends the DRPC!!!1 header first.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"net"
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
	tlsCA := flag.String("tls-ca", "", "PEM CA to trust: dial TLS")
	tlsServerName := flag.String("tls-server-name", "", "name the server certificate must carry (default: the host)")
	tlsCert := flag.String("tls-cert", "", "PEM client certificate (mutual TLS)")
	tlsKey := flag.String("tls-key", "", "PEM private key of --tls-cert")
	header := flag.Bool("drpcmigrate", false, "send drpcmigrate's DRPC!!!1 header first")
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

	if (*tlsCert == "") != (*tlsKey == "") || (*tlsCA == "" && (*tlsServerName != "" || *tlsCert != "")) {
		fmt.Fprintln(os.Stderr, "storj-interop-client: --tls-cert and --tls-key go together; the --tls-* flags need --tls-ca")
		os.Exit(2)
	}
	var cfg *tls.Config
	if *tlsCA != "" {
		name := *tlsServerName
		if name == "" {
			if host, _, err := net.SplitHostPort(*addr); err == nil {
				name = host
			}
		}
		var err error
		if cfg, err = interop.ClientTLSConfig(*tlsCA, name, *tlsCert, *tlsKey); err != nil {
			fmt.Fprintln(os.Stderr, "storj-interop-client: TLS:", err)
			os.Exit(1)
		}
	}

	results, err := interop.RunCasesWith(context.Background(), *addr, cases, interop.Dialer(cfg, *header))
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
