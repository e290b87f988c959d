package interop

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"storj.io/drpc"
	"storj.io/drpc/drpcconn"
	"storj.io/drpc/drpcerr"
	"storj.io/drpc/drpcmanager"
	"storj.io/drpc/drpcmetadata"

	pb "drpc-rs/tests/go/interoppb"
)

// DRPC error codes used by the cases (DESIGN.md section 5).
const (
	CodeUnknown          = 2
	CodeCanceled         = 1
	CodeDeadlineExceeded = 4
	CodeUnimplemented    = 12
	CodeUnavailable      = 14
)

// EveryPeerCases are the CASES.md cases that apply to sequential peers such as
// storj.io/drpc, in the order `--case all` runs them (connection_reuse last).
var EveryPeerCases = []string{
	"empty_unary",
	"large_unary",
	"client_streaming",
	"server_streaming",
	"ping_pong",
	"half_duplex",
	"empty_stream",
	"custom_metadata",
	"status_code_and_message",
	"special_status_message",
	"unimplemented_method",
	"cancel_after_begin",
	"cancel_after_first_response",
	"timeout_on_sleeping_server",
	"server_cancel_propagation",
	"connection_reuse",
}

// MuxOnlyCases need a multiplexing client; storj.io/drpc cannot run them.
var MuxOnlyCases = []string{
	"concurrent_unary",
	"interleaved_streams",
	"large_interleaved",
	"cancel_one_of_many",
	"slow_reader_isolation",
	"no_leaks",
}

// CodeOf maps an error seen by a storj.io/drpc client to a DRPC code: a remote
// Error frame carries its code (0 becomes Unknown); local cancellation and
// deadlines become Canceled and DeadlineExceeded.
func CodeOf(err error) uint64 {
	switch {
	case err == nil:
		return 0
	case drpcerr.Code(err) != 0:
		return drpcerr.Code(err)
	case errors.Is(err, context.Canceled):
		return CodeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return CodeDeadlineExceeded
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		return CodeUnavailable
	default:
		return CodeUnknown
	}
}

// Client runs cases over one storj.io/drpc connection.
type Client struct {
	conn drpc.Conn
	c    pb.DRPCTestServiceClient
	mux  bool
	// FlowControl says both sides run with per-stream flow control; then
	// "all" on a multiplexing client includes slow_reader_isolation.
	FlowControl bool
}

// NewClient runs cases over any storj.io/drpc Conn (e.g. the libdrpc
// binding's adapter in bindings/go/drpcstorj).
func NewClient(conn drpc.Conn) *Client {
	return &Client{conn: conn, c: pb.NewDRPCTestServiceClient(conn)}
}

// Dial connects to addr. The connection uses drpcmanager SoftCancel: a
// cancelled call sends a Cancel frame instead of closing the connection, so
// the cancel cases can run on the same connection as connection_reuse (with
// the default hard cancel storj.io/drpc closes the transport).
func Dial(ctx context.Context, addr string) (*Client, error) {
	var d net.Dialer
	return DialWith(ctx, addr, d.DialContext)
}

// DialWith is Dial with another way to make the byte stream (TLS, the
// drpcmigrate header, ...).
func DialWith(ctx context.Context, addr string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) (*Client, error) {
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := drpcconn.NewWithOptions(raw, drpcconn.Options{
		Manager: drpcmanager.Options{SoftCancel: true},
	})
	return NewClient(conn), nil
}

// Close closes the connection.
func (cl *Client) Close() error { return cl.conn.Close() }

// CaseTimeout bounds every case.
var CaseTimeout = 30 * time.Second

// Run runs one named case and returns nil if every check passed.
func (cl *Client) Run(ctx context.Context, name string) (err error) {
	f, ok := cases[name]
	if !ok {
		f, ok = muxCases[name]
		if ok && !cl.mux {
			return fmt.Errorf("needs a multiplexing client; this connection is sequential")
		}
	}
	if !ok {
		return fmt.Errorf("unknown case")
	}
	ctx, cancel := context.WithTimeout(ctx, CaseTimeout)
	defer cancel()
	select {
	case <-cl.conn.Closed():
		return fmt.Errorf("connection already closed before the case started")
	default:
	}
	return f(ctx, cl)
}

var cases map[string]func(context.Context, *Client) error

