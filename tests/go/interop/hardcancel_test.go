package interop

import (
	"context"
	"net"
	"testing"
	"time"

	"storj.io/drpc/drpcconn"

	pb "drpc-rs/tests/go/interoppb"
)

// hardCancel runs server_cancel_propagation the way a default storj.io/drpc
// client does it: without SoftCancel, cancelling an unfinished call closes
// the connection. The server must still see the handler cancelled; the
// stats are read over a new connection.
func hardCancel(t *testing.T, addr string) {
	ctx := context.Background()
	dial := func() (*drpcconn.Conn, pb.DRPCTestServiceClient) {
		raw, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn := drpcconn.New(raw) // default options: hard cancel
		return conn, pb.NewDRPCTestServiceClient(conn)
	}
	conn, c := dial()
	before, err := c.GetStats(ctx, &pb.Empty{})
	if err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	_, err = c.UnaryCall(cctx, &pb.SimpleRequest{SleepMs: 10000})
	if CodeOf(err) != CodeCanceled {
		t.Fatalf("UnaryCall: %v (code %d), want code 1", err, CodeOf(err))
	}
	select {
	case <-conn.Closed():
	case <-time.After(2 * time.Second):
		t.Errorf("storj.io/drpc did not close the connection on a hard cancel")
	}
	conn.Close()

	conn, c = dial()
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Second)
	for {
		after, err := c.GetStats(ctx, &pb.Empty{})
		if err != nil {
			t.Fatal(err)
		}
		if after.GetCancelledRpcs() == before.GetCancelledRpcs()+1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cancelled_rpcs %d, want %d", after.GetCancelledRpcs(), before.GetCancelledRpcs()+1)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestHardCancelStorjServer(t *testing.T) { hardCancel(t, startStorjServer(t)) }

func TestHardCancelRustServer(t *testing.T) {
	hardCancel(t, startServer(t, rustBinary(t, "drpc-interop-server")))
}
