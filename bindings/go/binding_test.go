package drpc_test

import (
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"storj.io/drpc/drpcconn"
	"storj.io/drpc/drpcmanager"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/drpcstorj"
	"drpc-rs/tests/go/interop"
	pb "drpc-rs/tests/go/interoppb"
)

// checkNoLeaks records goroutines and libdrpc handles and, at cleanup,
// requires both to return to their starting values within 5 s.
func checkNoLeaks(t *testing.T) {
	g0, h0 := goroutines(), drpc.LiveHandles()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for {
			g, h := goroutines(), drpc.LiveHandles()
			if g <= g0 && h == h0 {
				return
			}
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<16)
				t.Errorf("leak: goroutines %d -> %d, libdrpc handles %d -> %d\n%s", g0, g, h0, h, buf[:runtime.Stack(buf, true)])
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// goroutines counts goroutines, leaving out the ones cgo keeps for foreign
// (libdrpc runtime) threads that have called back into Go: those live as
// long as their thread and are not leaks of this package.
func goroutines() int {
	buf := make([]byte, 1<<20)
	n := 0
	for _, g := range strings.Split(strings.TrimSpace(string(buf[:runtime.Stack(buf, true)])), "\n\n") {
		if strings.Contains(g, "[syscall, locked to thread]") && strings.Count(g, "\n") <= 2 && strings.Contains(g, "runtime.goexit") {
			continue
		}
		n++
	}
	return n
}

func startStorjServer(t *testing.T) string {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- interop.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("storj server: %v", err)
		}
	})
	return lis.Addr().String()
}

// startCgoServer serves the interop service with the binding; setup runs
// before Listen (e.g. to set options).
func startCgoServer(t *testing.T, setup ...func(*drpc.Server) error) (*drpc.Server, string) {
	srv := drpc.NewServer()
	for _, f := range setup {
		if err := f(srv); err != nil {
			srv.Shutdown(0)
			t.Fatal(err)
		}
	}
	h, _ := interop.NewHandler()
	if err := drpcstorj.Register(srv, h, interop.ServiceRPCs()); err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Shutdown(time.Second); err != nil {
			t.Errorf("shutdown: %v", err)
		}
	})
	return srv, addr
}

func runCases(t *testing.T, cl *interop.Client, what string) {
	for _, r := range cl.RunAll(context.Background(), []string{"all"}) {
		r := r
		t.Run(r.Name, func(t *testing.T) {
			if r.Err != nil {
				t.Errorf("%s: FAIL %s: %v", what, r.Name, r.Err)
			}
		})
	}
}

// TestCgoClientStorjServer: the binding (sequential mode, through the
// drpcstorj adapter and the generated storj client code) runs every
// sequential-peer case against the real storj.io/drpc server.
func TestCgoClientStorjServer(t *testing.T) {
	checkNoLeaks(t)
	addr := startStorjServer(t)
	conn, err := drpc.Dial(context.Background(), addr, drpc.Sequential())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	runCases(t, interop.NewClient(drpcstorj.NewConn(conn)), "cgo client vs storj server")
}

// TestStorjClientCgoServer: the real storj.io/drpc client against the
// interop service served by the binding's server.
func TestStorjClientCgoServer(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startCgoServer(t)
	cl, err := interop.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	runCases(t, cl, "storj client vs cgo server")
}

