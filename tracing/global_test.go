package tracing_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/drainkit/drainkit/stophook"
	"github.com/drainkit/drainkit/tracing"
)

func TestHookDefaultsToGlobalProviders(t *testing.T) {
	p := newProviders(t)
	otel.SetTracerProvider(p.tp)
	otel.SetMeterProvider(p.mp)
	t.Cleanup(func() {
		otel.SetTracerProvider(tracenoop.NewTracerProvider())
		otel.SetMeterProvider(metricnoop.NewMeterProvider())
	})

	h := tracing.Hook()
	feed(t, context.Background(), h, events(time.Now(), stophook.Force, stophook.Cleanup))

	if drains, _ := drainSpans(p.spans.Ended()); len(drains) != 1 {
		t.Errorf("%d drain spans recorded by the global TracerProvider, want 1", len(drains))
	}
	if got := counterTotal(t, p.collect(t), tracing.ForcedStopsMetric); got != 1 {
		t.Errorf("%s recorded by the global MeterProvider = %d, want 1", tracing.ForcedStopsMetric, got)
	}
}
