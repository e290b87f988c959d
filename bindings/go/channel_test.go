package drpc_test

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	drpc "drpc-rs/bindings/go"
)

// whoServer answers /t.T/Who with its name and serves the health service.
type whoServer struct {
	name   string
	addr   string
	srv    *drpc.Server
	health *drpc.Health
	hits   atomic.Int64
	once   sync.Once
}

func startWho(t *testing.T, name, addr string) *whoServer {
	w := &whoServer{name: name, srv: drpc.NewServer(), health: drpc.NewHealth()}
	if err := w.srv.RegisterHealth(w.health); err != nil {
		t.Fatal(err)
	}
	err := w.srv.Handle("/t.T/Who", func(s *drpc.ServerStream) error {
		if _, err := s.Recv(); err != nil {
			return err
		}
		w.hits.Add(1)
		return s.Send([]byte(w.name))
	})
	if err != nil {
		t.Fatal(err)
	}
	if w.addr, err = w.srv.Listen(addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.stop)
	return w
}

func (w *whoServer) stop() {
	w.once.Do(func() {
		w.srv.Shutdown(time.Second)
		w.health.Close()
	})
}

func fastChannel(t *testing.T, target string, opts ...drpc.ChannelOption) *drpc.Channel {
	opts = append([]drpc.ChannelOption{drpc.WithConnectBackoff(20*time.Millisecond, 200*time.Millisecond)}, opts...)
	ch, err := drpc.NewChannel(target, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ch.Close() })
	return ch
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestChannelRoundRobinAndKill(t *testing.T) {
	checkNoLeaks(t)
	a, b, c := startWho(t, "a", "127.0.0.1:0"), startWho(t, "b", "127.0.0.1:0"), startWho(t, "c", "127.0.0.1:0")
	// A budget that allows every retry of the kill below: with eight
	// callers, more calls than the default budget (10 tokens, retries
	// while over half) reach b while it refuses streams during shutdown.
	ch := fastChannel(t, "ipv4:"+a.addr+","+b.addr+","+c.addr, drpc.WithRetry(5, 10*time.Millisecond, 100*time.Millisecond),
		drpc.WithRetryBudget(1000, 0.1))
	if err := ch.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "three ready endpoints", func() bool { return ch.Stats().ReadyEndpoints == 3 })
	count := map[string]int{}
	for i := 0; i < 300; i++ {
		resp, err := ch.Invoke(context.Background(), "/t.T/Who", nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		count[string(resp)]++
	}
	if count["a"] != 100 || count["b"] != 100 || count["c"] != 100 {
		t.Fatalf("split %v", count)
	}
	// Killing one mid-load loses no call: retries go to the others.
	var wg sync.WaitGroup
	var failures atomic.Int64
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 100; i++ {
				if _, err := ch.Invoke(context.Background(), "/t.T/Who", nil, nil); err != nil {
					t.Log(err)
					failures.Add(1)
				}
			}
		}()
	}
	waitFor(t, "load on b", func() bool { return b.hits.Load() >= 150 })
	b.stop()
	if b.hits.Load() >= 100+800/3 {
		t.Fatalf("b served the whole load before it was stopped (%d)", b.hits.Load())
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d calls failed (stats %+v)", failures.Load(), ch.Stats())
	}
	if st := ch.Stats(); st.Attempts < 1100 {
		t.Fatalf("stats %+v", st)
	}
}

func TestChannelFailFastWaitForReadyAndRestart(t *testing.T) {
	checkNoLeaks(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	ch := fastChannel(t, addr)
	_, err = ch.Invoke(context.Background(), "/t.T/Who", nil, nil)
	if drpc.CodeOf(err) != drpc.Unavailable {
		t.Fatalf("fail fast: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = ch.WaitForReady(true).Invoke(ctx, "/t.T/Who", nil, nil)
	cancel()
	if drpc.CodeOf(err) != drpc.DeadlineExceeded {
		t.Fatalf("wait for ready: %v", err)
	}
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := ch.WaitForReady(true).Invoke(ctx, "/t.T/Who", nil, nil)
		if err == nil && string(resp) != "late" {
			err = io.ErrUnexpectedEOF
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	startWho(t, "late", addr)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestChannelHealthAndStreams(t *testing.T) {
	checkNoLeaks(t)
	a, b := startWho(t, "a", "127.0.0.1:0"), startWho(t, "b", "127.0.0.1:0")
	ch := fastChannel(t, "ipv4:"+a.addr+","+b.addr, drpc.WithHealthCheck(""), drpc.WithLoadBalancing(drpc.PowerOfTwoChoices))
	if err := ch.Ready(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "two ready endpoints", func() bool { return ch.Stats().ReadyEndpoints == 2 })
	if err := a.health.SetStatus("", drpc.NotServing); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "a out of rotation", func() bool { return ch.Stats().ReadyEndpoints == 1 })
	for i := 0; i < 20; i++ {
		s, err := ch.NewStream(context.Background(), "/t.T/Who", nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Send(nil); err != nil {
			t.Fatal(err)
		}
		resp, err := s.Recv()
		if err != nil || string(resp) != "b" {
			t.Fatalf("stream answered %q, %v", resp, err)
		}
		s.Close()
	}
	if err := a.health.SetStatus("", drpc.ServingStatus(9)); drpc.CodeOf(err) != drpc.BadArgument {
		t.Fatalf("bad status: %v", err)
	}
	if _, err := drpc.NewChannel("http://x:1"); drpc.CodeOf(err) != drpc.InvalidArgument {
		t.Fatalf("bad target: %v", err)
	}
	if _, err := drpc.NewChannel("x:1", drpc.WithRetry(0, 0, 0)); drpc.CodeOf(err) != drpc.BadArgument {
		t.Fatalf("bad option: %v", err)
	}
	ch.Close()
	if _, err := ch.Invoke(context.Background(), "/t.T/Who", nil, nil); drpc.CodeOf(err) != drpc.Unavailable {
		t.Fatalf("after close: %v", err)
	}
}
