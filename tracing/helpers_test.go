package tracing_test

import (
	"context"
	"net"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/test/bufconn"
)

const defaultTestTimeout = 10 * time.Second

// providers are SDK providers whose spans and metrics a test reads.
type providers struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newProviders(t *testing.T) *providers {
	t.Helper()
	p := &providers{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	p.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(p.spans))
	p.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(p.reader))
	t.Cleanup(func() {
		ctx := context.Background()
		if err := p.tp.Shutdown(ctx); err != nil {
			t.Errorf("TracerProvider.Shutdown() = %v", err)
		}
		if err := p.mp.Shutdown(ctx); err != nil {
			t.Errorf("MeterProvider.Shutdown() = %v", err)
		}
	})
	return p
}

// collect returns the metrics recorded so far.
func (p *providers) collect(t *testing.T) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := p.reader.Collect(context.Background(), &rm); err != nil {
		t.Fatalf("ManualReader.Collect() = %v", err)
	}
	return rm
}

// findMetric returns the metric called name in rm.
func findMetric(rm metricdata.ResourceMetrics, name string) (metricdata.Metrics, bool) {
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m, true
			}
		}
	}
	return metricdata.Metrics{}, false
}

// counterTotal returns the sum of the data points of the int64 counter called
// name, 0 if it has none.
func counterTotal(t *testing.T, rm metricdata.ResourceMetrics, name string) int64 {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return 0
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("metric %s is a %T, want metricdata.Sum[int64]", name, m.Data)
	}
	if !sum.IsMonotonic {
		t.Errorf("metric %s is not monotonic, want a counter", name)
	}
	var total int64
	for _, dp := range sum.DataPoints {
		total += dp.Value
	}
	return total
}

// inFlightPoints returns the data points of the int64 UpDownCounter called
// name, and fails t if it is not one: a cumulative, non-monotonic sum.
func inFlightPoints(t *testing.T, rm metricdata.ResourceMetrics, name string) []metricdata.DataPoint[int64] {
	t.Helper()
	m, ok := findMetric(rm, name)
	if !ok {
		return nil
	}
	sum, ok := m.Data.(metricdata.Sum[int64])
	if !ok {
		t.Fatalf("metric %s is a %T, want an UpDownCounter (metricdata.Sum[int64])", name, m.Data)
	}
	if sum.IsMonotonic || sum.Temporality != metricdata.CumulativeTemporality {
		t.Fatalf("metric %s: monotonic %t, temporality %v; want an UpDownCounter: not monotonic, cumulative", name, sum.IsMonotonic, sum.Temporality)
	}
	return sum.DataPoints
}

// inFlightValue returns the value of the data point of UpDownCounter name whose
// rpc.method is method.
func inFlightValue(t *testing.T, rm metricdata.ResourceMetrics, name, method string) (int64, bool) {
	t.Helper()
	for _, dp := range inFlightPoints(t, rm, name) {
		if v, ok := dp.Attributes.Value("rpc.method"); ok && v.AsString() == method {
			return dp.Value, true
		}
	}
	return 0, false
}

// attr returns the value of the attribute key in attrs.
func attr(attrs []attribute.KeyValue, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range attrs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// serve serves svc over bufconn with opts, and returns a connection to it and
// the server. Both are closed at the end of the test.
func serve(t *testing.T, svc testgrpc.TestServiceServer, opts ...grpc.ServerOption) (*grpc.ClientConn, *grpc.Server) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer(opts...)
	if svc != nil {
		testgrpc.RegisterTestServiceServer(srv, svc)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve() = %v, want nil", err)
		}
	})
	return cc, srv
}
