package tracing_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/tracing"
)

// ageService's StreamingOutputCall waits until its context ends.
type ageService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (ageService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	<-stream.Context().Done()
	return stream.Context().Err()
}

// TestServerHandlerLeavesRetiredStreamsUnmarked retires a long-lived stream
// for its age, on a server that does not drain: ServerHandler must not mark
// its span as ended by a drain, nor count it in drainkit.rpc.server.drain_ended.
func TestServerHandlerLeavesRetiredStreamsUnmarked(t *testing.T) {
	const method = "/grpc.testing.TestService/StreamingOutputCall"
	p := newProviders(t)
	tracker := interceptors.NewTracker(interceptors.WithLongLived(method), interceptors.WithMaxStreamAge(interceptors.MinStreamAge))
	otel := tracing.ServerHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(p.tp), otelgrpc.WithMeterProvider(p.mp)),
		tracing.WithMeterProvider(p.mp))
	cc, srv := serve(t, ageService{}, append(tracker.ServerOptions(), grpc.StatsHandler(otel))...)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != grpccodes.Unavailable {
		t.Fatalf("Recv() = %v, want the retirement's code Unavailable", err)
	}
	cc.Close()
	srv.GracefulStop()

	spans := 0
	for _, s := range p.spans.Ended() {
		if s.Name() != method[1:] {
			continue
		}
		spans++
		if v, ok := attr(s.Attributes(), tracing.DrainEndedKey); ok {
			t.Errorf("span of the retired stream has %s = %v, want none: no drain ended it", tracing.DrainEndedKey, v.String())
		}
	}
	if spans != 1 {
		t.Errorf("%d spans of the stream, want 1", spans)
	}
	if n := counterTotal(t, p.collect(t), tracing.DrainEndedRPCsMetric); n != 0 {
		t.Errorf("%s = %d, want 0", tracing.DrainEndedRPCsMetric, n)
	}
}
