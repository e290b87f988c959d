// Package compress holds the golden tests of message compression between
// drpc-rs and the Go codecs cockroachdb/drpc uses: github.com/golang/snappy
// for "snappy" and github.com/minio/minlz (LevelFastest) for
// "minlz-fastest", where cockroachdb/drpc sends snappy blocks for messages
// of 4 KiB and less. testdata/go-* are Go's encodings (checked fresh here,
// decoded by drpc-core/tests/compress_golden.rs); testdata/rust-* are
// drpc-core's (written by that Rust test, decoded here).
// DRPC_REGENERATE_GOLDEN=1 rewrites testdata/go-*.
package compress

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/golang/snappy"
	"github.com/minio/minlz"
)

// Sizes around the codecs' edges: empty, minlz's literal-only blocks (< 16
// bytes), the 4 KiB snappy fallback boundary, and multi-block sizes.
var sizes = []int{0, 1, 15, 16, 17, 100, 1000, 4096, 4097, 20000, 100000}

// input is the same deterministic payload drpc-core's test builds:
// "drpc-0 drpc-1 ..." cut to n bytes, or, when random, xorshift32 bytes.
func input(n int, random bool) []byte {
	out := make([]byte, 0, n+16)
	if random {
		x := uint32(2463534242)
		for len(out) < n {
			x ^= x << 13
			x ^= x >> 17
			x ^= x << 5
			out = append(out, byte(x))
		}
		return out
	}
	for i := 0; len(out) < n; i++ {
		out = append(out, "drpc-"+strconv.Itoa(i)+" "...)
	}
	return out[:n]
}

type payload struct {
	name string
	data []byte
}

func payloads() []payload {
	var ps []payload
	for _, n := range sizes {
		ps = append(ps, payload{fmt.Sprintf("text-%d", n), input(n, false)})
	}
	ps = append(ps, payload{"random-5000", input(5000, true)})
	return ps
}

// cockroachMinLZ is what cockroachdb/drpc sends under "minlz-fastest":
// snappy blocks up to 4 KiB, MinLZ blocks above.
func cockroachMinLZ(data []byte) []byte {
	if len(data) <= 4096 {
		return snappy.Encode(nil, data)
	}
	out, err := minlz.Encode(nil, data, minlz.LevelFastest)
	if err != nil {
		panic(err)
	}
	return out
}

func minlzFastest(data []byte) []byte {
	out, err := minlz.Encode(nil, data, minlz.LevelFastest)
	if err != nil {
		panic(err)
	}
	return out
}

// TestGoEncodingsAreFresh: testdata/go-* are what the Go codecs produce now.
func TestGoEncodingsAreFresh(t *testing.T) {
	regen := os.Getenv("DRPC_REGENERATE_GOLDEN") == "1"
	for _, p := range payloads() {
		for codec, enc := range map[string][]byte{
			"snappy":          snappy.Encode(nil, p.data),
			"minlz-fastest":   minlzFastest(p.data),
			"cockroach-minlz": cockroachMinLZ(p.data),
		} {
			file := filepath.Join("testdata", "go-"+codec+"-"+p.name+".bin")
			if regen {
				if err := os.WriteFile(file, enc, 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (DRPC_REGENERATE_GOLDEN=1 go test ./compress writes it)", err)
			}
			if !bytes.Equal(got, enc) {
				t.Errorf("%s is stale: the Go codec now encodes differently (DRPC_REGENERATE_GOLDEN=1 go test ./compress)", file)
			}
		}
	}
}

// TestRustEncodingsDecodeInGo: drpc-core's snappy and minlz-fastest
// payloads decode with the Go codecs to the original bytes.
func TestRustEncodingsDecodeInGo(t *testing.T) {
	for _, p := range payloads() {
		for codec, decode := range map[string]func([]byte) ([]byte, error){
			"snappy":        func(b []byte) ([]byte, error) { return snappy.Decode(nil, b) },
			"minlz-fastest": func(b []byte) ([]byte, error) { return minlz.Decode(nil, b) },
		} {
			file := filepath.Join("testdata", "rust-"+codec+"-"+p.name+".bin")
			enc, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (cargo test -p drpc-core --test compress_golden writes it with DRPC_REGENERATE_GOLDEN=1)", err)
			}
			got, err := decode(enc)
			if err != nil {
				t.Errorf("%s: Go %s cannot decode it: %v", file, codec, err)
				continue
			}
			if !bytes.Equal(got, p.data) {
				t.Errorf("%s: Go %s decodes %d bytes, want the %d-byte input", file, codec, len(got), len(p.data))
			}
		}
	}
}
