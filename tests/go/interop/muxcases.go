package interop

import (
	"context"
	"fmt"
	"sync"
	"time"

	"storj.io/drpc"

	pb "drpc-rs/tests/go/interoppb"
)

// NewMuxClient runs cases over a multiplexing drpc.Conn (one that runs
// concurrent calls on one connection, such as the libdrpc binding): the
// multiplexing-only cases are allowed too.
func NewMuxClient(conn drpc.Conn) *Client {
	cl := NewClient(conn)
	cl.mux = true
	return cl
}

var muxCases = map[string]func(context.Context, *Client) error{
	"concurrent_unary":      concurrentUnary,
	"interleaved_streams":   interleavedStreams,
	"large_interleaved":     largeInterleaved,
	"cancel_one_of_many":    cancelOneOfMany,
	"slow_reader_isolation": slowReaderIsolation,
	"no_leaks":              noLeaks,
}

func parallel(n int, f func(i int) error) error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = f(i)
		}(i)
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return fmt.Errorf("call %d: %w", i, err)
		}
	}
	return nil
}

func concurrentUnary(ctx context.Context, cl *Client) error {
	err := parallel(200, func(i int) error {
		reqSize, respSize := 100+i*7, 50+i*13
		resp, err := cl.c.UnaryCall(ctx, &pb.SimpleRequest{
			ResponseSize: int32(respSize),
			Payload:      &pb.Payload{Body: zeros(reqSize)},
			SleepMs:      int64(i % 51),
		})
		if err != nil {
			return err
		}
		if resp.GetRequestPayloadSize() != int64(reqSize) {
			return fmt.Errorf("request_payload_size %d, want %d", resp.GetRequestPayloadSize(), reqSize)
		}
		return checkBody("response", resp.GetPayload().GetBody(), respSize)
	})
	if err != nil {
		return err
	}
	st, err := cl.c.GetStats(ctx, &pb.Empty{})
	if err != nil {
		return fmt.Errorf("GetStats: %w", err)
	}
	if st.GetPeakActiveRpcs() < 2 {
		return fmt.Errorf("peak_active_rpcs %d, want >= 2", st.GetPeakActiveRpcs())
	}
	return nil
}

func interleavedStreams(ctx context.Context, cl *Client) error {
	return parallel(16, func(k int) error {
		st, err := cl.c.FullDuplexCall(ctx)
		if err != nil {
			return err
		}
		defer st.Close()
		for r := 0; r < 50; r++ {
			size := int32(k*1000 + r + 1)
			if err := st.Send(outputRequest(size)); err != nil {
				return fmt.Errorf("round %d Send: %w", r, err)
			}
			resp, err := st.Recv()
			if err != nil {
				return fmt.Errorf("round %d Recv: %w", r, err)
			}
			if got := len(resp.GetPayload().GetBody()); got != int(size) {
				return fmt.Errorf("round %d: response of %d bytes, want %d (wrong stream?)", r, got, size)
			}
		}
		if err := st.CloseSend(); err != nil {
			return err
		}
		return expectEnd(st)
	})
}

func largeInterleaved(ctx context.Context, cl *Client) error {
	const size = 3 << 20
	return parallel(4, func(i int) error {
		resp, err := cl.c.UnaryCall(ctx, &pb.SimpleRequest{ResponseSize: size, Payload: &pb.Payload{Body: zeros(size)}})
		if err != nil {
			return err
		}
		if resp.GetRequestPayloadSize() != size {
			return fmt.Errorf("request_payload_size %d, want %d", resp.GetRequestPayloadSize(), size)
		}
		return checkBody("response", resp.GetPayload().GetBody(), size)
	})
}

func cancelOneOfMany(ctx context.Context, cl *Client) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(50*time.Millisecond, cancel)
	defer timer.Stop()
	err := parallel(10, func(i int) error {
		callCtx := ctx
		if i == 3 {
			callCtx = cctx
		}
		_, err := cl.c.UnaryCall(callCtx, &pb.SimpleRequest{SleepMs: 500})
		if i == 3 {
			return expectCode("cancelled call", err, CodeCanceled)
		}
		return err
	})
	if err != nil {
		return err
	}
	return emptyUnary(ctx, cl)
}

func slowReaderIsolation(ctx context.Context, cl *Client) error {
	actx, cancelA := context.WithCancel(ctx)
	defer cancelA()
	req := &pb.StreamingOutputCallRequest{}
	for i := 0; i < 4096; i++ {
		req.ResponseParameters = append(req.ResponseParameters, &pb.ResponseParameters{Size: 64 << 10})
	}
	a, err := cl.c.StreamingOutputCall(actx, req)
	if err != nil {
		return fmt.Errorf("StreamingOutputCall: %w", err)
	}
	defer a.Close()
	start := time.Now()
	tctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for i := 0; i < 500; i++ {
		if _, err := cl.c.EmptyCall(tctx, &pb.Empty{}); err != nil {
			return fmt.Errorf("EmptyCall %d after %v: %w", i, time.Since(start), err)
		}
	}
	cancelA()
	return nil
}

func noLeaks(ctx context.Context, cl *Client) error {
	deadline := time.Now().Add(2 * time.Second)
	for {
		st, err := cl.c.GetStats(ctx, &pb.Empty{})
		if err != nil {
			return fmt.Errorf("GetStats: %w", err)
		}
		if st.GetActiveRpcs() == 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("active_rpcs %d, want 1", st.GetActiveRpcs())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
