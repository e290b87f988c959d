package interop

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// repoRoot is the drpc-rs checkout: this file is tests/go/interop/.
func repoRoot(t *testing.T) string {
	if r := os.Getenv("DRPC_RS_ROOT"); r != "" {
		return r
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository root")
	}
	return filepath.Join(filepath.Dir(file), "..", "..", "..")
}

// rustBinary returns target/release/<name>. When it is missing the test is
// skipped, unless DRPC_REQUIRE_RUST=1 (set by tests/go/run.sh) makes that a
// failure.
func rustBinary(t *testing.T, name string) string {
	p := filepath.Join(repoRoot(t), "target", "release", name)
	if _, err := os.Stat(p); err != nil {
		if os.Getenv("DRPC_REQUIRE_RUST") == "1" {
			t.Fatalf("%s missing (cargo build --release -p drpc-interop): %v", p, err)
		}
		t.Skipf("%s missing; build it with cargo build --release -p drpc-interop", p)
	}
	return p
}

// startServer runs an interop server program, waits for its `listening`
// line and returns the address. At cleanup it sends SIGTERM and requires a
// graceful exit 0 within 10 s.
func startServer(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"--addr", "127.0.0.1:0"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		for sc.Scan() {
		}
	}()
	var addr string
	select {
	case line, ok := <-lines:
		if !ok || !strings.HasPrefix(line, "listening ") {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
			t.Fatalf("%s: first stdout line %q, want `listening HOST:PORT`; stderr: %s", bin, line, stderr.String())
		}
		addr = strings.TrimPrefix(line, "listening ")
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("%s: no `listening` line within 20 s; stderr: %s", bin, stderr.String())
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		t.Fatalf("%s: bad address %q: %v", bin, addr, err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: exit after SIGTERM: %v; stderr: %s", bin, err, stderr.String())
			}
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Errorf("%s: did not exit within 10 s of SIGTERM; stderr: %s", bin, stderr.String())
		}
	})
	return addr
}

// startStorjServer serves the interop service with storj.io/drpc in this
// process and stops it (checking a clean return) at cleanup.
func startStorjServer(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("storj server: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Errorf("storj server did not stop within 10 s")
		}
	})
	return lis.Addr().String()
}

// runGoClient runs every sequential-peer case with the storj.io/drpc client,
// one subtest per case, all on one connection in CASES.md order.
func runGoClient(t *testing.T, addr, peer string) {
	results, err := RunCases(context.Background(), addr, []string{"all"})
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	if len(results) != len(EveryPeerCases) {
		t.Fatalf("ran %d cases, want %d", len(results), len(EveryPeerCases))
	}
	for _, r := range results {
		r := r
		t.Run(r.Name, func(t *testing.T) {
			if r.Err != nil {
				t.Errorf("storj.io/drpc client vs %s server: FAIL %s: %v", peer, r.Name, r.Err)
			}
		})
	}
}

// TestStorjSelf checks the Go client and server against each other, so a
// failure against a Rust peer can be told apart from a bug in this harness.
func TestStorjSelf(t *testing.T) {
	runGoClient(t, startStorjServer(t), "storj.io/drpc")
}

// TestStorjClientRustServer: the real storj.io/drpc client against the Rust
// interop server.
func TestStorjClientRustServer(t *testing.T) {
	bin := rustBinary(t, "drpc-interop-server")
	runGoClient(t, startServer(t, bin), "Rust")
}

// TestRustClientStorjServer: the Rust interop client in sequential mode
// against the real storj.io/drpc server.
func TestRustClientStorjServer(t *testing.T) {
	bin := rustBinary(t, "drpc-interop-client")
	addr := startStorjServer(t)
	runClientProgram(t, bin, addr, "Rust client vs storj.io/drpc server")
}

// runClientProgram runs an interop client program with --mode sequential and
// every sequential-peer case named explicitly, and turns its PASS/FAIL lines
// into subtests.
func runClientProgram(t *testing.T, bin, addr, what string, extra ...string) {
	args := append([]string{"--addr", addr, "--mode", "sequential"}, extra...)
	for _, c := range EveryPeerCases {
		args = append(args, "--case", c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()

	seen := map[string]string{}
	for _, line := range strings.Split(stdout.String(), "\n") {
		switch {
		case strings.HasPrefix(line, "PASS "):
			seen[strings.TrimSpace(strings.TrimPrefix(line, "PASS "))] = ""
		case strings.HasPrefix(line, "FAIL "):
			rest := strings.TrimPrefix(line, "FAIL ")
			name, reason, _ := strings.Cut(rest, ":")
			seen[strings.TrimSpace(name)] = "FAIL: " + strings.TrimSpace(reason)
		}
	}
	for _, c := range EveryPeerCases {
		c := c
		t.Run(c, func(t *testing.T) {
			res, ok := seen[c]
			switch {
			case !ok:
				t.Errorf("%s: no PASS/FAIL line for %s", what, c)
			case res != "":
				t.Errorf("%s: %s %s", what, c, res)
			}
		})
	}
	var exitErr *exec.ExitError
	failed := false
	for _, r := range seen {
		failed = failed || r != ""
	}
	switch {
	case runErr == nil && failed:
		t.Errorf("%s: exit 0 although a case failed", what)
	case runErr != nil && !failed && errors.As(runErr, &exitErr):
		t.Errorf("%s: %v although every case passed", what, runErr)
	case runErr != nil && !errors.As(runErr, &exitErr):
		t.Errorf("%s: %v", what, runErr)
	}
	if t.Failed() {
		t.Logf("%s stdout:\n%s\nstderr:\n%s", what, stdout.String(), stderr.String())
	}
}

// TestPrograms builds the two Go interop programs and checks their CASES.md
// contract: `listening` line, PASS lines and exit 0, graceful SIGTERM.
func TestPrograms(t *testing.T) {
	if testing.Short() {
		t.Skip("builds binaries")
	}
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+string(os.PathSeparator), "drpc-rs/tests/go/cmd/...")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	addr := startServer(t, filepath.Join(dir, "storj-interop-server"))
	runClientProgram(t, filepath.Join(dir, "storj-interop-client"), addr, "storj client program vs storj server program")

	// The client refuses a mode storj.io/drpc cannot do, instead of pretending.
	out, err := exec.Command(filepath.Join(dir, "storj-interop-client"), "--addr", addr, "--mode", "mux", "--case", "all").CombinedOutput()
	if err == nil {
		t.Errorf("--mode mux accepted: %s", out)
	}
}
