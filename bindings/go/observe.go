package drpc

/*
#include <stdlib.h>
#include "drpc.h"
*/
import "C"

import (
	"context"
	"sync"
	"time"
	"unsafe"
)

// ---------------------------------------------------------------------------
// Server interceptors.

// StreamServerInterceptor wraps every call of the server (streams, and
// unary calls, which are streams too): it runs before the handler, may read
// the call (ss.RPC, ss.Metadata, ss.Peer, ss.Context's deadline and trace
// context), change the metadata the handler sees (ss.SetMetadata), watch
// its messages (ss.OnMessage), reject it by returning an error without
// calling handler, and observe the outcome (handler's error, duration,
// ss.BytesSent/BytesReceived). Interceptors run in the order added, the
// first outermost.
type StreamServerInterceptor func(ss *ServerStream, handler StreamHandler) error

// UnaryHandler serves a unary call registered with HandleUnary: the
// encoded request in, the encoded response out. ctx is the call's context
// (ServerStreamFromContext gives the call).
type UnaryHandler func(ctx context.Context, req []byte) ([]byte, error)

// UnaryServerInterceptor wraps the handlers registered with HandleUnary,
// inside the stream interceptors: it sees the rpc and the request, may
// answer or fail instead of calling handler, and sees the response.
type UnaryServerInterceptor func(ctx context.Context, rpc string, req []byte, handler UnaryHandler) ([]byte, error)

type serverChains struct {
	stream []StreamServerInterceptor
	unary  []UnaryServerInterceptor
}

// AddStreamInterceptors appends interceptors to the server's stream chain.
// Before Listen (FailedPrecondition after: the chain is fixed once calls
// can arrive).
func (srv *Server) AddStreamInterceptors(ics ...StreamServerInterceptor) error {
	return srv.addInterceptors(func(c *serverChains) { c.stream = append(c.stream, ics...) })
}

// AddUnaryInterceptors appends interceptors to the server's unary chain
// (see HandleUnary). Before Listen.
func (srv *Server) AddUnaryInterceptors(ics ...UnaryServerInterceptor) error {
	return srv.addInterceptors(func(c *serverChains) { c.unary = append(c.unary, ics...) })
}

func (srv *Server) addInterceptors(add func(*serverChains)) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.shutdown || srv.chains.Load() != nil {
		return &Error{Code: FailedPrecondition, WireCode: uint64(FailedPrecondition),
			Message: "drpc: interceptors must be added before Listen"}
	}
	add(&srv.pending)
	return nil
}

// freeze fixes the interceptor chains (called before the server listens).
func (srv *Server) freeze() {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.chains.Load() == nil {
		c := srv.pending
		srv.chains.Store(&c)
	}
}

// HandleUnary registers a unary handler for rpc (before Listen): it gets the
// one request message and returns the one response, through the unary
// interceptors.
func (srv *Server) HandleUnary(rpc string, h UnaryHandler) error {
	return srv.Handle(rpc, func(ss *ServerStream) error {
		req, err := ss.Recv()
		if err != nil {
			return err
		}
		var unary []UnaryServerInterceptor
		if c := srv.chains.Load(); c != nil {
			unary = c.unary
		}
		resp, err := chainUnary(unary, rpc, h)(ss.Context(), req)
		if err != nil {
			return err
		}
		return ss.Send(resp)
	})
}

func chainUnary(ics []UnaryServerInterceptor, rpc string, h UnaryHandler) UnaryHandler {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], h
		h = func(ctx context.Context, req []byte) ([]byte, error) { return ic(ctx, rpc, req, next) }
	}
	return h
}

func chainStream(ics []StreamServerInterceptor, h StreamHandler) StreamHandler {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], h
		h = func(ss *ServerStream) error { return ic(ss, next) }
	}
	return h
}

type serverStreamKey struct{}

// ServerStreamFromContext returns the call a handler's context belongs to.
func ServerStreamFromContext(ctx context.Context) (*ServerStream, bool) {
	ss, ok := ctx.Value(serverStreamKey{}).(*ServerStream)
	return ss, ok
}

// Direction tells whether a message was sent or received.
type Direction int

// The directions.
const (
	Sent Direction = iota
	Received
)

// OnMessage adds f, called with every message the call sends or receives
// from now on (on the goroutine that sends or receives it; msg must not be
// kept). For interceptors.
func (s *ServerStream) OnMessage(f func(dir Direction, msg []byte)) {
	s.obsMu.Lock()
	s.observers = append(s.observers, f)
	s.obsMu.Unlock()
}

func (s *ServerStream) observe(dir Direction, msg []byte) {
	if dir == Sent {
		s.sent.Add(uint64(len(msg)))
	} else {
		s.received.Add(uint64(len(msg)))
	}
	s.obsMu.Lock()
	obs := s.observers
	s.obsMu.Unlock()
	for _, f := range obs {
		f(dir, msg)
	}
}

// BytesSent and BytesReceived count the message payload bytes of the call.
func (s *ServerStream) BytesSent() uint64     { return s.sent.Load() }
func (s *ServerStream) BytesReceived() uint64 { return s.received.Load() }

