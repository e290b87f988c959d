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
	"io"
	"runtime/cgo"
	"sync"
	"time"
	"unsafe"
)

// DialOption configures Dial. An option given a bad value makes Dial fail
// with BadArgument.
type DialOption func(*C.drpc_conn_options) C.drpc_status

// Sequential limits the connection to one call at a time, as a storj.io/drpc
// peer needs. The default multiplexes.
func Sequential() DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status { return C.drpc_conn_options_set_sequential(o, true) }
}

// MaxMessageSize sets the largest message sent or received (default 4 MiB).
func MaxMessageSize(n int) DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status {
		if n <= 0 {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_conn_options_set_max_message_size(o, C.size_t(n))
	}
}

// FlowControl turns on per-stream flow control (DESIGN.md section 4) with
// the default window (2 MiB, grant threshold 512 KiB): a stream whose
// reader is slow holds back only its own sender, never the other streams of
// the connection. It is not negotiated: the server must have it on too, and
// a storj.io/drpc peer cannot (it rejects the WindowUpdate frames).
func FlowControl() DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status { return C.drpc_conn_options_set_flow_control(o, true) }
}

// FlowControlWindow turns on flow control with a stream window of window
// bytes (1..2^48) and a grant threshold of grantThreshold bytes
// (1..window).
func FlowControlWindow(window, grantThreshold uint64) DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status {
		return C.drpc_conn_options_set_flow_control_window(o, C.uint64_t(window), C.uint64_t(grantThreshold))
	}
}

// MaxConcurrentStreams caps the streams (unary calls included) open at once
// on the connection (default 10000); further calls wait for a free slot.
func MaxConcurrentStreams(n int) DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status {
		if n <= 0 {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_conn_options_set_max_concurrent_streams(o, C.size_t(n))
	}
}

// Conn is a client connection. Safe for concurrent use.
type Conn struct {
	mu     sync.RWMutex // write-held by Close; read-held by every use of c
	c      *C.drpc_conn
	closed chan struct{}
	chains clientChains // client interceptors (WithUnaryInterceptors, ...)
}

// Dial connects to addr ("host:port" or "unix:/path"). ctx bounds the
// connect only.
func Dial(ctx context.Context, addr string, opts ...DialOption) (*Conn, error) {
	return dial(ctx, addr, opts, func(caddr *C.char, o *C.drpc_conn_options, c **C.drpc_conn, cerr **C.drpc_error) C.drpc_status {
		return C.drpc_conn_dial(caddr, o, c, cerr)
	})
}

// dial runs connect (which owns its other resources and is called exactly
// once) on a goroutine, so ctx can abandon the wait.
func dial(ctx context.Context, addr string, opts []DialOption,
	connect func(*C.char, *C.drpc_conn_options, **C.drpc_conn, **C.drpc_error) C.drpc_status) (*Conn, error) {
	o := C.drpc_conn_options_new()
	caddr := cString(addr)
	release := func() {
		takePending(unsafe.Pointer(o)) // dropped if an option failed
		C.drpc_conn_options_free(o)
		C.free(unsafe.Pointer(caddr))
	}
	type result struct {
		c   *C.drpc_conn
		err error
	}
	fail := func(err error) (*Conn, error) {
		// connect still owns what it holds: run it to release that, then drop its result.
		var c *C.drpc_conn
		var cerr *C.drpc_error
		if st := connect(nil, o, &c, &cerr); st != C.DRPC_OK {
			C.drpc_error_free(cerr)
		} else {
			C.drpc_conn_free(c)
		}
		release()
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}
	for i, opt := range opts {
		if st := opt(o); st != C.DRPC_OK {
			return fail(&Error{Code: Code(st), WireCode: uint64(InvalidArgument),
				Message: fmt.Sprintf("drpc: dial option %d: invalid value", i)})
		}
	}
	chains := takePending(unsafe.Pointer(o))
	done := make(chan result, 1)
	go func() {
		defer release()
		var c *C.drpc_conn
		var cerr *C.drpc_error
		if st := connect(caddr, o, &c, &cerr); st != C.DRPC_OK {
			done <- result{nil, takeError(st, cerr)}
			return
		}
		live.Add(1)
		done <- result{c, nil}
	}()
	select {
	case r := <-done:
		if r.err != nil {
			return nil, r.err
		}
		return &Conn{c: r.c, closed: make(chan struct{}), chains: chains}, nil
	case <-ctx.Done():
		// The dial goroutine still owns caddr and o: wait for it, then drop
		// the connection.
		r := <-done
		if r.c != nil {
			C.drpc_conn_free(r.c)
			live.Add(-1)
		}
		return nil, ctx.Err()
	}
}

