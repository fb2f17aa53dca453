package client_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/client"
)

// benchService answers unary calls at once and server streams with one
// message.
type benchService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (benchService) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{}, nil
}

func (benchService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	return stream.Send(&testgrpc.StreamingOutputCallResponse{})
}

// benchClient serves benchService over bufconn and returns a client made
// with opts.
func benchClient(b *testing.B, opts ...grpc.DialOption) testgrpc.TestServiceClient {
	b.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, benchService{})
	go srv.Serve(lis)
	opts = append([]grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	}, opts...)
	cc, err := grpc.NewClient("passthrough:///bufnet", opts...)
	if err != nil {
		b.Fatalf("grpc.NewClient() = %v", err)
	}
	b.Cleanup(func() {
		cc.Close()
		srv.Stop()
	})
	return testgrpc.NewTestServiceClient(cc)
}

const (
	unaryCallMethod  = "/grpc.testing.TestService/UnaryCall"
	outputCallMethod = "/grpc.testing.TestService/StreamingOutputCall"
)

var benchClients = []struct {
	name string
	opts func() []grpc.DialOption
}{
	{"client=bare", func() []grpc.DialOption { return nil }},
	{"client=drainkit", func() []grpc.DialOption {
		return client.DialOptions(
			client.WithIdempotent(unaryCallMethod),
			client.WithResume(outputCallMethod, func(req *testgrpc.StreamingOutputCallRequest, _ *testgrpc.StreamingOutputCallResponse) *testgrpc.StreamingOutputCallRequest {
				return req
			}))
	}},
}

func BenchmarkUnary(b *testing.B) {
	for _, c := range benchClients {
		b.Run(c.name, func(b *testing.B) {
			tc := benchClient(b, c.opts()...)
			req := &testgrpc.SimpleRequest{}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := tc.UnaryCall(context.Background(), req); err != nil {
						b.Errorf("UnaryCall() = %v", err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkServerStream(b *testing.B) {
	for _, c := range benchClients {
		b.Run(c.name, func(b *testing.B) {
			tc := benchClient(b, c.opts()...)
			req := &testgrpc.StreamingOutputCallRequest{}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					stream, err := tc.StreamingOutputCall(context.Background(), req)
					if err != nil {
						b.Errorf("StreamingOutputCall() = %v", err)
						return
					}
					for {
						if _, err := stream.Recv(); err == io.EOF {
							break
						} else if err != nil {
							b.Errorf("Recv() = %v", err)
							return
						}
					}
				}
			})
		})
	}
}

// BenchmarkNewClient times NewClient and Close of an idle conn, with
// open conns already open, made the same way: bare grpc.NewClient, and
// client.NewClient, which records each in its registry.
func BenchmarkNewClient(b *testing.B) {
	makers := []struct {
		name string
		make func(string, ...grpc.DialOption) (*grpc.ClientConn, error)
	}{
		{"client=bare", grpc.NewClient},
		{"client=drainkit", client.NewClient},
	}
	creds := grpc.WithTransportCredentials(insecure.NewCredentials())
	for _, open := range []int{0, 2000, 16000} {
		for _, m := range makers {
			b.Run(fmt.Sprintf("open=%d/%s", open, m.name), func(b *testing.B) {
				ccs := make([]*grpc.ClientConn, open)
				for i := range ccs {
					cc, err := m.make("passthrough:///open", creds)
					if err != nil {
						b.Fatalf("NewClient() = %v", err)
					}
					ccs[i] = cc
				}
				defer func() {
					for _, cc := range ccs {
						cc.Close()
					}
				}()
				// The previous run's conns, closed, and these made: let
				// the collector catch up, so that neither burdens the run.
				runtime.GC()
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					cc, err := m.make("passthrough:///bench", creds)
					if err != nil {
						b.Fatalf("NewClient() = %v", err)
					}
					cc.Close()
				}
			})
		}
	}
}