func init() {
	cases = map[string]func(context.Context, *Client) error{
		"empty_unary":                 emptyUnary,
		"large_unary":                 largeUnary,
		"client_streaming":            clientStreaming,
		"server_streaming":            serverStreaming,
		"ping_pong":                   pingPong,
		"half_duplex":                 halfDuplex,
		"empty_stream":                emptyStream,
		"custom_metadata":             customMetadata,
		"status_code_and_message":     func(ctx context.Context, cl *Client) error { return statusCase(ctx, cl, "test status message") },
		"special_status_message":      func(ctx context.Context, cl *Client) error { return statusCase(ctx, cl, specialMessage) },
		"unimplemented_method":        unimplementedMethod,
		"cancel_after_begin":          cancelAfterBegin,
		"cancel_after_first_response": cancelAfterFirstResponse,
		"timeout_on_sleeping_server":  timeoutOnSleepingServer,
		"server_cancel_propagation":   serverCancelPropagation,
		"connection_reuse":            emptyUnary,
	}
}

const specialMessage = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n"

var (
	responseSizes = []int32{31415, 9, 2653, 58979}
	requestSizes  = []int{27182, 8, 1828, 45904}
)

func zeros(n int) []byte { return make([]byte, n) }

func checkBody(what string, body []byte, size int) error {
	if len(body) != size {
		return fmt.Errorf("%s: body is %d bytes, want %d", what, len(body), size)
	}
	if !bytes.Equal(body, zeros(size)) {
		return fmt.Errorf("%s: body is not all zero bytes", what)
	}
	return nil
}

func expectCode(what string, err error, code uint64) error {
	if err == nil {
		return fmt.Errorf("%s: succeeded, want code %d", what, code)
	}
	if got := CodeOf(err); got != code {
		return fmt.Errorf("%s: code %d (%v), want %d", what, got, err, code)
	}
	return nil
}

func emptyUnary(ctx context.Context, cl *Client) error {
	resp, err := cl.c.EmptyCall(ctx, &pb.Empty{})
	if err != nil {
		return fmt.Errorf("EmptyCall: %w", err)
	}
	if resp == nil {
		return fmt.Errorf("EmptyCall: nil response")
	}
	return nil
}

func largeUnary(ctx context.Context, cl *Client) error {
	resp, err := cl.c.UnaryCall(ctx, &pb.SimpleRequest{
		ResponseSize: 314159,
		Payload:      &pb.Payload{Body: zeros(271828)},
	})
	if err != nil {
		return fmt.Errorf("UnaryCall: %w", err)
	}
	if err := checkBody("response", resp.GetPayload().GetBody(), 314159); err != nil {
		return err
	}
	if resp.GetRequestPayloadSize() != 271828 {
		return fmt.Errorf("request_payload_size %d, want 271828", resp.GetRequestPayloadSize())
	}
	return nil
}

func clientStreaming(ctx context.Context, cl *Client) error {
	st, err := cl.c.StreamingInputCall(ctx)
	if err != nil {
		return fmt.Errorf("StreamingInputCall: %w", err)
	}
	defer st.Close()
	for _, n := range requestSizes {
		if err := st.Send(&pb.StreamingInputCallRequest{Payload: &pb.Payload{Body: zeros(n)}}); err != nil {
			return fmt.Errorf("Send(%d): %w", n, err)
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return fmt.Errorf("CloseAndRecv: %w", err)
	}
	if resp.GetAggregatedPayloadSize() != 74922 {
		return fmt.Errorf("aggregated_payload_size %d, want 74922", resp.GetAggregatedPayloadSize())
	}
	return nil
}

func outputRequest(sizes ...int32) *pb.StreamingOutputCallRequest {
	req := &pb.StreamingOutputCallRequest{}
	for _, s := range sizes {
		req.ResponseParameters = append(req.ResponseParameters, &pb.ResponseParameters{Size: s})
	}
	return req
}

type outputReceiver interface {
	Recv() (*pb.StreamingOutputCallResponse, error)
}

func expectEnd(st outputReceiver) error {
	resp, err := st.Recv()
	if err == nil {
		return fmt.Errorf("extra response of %d bytes, want end of stream", len(resp.GetPayload().GetBody()))
	}
	if !errors.Is(err, io.EOF) {
		return fmt.Errorf("end of stream: %w (want io.EOF)", err)
	}
	return nil
}

func serverStreaming(ctx context.Context, cl *Client) error {
	st, err := cl.c.StreamingOutputCall(ctx, outputRequest(responseSizes...))
	if err != nil {
		return fmt.Errorf("StreamingOutputCall: %w", err)
	}
	defer st.Close()
	for i, s := range responseSizes {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("Recv %d: %w", i, err)
		}
		if err := checkBody(fmt.Sprintf("response %d", i), resp.GetPayload().GetBody(), int(s)); err != nil {
			return err
		}
	}
	return expectEnd(st)
}

