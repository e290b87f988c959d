package main

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"storj.io/drpc"
	"storj.io/drpc/drpcconn"
	"storj.io/drpc/drpcserver"
)

// raw is a pass-through drpc.Encoding on *[]byte.
type raw struct{}

func (raw) Marshal(m drpc.Message) ([]byte, error) { return *m.(*[]byte), nil }
func (raw) Unmarshal(b []byte, m drpc.Message) error {
	p := m.(*[]byte)
	*p = append((*p)[:0], b...) // the reader reuses b
	return nil
}

type storjHandler struct{}

func (storjHandler) HandleRPC(s drpc.Stream, rpc string) error {
	var in []byte
	switch rpc {
	case "/bench.Bench/Unary":
		if err := s.MsgRecv(&in, raw{}); err != nil {
			return err
		}
		return s.MsgSend(&in, raw{})
	case "/bench.Bench/Stats":
		if err := s.MsgRecv(&in, raw{}); err != nil {
			return err
		}
		out := []byte(strconv.FormatUint(mallocs(), 10))
		return s.MsgSend(&out, raw{})
	case "/bench.Bench/Stream":
		if err := s.MsgRecv(&in, raw{}); err != nil {
			return err
		}
		size, d := parseStreamRequest(in)
		msg := make([]byte, size)
		end := time.Now().Add(d)
		for time.Now().Before(end) {
			if err := s.MsgSend(&msg, raw{}); err != nil {
				return err
			}
		}
		return nil
	case "/bench.Bench/Bidi":
		for {
			if err := s.MsgRecv(&in, raw{}); err != nil {
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if err := s.MsgSend(&in, raw{}); err != nil {
				return err
			}
		}
	}
	return errors.New("unimplemented")
}

func storjServer(addr string) string {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	srv := drpcserver.New(storjHandler{})
	go srv.Serve(context.Background(), lis)
	return lis.Addr().String()
}

// storjStack: a pool of connections, one per worker (storj.io/drpc runs one
// stream at a time per connection).
type storjStack struct {
	addr  string
	mu    sync.Mutex
	all   []*drpcconn.Conn
	first *storjWorker
	stats *drpcconn.Conn
}

type storjWorker struct {
	c   *drpcconn.Conn
	out []byte
}

func dialStorj(addr string) *drpcconn.Conn {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		panic(err)
	}
	return drpcconn.New(nc)
}

func newStorj(addr string) *storjStack {
	s := &storjStack{addr: addr}
	s.stats = dialStorj(addr)
	return s
}

func (s *storjStack) worker() worker {
	c := dialStorj(s.addr)
	s.mu.Lock()
	s.all = append(s.all, c)
	s.mu.Unlock()
	return &storjWorker{c: c}
}

func (s *storjStack) conns() int { s.mu.Lock(); defer s.mu.Unlock(); return len(s.all) }

func (s *storjStack) serverAllocs() uint64 {
	in, out := []byte{}, []byte{}
	if err := s.stats.Invoke(context.Background(), "/bench.Bench/Stats", raw{}, &in, &out); err != nil {
		panic(err)
	}
	n, _ := strconv.ParseUint(string(out), 10, 64)
	return n
}

func (s *storjStack) close() {
	for _, c := range s.all {
		c.Close()
	}
	s.stats.Close()
}

func (w *storjWorker) unary(data []byte) []byte {
	if err := w.c.Invoke(context.Background(), "/bench.Bench/Unary", raw{}, &data, &w.out); err != nil {
		panic(err)
	}
	return w.out
}

func (w *storjWorker) serverStream(req []byte) (uint64, uint64) {
	st, err := w.c.NewStream(context.Background(), "/bench.Bench/Stream", raw{})
	if err != nil {
		panic(err)
	}
	if err := st.MsgSend(&req, raw{}); err != nil {
		panic(err)
	}
	if err := st.CloseSend(); err != nil {
		panic(err)
	}
	var n, b uint64
	var m []byte
	for {
		if err := st.MsgRecv(&m, raw{}); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			panic(err)
		}
		n++
		b += uint64(len(m))
	}
	st.Close()
	return n, b
}

type storjBidi struct {
	st drpc.Stream
	in []byte
}

func (w *storjWorker) bidi() bidiStream {
	st, err := w.c.NewStream(context.Background(), "/bench.Bench/Bidi", raw{})
	if err != nil {
		panic(err)
	}
	return &storjBidi{st: st}
}

func (b *storjBidi) rt(data []byte) {
	if err := b.st.MsgSend(&data, raw{}); err != nil {
		panic(err)
	}
	if err := b.st.MsgRecv(&b.in, raw{}); err != nil {
		panic(err)
	}
}

func (b *storjBidi) finish() {
	b.st.CloseSend()
	for b.st.MsgRecv(&b.in, raw{}) == nil {
	}
	b.st.Close()
}
