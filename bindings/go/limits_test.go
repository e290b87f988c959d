package drpc_test

import (
	"context"
	"net"
	"testing"
	"time"

	drpc "drpc-rs/bindings/go"
)

// TestLimits: the memory budget and timeouts are settable before Listen,
// bad values are BadArgument, and a silent connection is closed after the
// handshake timeout while a real client is still served.
func TestLimits(t *testing.T) {
	checkNoLeaks(t)
	_, addr := startCgoServer(t, func(s *drpc.Server) error {
		if err := s.SetMemoryBudget(-1); drpc.CodeOf(err) != drpc.BadArgument {
			t.Errorf("SetMemoryBudget(-1): %v, want BadArgument", err)
		}
		if err := s.SetConnectionMemory(0); drpc.CodeOf(err) != drpc.BadArgument {
			t.Errorf("SetConnectionMemory(0): %v, want BadArgument", err)
		}
		if err := s.SetMemoryBudget(64 << 20); err != nil {
			return err
		}
		if err := s.SetConnectionMemory(8 << 20); err != nil {
			return err
		}
		return s.SetTimeouts(200*time.Millisecond, time.Minute, 5*time.Second)
	})
	silent, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	started := time.Now()
	_ = silent.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := silent.Read(make([]byte, 1)); err == nil || n != 0 {
		t.Fatalf("silent connection: read %d bytes, %v; want it closed", n, err)
	}
	if took := time.Since(started); took < 150*time.Millisecond || took > 3*time.Second {
		t.Errorf("silent connection closed after %v, want about 200ms", took)
	}
	conn, err := drpc.Dial(context.Background(), addr, drpc.MemoryBudget(32<<20), drpc.ReadTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Invoke(context.Background(), "/drpc.interop.TestService/EmptyCall", nil, nil); err != nil {
		t.Fatalf("a real client is not served: %v", err)
	}
	if _, err := drpc.Dial(context.Background(), addr, drpc.MemoryBudget(-1)); drpc.CodeOf(err) != drpc.BadArgument {
		t.Errorf("Dial with MemoryBudget(-1): %v, want BadArgument", err)
	}
}