func pingPong(ctx context.Context, cl *Client) error {
	st, err := cl.c.FullDuplexCall(ctx)
	if err != nil {
		return fmt.Errorf("FullDuplexCall: %w", err)
	}
	defer st.Close()
	for i, s := range responseSizes {
		req := outputRequest(s)
		req.Payload = &pb.Payload{Body: zeros(requestSizes[i])}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("Send %d: %w", i, err)
		}
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("Recv %d: %w", i, err)
		}
		if err := checkBody(fmt.Sprintf("response %d", i), resp.GetPayload().GetBody(), int(s)); err != nil {
			return err
		}
	}
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("CloseSend: %w", err)
	}
	return expectEnd(st)
}

func halfDuplex(ctx context.Context, cl *Client) error {
	st, err := cl.c.HalfDuplexCall(ctx)
	if err != nil {
		return fmt.Errorf("HalfDuplexCall: %w", err)
	}
	defer st.Close()
	for i, s := range responseSizes {
		req := outputRequest(s)
		req.Payload = &pb.Payload{Body: zeros(requestSizes[i])}
		if err := st.Send(req); err != nil {
			return fmt.Errorf("Send %d: %w", i, err)
		}
	}
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("CloseSend: %w", err)
	}
	for i, s := range responseSizes {
		resp, err := st.Recv()
		if err != nil {
			return fmt.Errorf("Recv %d: %w", i, err)
		}
		if err := checkBody(fmt.Sprintf("response %d", i), resp.GetPayload().GetBody(), int(s)); err != nil {
			return err
		}
	}
	return expectEnd(st)
}

func emptyStream(ctx context.Context, cl *Client) error {
	st, err := cl.c.FullDuplexCall(ctx)
	if err != nil {
		return fmt.Errorf("FullDuplexCall: %w", err)
	}
	defer st.Close()
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("CloseSend: %w", err)
	}
	return expectEnd(st)
}

func customMetadata(ctx context.Context, cl *Client) error {
	const key, value = "x-drpc-test", "hello/世界"
	ctx = drpcmetadata.Add(ctx, key, value)
	resp, err := cl.c.UnaryCall(ctx, &pb.SimpleRequest{EchoMetadataKey: key})
	if err != nil {
		return fmt.Errorf("UnaryCall: %w", err)
	}
	if resp.GetMetadataValue() != value {
		return fmt.Errorf("metadata_value %q, want %q", resp.GetMetadataValue(), value)
	}
	return nil
}

func checkStatus(what string, err error, msg string) error {
	if err := expectCode(what, err, CodeUnknown); err != nil {
		return err
	}
	if err.Error() != msg {
		return fmt.Errorf("%s: message %q, want %q", what, err.Error(), msg)
	}
	return nil
}

func statusCase(ctx context.Context, cl *Client, msg string) error {
	status := &pb.EchoStatus{Code: CodeUnknown, Message: msg}
	_, err := cl.c.UnaryCall(ctx, &pb.SimpleRequest{ResponseStatus: status})
	if err := checkStatus("UnaryCall", err, msg); err != nil {
		return err
	}
	st, err := cl.c.FullDuplexCall(ctx)
	if err != nil {
		return fmt.Errorf("FullDuplexCall: %w", err)
	}
	defer st.Close()
	if err := st.Send(&pb.StreamingOutputCallRequest{ResponseStatus: status}); err != nil {
		return fmt.Errorf("FullDuplexCall Send: %w", err)
	}
	if err := st.CloseSend(); err != nil {
		return fmt.Errorf("FullDuplexCall CloseSend: %w", err)
	}
	_, err = st.Recv()
	return checkStatus("FullDuplexCall", err, msg)
}

func unimplementedMethod(ctx context.Context, cl *Client) error {
	_, err := cl.c.UnimplementedCall(ctx, &pb.Empty{})
	return expectCode("UnimplementedCall", err, CodeUnimplemented)
}

// waitDone waits until storj.io/drpc has processed the cancellation of a
// stream (its context is done once the stream is finished), so that the next
// operation observes it instead of racing the manager goroutine.
func waitDone(ctx context.Context) {
	t := time.NewTimer(time.Second)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func cancelAfterBegin(ctx context.Context, cl *Client) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cl.c.StreamingInputCall(cctx)
	if err != nil {
		return fmt.Errorf("StreamingInputCall: %w", err)
	}
	defer st.Close()
	cancel()
	waitDone(st.Context())
	_, err = st.CloseAndRecv()
	return expectCode("StreamingInputCall after cancel", err, CodeCanceled)
}

