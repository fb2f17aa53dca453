package interceptors_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/interceptors"
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

// benchClient serves benchService over bufconn with opts and returns a client.
func benchClient(b *testing.B, opts ...grpc.ServerOption) testgrpc.TestServiceClient {
	b.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, benchService{})
	go srv.Serve(lis)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatalf("grpc.NewClient() = %v", err)
	}
	b.Cleanup(func() {
		cc.Close()
		srv.Stop()
	})
	return testgrpc.NewTestServiceClient(cc)
}

func trackerOptions(t *interceptors.Tracker) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(t.StreamServerInterceptor()),
	}
}

var benchServers = []struct {
	name string
	opts func() []grpc.ServerOption
}{
	{"server=bare", func() []grpc.ServerOption { return nil }},
	{"server=tracking", func() []grpc.ServerOption { return trackerOptions(interceptors.NewTracker()) }},
	{"server=full", func() []grpc.ServerOption {
		return trackerOptions(interceptors.NewTracker(
			interceptors.WithDefaultTimeout(time.Minute),
			interceptors.WithStreamTimeout(time.Minute)))
	}},
}

func BenchmarkUnary(b *testing.B) {
	for _, s := range benchServers {
		b.Run(s.name, func(b *testing.B) {
			client := benchClient(b, s.opts()...)
			req := &testgrpc.SimpleRequest{}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.UnaryCall(context.Background(), req); err != nil {
						b.Errorf("UnaryCall() = %v", err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkServerStream(b *testing.B) {
	for _, s := range benchServers {
		b.Run(s.name, func(b *testing.B) {
			client := benchClient(b, s.opts()...)
			req := &testgrpc.StreamingOutputCallRequest{}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					stream, err := client.StreamingOutputCall(context.Background(), req)
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

// BenchmarkUnaryCredentials measures what Tracker.Credentials adds to a
// unary call, side by side with the same server given its credentials
// unwrapped: the reading of each write for its GOAWAY.
func BenchmarkUnaryCredentials(b *testing.B) {
	for _, wrapped := range []bool{false, true} {
		name := "creds=insecure"
		if wrapped {
			name = "creds=tracker"
		}
		b.Run(name, func(b *testing.B) {
			t := interceptors.NewTracker()
			creds := insecure.NewCredentials()
			if wrapped {
				creds = t.Credentials(creds)
			}
			client := benchClient(b, append(trackerOptions(t), grpc.Creds(creds))...)
			req := &testgrpc.SimpleRequest{}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := client.UnaryCall(context.Background(), req); err != nil {
					b.Fatalf("UnaryCall() = %v", err)
				}
			}
		})
	}
}
