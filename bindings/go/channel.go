package drpc

/*
#include <stdlib.h>
#include "drpc.h"

extern void goUnaryCallback(void *userdata, drpc_call *call, drpc_status status, drpc_buffer *response, drpc_error *error);
*/
import "C"

import (
	"context"
	"fmt"
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"
)

// ChannelOption configures NewChannel. An option given a bad value makes
// NewChannel fail with BadArgument.
type ChannelOption func(*C.drpc_channel_options) C.drpc_status

// LoadBalancing is how a Channel spreads calls over its endpoints.
type LoadBalancing uint32

const (
	// PickFirst sends every call to the first endpoint (in resolver order)
	// that connects.
	PickFirst LoadBalancing = C.DRPC_LB_PICK_FIRST
	// RoundRobin sends each call to the next ready endpoint (the default).
	RoundRobin LoadBalancing = C.DRPC_LB_ROUND_ROBIN
	// PowerOfTwoChoices picks two ready endpoints at random and uses the one
	// with fewer open streams.
	PowerOfTwoChoices LoadBalancing = C.DRPC_LB_POWER_OF_TWO_CHOICES
)

// WithLoadBalancing sets the load-balancing policy.
func WithLoadBalancing(lb LoadBalancing) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		return C.drpc_channel_options_set_load_balancing(o, C.uint32_t(lb))
	}
}

// WithRetry retries calls failing with Unavailable (unary calls; streams
// while opening): maxAttempts in all (1..10; 1 = no retries), waiting a
// random time up to initial*2^(n-1), capped at max, before retry n. Every
// attempt runs within the call's one deadline. Default: 3 attempts, 50 ms,
// 1 s.
func WithRetry(maxAttempts int, initial, max time.Duration) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		if maxAttempts < 1 || initial < 0 || max < 0 {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_channel_options_set_retry(o, C.uint32_t(maxAttempts), C.uint64_t(initial/time.Millisecond), C.uint64_t(max/time.Millisecond))
	}
}

// WithRetryBudget throttles retries like gRPC: each retryable failure takes a
// token, each success gives back ratio; retries stop while half of maxTokens
// or fewer remain. maxTokens 0 turns throttling off. Default 10, 0.1.
func WithRetryBudget(maxTokens uint32, ratio float64) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		return C.drpc_channel_options_set_retry_budget(o, C.uint32_t(maxTokens), C.double(ratio))
	}
}

// WithWaitForReady makes calls wait for a ready endpoint until their
// deadline by default, instead of failing fast with Unavailable. Per call:
// Channel.WaitForReady.
func WithWaitForReady(wait bool) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		return C.drpc_channel_options_set_wait_for_ready(o, C.bool(wait))
	}
}

// WithHealthCheck watches service ("" for the whole server) with the health
// service on every connection and sends calls only to endpoints reporting
// SERVING. Servers without the health service count as serving.
func WithHealthCheck(service string) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		cs := cString(service)
		defer C.free(unsafe.Pointer(cs))
		return C.drpc_channel_options_set_health_check(o, cs)
	}
}

// WithConnectBackoff sets the wait between connection attempts to one
// endpoint: initial, growing 1.6x per failure up to max, ±20 % jitter
// (default gRPC's: 1 s to 120 s).
func WithConnectBackoff(initial, max time.Duration) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		if initial < time.Millisecond {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_channel_options_set_connect_backoff(o, C.uint64_t(initial/time.Millisecond), C.uint64_t(max/time.Millisecond))
	}
}

// WithIdleTimeout closes connections unused for d (default 30 min); they
// reopen on demand.
func WithIdleTimeout(d time.Duration) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		if d < time.Millisecond {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_channel_options_set_idle_timeout(o, C.uint64_t(d/time.Millisecond))
	}
}

// WithTCPKeepalive sends keepalive probes after idle, every interval, giving
// up after retries (whole seconds). idle 0 turns them off. Default 60 s,
// 15 s, 4.
func WithTCPKeepalive(idle, interval time.Duration, retries int) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		if retries < 0 {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_channel_options_set_tcp_keepalive(o, C.uint64_t(idle/time.Millisecond), C.uint64_t(interval/time.Millisecond), C.uint32_t(retries))
	}
}