// Close closes the connection: calls in flight fail with Unavailable, and
// the handle is released. Idempotent.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil
	}
	C.drpc_conn_close(c.c)
	C.drpc_conn_free(c.c)
	live.Add(-1)
	c.c = nil
	close(c.closed)
	return nil
}

// Closed is closed once Close has been called.
func (c *Conn) Closed() <-chan struct{} { return c.closed }

// IsClosed reports whether the connection terminated (closed here, by the
// remote or by an error).
func (c *Conn) IsClosed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.c == nil || bool(C.drpc_conn_is_closed(c.c))
}

func timeoutMS(ctx context.Context) C.uint64_t {
	dl, ok := ctx.Deadline()
	if !ok {
		return 0
	}
	d := time.Until(dl)
	if d <= 0 {
		return 1
	}
	return C.uint64_t((d + time.Millisecond - 1) / time.Millisecond)
}

// ctxError prefers the context's own verdict (e.g. DeadlineExceeded when
// the context expired, even if the library saw the cancel first).
func ctxError(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && (CodeOf(err) == Canceled || CodeOf(err) == DeadlineExceeded) {
		code := Canceled
		if cerr == context.DeadlineExceeded {
			code = DeadlineExceeded
		}
		return &Error{Code: code, WireCode: uint64(code), Message: cerr.Error()}
	}
	return err
}

type unaryResult struct {
	status C.drpc_status
	resp   *C.drpc_buffer
	err    *C.drpc_error
}

//export goUnaryCallback
func goUnaryCallback(userdata unsafe.Pointer, _ *C.drpc_call, status C.drpc_status, resp *C.drpc_buffer, cerr *C.drpc_error) {
	h := *(*cgo.Handle)(userdata)
	h.Value().(chan unaryResult) <- unaryResult{status, resp, cerr}
}

// Invoke makes a unary call of rpc with the encoded request and optional
// invoke metadata, through the connection's unary interceptors, and
// returns the encoded response. ctx's deadline is sent to the server
// (drpc-timeout) and its trace context (TraceparentFromContext: a handler's
// context has one) as "traceparent", unless md has that key.
func (c *Conn) Invoke(ctx context.Context, rpc string, req []byte, md map[string]string) ([]byte, error) {
	if len(c.chains.unary) == 0 {
		return c.invoke(ctx, rpc, req, md)
	}
	return chainUnaryClient(c.chains.unary, c.invoke)(ctx, rpc, req, md)
}