// SetMetadata makes Metadata and AllMetadata report value for key: an
// interceptor's change for the handler (e.g. the identity it
// authenticated).
func (s *ServerStream) SetMetadata(key, value string) {
	s.obsMu.Lock()
	defer s.obsMu.Unlock()
	if s.mdOverride == nil {
		s.mdOverride = map[string]*string{}
	}
	v := value
	s.mdOverride[key] = &v
}

// DeleteMetadata hides key from Metadata and AllMetadata.
func (s *ServerStream) DeleteMetadata(key string) {
	s.obsMu.Lock()
	defer s.obsMu.Unlock()
	if s.mdOverride == nil {
		s.mdOverride = map[string]*string{}
	}
	s.mdOverride[key] = nil
}

// Deadline is the call's deadline: the one the client sent (drpc-timeout),
// as the server's options capped it. The call's Context has it too, and
// is cancelled when it passes (the client then gets DeadlineExceeded).
func (s *ServerStream) Deadline() (time.Time, bool) {
	var us C.int64_t
	if C.drpc_stream_deadline(s.s, &us) != C.DRPC_OK || us < 0 {
		return time.Time{}, false
	}
	return time.Now().Add(time.Duration(us) * time.Microsecond), true
}

// Traceparent is the W3C trace context of the call's server span (the
// client's trace id, a new span id), "" if the client sent none. The
// call's Context carries it (TraceparentFromContext), so calls made with
// that context continue the trace.
func (s *ServerStream) Traceparent() string {
	var tp *C.char
	if C.drpc_stream_traceparent(s.s, &tp) != C.DRPC_OK || tp == nil {
		return ""
	}
	return C.GoString(tp)
}

// ---------------------------------------------------------------------------
// Trace context in a context.Context.

type traceKey struct{}

// ContextWithTraceparent returns ctx carrying a W3C traceparent
// ("00-<trace id>-<span id>-<flags>"): calls made with it send it (unless
// their metadata has a "traceparent" already).
func ContextWithTraceparent(ctx context.Context, traceparent string) context.Context {
	return context.WithValue(ctx, traceKey{}, traceparent)
}

// TraceparentFromContext returns the traceparent ctx carries: a handler's
// context carries its server span's.
func TraceparentFromContext(ctx context.Context) (string, bool) {
	tp, ok := ctx.Value(traceKey{}).(string)
	return tp, ok && tp != ""
}

// withTrace adds ctx's traceparent to md (copied) unless md has one.
func withTrace(ctx context.Context, md map[string]string) map[string]string {
	tp, ok := TraceparentFromContext(ctx)
	if !ok {
		return md
	}
	if _, has := md["traceparent"]; has {
		return md
	}
	out := make(map[string]string, len(md)+1)
	for k, v := range md {
		out[k] = v
	}
	out["traceparent"] = tp
	return out
}

// ---------------------------------------------------------------------------
// Client interceptors.

// UnaryInvoker makes a unary call (the rest of the chain, then the wire).
type UnaryInvoker func(ctx context.Context, rpc string, req []byte, md map[string]string) ([]byte, error)

// UnaryClientInterceptor wraps a Conn's unary calls: it may change ctx
// (deadline, trace context), the metadata and the request, fail the call
// without invoking, and observe the outcome. The first added is outermost.
type UnaryClientInterceptor func(ctx context.Context, rpc string, req []byte, md map[string]string, invoker UnaryInvoker) ([]byte, error)

// Streamer opens a stream (the rest of the chain, then the wire).
type Streamer func(ctx context.Context, rpc string, md map[string]string) (*Stream, error)

// StreamClientInterceptor wraps a Conn's NewStream: it may change ctx and
// the metadata, fail the call, and watch the stream (Stream.OnMessage).
type StreamClientInterceptor func(ctx context.Context, rpc string, md map[string]string, streamer Streamer) (*Stream, error)

type clientChains struct {
	unary  []UnaryClientInterceptor
	stream []StreamClientInterceptor
}

// Interceptors given as DialOptions wait here, keyed by the C options they
// were applied to, until dial takes them (a DialOption only sees the C
// options).
var pendingChains sync.Map // unsafe.Pointer -> *clientChains

func pending(o unsafe.Pointer) *clientChains {
	v, _ := pendingChains.LoadOrStore(o, &clientChains{})
	return v.(*clientChains)
}

func takePending(o unsafe.Pointer) clientChains {
	v, ok := pendingChains.LoadAndDelete(o)
	if !ok {
		return clientChains{}
	}
	return *v.(*clientChains)
}

// WithUnaryInterceptors adds client interceptors for Invoke.
func WithUnaryInterceptors(ics ...UnaryClientInterceptor) DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status {
		p := pending(unsafe.Pointer(o))
		p.unary = append(p.unary, ics...)
		return C.DRPC_OK
	}
}

// WithStreamInterceptors adds client interceptors for NewStream.
func WithStreamInterceptors(ics ...StreamClientInterceptor) DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status {
		p := pending(unsafe.Pointer(o))
		p.stream = append(p.stream, ics...)
		return C.DRPC_OK
	}
}

