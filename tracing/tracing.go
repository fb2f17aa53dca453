package tracing

import (
	"context"
	"errors"
	"sync"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/interceptors"
)

// ServerOption returns the server option that traces and measures every RPC
// with otelgrpc's stats handler, configured by opts: a span per RPC and the
// rpc.server.call.duration histogram. The stats handler sees every RPC,
// those refused by an interceptors.Tracker during a drain included; otelgrpc's
// interceptors, which are deprecated, are not used.
//
// The handler is wrapped by ServerHandler, so that the spans of the RPCs a
// drain ended say so; its count of those RPCs goes to the global
// MeterProvider. To send it elsewhere, use
// grpc.StatsHandler(ServerHandler(otelgrpc.NewServerHandler(opts...), WithMeterProvider(mp))).
//
// Without otelgrpc.WithTracerProvider and otelgrpc.WithMeterProvider, otelgrpc
// uses the global providers.
func ServerOption(opts ...otelgrpc.Option) grpc.ServerOption {
	return grpc.StatsHandler(ServerHandler(otelgrpc.NewServerHandler(opts...)))
}

// maxIdleMethods bounds the methods an in-flight counter remembers to report at
// 0 once their last call has returned. Past it, an idle method is reported at
// 0 once and then forgotten, so that a server answering any method name (see
// grpc.UnknownServiceHandler) cannot grow the counter without bound.
const maxIdleMethods = 1000

// InFlightCounter registers the observable UpDownCounter
// "drainkit.rpc.in_flight": the number of RPCs whose handler is running on
// the servers t intercepts, by rpc.method ("package.Service/Method", as
// otelgrpc sets it), plus the attributes given by WithAttributes. It is an
// UpDownCounter, not a gauge, because it is additive, as OpenTelemetry's
// http.server.active_requests is: summed across methods, servers and pods,
// it is the RPCs in flight in all of them, which backends compute for an
// UpDownCounter and not for a gauge. A method seen once is reported from
// then on, at 0 when idle (up to a thousand methods; past that, idle methods
// are reported at 0 once and then dropped). The count is taken from
// t.Calls() when the metrics are collected, and costs nothing between
// collections. WithTracerProvider has no effect on it.
//
// Unregister the returned registration to stop reporting it. Register one
// counter per Tracker; when several Trackers share a MeterProvider, tell
// their counters apart with WithAttributes.
//
// It returns an error if t is nil or the callback cannot be registered, and
// panics if an option is nil.
func InFlightCounter(t *interceptors.Tracker, opts ...Option) (metric.Registration, error) {
	if t == nil {
		return nil, errors.New("tracing: InFlightCounter: nil Tracker")
	}
	o := evaluateOptions("InFlightCounter", opts)
	m := o.meter()
	counter, err := m.Int64ObservableUpDownCounter(InFlightMetric,
		metric.WithDescription("RPCs whose handler is running."),
		metric.WithUnit("{rpc}"))
	if err != nil {
		return nil, err
	}
	g := &inFlight{t: t, counter: counter, attrs: o.attrs, seen: map[string]metric.ObserveOption{}}
	return m.RegisterCallback(g.observe, counter)
}

type inFlight struct {
	t       *interceptors.Tracker
	counter metric.Int64ObservableUpDownCounter
	attrs   []attribute.KeyValue

	mu   sync.Mutex                      // callbacks may run at once, one per reader
	seen map[string]metric.ObserveOption // attribute set of each method seen
}

func (g *inFlight) observe(_ context.Context, o metric.Observer) error {
	counts := map[string]int64{}
	for _, c := range g.t.Calls() {
		counts[c.Method]++
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for method, n := range counts {
		attrs, ok := g.seen[method]
		if !ok {
			attrs = metric.WithAttributeSet(attribute.NewSet(append(g.attrs[:len(g.attrs):len(g.attrs)], rpcMethod(method))...))
			g.seen[method] = attrs
		}
		o.ObserveInt64(g.counter, n, attrs)
	}
	for method, attrs := range g.seen {
		if _, ok := counts[method]; ok {
			continue
		}
		o.ObserveInt64(g.counter, 0, attrs)
		if len(g.seen) > maxIdleMethods {
			delete(g.seen, method)
		}
	}
	return nil
}
