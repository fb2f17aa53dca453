package tracing_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/tracing"
)

// blockingService blocks UnaryCall until release is closed or the call's
// context ends; it sends on entered when a handler starts.
type blockingService struct {
	testgrpc.UnimplementedTestServiceServer
	entered chan struct{}
	release chan struct{}
}

func newBlockingService() *blockingService {
	return &blockingService{entered: make(chan struct{}, 16), release: make(chan struct{})}
}

func (s *blockingService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return &testgrpc.Empty{}, nil
}

func (s *blockingService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return &testgrpc.SimpleResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func trackerOptions(t *interceptors.Tracker) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(t.StreamServerInterceptor()),
	}
}

func TestServerOption(t *testing.T) {
	p := newProviders(t)
	cc, srv := serve(t, newBlockingService(),
		tracing.ServerOption(otelgrpc.WithTracerProvider(p.tp), otelgrpc.WithMeterProvider(p.mp)))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(ctx, &testgrpc.Empty{}); err != nil {
		t.Fatalf("EmptyCall() = %v, want nil", err)
	}
	// GracefulStop returns once every handler, and the stats handler's end of
	// each RPC, has run.
	cc.Close()
	srv.GracefulStop()

	ended := p.spans.Ended()
	if len(ended) != 1 {
		t.Fatalf("%d spans ended, want 1: %q", len(ended), spanNames(ended))
	}
	s := ended[0]
	if got, want := s.Name(), "grpc.testing.TestService/EmptyCall"; got != want {
		t.Errorf("span name = %q, want %q", got, want)
	}
	if got := s.SpanKind(); got != trace.SpanKindServer {
		t.Errorf("span kind = %v, want %v", got, trace.SpanKindServer)
	}
	if got, want := s.InstrumentationScope().Name, otelgrpc.ScopeName; got != want {
		t.Errorf("span scope = %q, want %q", got, want)
	}
	if v, _ := attr(s.Attributes(), "rpc.method"); v.AsString() != "grpc.testing.TestService/EmptyCall" {
		t.Errorf("span rpc.method = %q, want %q", v.String(), "grpc.testing.TestService/EmptyCall")
	}
	if _, ok := findMetric(p.collect(t), "rpc.server.call.duration"); !ok {
		t.Errorf("metric rpc.server.call.duration not recorded")
	}
}

func TestInFlightCounter(t *testing.T) {
	const method = "grpc.testing.TestService/UnaryCall"
	p := newProviders(t)
	tracker := interceptors.NewTracker()
	svc := newBlockingService()
	cc, _ := serve(t, svc, trackerOptions(tracker)...)
	reg, err := tracing.InFlightCounter(tracker, tracing.WithMeterProvider(p.mp), tracing.WithAttributes(attribute.String("server", "api")))
	if err != nil {
		t.Fatalf("InFlightCounter() = %v, want nil", err)
	}
	client := testgrpc.NewTestServiceClient(cc)

	if pts := inFlightPoints(t, p.collect(t), tracing.InFlightMetric); len(pts) != 0 {
		t.Errorf("%s before any call = %v, want no data points", tracing.InFlightMetric, pts)
	}

	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	const calls = 2
	done := make(chan error, calls)
	for range calls {
		go func() {
			_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
			done <- err
		}()
	}
	for range calls {
		select {
		case <-svc.entered:
		case <-ctx.Done():
			t.Fatalf("handlers not entered after %v", defaultTestTimeout)
		}
	}
	rm := p.collect(t)
	if got, ok := inFlightValue(t, rm, tracing.InFlightMetric, method); got != calls {
		t.Errorf("%s{rpc.method=%q} = %d (reported: %v), want %d", tracing.InFlightMetric, method, got, ok, calls)
	}
	for _, dp := range inFlightPoints(t, rm, tracing.InFlightMetric) {
		if v, _ := dp.Attributes.Value("server"); v.AsString() != "api" {
			t.Errorf("%s attribute server = %q, want %q", tracing.InFlightMetric, v.String(), "api")
		}
	}

	close(svc.release)
	for range calls {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("UnaryCall() = %v, want nil", err)
			}
		case <-ctx.Done():
			t.Fatalf("calls not done after %v", defaultTestTimeout)
		}
	}
	for range 2 { // an idle method goes on being reported
		if got, ok := inFlightValue(t, p.collect(t), tracing.InFlightMetric, method); got != 0 || !ok {
			t.Errorf("%s{rpc.method=%q} after the calls = %d (reported: %v), want 0 (reported: true)", tracing.InFlightMetric, method, got, ok)
		}
	}

	if err := reg.Unregister(); err != nil {
		t.Fatalf("Unregister() = %v, want nil", err)
	}
	if pts := inFlightPoints(t, p.collect(t), tracing.InFlightMetric); len(pts) != 0 {
		t.Errorf("%s after Unregister = %v, want no data points", tracing.InFlightMetric, pts)
	}
}

