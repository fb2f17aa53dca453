package client

import (
	"context"
	"io"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// These benchmarks time the interceptors alone, around an invoker and a
// streamer that do nothing, so that their cost per call can be told apart
// from the noise of a whole call (see BENCHMARKS.md).

const (
	benchUnaryMethod  = "/grpc.testing.TestService/UnaryCall"
	benchStreamMethod = "/grpc.testing.TestService/StreamingOutputCall"
)

func nopInvoker(context.Context, string, any, any, *grpc.ClientConn, ...grpc.CallOption) error {
	return nil
}

// oneMessage is a ClientStream that delivers one message, then io.EOF.
type oneMessage struct {
	grpc.ClientStream
	sent bool
}

func (s *oneMessage) Header() (metadata.MD, error) { return nil, nil }
func (s *oneMessage) Context() context.Context     { return context.Background() }
func (s *oneMessage) SendMsg(any) error            { return nil }
func (s *oneMessage) CloseSend() error             { return nil }
func (s *oneMessage) RecvMsg(any) error {
	if s.sent {
		return io.EOF
	}
	s.sent = true
	return nil
}

func benchOptions() *options {
	return evaluateOptions([]Option{
		WithIdempotent(benchUnaryMethod),
		WithResume(benchStreamMethod, func(req, _ *struct{}) *struct{} { return req }),
	})
}

func BenchmarkInterceptorUnary(b *testing.B) {
	o := benchOptions()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if err := o.unary(ctx, benchUnaryMethod, nil, nil, nil, nopInvoker); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInterceptorServerStream(b *testing.B) {
	o := benchOptions()
	ctx := context.Background()
	desc := &grpc.StreamDesc{ServerStreams: true}
	var fake oneMessage
	streamer := func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, ...grpc.CallOption) (grpc.ClientStream, error) {
		fake.sent = false
		return &fake, nil
	}
	b.ReportAllocs()
	for b.Loop() {
		cs, err := o.stream(ctx, desc, nil, benchStreamMethod, streamer)
		if err != nil {
			b.Fatal(err)
		}
		if err := cs.SendMsg(nil); err != nil {
			b.Fatal(err)
		}
		if err := cs.CloseSend(); err != nil {
			b.Fatal(err)
		}
		if err := cs.RecvMsg(nil); err != nil {
			b.Fatal(err)
		}
		if err := cs.RecvMsg(nil); err != io.EOF {
			b.Fatal(err)
		}
	}
}

// BenchmarkNoInterceptorServerStream is BenchmarkInterceptorServerStream
// without the interceptor: the cost of the fake stream alone.
func BenchmarkNoInterceptorServerStream(b *testing.B) {
	ctx := context.Background()
	desc := &grpc.StreamDesc{ServerStreams: true}
	var fake oneMessage
	streamer := func(context.Context, *grpc.StreamDesc, *grpc.ClientConn, string, ...grpc.CallOption) (grpc.ClientStream, error) {
		fake.sent = false
		return &fake, nil
	}
	b.ReportAllocs()
	for b.Loop() {
		cs, err := streamer(ctx, desc, nil, benchStreamMethod)
		if err != nil {
			b.Fatal(err)
		}
		if err := cs.SendMsg(nil); err != nil {
			b.Fatal(err)
		}
		if err := cs.CloseSend(); err != nil {
			b.Fatal(err)
		}
		if err := cs.RecvMsg(nil); err != nil {
			b.Fatal(err)
		}
		if err := cs.RecvMsg(nil); err != io.EOF {
			b.Fatal(err)
		}
	}
}