func (c *Conn) invoke(ctx context.Context, rpc string, req []byte, md map[string]string) ([]byte, error) {
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

	c.mu.RLock()
	if c.c == nil {
		c.mu.RUnlock()
		return nil, &Error{Code: Unavailable, WireCode: uint64(Unavailable), Message: "connection closed"}
	}
	p, n := bytesPtr(req)
	var call *C.drpc_call
	var cerr *C.drpc_error
	st := C.drpc_conn_unary_async(c.c, crpc, p, n, cmd, timeoutMS(ctx),
		C.drpc_unary_callback(C.goUnaryCallback), ud, &call, &cerr)
	c.mu.RUnlock()
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

// Stream is a client streaming call. Send and Recv may run concurrently
// (one sender, one receiver); Close releases it.
type Stream struct {
	ctx    context.Context
	mu     sync.RWMutex // write-held by Close
	s      *C.drpc_stream
	stop   chan struct{}
	wg     sync.WaitGroup
	closed bool

	obsMu     sync.Mutex
	observers []func(Direction, []byte)
}

// NewStream opens a streaming call of rpc, through the connection's stream
// interceptors. Cancelling ctx cancels the stream; its deadline is the
// stream's timeout (sent to the server) and its trace context is sent as
// in Invoke. Close the stream when done.
func (c *Conn) NewStream(ctx context.Context, rpc string, md map[string]string) (*Stream, error) {
	if len(c.chains.stream) == 0 {
		return c.newStream(ctx, rpc, md)
	}
	return chainStreamClient(c.chains.stream, c.newStream)(ctx, rpc, md)
}

func (c *Conn) newStream(ctx context.Context, rpc string, md map[string]string) (*Stream, error) {
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

	c.mu.RLock()
	if c.c == nil {
		c.mu.RUnlock()
		return nil, &Error{Code: Unavailable, WireCode: uint64(Unavailable), Message: "connection closed"}
	}
	var s *C.drpc_stream
	var cerr *C.drpc_error
	st := C.drpc_conn_stream(c.c, crpc, cmd, timeoutMS(ctx), &s, &cerr)
	c.mu.RUnlock()
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

// Context is the context the stream was opened with.
func (s *Stream) Context() context.Context { return s.ctx }

func (s *Stream) use() (*C.drpc_stream, func(), error) {
	s.mu.RLock()
	if s.s == nil {
		s.mu.RUnlock()
		return nil, nil, &Error{Code: Canceled, WireCode: uint64(Canceled), Message: "stream closed"}
	}
	if err := s.ctx.Err(); err != nil {
		// The context is done: cancel now rather than racing the watcher
		// goroutine, so that no operation succeeds after the cancel.
		C.drpc_stream_cancel(s.s)
		s.mu.RUnlock()
		return nil, nil, ctxError(s.ctx, &Error{Code: Canceled, WireCode: uint64(Canceled), Message: err.Error()})
	}
	return s.s, s.mu.RUnlock, nil
}

// Send sends one encoded message.
func (s *Stream) Send(msg []byte) error {
	cs, done, err := s.use()
	if err != nil {
		return err
	}
	defer done()
	p, n := bytesPtr(msg)
	var cerr *C.drpc_error
	if st := C.drpc_stream_send(cs, p, n, &cerr); st != C.DRPC_OK {
		return ctxError(s.ctx, takeError(st, cerr))
	}
	s.observe(Sent, msg)
	return nil
}

// Recv receives the next encoded message; io.EOF at the clean end.
func (s *Stream) Recv() ([]byte, error) {
	cs, done, err := s.use()
	if err != nil {
		return nil, err
	}
	defer done()
	var buf *C.drpc_buffer
	var cerr *C.drpc_error
	switch st := C.drpc_stream_recv(cs, &buf, &cerr); st {
	case C.DRPC_OK:
		msg := takeBuffer(buf)
		s.observe(Received, msg)
		return msg, nil
	case C.DRPC_END:
		return nil, io.EOF
	default:
		return nil, ctxError(s.ctx, takeError(st, cerr))
	}
}

// CloseSend tells the server no more messages follow.
func (s *Stream) CloseSend() error {
	cs, done, err := s.use()
	if err != nil {
		return err
	}
	defer done()
	var cerr *C.drpc_error
	if st := C.drpc_stream_close_send(cs, &cerr); st != C.DRPC_OK {
		return ctxError(s.ctx, takeError(st, cerr))
	}
	return nil
}

// Cancel cancels the stream (the server is told); the connection stays.
func (s *Stream) Cancel() {
	s.mu.RLock()
	if s.s != nil {
		C.drpc_stream_cancel(s.s)
	}
	s.mu.RUnlock()
}

// Close releases the stream, cancelling it if it has not finished. It waits
// for concurrent Send/Recv calls to return. Idempotent.
func (s *Stream) Close() error {
	s.mu.RLock()
	if s.s != nil {
		// Unblock a Recv in progress before taking the write lock.
		C.drpc_stream_cancel(s.s)
	}
	s.mu.RUnlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	C.drpc_stream_free(s.s)
	s.s = nil
	live.Add(-1)
	s.mu.Unlock()
	close(s.stop)
	s.wg.Wait()
	return nil
}
