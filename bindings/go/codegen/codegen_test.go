package codegen_test

import (
	"context"
	"testing"
	"time"

	drpc "drpc-rs/bindings/go"
	"drpc-rs/bindings/go/codegen"
	"drpc-rs/bindings/go/codegen/edgepb/edgev1"
	"drpc-rs/bindings/go/codegen/edgepb/plain"
	"drpc-rs/bindings/go/drpcstorj"
)

// TestGeneratedCodeOverCgo: protoc-gen-go-drpc's generated servers (drpcmux,
// served by drpcstorj.Register) and clients (over drpcstorj.NewConn), both on
// libdrpc, for every rpc kind of the edge-case protos; then no rpc and no
// libdrpc handle is left.
func TestGeneratedCodeOverCgo(t *testing.T) {
	handles := drpc.LiveHandles()
	srv := drpc.NewServer()
	if err := codegen.Register(srv); err != nil {
		t.Fatal(err)
	}
	addr, err := srv.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := drpc.Dial(ctx, addr)
	if err != nil {
		t.Fatal(err)
	}
	results := codegen.RunClient(ctx, drpcstorj.NewConn(conn))
	if len(results) != 12 {
		t.Errorf("%d cases ran, want 12", len(results))
	}
	for _, r := range results {
		if r.Err != nil {
			t.Errorf("%s: %v", r.Name, r.Err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.ActiveRPCs() != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := srv.ActiveRPCs(); n != 0 {
		t.Errorf("%d rpcs still active", n)
	}
	if err := conn.Close(); err != nil {
		t.Error(err)
	}
	if err := srv.Shutdown(time.Second); err != nil {
		t.Error(err)
	}
	for drpc.LiveHandles() != handles && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if h := drpc.LiveHandles(); h != handles {
		t.Errorf("libdrpc handles %d -> %d", handles, h)
	}
}

// TestRPCs: drpcstorj.RPCs lists a generated description's rpcs in order.
func TestRPCs(t *testing.T) {
	got := drpcstorj.RPCs(edgev1.DRPCKeywordsDescription{}, plain.DRPCPlainDescription{})
	want := []string{"/edge.v1.Keywords/class", "/edge.v1.Keywords/import", "/edge.v1.Keywords/None", "/edge.v1.Keywords/async", "/Plain/Echo", "/Plain/Collect"}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}