// TestInFlightCounterBounded serves any method name, and checks that the gauge
// forgets idle methods past a thousand of them.
func TestInFlightCounterBounded(t *testing.T) {
	const methods = 1100
	const maxIdle = 1000
	p := newProviders(t)
	tracker := interceptors.NewTracker()
	entered, release := make(chan struct{}, methods), make(chan struct{})
	cc, _ := serve(t, nil, append(trackerOptions(tracker), grpc.UnknownServiceHandler(func(_ any, stream grpc.ServerStream) error {
		if err := stream.RecvMsg(&testgrpc.Empty{}); err != nil {
			return err
		}
		entered <- struct{}{}
		select {
		case <-release:
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
		return stream.SendMsg(&testgrpc.Empty{})
	}))...)
	if _, err := tracing.InFlightCounter(tracker, tracing.WithMeterProvider(p.mp)); err != nil {
		t.Fatalf("InFlightCounter() = %v, want nil", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	done := make(chan error, methods)
	for i := range methods {
		go func() {
			done <- cc.Invoke(ctx, fmt.Sprintf("/drainkit.test.Any/M%04d", i), &testgrpc.Empty{}, &testgrpc.Empty{})
		}()
	}
	for range methods {
		select {
		case <-entered:
		case <-ctx.Done():
			t.Fatalf("handlers not entered after %v", defaultTestTimeout)
		}
	}
	if got := len(inFlightPoints(t, p.collect(t), tracing.InFlightMetric)); got != methods {
		t.Errorf("%s has %d data points with %d methods running, want %d", tracing.InFlightMetric, got, methods, methods)
	}
	close(release)
	for range methods {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Invoke() = %v, want nil", status.Convert(err))
			}
		case <-ctx.Done():
			t.Fatalf("calls not done after %v", defaultTestTimeout)
		}
	}
	pts := inFlightPoints(t, p.collect(t), tracing.InFlightMetric)
	if len(pts) != methods {
		t.Errorf("%s has %d data points once idle, want %d: each idle method reported once", tracing.InFlightMetric, len(pts), methods)
	}
	for _, dp := range pts {
		if dp.Value != 0 {
			v, _ := dp.Attributes.Value("rpc.method")
			t.Errorf("%s{rpc.method=%q} = %d once idle, want 0", tracing.InFlightMetric, v.String(), dp.Value)
		}
	}
	if got := len(inFlightPoints(t, p.collect(t), tracing.InFlightMetric)); got != maxIdle {
		t.Errorf("%s has %d data points at the next collection, want %d", tracing.InFlightMetric, got, maxIdle)
	}
}

func TestInFlightCounterNilTracker(t *testing.T) {
	reg, err := tracing.InFlightCounter(nil)
	if err == nil || !strings.Contains(err.Error(), "nil Tracker") {
		t.Errorf("InFlightCounter(nil) = %v, %v, want an error naming the nil Tracker", reg, err)
	}
}

func TestOptionsRefuseBadInput(t *testing.T) {
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"nil TracerProvider", func() { tracing.WithTracerProvider(nil) }, "WithTracerProvider: nil TracerProvider"},
		{"nil MeterProvider", func() { tracing.WithMeterProvider(nil) }, "WithMeterProvider: nil MeterProvider"},
		{"empty attribute key", func() { tracing.WithAttributes(attribute.String("ok", "v"), attribute.String("", "v")) }, "WithAttributes: attribute 1 has an empty key"},
		{"nil option to Hook", func() { tracing.Hook(nil) }, "Hook: option 0 is nil"},
		{"nil option to InFlightCounter", func() { _, _ = tracing.InFlightCounter(interceptors.NewTracker(), tracing.WithAttributes(), nil) }, "InFlightCounter: option 1 is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Errorf("panic = %v, want a panic containing %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}
