// Package drpc is a cgo binding of libdrpc, the C ABI of drpc-rs (DRPC with
// stream multiplexing, wire-compatible with storj.io/drpc).
//
// Calls take a context.Context: its deadline becomes the call's timeout and
// cancelling it cancels the call (the peer gets a Cancel frame; the
// connection stays usable). Failures are *Error values carrying the DRPC
// code; Stream.Recv returns io.EOF at the clean end of a stream.
//
// Build: libdrpc.so from `cargo build --release -p drpc-ffi`; the header is
// include/drpc.h. The cgo flags below point at both, relative to this
// directory, and set an rpath so tests run without LD_LIBRARY_PATH.
package drpc

/*
#cgo CFLAGS: -I${SRCDIR}/../../include
#cgo LDFLAGS: -L${SRCDIR}/../../target/release -ldrpc -Wl,-rpath,${SRCDIR}/../../target/release
#include <stdlib.h>
#include "drpc.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// Code is a DRPC status code (gRPC numbering, DESIGN.md section 5).
type Code uint32

// The codes.
const (
	OK                 Code = 0
	Canceled           Code = 1
	Unknown            Code = 2
	InvalidArgument    Code = 3
	DeadlineExceeded   Code = 4
	NotFound           Code = 5
	AlreadyExists      Code = 6
	PermissionDenied   Code = 7
	ResourceExhausted  Code = 8
	FailedPrecondition Code = 9
	Aborted            Code = 10
	OutOfRange         Code = 11
	Unimplemented      Code = 12
	Internal           Code = 13
	Unavailable        Code = 14
	DataLoss           Code = 15
	Unauthenticated    Code = 16
	// BadArgument: this binding passed something libdrpc rejected.
	BadArgument Code = 100
)

func (c Code) String() string { return C.GoString(C.drpc_status_name(C.uint32_t(c))) }

// Error is a failed call: the DRPC code, the exact code from the wire (it may
// lie outside 0..16, Code is then Unknown) and the message (verbatim for
// remote errors).
type Error struct {
	Code     Code
	WireCode uint64
	Message  string
}

func (e *Error) Error() string { return e.Message }

// Is makes errors.Is(err, context.Canceled) and
// errors.Is(err, context.DeadlineExceeded) work for those codes.
func (e *Error) Is(target error) bool {
	switch target {
	case context.Canceled:
		return e.Code == Canceled
	case context.DeadlineExceeded:
		return e.Code == DeadlineExceeded
	}
	return false
}

// CodeOf returns the code of err: OK for nil, the code of an *Error, Canceled
// / DeadlineExceeded for the context errors, Unknown otherwise.
func CodeOf(err error) Code {
	var e *Error
	switch {
	case err == nil:
		return OK
	case errors.As(err, &e):
		return e.Code
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	}
	return Unknown
}

// takeError converts and frees a drpc_error (status is used if err is NULL).
func takeError(status C.drpc_status, cerr *C.drpc_error) error {
	if cerr == nil {
		return &Error{Code: Code(status), WireCode: uint64(status), Message: Code(status).String()}
	}
	defer C.drpc_error_free(cerr)
	msg := C.GoStringN(C.drpc_error_message(cerr), C.int(C.drpc_error_message_len(cerr)))
	return &Error{Code: Code(C.drpc_error_code(cerr)), WireCode: uint64(C.drpc_error_wire_code(cerr)), Message: msg}
}

// takeBuffer copies and frees a drpc_buffer.
func takeBuffer(buf *C.drpc_buffer) []byte {
	if buf == nil {
		return nil
	}
	defer C.drpc_buffer_free(buf)
	n := C.drpc_buffer_len(buf)
	if n == 0 {
		return []byte{}
	}
	return C.GoBytes(unsafe.Pointer(C.drpc_buffer_data(buf)), C.int(n))
}

// live counts libdrpc handles this package holds (conns, streams, calls,
// servers); tests assert it returns to its starting value.
var live atomic.Int64

// LiveHandles returns the number of libdrpc handles currently held.
func LiveHandles() int64 { return live.Load() }

// Version is libdrpc's version.
func Version() string { return C.GoString(C.drpc_version()) }

// cString allocates a C string; free it with C.free.
func cString(s string) *C.char { return C.CString(s) }

// bytesPtr points C at b for the duration of one call (libdrpc copies what
// it keeps; b holds no Go pointers).
func bytesPtr(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// metadata builds a drpc_metadata (nil for none); free with drpc_metadata_free.
func metadata(md map[string]string) (*C.drpc_metadata, error) {
	if len(md) == 0 {
		return nil, nil
	}
	m := C.drpc_metadata_new()
	for k, v := range md {
		ck, cv := cString(k), cString(v)
		st := C.drpc_metadata_set(m, ck, cv)
		C.free(unsafe.Pointer(ck))
		C.free(unsafe.Pointer(cv))
		if st != C.DRPC_OK {
			C.drpc_metadata_free(m)
			return nil, fmt.Errorf("drpc: metadata %q: %w", k, takeError(st, nil))
		}
	}
	return m, nil
}
