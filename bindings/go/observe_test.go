package drpc_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	storj "storj.io/drpc"
	storjconn "storj.io/drpc/drpcconn"

	drpc "drpc-rs/bindings/go"
)

// rawMsg and rawEnc let a storj.io/drpc client send and receive raw bytes.
type rawMsg struct{ b []byte }
type rawEnc struct{}

func (rawEnc) Marshal(msg storj.Message) ([]byte, error) { return msg.(*rawMsg).b, nil }
func (rawEnc) Unmarshal(buf []byte, msg storj.Message) error {
	msg.(*rawMsg).b = append([]byte(nil), buf...)
	return nil
}

const testTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// eventLog records interceptor and handler events in order.
type eventLog struct {
	mu     sync.Mutex
	events []string
}

func (l *eventLog) add(format string, args ...any) {
	l.mu.Lock()
	l.events = append(l.events, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *eventLog) reset() {
	l.mu.Lock()
	l.events = nil
	l.mu.Unlock()
}

func (l *eventLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.events, " ")
}

// waitFor polls cond for up to 5 s (server interceptors finish after the
// client has its answer).
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Errorf("timed out waiting for %s", what)
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// serve starts a binding server with setup run before Listen.
func serve(t *testing.T, setup func(*drpc.Server)) (*drpc.Server, string) {
	t.Helper()
	srv := drpc.NewServer()
	setup(srv)
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(time.Second) })
	return srv, addr
}

