package tracing_test

import (
	"context"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/tracing"
)

// relayService's UnaryCall calls its upstream and returns its error as is.
type relayService struct {
	testgrpc.UnimplementedTestServiceServer
	upstream testgrpc.TestServiceClient
}

func (s relayService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return s.upstream.UnaryCall(ctx, req)
}

// TestServerHandlerLeavesRelayedDrainsUnmarked cancels a call on an
// upstream server that drains, and relays its status through a front
// server whose handler returns it as is: the front server did not drain, its
// Tracker replaces the relayed mark with HANDLER_RAN, and ServerHandler
// must neither mark the front call's span nor count it; the upstream's own
// ServerHandler counts it once.
func TestServerHandlerLeavesRelayedDrainsUnmarked(t *testing.T) {
	const front = "grpc.testing.TestService/UnaryCall"
	p := newProviders(t)
	otel := func() grpc.ServerOption {
		return grpc.StatsHandler(tracing.ServerHandler(
			otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(p.tp), otelgrpc.WithMeterProvider(p.mp)),
			tracing.WithMeterProvider(p.mp)))
	}
	upstreamSvc := newBlockingService()
	upstreamTracker := interceptors.NewTracker()
	upstreamCC, upstreamSrv := serve(t, upstreamSvc, append(upstreamTracker.ServerOptions(), otel())...)
	frontTracker := interceptors.NewTracker()
	frontCC, frontSrv := serve(t, relayService{upstream: testgrpc.NewTestServiceClient(upstreamCC)},
		append(frontTracker.ServerOptions(), otel())...)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()

	errs := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(frontCC).UnaryCall(ctx, &testgrpc.SimpleRequest{})
		errs <- err
	}()
	receive(t, upstreamSvc.entered, "the upstream handler to start")
	upstreamTracker.Reject(drain.ErrDraining)
	if n := upstreamTracker.CancelAll(drain.ErrDraining); n != 1 {
		t.Fatalf("upstream CancelAll() = %d, want 1", n)
	}
	if err := receive(t, errs, "the relayed call"); status.Code(err) != grpccodes.Unavailable {
		t.Fatalf("front UnaryCall() = %v, want the relayed code Unavailable", err)
	}
	frontCC.Close()
	frontSrv.GracefulStop()
	upstreamCC.Close()
	upstreamSrv.GracefulStop()

	spans, marked := 0, 0
	for _, s := range p.spans.Ended() {
		if s.Name() != front {
			continue
		}
		spans++ // the front server's span and the upstream's
		if v, ok := attr(s.Attributes(), tracing.DrainEndedKey); ok && v.AsBool() {
			marked++
		}
	}
	// Client spans are not recorded: only the two servers' spans count.
	if spans != 2 {
		t.Fatalf("%d server spans of %s, want 2 (front and upstream)", spans, front)
	}
	if marked != 1 {
		t.Errorf("%d spans marked %s, want 1: the upstream's, which its drain ended, not the front's, which relayed it", marked, tracing.DrainEndedKey)
	}
	if n := counterTotal(t, p.collect(t), tracing.DrainEndedRPCsMetric); n != 1 {
		t.Errorf("%s = %d, want 1: the upstream's call alone", tracing.DrainEndedRPCsMetric, n)
	}
}