// WithMaxConnsPerEndpoint: 1 for multiplexing peers (default); for
// sequential peers, up to n connections open as concurrent calls need them.
func WithMaxConnsPerEndpoint(n int) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		if n <= 0 {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_channel_options_set_max_conns_per_endpoint(o, C.size_t(n))
	}
}

// WithResolveInterval sets how often DNS names are re-resolved (default
// 30 s; also after connection failures).
func WithResolveInterval(d time.Duration) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		if d < time.Millisecond {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_channel_options_set_resolve_interval(o, C.uint64_t(d/time.Millisecond))
	}
}

// WithConnOptions applies Dial options (Sequential, MaxMessageSize,
// FlowControl, ...) to every connection of the channel.
func WithConnOptions(opts ...DialOption) ChannelOption {
	return func(o *C.drpc_channel_options) C.drpc_status {
		co := C.drpc_conn_options_new()
		defer C.drpc_conn_options_free(co)
		for _, opt := range opts {
			if st := opt(co); st != C.DRPC_OK {
				takePending(unsafe.Pointer(co))
				return st
			}
		}
		// The Go client interceptors go to the channel (NewChannel takes them).
		chains := takePending(unsafe.Pointer(co))
		p := pending(unsafe.Pointer(o))
		p.unary = append(p.unary, chains.unary...)
		p.stream = append(p.stream, chains.stream...)
		return C.drpc_channel_options_set_conn_options(o, co)
	}
}

// channelHandle is the libdrpc channel shared by a Channel and its
// WaitForReady views.
type channelHandle struct {
	mu sync.RWMutex // write-held by Close; read-held by every use of c
	c  *C.drpc_channel
}

// Channel is a client for the servers behind a target: it resolves the
// target, connects lazily, reconnects with backoff, balances calls, retries
// the ones that can be replayed and, optionally, follows the servers' health.
// It is the default way to call; Conn is one connection to one address.
// Safe for concurrent use.
type Channel struct {
	h      *channelHandle
	wait   C.uint32_t
	chains clientChains // client interceptors given through WithConnOptions
}

// NewChannel makes a channel for target: "dns:///host:port" (or
// "host:port"; every address of the name, re-resolved periodically and on
// failure), "unix:/path", "ipv4:1.2.3.4:5,6.7.8.9:10" or "ipv6:[::1]:5,...".
// Nothing connects until the first call (or Ready).
func NewChannel(target string, opts ...ChannelOption) (*Channel, error) {
	o := C.drpc_channel_options_new()
	defer C.drpc_channel_options_free(o)
	defer takePending(unsafe.Pointer(o))
	for i, opt := range opts {
		if st := opt(o); st != C.DRPC_OK {
			return nil, &Error{Code: Code(st), WireCode: uint64(InvalidArgument),
				Message: fmt.Sprintf("drpc: channel option %d: invalid value", i)}
		}
	}
	ctarget := cString(target)
	defer C.free(unsafe.Pointer(ctarget))
	var c *C.drpc_channel
	var cerr *C.drpc_error
	if st := C.drpc_channel_new(ctarget, o, &c, &cerr); st != C.DRPC_OK {
		return nil, takeError(st, cerr)
	}
	live.Add(1)
	return &Channel{h: &channelHandle{c: c}, wait: C.DRPC_WAIT_DEFAULT, chains: takePending(unsafe.Pointer(o))}, nil
}

// WaitForReady returns a view of the channel (sharing everything with it)
// whose calls wait for a ready endpoint until their deadline (true) or fail
// fast with Unavailable when none can be reached (false).
func (ch *Channel) WaitForReady(wait bool) *Channel {
	w := C.uint32_t(C.DRPC_FAIL_FAST)
	if wait {
		w = C.DRPC_WAIT_FOR_READY
	}
	return &Channel{h: ch.h, wait: w, chains: ch.chains}
}

