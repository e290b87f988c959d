package drpc

/*
#include "drpc.h"
*/
import "C"

import "time"

// Memory and time limits: what a peer can make a server (or a connection)
// hold, and how long it may take. See drpc-core/README.md for what counts
// and what a peer sees at each limit.

func millis(d time.Duration) C.uint64_t {
	if d <= 0 {
		return 0
	}
	ms := d.Milliseconds()
	if ms == 0 {
		ms = 1 // a positive duration never turns into "disabled"
	}
	return C.uint64_t(ms)
}

// SetMemoryBudget sets what all the server's connections together may make
// it hold, in bytes (0: no limit; default 256 MiB): unread messages,
// packets being assembled, pending invokes, queued writes, read buffers and
// a fixed amount per connection and stream. When it is nearly full the
// server stops reading from the connections holding the most, refuses new
// streams with ResourceExhausted and closes new connections at once.
// Before Listen.
func (srv *Server) SetMemoryBudget(bytes int) error {
	if bytes < 0 {
		return &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: memory budget must be >= 0"}
	}
	return srv.setOption(func(s *C.drpc_server) C.drpc_status {
		return C.drpc_server_set_memory_budget(s, C.size_t(bytes))
	})
}

// SetConnectionMemory sets the most one connection may hold of the memory
// budget (default 64 MiB); past it the server stops reading that
// connection until its handlers read. Before Listen.
func (srv *Server) SetConnectionMemory(bytes int) error {
	if bytes <= 0 {
		return &Error{Code: BadArgument, WireCode: uint64(InvalidArgument), Message: "drpc: connection memory must be > 0"}
	}
	return srv.setOption(func(s *C.drpc_server) C.drpc_status {
		return C.drpc_server_set_connection_memory(s, C.size_t(bytes))
	})
}

// SetTimeouts closes a connection that sends no complete frame within
// handshake of being accepted (default 10 s), that holds no stream and sends
// nothing for idle (default 5 min), or whose frame takes longer than read to
// arrive (default 30 s). Zero disables each. Before Listen.
func (srv *Server) SetTimeouts(handshake, idle, read time.Duration) error {
	return srv.setOption(func(s *C.drpc_server) C.drpc_status {
		return C.drpc_server_set_timeouts(s, millis(handshake), millis(idle), millis(read))
	})
}

// MemoryBudget sets what the server can make the connection hold, in bytes
// (0: no limit; default 256 MiB).
func MemoryBudget(bytes int) DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status {
		if bytes < 0 {
			return C.DRPC_BAD_ARGUMENT
		}
		return C.drpc_conn_options_set_memory_budget(o, C.size_t(bytes))
	}
}

// ReadTimeout closes the connection when a frame from the server takes
// longer than d from its first byte to its last (0 disables; default 30 s).
func ReadTimeout(d time.Duration) DialOption {
	return func(o *C.drpc_conn_options) C.drpc_status {
		return C.drpc_conn_options_set_read_timeout(o, millis(d))
	}
}
