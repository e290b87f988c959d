// Package interop implements the test.proto interop service and the interop
// client cases of shared/interop/CASES.md on top of the real storj.io/drpc.
package interop

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"storj.io/drpc"
	"storj.io/drpc/drpcerr"
	"storj.io/drpc/drpcmetadata"
	"storj.io/drpc/drpcmux"
	"storj.io/drpc/drpcserver"

	pb "drpc-rs/tests/go/interoppb"
)

// RPC names on the wire.
const (
	rpcPrefix        = "/drpc.interop.TestService/"
	RPCUnimplemented = rpcPrefix + "UnimplementedCall"
)

// Stats are the ServerStats counters.
type Stats struct {
	total, active, cancelled, peak atomic.Int64
}

func (s *Stats) snapshot() *pb.ServerStats {
	return &pb.ServerStats{
		TotalRpcs:      s.total.Load(),
		ActiveRpcs:     s.active.Load(),
		CancelledRpcs:  s.cancelled.Load(),
		PeakActiveRpcs: s.peak.Load(),
	}
}

// callRecord is attached to each handler's context so that a cancellation is
// counted once per call, wherever the handler observes it.
type callRecord struct {
	once  sync.Once
	stats *Stats
}

type callKey struct{}

func markCancelled(ctx context.Context) {
	if rec, ok := ctx.Value(callKey{}).(*callRecord); ok {
		rec.once.Do(func() { rec.stats.cancelled.Add(1) })
	}
}

// sleep waits d or until ctx is done; it reports whether the full wait elapsed
// and counts an observed cancellation.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		markCancelled(ctx)
		return ctx.Err()
	}
}

// observed counts err as an observed cancellation if the call's context is
// done; it returns err.
func observed(ctx context.Context, err error) error {
	if err != nil && ctx.Err() != nil {
		markCancelled(ctx)
	}
	return err
}

func statusErr(st *pb.EchoStatus) error {
	if st == nil || st.GetCode() == 0 {
		return nil
	}
	// drpcerr.WithCode keeps the message verbatim; MarshalError puts the code
	// in the first 8 bytes of the Error payload.
	return drpcerr.WithCode(errors.New(st.GetMessage()), st.GetCode())
}

// service implements pb.DRPCTestServiceServer.
type service struct {
	pb.DRPCTestServiceUnimplementedServer
	stats *Stats
}

func (s *service) EmptyCall(context.Context, *pb.Empty) (*pb.Empty, error) {
	return &pb.Empty{}, nil
}

func (s *service) UnaryCall(ctx context.Context, req *pb.SimpleRequest) (*pb.SimpleResponse, error) {
	if err := sleep(ctx, time.Duration(req.GetSleepMs())*time.Millisecond); err != nil {
		return nil, err
	}
	if err := statusErr(req.GetResponseStatus()); err != nil {
		return nil, err
	}
	resp := &pb.SimpleResponse{
		Payload:            &pb.Payload{Body: make([]byte, req.GetResponseSize())},
		RequestPayloadSize: int64(len(req.GetPayload().GetBody())),
	}
	if key := req.GetEchoMetadataKey(); key != "" {
		md, _ := drpcmetadata.Get(ctx)
		resp.MetadataValue = md[key]
	}
	return resp, nil
}

type responseSender interface {
	Send(*pb.StreamingOutputCallResponse) error
	Context() context.Context
}

func sendResponses(stream responseSender, req *pb.StreamingOutputCallRequest) error {
	for _, p := range req.GetResponseParameters() {
		if err := sleep(stream.Context(), time.Duration(p.GetIntervalMs())*time.Millisecond); err != nil {
			return err
		}
		if err := stream.Send(&pb.StreamingOutputCallResponse{Payload: &pb.Payload{Body: make([]byte, p.GetSize())}}); err != nil {
			return observed(stream.Context(), err)
		}
	}
	return statusErr(req.GetResponseStatus())
}