func (ch *Channel) use() (*C.drpc_channel, func(), error) {
	ch.h.mu.RLock()
	if ch.h.c == nil {
		ch.h.mu.RUnlock()
		return nil, nil, &Error{Code: Unavailable, WireCode: uint64(Unavailable), Message: "channel closed"}
	}
	return ch.h.c, ch.h.mu.RUnlock, nil
}

// Close releases the channel; calls in flight complete, then its
// connections close. Idempotent; closes every WaitForReady view too.
func (ch *Channel) Close() error {
	ch.h.mu.Lock()
	defer ch.h.mu.Unlock()
	if ch.h.c != nil {
		C.drpc_channel_free(ch.h.c)
		live.Add(-1)
		ch.h.c = nil
	}
	return nil
}

// Ready starts connecting and waits until an endpoint is ready or ctx ends
// (without a deadline, at most 30 s).
func (ch *Channel) Ready(ctx context.Context) error {
	c, done, err := ch.use()
	if err != nil {
		return err
	}
	defer done()
	ms := timeoutMS(ctx)
	if ms == 0 {
		ms = 30000
	}
	var cerr *C.drpc_error
	if st := C.drpc_channel_ready(c, ms, &cerr); st != C.DRPC_OK {
		return takeError(st, cerr)
	}
	return nil
}

// ChannelStats is what a channel did so far.
type ChannelStats struct {
	Attempts, Retries, Throttled uint64
	Endpoints, ReadyEndpoints    int
}

// Stats returns the channel's counters.
func (ch *Channel) Stats() ChannelStats {
	c, done, err := ch.use()
	if err != nil {
		return ChannelStats{}
	}
	defer done()
	var st C.drpc_channel_stats
	C.drpc_channel_get_stats(c, &st)
	return ChannelStats{uint64(st.attempts), uint64(st.retries), uint64(st.throttled), int(st.endpoints), int(st.ready_endpoints)}
}

// Invoke makes a unary call of rpc with the encoded request and optional
// invoke metadata on a ready endpoint, retried per the retry policy within
// ctx's deadline, and returns the encoded response.
func (ch *Channel) Invoke(ctx context.Context, rpc string, req []byte, md map[string]string) ([]byte, error) {
	if len(ch.chains.unary) == 0 {
		return ch.invoke(ctx, rpc, req, md)
	}
	return chainUnaryClient(ch.chains.unary, ch.invoke)(ctx, rpc, req, md)
}

func (ch *Channel) invoke(ctx context.Context, rpc string, req []byte, md map[string]string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(ctx, &Error{Code: Canceled})
	}
	cmd, err := metadata(withTrace(ctx, md))
	if err != nil {
		return nil, err
	}
	defer C.drpc_metadata_free(cmd)
	crpc := cString(rpc)
	defer C.free(unsafe.Pointer(crpc))

	done := make(chan unaryResult, 1)
	h := cgo.NewHandle(done)
	defer h.Delete()
	ud := C.malloc(C.size_t(unsafe.Sizeof(h)))
	defer C.free(ud)
	*(*cgo.Handle)(ud) = h

	c, release, err := ch.use()
	if err != nil {
		return nil, err
	}
	p, n := bytesPtr(req)
	var call *C.drpc_call
	var cerr *C.drpc_error
	st := C.drpc_channel_unary_async(c, crpc, p, n, cmd, timeoutMS(ctx), ch.wait,
		C.drpc_unary_callback(C.goUnaryCallback), ud, &call, &cerr)
	release()
	if st != C.DRPC_OK {
		return nil, takeError(st, cerr)
	}
	live.Add(1)
	defer func() { C.drpc_call_free(call); live.Add(-1) }()

	var r unaryResult
	select {
	case r = <-done:
	case <-ctx.Done():
		C.drpc_call_cancel(call)
		r = <-done // the callback is called exactly once; ud must outlive it
	}
	if r.status == C.DRPC_OK {
		return takeBuffer(r.resp), nil
	}
	takeBuffer(r.resp)
	return nil, ctxError(ctx, takeError(r.status, r.err))
}