func dial(t *testing.T, addr string, opts ...drpc.DialOption) *drpc.Conn {
	t.Helper()
	c, err := drpc.Dial(context.Background(), addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// named logs "before NAME" / "after NAME code bytes" around the handler.
func named(log *eventLog, name string) drpc.StreamServerInterceptor {
	return func(ss *drpc.ServerStream, handler drpc.StreamHandler) error {
		log.add("before%s", name)
		err := handler(ss)
		log.add("after%s:%d:%d/%d", name, drpc.CodeOf(err), ss.BytesReceived(), ss.BytesSent())
		return err
	}
}

// auth rejects calls without an "authorization" key and hands the token
// to the handler as "x-user".
func auth(log *eventLog) drpc.StreamServerInterceptor {
	return func(ss *drpc.ServerStream, handler drpc.StreamHandler) error {
		tok, ok := ss.Metadata("authorization")
		if !ok {
			log.add("reject")
			return &drpc.Error{Code: drpc.Unauthenticated, WireCode: uint64(drpc.Unauthenticated), Message: "no token"}
		}
		ss.SetMetadata("x-user", tok)
		ss.DeleteMetadata("authorization")
		return handler(ss)
	}
}

func TestServerInterceptors(t *testing.T) {
	checkNoLeaks(t)
	log := &eventLog{}
	var seenDeadline, seenTrace, seenPeer string
	_, addr := serve(t, func(srv *drpc.Server) {
		if err := srv.AddStreamInterceptors(named(log, "1"), auth(log), named(log, "3")); err != nil {
			t.Fatal(err)
		}
		if err := srv.AddUnaryInterceptors(func(ctx context.Context, rpc string, req []byte, h drpc.UnaryHandler) ([]byte, error) {
			log.add("unary:%s", rpc)
			ss, _ := drpc.ServerStreamFromContext(ctx)
			if dl, ok := ctx.Deadline(); ok {
				seenDeadline = time.Until(dl).Round(time.Second).String()
			}
			seenTrace, _ = drpc.TraceparentFromContext(ctx)
			if p, err := ss.Peer(); err == nil {
				seenPeer = p.Addr
			}
			return h(ctx, req)
		}); err != nil {
			t.Fatal(err)
		}
		if err := srv.HandleUnary("/o/WhoAmI", func(ctx context.Context, req []byte) ([]byte, error) {
			log.add("handler")
			ss, _ := drpc.ServerStreamFromContext(ctx)
			user, _ := ss.Metadata("x-user")
			_, hasAuth := ss.AllMetadata()["authorization"]
			return []byte(fmt.Sprintf("%s|%v", user, hasAuth)), nil
		}); err != nil {
			t.Fatal(err)
		}
	})
	c := dial(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	resp, err := c.Invoke(drpc.ContextWithTraceparent(ctx, testTraceparent), "/o/WhoAmI", []byte("12345"),
		map[string]string{"authorization": "alice"})
	if err != nil || string(resp) != "alice|false" {
		t.Fatalf("call: %q, %v", resp, err)
	}
	want := "before1 before3 unary:/o/WhoAmI handler after3:0:5/11 after1:0:5/11"
	waitUntil(t, "the afters", func() bool { return log.String() == want })
	if got := log.String(); got != want {
		t.Fatalf("log %q, want %q", got, want)
	}
	if seenDeadline != "5s" {
		t.Errorf("handler deadline %q, want about 5s", seenDeadline)
	}
	if !strings.HasPrefix(seenTrace, testTraceparent[:36]) || seenTrace == testTraceparent {
		t.Errorf("server span %q, want a child of %q", seenTrace, testTraceparent)
	}
	if !strings.HasPrefix(seenPeer, "127.0.0.1:") {
		t.Errorf("peer %q", seenPeer)
	}

	// Short-circuit: no token, so neither the third interceptor nor the
	// handler runs; the first sees the code.
	log.reset()
	_, err = c.Invoke(ctx, "/o/WhoAmI", nil, nil)
	if drpc.CodeOf(err) != drpc.Unauthenticated || err.Error() != "no token" {
		t.Fatalf("rejected call: %v", err)
	}
	waitUntil(t, "the rejection", func() bool { return log.String() == "before1 reject after1:16:0/0" })
}

func TestServerInterceptorsAfterListen(t *testing.T) {
	checkNoLeaks(t)
	srv, _ := serve(t, func(*drpc.Server) {})
	if err := srv.AddStreamInterceptors(named(&eventLog{}, "x")); drpc.CodeOf(err) != drpc.FailedPrecondition {
		t.Errorf("AddStreamInterceptors after Listen: %v", err)
	}
	if err := srv.AddUnaryInterceptors(); drpc.CodeOf(err) != drpc.FailedPrecondition {
		t.Errorf("AddUnaryInterceptors after Listen: %v", err)
	}
}

func TestClientInterceptors(t *testing.T) {
	checkNoLeaks(t)
	calls := 0
	_, addr := serve(t, func(srv *drpc.Server) {
		srv.HandleUnary("/o/Meta", func(ctx context.Context, req []byte) ([]byte, error) {
			calls++
			ss, _ := drpc.ServerStreamFromContext(ctx)
			v, _ := ss.Metadata(string(req))
			return []byte(v), nil
		})
		srv.Handle("/o/Echo", func(ss *drpc.ServerStream) error {
			for {
				m, err := ss.Recv()
				if err == io.EOF {
					return nil
				} else if err != nil {
					return err
				}
				if err := ss.Send(m); err != nil {
					return err
				}
			}
		})
	})
	log := &eventLog{}
	token := func(ctx context.Context, rpc string, req []byte, md map[string]string, next drpc.UnaryInvoker) ([]byte, error) {
		log.add("token")
		if md["x-no-token"] != "" {
			return nil, &drpc.Error{Code: drpc.Unauthenticated, WireCode: 16, Message: "no token here"}
		}
		out := map[string]string{"authorization": "dave"}
		for k, v := range md {
			out[k] = v
		}
		return next(ctx, rpc, req, out)
	}
	timing := func(ctx context.Context, rpc string, req []byte, md map[string]string, next drpc.UnaryInvoker) ([]byte, error) {
		log.add("start")
		resp, err := next(ctx, rpc, req, md)
		log.add("end:%d:%d", drpc.CodeOf(err), len(resp))
		return resp, err
	}
	var streamMsgs []string
	watch := func(ctx context.Context, rpc string, md map[string]string, next drpc.Streamer) (*drpc.Stream, error) {
		s, err := next(ctx, rpc, md)
		if err == nil {
			s.OnMessage(func(d drpc.Direction, m []byte) { streamMsgs = append(streamMsgs, fmt.Sprintf("%d:%s", d, m)) })
		}
		return s, err
	}
	c := dial(t, addr, drpc.WithUnaryInterceptors(timing, token), drpc.WithStreamInterceptors(watch))
	ctx := context.Background()
	resp, err := c.Invoke(ctx, "/o/Meta", []byte("authorization"), nil)
	if err != nil || string(resp) != "dave" {
		t.Fatalf("call: %q %v", resp, err)
	}
	if got := log.String(); got != "start token end:0:4" {
		t.Errorf("log %q", got)
	}
	log.reset()
	_, err = c.Invoke(ctx, "/o/Meta", nil, map[string]string{"x-no-token": "1"})
	if drpc.CodeOf(err) != drpc.Unauthenticated || calls != 1 {
		t.Errorf("rejected: %v, server calls %d", err, calls)
	}
	if got := log.String(); got != "start token end:16:0" {
		t.Errorf("log %q", got)
	}
	s, err := c.NewStream(ctx, "/o/Echo", nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Send([]byte("a"))
	s.Recv()
	s.Close()
	if strings.Join(streamMsgs, ",") != "0:a,1:a" {
		t.Errorf("stream messages %v", streamMsgs)
	}
}

// sleeper waits for its context for up to 5 s and records how long.
type sleeper struct {
	mu     sync.Mutex
	waited time.Duration
	err    error
	done   bool
}

func (sl *sleeper) handler(ctx context.Context, req []byte) ([]byte, error) {
	start := time.Now()
	select {
	case <-ctx.Done():
	case <-time.After(5 * time.Second):
	}
	sl.mu.Lock()
	sl.waited, sl.err, sl.done = time.Since(start), ctx.Err(), true
	sl.mu.Unlock()
	return []byte("late"), nil
}

func TestDeadlines(t *testing.T) {
	checkNoLeaks(t)
	sl := &sleeper{}
	var target string
	srv, addr := serve(t, func(srv *drpc.Server) {
		srv.HandleUnary("/o/Sleep", sl.handler)
		srv.HandleUnary("/o/Meta", func(ctx context.Context, req []byte) ([]byte, error) {
			ss, _ := drpc.ServerStreamFromContext(ctx)
			v, _ := ss.Metadata(string(req))
			return []byte(v), nil
		})
		srv.HandleUnary("/o/HasDeadline", func(ctx context.Context, req []byte) ([]byte, error) {
			_, ok := ctx.Deadline()
			return []byte(strconv.FormatBool(ok)), nil
		})
		// Calls /o/Meta with the handler's context: the deadline and the
		// trace context go with it.
		srv.HandleUnary("/o/Forward", func(ctx context.Context, req []byte) ([]byte, error) {
			c, err := drpc.Dial(ctx, target)
			if err != nil {
				return nil, err
			}
			defer c.Close()
			timeout, err := c.Invoke(ctx, "/o/Meta", []byte("drpc-timeout"), nil)
			if err != nil {
				return nil, err
			}
			tp, err := c.Invoke(ctx, "/o/Meta", []byte("traceparent"), nil)
			if err != nil {
				return nil, err
			}
			own, _ := drpc.TraceparentFromContext(ctx)
			return []byte(string(timeout) + "|" + string(tp) + "|" + own), nil
		})
	})
	target = addr
	c := dial(t, addr)
	ctx := context.Background()

	// A hand-set 100 ms drpc-timeout, no client deadline: the handler's
	// context ends within 150 ms and the caller gets DeadlineExceeded.
	start := time.Now()
	_, err := c.Invoke(ctx, "/o/Sleep", nil, map[string]string{"drpc-timeout": "100m"})
	if drpc.CodeOf(err) != drpc.DeadlineExceeded || time.Since(start) > time.Second {
		t.Fatalf("sleep with drpc-timeout 100m: %v after %v", err, time.Since(start))
	}
	waitUntil(t, "the sleeper", func() bool { sl.mu.Lock(); defer sl.mu.Unlock(); return sl.done })
	if sl.waited >= 150*time.Millisecond || !errors.Is(sl.err, context.DeadlineExceeded) {
		t.Errorf("the handler waited %v (%v), want < 150 ms and DeadlineExceeded", sl.waited, sl.err)
	}

	// A client context deadline reaches the server.
	dctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	v, err := c.Invoke(dctx, "/o/Meta", []byte("drpc-timeout"), nil)
	cancel()
	if d := parseTimeout(t, string(v)); err != nil || d <= 2*time.Second || d > 3*time.Second {
		t.Errorf("drpc-timeout %q (%v), want (2s, 3s]", v, err)
	}

	// Inheritance through the handler's context.
	dctx, cancel = context.WithTimeout(drpc.ContextWithTraceparent(ctx, testTraceparent), 4*time.Second)
	v, err = c.Invoke(dctx, "/o/Forward", nil, nil)
	cancel()
	parts := strings.Split(string(v), "|")
	if err != nil || len(parts) != 3 {
		t.Fatalf("forward: %q %v", v, err)
	}
	if d := parseTimeout(t, parts[0]); d <= 2*time.Second || d >= 4*time.Second {
		t.Errorf("forwarded drpc-timeout %q", parts[0])
	}
	if parts[1] != parts[2] || !strings.HasPrefix(parts[2], testTraceparent[:36]) || parts[2] == testTraceparent {
		t.Errorf("forwarded traceparent %q, handler span %q", parts[1], parts[2])
	}

	// storj.io/drpc clients send no deadline: their calls still work and
	// the handler's context has none.
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	sc := storjconn.New(raw)
	defer sc.Close()
	out := &rawMsg{}
	if err := sc.Invoke(ctx, "/o/HasDeadline", rawEnc{}, &rawMsg{}, out); err != nil || string(out.b) != "false" {
		t.Errorf("storj call: %q %v", out.b, err)
	}
	sctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := sc.Invoke(sctx, "/o/Meta", rawEnc{}, &rawMsg{b: []byte("drpc-timeout")}, out); err != nil || len(out.b) != 0 {
		t.Errorf("storj call with a context deadline: %q %v", out.b, err)
	}
	if v, err := c.Invoke(ctx, "/o/HasDeadline", nil, nil); err != nil || string(v) != "false" {
		t.Errorf("no deadline: %q %v", v, err)
	}
	_ = srv
}

func parseTimeout(t *testing.T, v string) time.Duration {
	t.Helper()
	if len(v) < 2 || len(v) > 9 {
		t.Errorf("drpc-timeout %q is malformed", v)
		return 0
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil {
		t.Errorf("drpc-timeout %q: %v", v, err)
		return 0
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	return time.Duration(n) * unit
}

func TestMetrics(t *testing.T) {
	checkNoLeaks(t)
	sl := &sleeper{}
	srv, addr := serve(t, func(srv *drpc.Server) {
		srv.HandleUnary("/m/Ok", func(ctx context.Context, req []byte) ([]byte, error) { return req, nil })
		srv.HandleUnary("/m/NotFound", func(ctx context.Context, req []byte) ([]byte, error) {
			return nil, &drpc.Error{Code: drpc.NotFound, WireCode: 5, Message: "nope"}
		})
		srv.HandleUnary("/m/Sleep", sl.handler)
	})
	c := dial(t, addr)
	ctx := context.Background()
	for i := 0; i < 5; i++ {
		if _, err := c.Invoke(ctx, "/m/Ok", []byte("x"), nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2; i++ {
		c.Invoke(ctx, "/m/NotFound", nil, nil)
	}
	c.Invoke(ctx, "/m/Sleep", nil, map[string]string{"drpc-timeout": "50m"})
	var m drpc.Metrics
	// A call is counted in its rpc's statistics once its handler returned
	// (the sleeper's returns just after its deadline).
	waitUntil(t, "8 calls counted", func() bool {
		m = srv.Metrics()
		var n uint64
		for _, r := range m.RPCs {
			n += r.Count
		}
		return m.StreamsClosed == 8 && n == 8
	})
	if m.StreamsOpened != 8 || m.ActiveStreams != 0 || m.StreamsFailed != 3 ||
		m.FailedByCode[drpc.NotFound] != 2 || m.FailedByCode[drpc.DeadlineExceeded] != 1 ||
		m.ConnectionsOpened != 1 || m.ActiveConns != 1 || len(m.RPCs) != 3 {
		t.Errorf("server metrics %+v", m)
	}
	want := map[string][2]uint64{"/m/NotFound": {2, 2}, "/m/Ok": {5, 0}, "/m/Sleep": {1, 1}}
	for _, r := range m.RPCs {
		var total uint64
		for _, n := range r.Counts {
			total += n
		}
		if w := want[r.RPC]; r.Count != w[0] || r.Failed != w[1] || total != w[0] || len(r.BoundsMicros)+1 != len(r.Counts) {
			t.Errorf("rpc %+v, want count/failed %v", r, w)
		}
	}
	cm := c.Metrics()
	if cm.StreamsOpened != 8 || cm.StreamsFailed != 3 || cm.FailedByCode[drpc.DeadlineExceeded] != 1 {
		t.Errorf("client metrics %+v", cm)
	}
	c.Close()
	srv.Shutdown(time.Second)
	if fm := srv.Metrics(); fm.StreamsOpened != 8 || fm.ActiveConns != 0 {
		t.Errorf("final metrics %+v", fm)
	}
}

func TestLogging(t *testing.T) {
	checkNoLeaks(t)
	var mu sync.Mutex
	var lines []string
	if err := drpc.SetLogger(drpc.LogError, func(level drpc.LogLevel, target, msg string) {
		if level == drpc.LogError && strings.Contains(msg, "/l/Fail") {
			mu.Lock()
			lines = append(lines, msg)
			mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	defer drpc.SetLogger(drpc.LogOff, nil)
	_, addr := serve(t, func(srv *drpc.Server) {
		srv.HandleUnary("/l/Fail", func(ctx context.Context, req []byte) ([]byte, error) {
			return nil, &drpc.Error{Code: drpc.NotFound, WireCode: 5, Message: "nope"}
		})
	})
	c := dial(t, addr)
	if _, err := c.Invoke(context.Background(), "/l/Fail", nil, nil); drpc.CodeOf(err) != drpc.NotFound {
		t.Fatal(err)
	}
	waitUntil(t, "the error logged", func() bool { mu.Lock(); defer mu.Unlock(); return len(lines) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 1 || !strings.Contains(lines[0], "127.0.0.1:") {
		t.Errorf("logged %q, want one line with the rpc and the peer", lines)
	}
}
