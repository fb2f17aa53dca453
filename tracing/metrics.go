package tracing

import (
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// ScopeName is the instrumentation scope of the spans and metrics of this
// package.
const ScopeName = "github.com/drainkit/drainkit/tracing"

// Names of the metrics of this package.
const (
	// DrainDurationMetric is a histogram of the time drains took, from their
	// start to their Cleanup event, in seconds. Its attribute
	// drainkit.forced tells forced drains apart.
	DrainDurationMetric = "drainkit.drain.duration"
	// CancelledRPCsMetric counts the handlers whose context drains cancelled.
	CancelledRPCsMetric = "drainkit.drain.cancelled_rpcs"
	// ForcedStopsMetric counts the drains that stopped their server by force.
	ForcedStopsMetric = "drainkit.drain.forced_stops"
	// LeakedHandlersMetric counts the handlers still running when drains
	// ended.
	LeakedHandlersMetric = "drainkit.drain.leaked_handlers"
	// InFlightMetric is the observable UpDownCounter of InFlightCounter: the
	// RPCs whose handler is running, by rpc.method.
	InFlightMetric = "drainkit.rpc.in_flight"
	// DrainEndedRPCsMetric counts, for ServerHandler, the RPCs that a
	// server's drain ended: refused before their handler ran, or cancelled,
	// by rpc.method and drainkit.handler.
	DrainEndedRPCsMetric = "drainkit.rpc.server.drain_ended"
)

// Attribute keys set on spans, span events and metrics, besides rpc.method.
const (
	InFlightKey  = attribute.Key("drainkit.in_flight")      // RPCs running at an event
	CancelledKey = attribute.Key("drainkit.cancelled")      // handlers cancelled so far
	ForcedKey    = attribute.Key("drainkit.forced")         // the drain stopped its server by force
	LeakedKey    = attribute.Key("drainkit.leaked")         // handlers still running at the end
	AgeKey       = attribute.Key("drainkit.handler.age")    // seconds since a leaked handler started
	StreamKey    = attribute.Key("drainkit.handler.stream") // a leaked handler serves a stream

	// DrainEndedKey marks the span of an RPC that a drain ended (true);
	// HandlerKey says how: "not_run" (refused before its handler ran) or
	// "cancelled" (its handler was cancelled). See ServerHandler.
	DrainEndedKey = attribute.Key("drainkit.drain.ended")
	HandlerKey    = attribute.Key("drainkit.handler")
)

// drainBuckets are the bounds, in seconds, of the drain duration histogram:
// from an idle server's drain to a forced one past the usual 30s budget.
var drainBuckets = []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 20, 25, 30, 45, 60, 120}

// rpcMethod returns the rpc.method attribute of fullMethod
// ("/package.Service/Method"): "package.Service/Method", as otelgrpc sets it,
// so that the metrics and events of this package join its own.
func rpcMethod(fullMethod string) attribute.KeyValue {
	return semconv.RPCMethod(strings.TrimPrefix(fullMethod, "/"))
}

// meter returns the Meter of this package from o's provider.
func (o *options) meter() metric.Meter {
	return o.meterProvider.Meter(ScopeName)
}

// hookMetrics are the instruments of a Hook.
type hookMetrics struct {
	duration  metric.Float64Histogram
	cancelled metric.Int64Counter
	forced    metric.Int64Counter
	leaked    metric.Int64Counter

	// Precomputed attribute sets: the options' attributes, with
	// drainkit.forced false or true for the duration.
	attrs                       metric.MeasurementOption
	notForcedAttrs, forcedAttrs metric.MeasurementOption
}

// newHookMetrics creates the instruments of a Hook. The API reports errors
// only for malformed names and returns working instruments even then; errors
// go to otel.Handle, as those of otelgrpc do.
func newHookMetrics(o *options) *hookMetrics {
	m := o.meter()
	var err error
	hm := &hookMetrics{
		attrs:          metric.WithAttributeSet(attribute.NewSet(o.attrs...)),
		notForcedAttrs: metric.WithAttributeSet(attribute.NewSet(append(o.attrs[:len(o.attrs):len(o.attrs)], ForcedKey.Bool(false))...)),
		forcedAttrs:    metric.WithAttributeSet(attribute.NewSet(append(o.attrs[:len(o.attrs):len(o.attrs)], ForcedKey.Bool(true))...)),
	}
	hm.duration, err = m.Float64Histogram(DrainDurationMetric,
		metric.WithDescription("Time drains took, from their start to their end."),
		metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(drainBuckets...))
	handle(err)
	hm.cancelled, err = m.Int64Counter(CancelledRPCsMetric,
		metric.WithDescription("Handlers whose context a drain cancelled."),
		metric.WithUnit("{rpc}"))
	handle(err)
	hm.forced, err = m.Int64Counter(ForcedStopsMetric,
		metric.WithDescription("Drains that stopped their server by force."),
		metric.WithUnit("{drain}"))
	handle(err)
	hm.leaked, err = m.Int64Counter(LeakedHandlersMetric,
		metric.WithDescription("Handlers still running when a drain ended."),
		metric.WithUnit("{handler}"))
	handle(err)
	return hm
}

func handle(err error) {
	if err != nil {
		otel.Handle(err)
	}
}