// TestCgoBothSides: the binding on both sides, multiplexing.
func TestCgoBothSides(t *testing.T) {
	checkNoLeaks(t)
	srv, addr := startCgoServer(t)
	conn, err := drpc.Dial(context.Background(), addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	runCases(t, interop.NewMuxClient(drpcstorj.NewConn(conn)), "cgo client vs cgo server (mux)")
	start := time.Now()
	for srv.ActiveRPCs() != 0 && time.Since(start) < 5*time.Second {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.ActiveRPCs(); n != 0 {
		t.Errorf("libdrpc server: %d rpcs still active 5 s after the cases", n)
	} else {
		t.Logf("libdrpc server: active rpcs reached 0 after %v", time.Since(start))
	}
}

// TestCgoBothSidesFlowControl: the binding on both sides with per-stream
// flow control, so "all" includes slow_reader_isolation.
func TestCgoBothSidesFlowControl(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startCgoServer(t, func(s *drpc.Server) error { return s.SetFlowControl(true) })
	conn, err := drpc.Dial(context.Background(), addr, drpc.FlowControl())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cl := interop.NewMuxClient(drpcstorj.NewConn(conn))
	cl.FlowControl = true
	ran := false
	for _, r := range cl.RunAll(context.Background(), []string{"all"}) {
		ran = ran || r.Name == "slow_reader_isolation"
		if r.Err != nil {
			t.Errorf("cgo client vs cgo server (mux, flow control): FAIL %s: %v", r.Name, r.Err)
		}
	}
	if !ran {
		t.Error("slow_reader_isolation did not run")
	}
}

// TestOptions: bad option values are errors; server options only before
// Listen; max concurrent streams refuses extra streams with Unavailable.
func TestOptions(t *testing.T) {
	checkNoLeaks(t)
	ctx := context.Background()
	for name, opt := range map[string]drpc.DialOption{
		"window 0":           drpc.FlowControlWindow(0, 0),
		"threshold>window":   drpc.FlowControlWindow(100, 101),
		"max streams 0":      drpc.MaxConcurrentStreams(0),
		"max message size 0": drpc.MaxMessageSize(0),
	} {
		if _, err := drpc.Dial(ctx, "127.0.0.1:1", opt); drpc.CodeOf(err) != drpc.BadArgument {
			t.Errorf("Dial with %s: %v, want BadArgument", name, err)
		}
	}
	srv, addr := startCgoServer(t, func(s *drpc.Server) error {
		if err := s.SetFlowControlWindow(100, 101); drpc.CodeOf(err) != drpc.BadArgument {
			t.Errorf("SetFlowControlWindow(100, 101): %v, want BadArgument", err)
		}
		if err := s.SetMaxConcurrentStreams(0); drpc.CodeOf(err) != drpc.BadArgument {
			t.Errorf("SetMaxConcurrentStreams(0): %v, want BadArgument", err)
		}
		if err := s.SetFlowControlWindow(1<<20, 1<<18); err != nil {
			return err
		}
		if err := s.SetMaxMessageSize(8 << 20); err != nil {
			return err
		}
		return s.SetMaxConcurrentStreams(1)
	})
	if err := srv.SetFlowControl(false); drpc.CodeOf(err) != drpc.FailedPrecondition {
		t.Errorf("SetFlowControl after Listen: %v, want FailedPrecondition", err)
	}
	conn, err := drpc.Dial(ctx, addr, drpc.FlowControlWindow(1<<20, 1<<18), drpc.MaxMessageSize(8<<20))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// One stream open: a second call is refused by the server.
	sctx, cancel := context.WithCancel(ctx)
	st, err := conn.NewStream(sctx, "/drpc.interop.TestService/FullDuplexCall", nil)
	if err != nil {
		t.Fatal(err)
	}
	for start := time.Now(); srv.ActiveRPCs() == 0 && time.Since(start) < 5*time.Second; {
		time.Sleep(5 * time.Millisecond)
	}
	if _, err := conn.Invoke(ctx, "/drpc.interop.TestService/EmptyCall", nil, nil); drpc.CodeOf(err) != drpc.Unavailable {
		t.Errorf("second stream: %v, want Unavailable", err)
	}
	cancel()
	st.Close()
	var last error
	for start := time.Now(); time.Since(start) < 5*time.Second; time.Sleep(10 * time.Millisecond) {
		if _, last = conn.Invoke(ctx, "/drpc.interop.TestService/EmptyCall", nil, nil); last == nil {
			break
		}
	}
	if last != nil {
		t.Errorf("after the stream ended: %v", last)
	}
}

// TestMetadataAndCompression: AllMetadata lists every entry the client
// sent, including drpc-compression, which compresses the call end to end.
func TestMetadataAndCompression(t *testing.T) {
	checkNoLeaks(t)
	ctx := context.Background()
	srv := drpc.NewServer()
	err := srv.Handle("/t/Meta", func(s *drpc.ServerStream) error {
		req, err := s.Recv()
		if err != nil {
			return err
		}
		md := s.AllMetadata()
		keys := make([]string, 0, len(md))
		for k := range md {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(k + "=" + md[k] + ";")
		}
		return s.Send(append([]byte(b.String()+"|"), req...))
	})
	if err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown(time.Second)
	conn, err := drpc.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := []byte(strings.Repeat("compressible ", 20000))
	for _, codec := range []string{"snappy", "minlz-fastest"} {
		resp, err := conn.Invoke(ctx, "/t/Meta", body, map[string]string{"b": "2", "a": "1", "drpc-compression": codec})
		if err != nil {
			t.Fatalf("%s: %v", codec, err)
		}
		want := "a=1;b=2;drpc-compression=" + codec + ";|" + string(body)
		if string(resp) != want {
			t.Errorf("%s: response of %d bytes, want %d (%.60q...)", codec, len(resp), len(want), resp)
		}
	}
	resp, err := conn.Invoke(ctx, "/t/Meta", []byte("x"), nil)
	if err != nil || string(resp) != "|x" {
		t.Errorf("no metadata: %q, %v", resp, err)
	}
	if _, err := conn.Invoke(ctx, "/t/Meta", nil, map[string]string{"drpc-compression": "zstd"}); drpc.CodeOf(err) != drpc.Unimplemented {
		t.Errorf("unknown codec: %v, want Unimplemented", err)
	}
}

// TestIdioms checks the Go surface directly: *Error with the code, io.EOF,
// context cancellation and deadlines, concurrent calls on one connection.
func TestIdioms(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startCgoServer(t)
	ctx := context.Background()
	conn, err := drpc.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := pb.NewDRPCTestServiceClient(drpcstorj.NewConn(conn))

	// Unknown rpc: *Error with Unimplemented.
	_, err = conn.Invoke(ctx, "/drpc.interop.TestService/UnimplementedCall", nil, nil)
	var e *drpc.Error
	if !errors.As(err, &e) || e.Code != drpc.Unimplemented || drpc.CodeOf(err) != drpc.Unimplemented {
		t.Errorf("unimplemented: %#v", err)
	}

	// Remote status: code and message verbatim.
	_, err = c.UnaryCall(ctx, &pb.SimpleRequest{ResponseStatus: &pb.EchoStatus{Code: 7, Message: "no ☺"}})
	if drpc.CodeOf(err) != drpc.PermissionDenied || err.Error() != "no ☺" {
		t.Errorf("status: %v (code %v)", err, drpc.CodeOf(err))
	}

	// Deadline: DeadlineExceeded, errors.Is context.DeadlineExceeded.
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	_, err = c.UnaryCall(dctx, &pb.SimpleRequest{SleepMs: 5000})
	cancel()
	if drpc.CodeOf(err) != drpc.DeadlineExceeded || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("deadline: %v", err)
	}

	// Cancel: Canceled, errors.Is context.Canceled; connection still fine.
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(50*time.Millisecond, cancel)
	_, err = c.UnaryCall(cctx, &pb.SimpleRequest{SleepMs: 5000})
	if drpc.CodeOf(err) != drpc.Canceled || !errors.Is(err, context.Canceled) {
		t.Errorf("cancel: %v", err)
	}

	// Stream: io.EOF at the end; cancel of a blocked Recv.
	st, err := conn.NewStream(ctx, "/drpc.interop.TestService/FullDuplexCall", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Recv(); err != io.EOF {
		t.Errorf("Recv at end: %v, want io.EOF", err)
	}
	st.Close()

	sctx, cancel := context.WithCancel(ctx)
	st, err = conn.NewStream(sctx, "/drpc.interop.TestService/FullDuplexCall", nil)
	if err != nil {
		t.Fatal(err)
	}
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := st.Recv(); drpc.CodeOf(err) != drpc.Canceled {
		t.Errorf("Recv after cancel: %v", err)
	}
	st.Close()

	// Concurrency: 50 unary calls at once on one connection overlap.
	errs := make(chan error, 50)
	start := time.Now()
	for i := 0; i < 50; i++ {
		go func() {
			_, err := c.UnaryCall(ctx, &pb.SimpleRequest{SleepMs: 200})
			errs <- err
		}()
	}
	for i := 0; i < 50; i++ {
		if err := <-errs; err != nil {
			t.Errorf("concurrent: %v", err)
		}
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("50 concurrent 200 ms calls took %v: not multiplexed", el)
	}

	// Calls on a closed connection fail with Unavailable.
	conn.Close()
	if _, err := conn.Invoke(ctx, "/drpc.interop.TestService/EmptyCall", nil, nil); drpc.CodeOf(err) != drpc.Unavailable {
		t.Errorf("after Close: %v", err)
	}
}

// Ensure the storj manager option is what interop.Dial uses (documented).
var _ = drpcmanager.Options{SoftCancel: true}
var _ = drpcconn.New