func cancelAfterFirstResponse(ctx context.Context, cl *Client) error {
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := cl.c.FullDuplexCall(cctx)
	if err != nil {
		return fmt.Errorf("FullDuplexCall: %w", err)
	}
	defer st.Close()
	req := outputRequest(31415)
	req.Payload = &pb.Payload{Body: zeros(27182)}
	if err := st.Send(req); err != nil {
		return fmt.Errorf("Send: %w", err)
	}
	resp, err := st.Recv()
	if err != nil {
		return fmt.Errorf("Recv: %w", err)
	}
	if err := checkBody("response", resp.GetPayload().GetBody(), 31415); err != nil {
		return err
	}
	cancel()
	waitDone(st.Context())
	_, err = st.Recv()
	return expectCode("Recv after cancel", err, CodeCanceled)
}

func timeoutOnSleepingServer(ctx context.Context, cl *Client) error {
	tctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := cl.c.UnaryCall(tctx, &pb.SimpleRequest{SleepMs: 5000})
	if err := expectCode("UnaryCall", err, CodeDeadlineExceeded); err != nil {
		return err
	}
	if el := time.Since(start); el > time.Second {
		return fmt.Errorf("failed after %v, want within 1s", el)
	}
	return nil
}

func serverCancelPropagation(ctx context.Context, cl *Client) error {
	// On a multiplexing server, handlers of earlier cases (e.g. the sleeping
	// one of timeout_on_sleeping_server) may still be winding down and count
	// their cancellation after this snapshot: wait (up to 2 s) until only
	// GetStats itself is active.
	var before *pb.ServerStats
	var err error
	for settle := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		before, err = cl.c.GetStats(ctx, &pb.Empty{})
		if err != nil {
			return fmt.Errorf("GetStats: %w", err)
		}
		if before.GetActiveRpcs() <= 1 || time.Now().After(settle) {
			break
		}
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timer := time.AfterFunc(100*time.Millisecond, cancel)
	defer timer.Stop()
	_, err = cl.c.UnaryCall(cctx, &pb.SimpleRequest{SleepMs: 10000})
	if err := expectCode("UnaryCall", err, CodeCanceled); err != nil {
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		after, err := cl.c.GetStats(ctx, &pb.Empty{})
		if err != nil {
			return fmt.Errorf("GetStats after cancel: %w", err)
		}
		want := before.GetCancelledRpcs() + 1
		if after.GetCancelledRpcs() == want {
			return nil
		}
		if after.GetCancelledRpcs() > want || time.Now().After(deadline) {
			return fmt.Errorf("cancelled_rpcs %d, want %d", after.GetCancelledRpcs(), want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Result is the outcome of one case.
type Result struct {
	Name string
	Err  error
}

// RunCases dials addr once and runs the named cases in order on that
// connection ("all" expands to EveryPeerCases).
func RunCases(ctx context.Context, addr string, names []string) ([]Result, error) {
	var d net.Dialer
	return RunCasesWith(ctx, addr, names, d.DialContext)
}

// RunCasesWith is RunCases over connections made by dial.
func RunCasesWith(ctx context.Context, addr string, names []string, dial func(ctx context.Context, network, addr string) (net.Conn, error)) ([]Result, error) {
	cl, err := DialWith(ctx, addr, dial)
	if err != nil {
		return nil, err
	}
	defer cl.Close()
	return cl.RunAll(ctx, names), nil
}

// RunAll runs the named cases in order ("all" expands to EveryPeerCases, and
// for a multiplexing client also to the multiplexing cases, with
// slow_reader_isolation only if FlowControl is set; no_leaks runs last).
func (cl *Client) RunAll(ctx context.Context, names []string) []Result {
	var expanded []string
	for _, n := range names {
		if n == "all" {
			expanded = append(expanded, EveryPeerCases...)
			if cl.mux {
				for _, m := range MuxOnlyCases {
					if m == "slow_reader_isolation" && !cl.FlowControl {
						continue
					}
					if m != "no_leaks" {
						expanded = append(expanded, m)
					}
				}
				expanded = append(expanded, "no_leaks")
			}
		} else {
			expanded = append(expanded, n)
		}
	}
	var out []Result
	for _, n := range expanded {
		out = append(out, Result{Name: n, Err: cl.Run(ctx, n)})
	}
	return out
}
