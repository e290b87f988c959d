package main

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// rawCodec passes *[]byte through (grpc-go's encoding.Codec).
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	p := v.(*[]byte)
	*p = append((*p)[:0], b...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func grpcUnary(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	return &in, nil
}

func grpcStats(srv any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	out := []byte(strconv.FormatUint(mallocs(), 10))
	return &out, nil
}

func grpcStream(srv any, s grpc.ServerStream) error {
	var in []byte
	if err := s.RecvMsg(&in); err != nil {
		return err
	}
	size, d := parseStreamRequest(in)
	msg := make([]byte, size)
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if err := s.SendMsg(&msg); err != nil {
			return err
		}
	}
	return nil
}

func grpcBidi(srv any, s grpc.ServerStream) error {
	var in []byte
	for {
		if err := s.RecvMsg(&in); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := s.SendMsg(&in); err != nil {
			return err
		}
	}
}

var benchDesc = grpc.ServiceDesc{
	ServiceName: "bench.Bench",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{
		{MethodName: "Unary", Handler: grpcUnary},
		{MethodName: "Stats", Handler: grpcStats},
	},
	Streams: []grpc.StreamDesc{
		{StreamName: "Stream", Handler: grpcStream, ServerStreams: true},
		{StreamName: "Bidi", Handler: grpcBidi, ServerStreams: true, ClientStreams: true},
	},
}

func grpcServer(addr string) string {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(&benchDesc, struct{}{})
	go srv.Serve(lis)
	return lis.Addr().String()
}

type grpcStack struct{ cc *grpc.ClientConn }

func newGrpc(addr string) *grpcStack {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		panic(err)
	}
	return &grpcStack{cc: cc}
}

type grpcWorker struct {
	cc  *grpc.ClientConn
	out []byte
}

func (s *grpcStack) worker() worker { return &grpcWorker{cc: s.cc} }
func (s *grpcStack) conns() int     { return 1 }
func (s *grpcStack) close()         { s.cc.Close() }
func (s *grpcStack) serverAllocs() uint64 {
	in, out := []byte{}, []byte{}
	if err := s.cc.Invoke(context.Background(), "/bench.Bench/Stats", &in, &out); err != nil {
		panic(err)
	}
	n, _ := strconv.ParseUint(string(out), 10, 64)
	return n
}

func (w *grpcWorker) unary(data []byte) []byte {
	if err := w.cc.Invoke(context.Background(), "/bench.Bench/Unary", &data, &w.out); err != nil {
		panic(err)
	}
	return w.out
}

func (w *grpcWorker) serverStream(req []byte) (uint64, uint64) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := w.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, "/bench.Bench/Stream")
	if err != nil {
		panic(err)
	}
	if err := st.SendMsg(&req); err != nil {
		panic(err)
	}
	if err := st.CloseSend(); err != nil {
		panic(err)
	}
	var n, b uint64
	var m []byte
	for {
		if err := st.RecvMsg(&m); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			panic(err)
		}
		n++
		b += uint64(len(m))
	}
	return n, b
}

type grpcBidiStream struct {
	st     grpc.ClientStream
	cancel context.CancelFunc
	in     []byte
}

func (w *grpcWorker) bidi() bidiStream {
	ctx, cancel := context.WithCancel(context.Background())
	st, err := w.cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, "/bench.Bench/Bidi")
	if err != nil {
		panic(err)
	}
	return &grpcBidiStream{st: st, cancel: cancel}
}

func (b *grpcBidiStream) rt(data []byte) {
	if err := b.st.SendMsg(&data); err != nil {
		panic(err)
	}
	if err := b.st.RecvMsg(&b.in); err != nil {
		panic(err)
	}
}

func (b *grpcBidiStream) finish() {
	b.st.CloseSend()
	for b.st.RecvMsg(&b.in) == nil {
	}
	b.cancel()
}
