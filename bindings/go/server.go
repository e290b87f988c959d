package drpc

/*
#include <stdlib.h>
#include "drpc.h"

extern uint32_t goStreamHandler(void *userdata, drpc_stream *stream);
*/
import "C"

import (
	"context"
	"errors"
	"io"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// StreamHandler serves one call. It returns nil to end the call cleanly or
// an error to fail it (the code is taken from a Code()/DRPCCode() uint64
// method or an *Error, else 0, which the client sees as Unknown; context errors map to Canceled /
// DeadlineExceeded).
type StreamHandler func(s *ServerStream) error

// Server is a DRPC server on libdrpc. Handlers run on libdrpc's blocking
// thread pool, one thread per running call.
type Server struct {
	s        *C.drpc_server
	mu       sync.Mutex
	handles  []unsafe.Pointer // C copies of cgo.Handles, freed after shutdown
	shutdown bool
	pending  serverChains                 // interceptors added before Listen
	chains   atomic.Pointer[serverChains] // fixed by the first Listen
	final    Metrics                      // the metrics at Shutdown
}

// route is what a registered rpc's C userdata refers to.
type route struct {
	srv *Server
	h   StreamHandler
}

// NewServer returns a server with no handlers; an unregistered rpc is
// answered with Unimplemented.
func NewServer() *Server {
	live.Add(1)
	return &Server{s: C.drpc_server_new()}
}

// setOption applies a libdrpc server setter (before Listen).
func (srv *Server) setOption(set func(*C.drpc_server) C.drpc_status) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.shutdown {
		return &Error{Code: FailedPrecondition, WireCode: uint64(FailedPrecondition), Message: "drpc: server shut down"}
	}
	if st := set(srv.s); st != C.DRPC_OK {
		msg := "drpc: invalid server option"
		if st == C.DRPC_FAILED_PRECONDITION {
			msg = "drpc: server options must be set before Listen"
		}
		wire := uint64(st)
		if st == C.DRPC_BAD_ARGUMENT {
			wire = uint64(InvalidArgument)
		}
		return &Error{Code: Code(st), WireCode: wire, Message: msg}
	}
	return nil
}

// SetMaxMessageSize sets the largest message accepted or sent on each
// connection (default 4 MiB). Before Listen.
func (srv *Server) SetMaxMessageSize(n int) error {
	if n <= 0 {
		return &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: max message size must be > 0"}
	}
	return srv.setOption(func(s *C.drpc_server) C.drpc_status {
		return C.drpc_server_set_max_message_size(s, C.size_t(n))
	})
}

// SetFlowControl turns per-stream flow control on (default window 2 MiB,
// grant threshold 512 KiB, unless SetFlowControlWindow chose others) or off
// for every connection (default off; clients must match, see FlowControl).
// Before Listen.
func (srv *Server) SetFlowControl(on bool) error {
	return srv.setOption(func(s *C.drpc_server) C.drpc_status {
		return C.drpc_server_set_flow_control(s, C.bool(on))
	})
}

// SetFlowControlWindow turns flow control on with a stream window of window
// bytes (1..2^48) and a grant threshold of grantThreshold bytes
// (1..window). Before Listen.
func (srv *Server) SetFlowControlWindow(window, grantThreshold uint64) error {
	return srv.setOption(func(s *C.drpc_server) C.drpc_status {
		return C.drpc_server_set_flow_control_window(s, C.uint64_t(window), C.uint64_t(grantThreshold))
	})
}

// SetMaxConcurrentStreams caps the streams a client may have open at once
// on one connection (default 10000); beyond it calls are refused with
// Unavailable. Before Listen.
func (srv *Server) SetMaxConcurrentStreams(n int) error {
	if n <= 0 {
		return &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: max concurrent streams must be > 0"}
	}
	return srv.setOption(func(s *C.drpc_server) C.drpc_status {
		return C.drpc_server_set_max_concurrent_streams(s, C.size_t(n))
	})
}

// Handle registers h for rpc (before Listen). Unary rpcs are served by
// stream handlers too: receive one message, send one, return nil.
func (srv *Server) Handle(rpc string, h StreamHandler) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	crpc := cString(rpc)
	defer C.free(unsafe.Pointer(crpc))
	handle := cgo.NewHandle(&route{srv: srv, h: h})
	ud := C.malloc(C.size_t(unsafe.Sizeof(handle)))
	*(*cgo.Handle)(ud) = handle
	var cerr *C.drpc_error
	if st := C.drpc_server_register_stream(srv.s, crpc, C.drpc_stream_handler(C.goStreamHandler), ud, &cerr); st != C.DRPC_OK {
		handle.Delete()
		C.free(ud)
		return takeError(st, cerr)
	}
	srv.handles = append(srv.handles, ud)
	return nil
}