func (s *service) StreamingOutputCall(req *pb.StreamingOutputCallRequest, stream pb.DRPCTestService_StreamingOutputCallStream) error {
	return sendResponses(stream, req)
}

func (s *service) StreamingInputCall(stream pb.DRPCTestService_StreamingInputCallStream) error {
	var total int64
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return stream.SendAndClose(&pb.StreamingInputCallResponse{AggregatedPayloadSize: total})
		} else if err != nil {
			return observed(stream.Context(), err)
		}
		total += int64(len(req.GetPayload().GetBody()))
	}
}

func (s *service) FullDuplexCall(stream pb.DRPCTestService_FullDuplexCallStream) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return observed(stream.Context(), err)
		}
		if err := sendResponses(stream, req); err != nil {
			return err
		}
	}
}

func (s *service) HalfDuplexCall(stream pb.DRPCTestService_HalfDuplexCallStream) error {
	var reqs []*pb.StreamingOutputCallRequest
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return observed(stream.Context(), err)
		}
		reqs = append(reqs, req)
	}
	for _, req := range reqs {
		if err := sendResponses(stream, req); err != nil {
			return err
		}
	}
	return nil
}

func (s *service) GetStats(context.Context, *pb.Empty) (*pb.ServerStats, error) {
	return s.stats.snapshot(), nil
}

// handler wraps the mux: it keeps the stats, refuses UnimplementedCall and
// unknown rpcs with code 12 (storj's mux would send code 0) and gives every
// call a context carrying its callRecord.
type handler struct {
	mux   *drpcmux.Mux
	known map[string]bool
	stats *Stats
}

type recordStream struct {
	drpc.Stream
	ctx context.Context
}

func (s recordStream) Context() context.Context { return s.ctx }

func (h *handler) HandleRPC(stream drpc.Stream, rpc string) error {
	h.stats.total.Add(1)
	active := h.stats.active.Add(1)
	defer h.stats.active.Add(-1)
	for {
		peak := h.stats.peak.Load()
		if active <= peak || h.stats.peak.CompareAndSwap(peak, active) {
			break
		}
	}
	if !h.known[rpc] {
		return drpcerr.WithCode(fmt.Errorf("unknown rpc: %q", rpc), drpcerr.Unimplemented)
	}
	rec := &callRecord{stats: h.stats}
	ctx := context.WithValue(stream.Context(), callKey{}, rec)
	// Cancellations are counted where the service code observes them (a
	// wait, or a streaming Send/Recv that fails), not from HandleRPC's error:
	// storj.io/drpc v1.0.0 sometimes fails the final MsgSend of a unary call
	// with context.Canceled although the response was written and the client
	// got it (seen on the call right after a soft-cancelled one).
	return h.mux.HandleRPC(recordStream{Stream: stream, ctx: ctx}, rpc)
}

// NewHandler returns a drpc.Handler serving the interop service, and its stats.
func NewHandler() (drpc.Handler, *Stats) {
	stats := new(Stats)
	mux := drpcmux.New()
	if err := pb.DRPCRegisterTestService(mux, &service{stats: stats}); err != nil {
		panic(err)
	}
	known := map[string]bool{}
	for _, rpc := range ServiceRPCs() {
		known[rpc] = true
	}
	return &handler{mux: mux, known: known, stats: stats}, stats
}

// ServiceRPCs are the rpcs NewHandler serves (UnimplementedCall excluded).
func ServiceRPCs() []string {
	var out []string
	desc := pb.DRPCTestServiceDescription{}
	for i := 0; i < desc.NumMethods(); i++ {
		if rpc, _, _, _, ok := desc.Method(i); ok && rpc != RPCUnimplemented {
			out = append(out, rpc)
		}
	}
	return out
}

// Serve serves the interop service with storj.io/drpc on lis until ctx is
// done, then waits for every connection to finish.
func Serve(ctx context.Context, lis net.Listener) error {
	h, _ := NewHandler()
	return drpcserver.New(h).Serve(ctx, lis)
}