func chainUnaryClient(ics []UnaryClientInterceptor, last UnaryInvoker) UnaryInvoker {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], last
		last = func(ctx context.Context, rpc string, req []byte, md map[string]string) ([]byte, error) {
			return ic(ctx, rpc, req, md, next)
		}
	}
	return last
}

func chainStreamClient(ics []StreamClientInterceptor, last Streamer) Streamer {
	for i := len(ics) - 1; i >= 0; i-- {
		ic, next := ics[i], last
		last = func(ctx context.Context, rpc string, md map[string]string) (*Stream, error) {
			return ic(ctx, rpc, md, next)
		}
	}
	return last
}

// OnMessage adds f, called with every message the stream sends or
// receives from now on (msg must not be kept).
func (s *Stream) OnMessage(f func(dir Direction, msg []byte)) {
	s.obsMu.Lock()
	s.observers = append(s.observers, f)
	s.obsMu.Unlock()
}

func (s *Stream) observe(dir Direction, msg []byte) {
	s.obsMu.Lock()
	obs := s.observers
	s.obsMu.Unlock()
	for _, f := range obs {
		f(dir, msg)
	}
}

// ---------------------------------------------------------------------------
// Metrics.

// Metrics is a snapshot of a server's counters (summed over its
// connections, closed ones included) or a connection's.
type Metrics struct {
	BytesSent, BytesReceived       uint64
	StreamsOpened, StreamsClosed   uint64
	StreamsFailed                  uint64
	FailedByCode                   map[Code]uint64 // codes 0..16; codes outside under OtherCodes
	ActiveStreams                  uint64
	RecvBlocked, SendBlocked       uint64
	QueuedBytes                    uint64
	ConnectionsOpened, ActiveConns uint64
	RPCs                           []RPCStats // servers: every registered rpc, sorted by name
}

// OtherCodes is the FailedByCode key of codes outside 0..16.
const OtherCodes Code = 1000

// RPCStats are one rpc's calls and latency histogram: Counts[i] calls took
// at most BoundsMicros[i] µs (and more than the bound before); the last
// count has no bound.
type RPCStats struct {
	RPC           string
	Count, Failed uint64
	BoundsMicros  []uint64
	Counts        []uint64
	SumMicros     uint64
}

func metricsOf(snap *C.drpc_metrics_snapshot) Metrics {
	defer C.drpc_metrics_snapshot_free(snap)
	var m C.drpc_metrics
	C.drpc_metrics_snapshot_counters(snap, &m)
	out := Metrics{
		BytesSent: uint64(m.bytes_sent), BytesReceived: uint64(m.bytes_received),
		StreamsOpened: uint64(m.streams_opened), StreamsClosed: uint64(m.streams_closed),
		StreamsFailed: uint64(m.streams_failed), FailedByCode: map[Code]uint64{},
		ActiveStreams: uint64(m.active_streams), RecvBlocked: uint64(m.recv_blocked),
		SendBlocked: uint64(m.send_blocked), QueuedBytes: uint64(m.queued_bytes),
		ConnectionsOpened: uint64(m.connections_opened), ActiveConns: uint64(m.active_connections),
	}
	for code, n := range m.failed_by_code {
		if n != 0 {
			out.FailedByCode[Code(code)] = uint64(n)
		}
	}
	if m.failed_other_codes != 0 {
		out.FailedByCode[OtherCodes] = uint64(m.failed_other_codes)
	}
	for i := C.size_t(0); i < m.rpc_count; i++ {
		var r C.drpc_rpc_stats
		if C.drpc_metrics_snapshot_rpc(snap, i, &r) != C.DRPC_OK {
			continue
		}
		n := int(r.bucket_count)
		st := RPCStats{RPC: C.GoString(r.rpc), Count: uint64(r.count), Failed: uint64(r.failed),
			SumMicros: uint64(r.latency_sum_us)}
		if n > 0 {
			counts := unsafe.Slice((*uint64)(unsafe.Pointer(r.bucket_counts)), n)
			st.Counts = append([]uint64(nil), counts...)
			if n > 1 {
				bounds := unsafe.Slice((*uint64)(unsafe.Pointer(r.bucket_bounds_us)), n-1)
				st.BoundsMicros = append([]uint64(nil), bounds...)
			}
		}
		out.RPCs = append(out.RPCs, st)
	}
	return out
}

// Metrics is a snapshot of the server's metrics (zero before Listen; the
// final values after Shutdown).
func (srv *Server) Metrics() Metrics {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.shutdown {
		return srv.final
	}
	var snap *C.drpc_metrics_snapshot
	if C.drpc_server_metrics_snapshot(srv.s, &snap) != C.DRPC_OK {
		return Metrics{FailedByCode: map[Code]uint64{}}
	}
	return metricsOf(snap)
}

// Metrics is a snapshot of the connection's (client side) metrics; zero
// after Close.
func (c *Conn) Metrics() Metrics {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var snap *C.drpc_metrics_snapshot
	if c.c == nil || C.drpc_conn_metrics_snapshot(c.c, &snap) != C.DRPC_OK {
		return Metrics{FailedByCode: map[Code]uint64{}}
	}
	return metricsOf(snap)
}
