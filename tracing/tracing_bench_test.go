package tracing_test

import (
	"context"
	"net"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/tracing"
)

// discardProcessor drops every span once it has been recorded: the cost of
// exporting is left out, that of sampling and recording kept.
type discardProcessor struct{}

func (discardProcessor) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (discardProcessor) OnEnd(sdktrace.ReadOnlySpan)                     {}
func (discardProcessor) Shutdown(context.Context) error                  { return nil }
func (discardProcessor) ForceFlush(context.Context) error                { return nil }

// benchProviders returns an SDK TracerProvider that samples every span and a
// MeterProvider that aggregates every measurement, as in production, minus
// the export.
func benchProviders(b *testing.B) (*sdktrace.TracerProvider, *sdkmetric.MeterProvider) {
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithSpanProcessor(discardProcessor{}))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	b.Cleanup(func() {
		tp.Shutdown(context.Background())
		mp.Shutdown(context.Background())
	})
	return tp, mp
}

type benchService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (benchService) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return &testgrpc.SimpleResponse{}, nil
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

// BenchmarkUnary compares a server without instrumentation, one with
// otelgrpc's stats handler, and one with this package's whole setup:
// ServerOption, a Tracker and its in-flight gauge.
func BenchmarkUnary(b *testing.B) {
	servers := []struct {
		name string
		opts func(b *testing.B) []grpc.ServerOption
	}{
		{"server=bare", func(*testing.B) []grpc.ServerOption { return nil }},
		{"server=otelgrpc", func(b *testing.B) []grpc.ServerOption {
			tp, mp := benchProviders(b)
			return []grpc.ServerOption{
				grpc.StatsHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp))),
			}
		}},
		{"server=tracing", func(b *testing.B) []grpc.ServerOption {
			tp, mp := benchProviders(b)
			tracker := interceptors.NewTracker()
			reg, err := tracing.InFlightCounter(tracker, tracing.WithMeterProvider(mp))
			if err != nil {
				b.Fatalf("InFlightCounter() = %v", err)
			}
			b.Cleanup(func() { reg.Unregister() })
			return []grpc.ServerOption{
				tracing.ServerOption(otelgrpc.WithTracerProvider(tp), otelgrpc.WithMeterProvider(mp)),
				grpc.ChainUnaryInterceptor(tracker.UnaryServerInterceptor()),
				grpc.ChainStreamInterceptor(tracker.StreamServerInterceptor()),
			}
		}},
	}
	for _, s := range servers {
		b.Run(s.name, func(b *testing.B) {
			client := benchClient(b, s.opts(b)...)
			req := &testgrpc.SimpleRequest{}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					if _, err := client.UnaryCall(ctx, req); err != nil {
						b.Errorf("UnaryCall() = %v", err)
						return
					}
				}
			})
		})
	}
}