// NewStream opens a streaming call of rpc on a ready endpoint (opening is
// retried; once open, failures are the caller's). Cancelling ctx cancels
// the stream; its deadline is the stream's timeout. Close the stream when
// done.
func (ch *Channel) NewStream(ctx context.Context, rpc string, md map[string]string) (*Stream, error) {
	if len(ch.chains.stream) == 0 {
		return ch.newStream(ctx, rpc, md)
	}
	return chainStreamClient(ch.chains.stream, ch.newStream)(ctx, rpc, md)
}

func (ch *Channel) newStream(ctx context.Context, rpc string, md map[string]string) (*Stream, error) {
	if err := ctx.Err(); err != nil {
		return nil, ctxError(ctx, &Error{Code: Canceled})
	}
	cmd, err := metadata(withTrace(ctx, md))
	if err != nil {
		return nil, err
	}
	defer C.drpc_metadata_free(cmd)
	crpc := cString(rpc)
	defer C.free(unsafe.Pointer(crpc))
	c, release, err := ch.use()
	if err != nil {
		return nil, err
	}
	var s *C.drpc_stream
	var cerr *C.drpc_error
	st := C.drpc_channel_stream(c, crpc, cmd, timeoutMS(ctx), ch.wait, &s, &cerr)
	release()
	if st != C.DRPC_OK {
		return nil, ctxError(ctx, takeError(st, cerr))
	}
	live.Add(1)
	str := &Stream{ctx: ctx, s: s, stop: make(chan struct{})}
	if ctx.Done() != nil {
		str.wg.Add(1)
		go func() {
			defer str.wg.Done()
			select {
			case <-ctx.Done():
				str.mu.RLock()
				if str.s != nil {
					C.drpc_stream_cancel(str.s)
				}
				str.mu.RUnlock()
			case <-str.stop:
			}
		}()
	}
	return str, nil
}

// ServingStatus is a grpc.health.v1 serving status.
type ServingStatus uint32

const (
	ServingUnknown ServingStatus = C.DRPC_SERVING_UNKNOWN
	Serving        ServingStatus = C.DRPC_SERVING
	NotServing     ServingStatus = C.DRPC_NOT_SERVING
	ServiceUnknown ServingStatus = C.DRPC_SERVICE_UNKNOWN
)

// Health holds the per-service statuses a server reports with the
// grpc.health.v1.Health Check and Watch rpcs (Server.RegisterHealth). The
// whole server ("") starts SERVING.
type Health struct {
	mu sync.Mutex
	h  *C.drpc_health
}

// NewHealth returns health statuses with the server as a whole SERVING.
func NewHealth() *Health {
	live.Add(1)
	return &Health{h: C.drpc_health_new()}
}

// SetStatus sets the status of service ("" = the whole server). Ignored
// after Shutdown.
func (h *Health) SetStatus(service string, status ServingStatus) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h == nil {
		return &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: health closed"}
	}
	cs := cString(service)
	defer C.free(unsafe.Pointer(cs))
	if st := C.drpc_health_set_status(h.h, cs, C.uint32_t(status)); st != C.DRPC_OK {
		return &Error{Code: Code(st), WireCode: uint64(InvalidArgument), Message: "drpc: invalid serving status"}
	}
	return nil
}

// Shutdown reports every service NOT_SERVING from now on. Call it, wait a
// moment for health-checking clients to move away, then Server.Shutdown.
func (h *Health) Shutdown() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h != nil {
		C.drpc_health_shutdown(h.h)
	}
}

// Close releases h (servers keep serving what they registered). Idempotent.
func (h *Health) Close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h != nil {
		C.drpc_health_free(h.h)
		live.Add(-1)
		h.h = nil
	}
}

// RegisterHealth serves h's statuses (grpc.health.v1.Health Check and
// Watch) on srv. Before Listen.
func (srv *Server) RegisterHealth(h *Health) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.h == nil {
		return &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: health closed"}
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	var cerr *C.drpc_error
	if st := C.drpc_server_register_health(srv.s, h.h, &cerr); st != C.DRPC_OK {
		return takeError(st, cerr)
	}
	return nil
}