// Listen binds addr ("host:port", port 0 picks one, or "unix:/path") and
// serves it in the background; it returns the bound address.
func (srv *Server) Listen(addr string) (string, error) {
	srv.freeze()
	caddr := cString(addr)
	defer C.free(unsafe.Pointer(caddr))
	var bound *C.char
	var cerr *C.drpc_error
	if st := C.drpc_server_listen(srv.s, caddr, &bound, &cerr); st != C.DRPC_OK {
		return "", takeError(st, cerr)
	}
	defer C.drpc_string_free(bound)
	return C.GoString(bound), nil
}

// ActiveRPCs is the number of handlers running now.
func (srv *Server) ActiveRPCs() int { return int(C.drpc_server_active_rpcs(srv.s)) }

// Shutdown stops accepting, lets running calls finish for up to grace, then
// cancels the rest, waits for every handler to return and releases the
// server. Idempotent.
func (srv *Server) Shutdown(grace time.Duration) error {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	if srv.shutdown {
		return nil
	}
	srv.shutdown = true
	var cerr *C.drpc_error
	st := C.drpc_server_shutdown(srv.s, C.uint64_t(grace/time.Millisecond), &cerr)
	srv.final = Metrics{FailedByCode: map[Code]uint64{}}
	var snap *C.drpc_metrics_snapshot
	if C.drpc_server_metrics_snapshot(srv.s, &snap) == C.DRPC_OK {
		srv.final = metricsOf(snap)
	}
	C.drpc_server_free(srv.s)
	live.Add(-1)
	for _, ud := range srv.handles {
		(*(*cgo.Handle)(ud)).Delete()
		C.free(ud)
	}
	srv.handles = nil
	if st != C.DRPC_OK {
		return takeError(st, cerr)
	}
	return nil
}

// ServerStream is the stream a handler serves. Valid until the handler
// returns.
type ServerStream struct {
	s   *C.drpc_stream
	ctx context.Context
	rpc string

	obsMu      sync.Mutex
	observers  []func(Direction, []byte)
	unread     [][]byte           // Unrecv'd messages, next first
	mdOverride map[string]*string // interceptors' changes; nil value: removed
	sent       atomic.Uint64
	received   atomic.Uint64
}

// RPC is the rpc name.
func (s *ServerStream) RPC() string { return s.rpc }

// Context is done once the call is cancelled (by the client, its deadline,
// a lost connection or server shutdown).
func (s *ServerStream) Context() context.Context { return s.ctx }

// Metadata returns the value of an invoke-metadata key the client sent.
func (s *ServerStream) Metadata(key string) (string, bool) {
	s.obsMu.Lock()
	override, changed := s.mdOverride[key]
	s.obsMu.Unlock()
	if changed {
		if override == nil {
			return "", false
		}
		return *override, true
	}
	ckey := cString(key)
	defer C.free(unsafe.Pointer(ckey))
	v := C.drpc_stream_metadata(s.s, ckey)
	if v == nil {
		return "", false
	}
	return C.GoString(v), true
}

// AllMetadata returns every invoke-metadata entry the client sent (an
// empty map if none).
func (s *ServerStream) AllMetadata() map[string]string {
	var n C.size_t
	if C.drpc_stream_metadata_count(s.s, &n) != C.DRPC_OK {
		return map[string]string{}
	}
	md := make(map[string]string, int(n))
	for i := C.size_t(0); i < n; i++ {
		var k, v *C.char
		if C.drpc_stream_metadata_entry(s.s, i, &k, &v) == C.DRPC_OK {
			md[C.GoString(k)] = C.GoString(v)
		}
	}
	s.obsMu.Lock()
	for k, v := range s.mdOverride {
		if v == nil {
			delete(md, k)
		} else {
			md[k] = *v
		}
	}
	s.obsMu.Unlock()
	return md
}

