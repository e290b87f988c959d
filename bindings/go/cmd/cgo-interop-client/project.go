package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	drpc "drpc-rs/bindings/go"
	pb "drpc-rs/tests/go/interoppb"
)

// The project cases (deadline propagation and trace context), run only
// between drpc-rs implementations: "all" includes deadline_propagation and
// trace_context; trace_chain runs only when named (tests/matrix/trace_chain.sh).
var projectCases = map[string]func(context.Context, *drpc.Conn) error{
	"deadline_propagation": deadlinePropagation,
	"trace_context":        traceContext,
	"trace_chain":          traceChain,
}

var projectInAll = []string{"deadline_propagation", "trace_context"}

const (
	rpcUnaryCall = "/drpc.interop.TestService/UnaryCall"
	rpcGetStats  = "/drpc.interop.TestService/GetStats"
	traceparent  = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
)

func unaryCall(ctx context.Context, c *drpc.Conn, req *pb.SimpleRequest, md map[string]string) (*pb.SimpleResponse, error) {
	in, err := proto.Marshal(req)
	if err != nil {
		return nil, err
	}
	out, err := c.Invoke(ctx, rpcUnaryCall, in, md)
	if err != nil {
		return nil, err
	}
	resp := &pb.SimpleResponse{}
	return resp, proto.Unmarshal(out, resp)
}

func cancelledRPCs(ctx context.Context, c *drpc.Conn) (int64, error) {
	out, err := c.Invoke(ctx, rpcGetStats, nil, nil)
	if err != nil {
		return 0, fmt.Errorf("GetStats: %w", err)
	}
	st := &pb.ServerStats{}
	if err := proto.Unmarshal(out, st); err != nil {
		return 0, err
	}
	return st.CancelledRpcs, nil
}

// parseTimeout reads gRPC's timeout grammar: 1-8 digits and a unit.
func parseTimeout(v string) (time.Duration, error) {
	if len(v) < 2 || len(v) > 9 {
		return 0, fmt.Errorf("drpc-timeout %q is malformed", v)
	}
	n, err := strconv.ParseUint(v[:len(v)-1], 10, 64)
	unit, ok := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if err != nil || !ok || strings.ContainsAny(v[:len(v)-1], "+-") {
		return 0, fmt.Errorf("drpc-timeout %q is malformed", v)
	}
	return time.Duration(n) * unit, nil
}

func echo(ctx context.Context, c *drpc.Conn, key string, md map[string]string) (string, error) {
	resp, err := unaryCall(ctx, c, &pb.SimpleRequest{EchoMetadataKey: key}, md)
	if err != nil {
		return "", fmt.Errorf("echo %s: %w", key, err)
	}
	return resp.MetadataValue, nil
}

func deadlinePropagation(ctx context.Context, c *drpc.Conn) error {
	// (a) A hand-set 100 ms drpc-timeout, no client deadline.
	before, err := cancelledRPCs(ctx, c)
	if err != nil {
		return err
	}
	start := time.Now()
	_, err = unaryCall(ctx, c, &pb.SimpleRequest{SleepMs: 5000}, map[string]string{"drpc-timeout": "100m"})
	if drpc.CodeOf(err) != drpc.DeadlineExceeded {
		return fmt.Errorf("(a) got %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took >= time.Second {
		return fmt.Errorf("(a) took %v", took)
	}
	for {
		after, err := cancelledRPCs(ctx, c)
		if err != nil {
			return err
		}
		if after >= before+1 {
			break
		}
		if time.Since(start) > 2*time.Second {
			return fmt.Errorf("(a) cancelled_rpcs %d -> %d within 2 s", before, after)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// (b) A 5 s client deadline arrives as drpc-timeout.
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	v, err := echo(dctx, c, "drpc-timeout", nil)
	if err != nil {
		return fmt.Errorf("(b) %w", err)
	}
	d, err := parseTimeout(v)
	if err != nil {
		return fmt.Errorf("(b) %w", err)
	}
	if d <= 3*time.Second || d > 5*time.Second {
		return fmt.Errorf("(b) drpc-timeout %q is %v, want (3s, 5s]", v, d)
	}
	return nil
}

func traceContext(ctx context.Context, c *drpc.Conn) error {
	v, err := echo(ctx, c, "traceparent", map[string]string{"traceparent": traceparent})
	if err != nil {
		return err
	}
	if v != traceparent {
		return fmt.Errorf("echoed traceparent %q", v)
	}
	return nil
}

func traceChain(ctx context.Context, c *drpc.Conn) error {
	dctx, cancel := context.WithTimeout(drpc.ContextWithTraceparent(ctx, traceparent), 5*time.Second)
	defer cancel()
	v, err := echo(dctx, c, "traceparent", nil)
	if err != nil {
		return err
	}
	if len(v) != 55 || v[:36] != traceparent[:36] {
		return fmt.Errorf("traceparent %q: not the same trace id", v)
	}
	if v[36:] == traceparent[36:] {
		return fmt.Errorf("traceparent %q: the same parent span", v)
	}
	v, err = echo(dctx, c, "drpc-timeout", nil)
	if err != nil {
		return err
	}
	d, err := parseTimeout(v)
	if err != nil {
		return err
	}
	if d <= 0 || d >= 5*time.Second {
		return fmt.Errorf("drpc-timeout %q is %v, want < 5s", v, d)
	}
	return nil
}
