package drpc

/*
#include <stdint.h>
#include "drpc.h"

extern void goLogCallback(void *userdata, uint32_t level, char *target, char *message);
*/
import "C"

import (
	"sync/atomic"
	"unsafe"
)

// LogLevel is the severity of a libdrpc log event.
type LogLevel uint32

// The levels, most severe first.
const (
	LogOff   LogLevel = 0
	LogError LogLevel = 1 // handler errors and panics, with the rpc and the peer
	LogWarn  LogLevel = 2 // protocol errors and refused connections, with the peer
	LogInfo  LogLevel = 3
	LogDebug LogLevel = 4
	LogTrace LogLevel = 5
)

var logger atomic.Pointer[func(LogLevel, string, string)]

// SetLogger sends libdrpc's log events of level and more severe (e.g. a
// handler's error, at LogError, with "rpc=... peer=... code=...") to f:
// target is the module that logged, message the text and its fields. f may
// run on several goroutines at once and must not call this package. nil (or
// LogOff) stops logging; by default nothing is logged. It fails if Rust
// code in the process installed its own tracing subscriber.
func SetLogger(level LogLevel, f func(level LogLevel, target, message string)) error {
	if f == nil || level == LogOff {
		if st := C.drpc_set_log_callback(C.uint32_t(LogOff), nil, nil); st != C.DRPC_OK {
			return takeError(st, nil)
		}
		logger.Store(nil)
		return nil
	}
	logger.Store(&f)
	if st := C.drpc_set_log_callback(C.uint32_t(level), C.drpc_log_callback(C.goLogCallback), nil); st != C.DRPC_OK {
		logger.Store(nil)
		return takeError(st, nil)
	}
	return nil
}

//export goLogCallback
func goLogCallback(_ unsafe.Pointer, level C.uint32_t, target, message *C.char) {
	if f := logger.Load(); f != nil {
		(*f)(LogLevel(level), C.GoString(target), C.GoString(message))
	}
}