// Send sends one encoded message.
func (s *ServerStream) Send(msg []byte) error {
	if err := s.deadlinePassed(); err != nil {
		return err
	}
	p, n := bytesPtr(msg)
	var cerr *C.drpc_error
	if st := C.drpc_stream_send(s.s, p, n, &cerr); st != C.DRPC_OK {
		return takeError(st, cerr)
	}
	s.observe(Sent, msg)
	return nil
}

// Recv receives the next encoded message; io.EOF once the client closed
// sending.
func (s *ServerStream) Recv() ([]byte, error) {
	s.obsMu.Lock()
	if n := len(s.unread); n > 0 {
		msg := s.unread[n-1]
		s.unread = s.unread[:n-1]
		s.obsMu.Unlock()
		return msg, nil
	}
	s.obsMu.Unlock()
	var buf *C.drpc_buffer
	var cerr *C.drpc_error
	switch st := C.drpc_stream_recv(s.s, &buf, &cerr); st {
	case C.DRPC_OK:
		msg := takeBuffer(buf)
		s.observe(Received, msg)
		return msg, nil
	case C.DRPC_END:
		return nil, io.EOF
	default:
		return nil, takeError(st, cerr)
	}
}

// Unrecv puts msg back: the next Recv returns it (for an interceptor that
// read a message ahead of the handler).
func (s *ServerStream) Unrecv(msg []byte) {
	s.obsMu.Lock()
	s.unread = append(s.unread, msg)
	s.obsMu.Unlock()
}

// deadlinePassed is the error of a call whose deadline passed: the
// library fails the call at that moment too, but the context's timer may
// fire first, and nothing may be sent after it.
func (s *ServerStream) deadlinePassed() error {
	if s.ctx != nil && errors.Is(s.ctx.Err(), context.DeadlineExceeded) {
		return &Error{Code: DeadlineExceeded, WireCode: uint64(DeadlineExceeded), Message: "deadline exceeded (server)"}
	}
	return nil
}

// errorCode finds the DRPC code of a handler's error.
func errorCode(err error) uint64 {
	var e *Error
	var coded interface{ Code() uint64 }
	switch {
	case errors.As(err, &e):
		return e.WireCode
	case errors.As(err, &coded):
		return coded.Code()
	case errors.Is(err, context.Canceled):
		return uint64(Canceled)
	case errors.Is(err, context.DeadlineExceeded):
		return uint64(DeadlineExceeded)
	}
	return 0 // no code: the client sees Unknown, as with storj.io/drpc
}

//export goStreamHandler
func goStreamHandler(userdata unsafe.Pointer, stream *C.drpc_stream) C.uint32_t {
	r := (*(*cgo.Handle)(userdata)).Value().(*route)
	ss := &ServerStream{s: stream, rpc: C.GoString(C.drpc_stream_rpc(stream))}
	// The context ends at the call's deadline (DeadlineExceeded) or when
	// the call is cancelled, and carries the server span's trace context
	// and the call, so calls made with it inherit them.
	base := context.WithValue(context.Background(), serverStreamKey{}, ss)
	if tp := ss.Traceparent(); tp != "" {
		base = ContextWithTraceparent(base, tp)
	}
	var ctx context.Context
	var cancel context.CancelFunc
	if dl, ok := ss.Deadline(); ok {
		ctx, cancel = context.WithDeadline(base, dl)
	} else {
		ctx, cancel = context.WithCancel(base)
	}
	ss.ctx = ctx
	h := r.h
	if c := r.srv.chains.Load(); c != nil && len(c.stream) > 0 {
		h = chainStream(c.stream, h)
	}

	// Watch for cancellation with short waits, so that the watcher has
	// stopped touching the stream before this function returns (the stream
	// is freed by the library after that).
	stop := make(chan struct{})
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			default:
			}
			start := time.Now()
			if C.drpc_stream_wait_cancelled(stream, 20) {
				cancel()
				return
			}
			if time.Since(start) < 5*time.Millisecond {
				time.Sleep(20 * time.Millisecond) // waiting not allowed here: poll
			}
		}
	}()

	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = &Error{Code: Internal, WireCode: uint64(Internal), Message: "handler panicked"}
			}
		}()
		return h(ss)
	}()
	close(stop)
	<-watched
	if err == nil {
		err = ss.deadlinePassed()
	}
	cancel()
	if err != nil {
		cmsg := cString(err.Error())
		C.drpc_stream_fail(stream, C.uint64_t(errorCode(err)), cmsg)
		C.free(unsafe.Pointer(cmsg))
	}
	return C.DRPC_OK
}
