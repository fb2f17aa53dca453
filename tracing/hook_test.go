package tracing_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
	"github.com/drainkit/drainkit/tracing"
)

const leakedMethod = "/grpc.testing.TestService/FullDuplexCall"

// events returns the events of a drain that started at started, one per
// phase given, with made-up counts that grow along the drain; at Cleanup,
// one stream handler started 10s before the drain is leaked if the drain was
// forced.
func events(started time.Time, phases ...stophook.Phase) []stophook.Event {
	var evs []stophook.Event
	forced := false
	for _, p := range phases {
		e := stophook.Event{Phase: p, Started: started}
		switch p {
		case stophook.NotReady, stophook.Graceful:
			e.InFlight = 3
		case stophook.Cancel:
			e.InFlight = 2
		case stophook.Force:
			e.InFlight, e.Cancelled = 1, 2
			forced = true
		case stophook.Cleanup:
			if forced {
				e.InFlight, e.Cancelled = 1, 2
				e.Leaked = []interceptors.Call{{
					Method:  leakedMethod,
					Started: started.Add(-10 * time.Second),
					Stream:  true,
				}}
			}
		}
		evs = append(evs, e)
	}
	return evs
}

// feed gives evs to h, in order.
func feed(t *testing.T, ctx context.Context, h stophook.Hook, evs []stophook.Event) {
	t.Helper()
	for _, e := range evs {
		if err := h.OnStop(ctx, e); err != nil {
			t.Fatalf("OnStop(%v) = %v, want nil", e.Phase, err)
		}
	}
}

// drainSpans returns the ended drain spans, in the order they ended, and the
// ended spans of each, by span ID.
func drainSpans(spans []sdktrace.ReadOnlySpan) (drains []sdktrace.ReadOnlySpan, children map[string][]sdktrace.ReadOnlySpan) {
	children = map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		if s.Name() == tracing.DrainSpanName {
			drains = append(drains, s)
			continue
		}
		id := s.Parent().SpanID().String()
		children[id] = append(children[id], s)
	}
	return drains, children
}

func spanNames(spans []sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name())
	}
	return names
}

func eventNames(s sdktrace.ReadOnlySpan) []string {
	var names []string
	for _, e := range s.Events() {
		names = append(names, e.Name)
	}
	return names
}

func TestHook(t *testing.T) {
	tests := []struct {
		name   string
		phases []stophook.Phase

		wantPhases                           []string
		wantInFlight                         []int64 // drainkit.in_flight of each phase span
		wantEvents                           []string
		wantForced                           bool
		wantCancelled, wantStops, wantLeaked int64
	}{
		{
			name:   "full",
			phases: []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Force, stophook.Cleanup},
			wantPhases: []string{
				"drain.NotReady", "drain.Graceful", "drain.Cancel", "drain.Force", "drain.Cleanup",
			},
			wantInFlight:  []int64{3, 3, 2, 1, 1},
			wantEvents:    []string{tracing.GraceTimeoutEventName, tracing.ForcedEventName, tracing.LeakedHandlerEventName},
			wantForced:    true,
			wantCancelled: 2, wantStops: 1, wantLeaked: 1,
		},
		{
			name:          "forced at once",
			phases:        []stophook.Phase{stophook.Force, stophook.Cleanup},
			wantPhases:    []string{"drain.Force", "drain.Cleanup"},
			wantInFlight:  []int64{1, 1},
			wantEvents:    []string{tracing.ForcedEventName, tracing.LeakedHandlerEventName},
			wantForced:    true,
			wantCancelled: 2, wantStops: 1, wantLeaked: 1,
		},
		{
			name:         "graceful",
			phases:       []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup},
			wantPhases:   []string{"drain.NotReady", "drain.Graceful", "drain.Cleanup"},
			wantInFlight: []int64{3, 3, 0},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProviders(t)
			h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
			started := time.Now().Add(-2 * time.Second)
			begin := time.Now()
			feed(t, context.Background(), h, events(started, tt.phases...))
			end := time.Now()

			ended := p.spans.Ended()
			if got, want := spanNames(ended), append(slices.Clone(tt.wantPhases), tracing.DrainSpanName); !slices.Equal(got, want) {
				t.Fatalf("ended spans = %q, want %q", got, want)
			}
			if n := len(p.spans.Started()); n != len(ended) {
				t.Errorf("%d spans started, want %d, all ended", n, len(ended))
			}
			drain, phases := ended[len(ended)-1], ended[:len(ended)-1]

			if drain.Parent().IsValid() {
				t.Errorf("drain span parent = %v, want none", drain.Parent())
			}
			if !drain.StartTime().Equal(started) {
				t.Errorf("drain span start = %v, want Event.Started %v", drain.StartTime(), started)
			}
			if drain.EndTime().Before(begin) || drain.EndTime().After(end) {
				t.Errorf("drain span end = %v, want within the Cleanup call [%v, %v]", drain.EndTime(), begin, end)
			}
			for i, s := range phases {
				if s.Parent().SpanID() != drain.SpanContext().SpanID() || s.SpanContext().TraceID() != drain.SpanContext().TraceID() {
					t.Errorf("span %s parent = %v, want the drain span %v", s.Name(), s.Parent(), drain.SpanContext())
				}
				if v, _ := attr(s.Attributes(), tracing.InFlightKey); v.AsInt64() != tt.wantInFlight[i] {
					t.Errorf("span %s %s = %v, want %d", s.Name(), tracing.InFlightKey, v.String(), tt.wantInFlight[i])
				}
				if i > 0 && !s.StartTime().Equal(phases[i-1].EndTime()) {
					t.Errorf("span %s starts at %v, want the end of %s, %v", s.Name(), s.StartTime(), phases[i-1].Name(), phases[i-1].EndTime())
				}
			}
			if phases[0].Name() == "drain.NotReady" && !phases[0].StartTime().Equal(started) {
				t.Errorf("span drain.NotReady starts at %v, want Event.Started %v", phases[0].StartTime(), started)
			}
			if last := phases[len(phases)-1]; !last.EndTime().Equal(drain.EndTime()) {
				t.Errorf("span %s ends at %v, want the end of the drain span %v", last.Name(), last.EndTime(), drain.EndTime())
			}

			if got := eventNames(drain); !slices.Equal(got, tt.wantEvents) {
				t.Errorf("drain span events = %q, want %q", got, tt.wantEvents)
			}
			for _, e := range drain.Events() {
				if e.Name != tracing.LeakedHandlerEventName {
					continue
				}
				if v, _ := attr(e.Attributes, "rpc.method"); v.AsString() != "grpc.testing.TestService/FullDuplexCall" {
					t.Errorf("leaked handler rpc.method = %q, want %q", v.String(), "grpc.testing.TestService/FullDuplexCall")
				}
				if v, _ := attr(e.Attributes, tracing.AgeKey); v.AsFloat64() < 12 || v.AsFloat64() > 60 {
					t.Errorf("leaked handler %s = %v, want about 12 (seconds)", tracing.AgeKey, v.String())
				}
				if v, _ := attr(e.Attributes, tracing.StreamKey); !v.AsBool() {
					t.Errorf("leaked handler %s = %v, want true", tracing.StreamKey, v.String())
				}
			}
			if v, _ := attr(drain.Attributes(), tracing.ForcedKey); v.AsBool() != tt.wantForced {
				t.Errorf("drain span %s = %v, want %v", tracing.ForcedKey, v.String(), tt.wantForced)
			}
			if v, _ := attr(drain.Attributes(), tracing.LeakedKey); v.AsInt64() != tt.wantLeaked {
				t.Errorf("drain span %s = %v, want %d", tracing.LeakedKey, v.String(), tt.wantLeaked)
			}
			if v, _ := attr(drain.Attributes(), tracing.CancelledKey); v.AsInt64() != tt.wantCancelled {
				t.Errorf("drain span %s = %v, want %d", tracing.CancelledKey, v.String(), tt.wantCancelled)
			}
			wantStatus := codes.Unset
			if tt.wantForced {
				wantStatus = codes.Error
			}
			if got := drain.Status().Code; got != wantStatus {
				t.Errorf("drain span status = %v, want %v", got, wantStatus)
			}

			rm := p.collect(t)
			for _, c := range []struct {
				name string
				want int64
			}{
				{tracing.CancelledRPCsMetric, tt.wantCancelled},
				{tracing.ForcedStopsMetric, tt.wantStops},
				{tracing.LeakedHandlersMetric, tt.wantLeaked},
			} {
				if got := counterTotal(t, rm, c.name); got != c.want {
					t.Errorf("%s = %d, want %d", c.name, got, c.want)
				}
			}
			m, ok := findMetric(rm, tracing.DrainDurationMetric)
			if !ok {
				t.Fatalf("metric %s not recorded", tracing.DrainDurationMetric)
			}
			if m.Unit != "s" {
				t.Errorf("%s unit = %q, want %q", m.Name, m.Unit, "s")
			}
			hist := m.Data.(metricdata.Histogram[float64])
			if len(hist.DataPoints) != 1 {
				t.Fatalf("%s has %d data points, want 1", m.Name, len(hist.DataPoints))
			}
			dp := hist.DataPoints[0]
			if max := end.Sub(started).Seconds(); dp.Count != 1 || dp.Sum < 2 || dp.Sum > max {
				t.Errorf("%s = %d drains, %vs, want 1 drain, within [2, %v]s", m.Name, dp.Count, dp.Sum, max)
			}
			if v, _ := dp.Attributes.Value(tracing.ForcedKey); v.AsBool() != tt.wantForced {
				t.Errorf("%s %s = %v, want %v", m.Name, tracing.ForcedKey, v.String(), tt.wantForced)
			}
		})
	}
}

func TestHookSequentialDrains(t *testing.T) {
	for _, tt := range []struct {
		name          string
		first, second time.Time
	}{
		{"distinct starts", time.Now().Add(-time.Minute), time.Now()},
		{"no start", time.Time{}, time.Time{}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			p := newProviders(t)
			h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
			feed(t, context.Background(), h, events(tt.first, stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Force, stophook.Cleanup))
			feed(t, context.Background(), h, events(tt.second, stophook.Force, stophook.Cleanup))

			drains, children := drainSpans(p.spans.Ended())
			if len(drains) != 2 {
				t.Fatalf("%d drain spans ended, want 2", len(drains))
			}
			if drains[0].SpanContext().TraceID() == drains[1].SpanContext().TraceID() {
				t.Errorf("both drain spans are in trace %v, want a trace each", drains[0].SpanContext().TraceID())
			}
			for i, want := range [][]string{
				{"drain.NotReady", "drain.Graceful", "drain.Cancel", "drain.Force", "drain.Cleanup"},
				{"drain.Force", "drain.Cleanup"},
			} {
				if got := spanNames(children[drains[i].SpanContext().SpanID().String()]); !slices.Equal(got, want) {
					t.Errorf("drain %d: child spans = %q, want %q", i+1, got, want)
				}
			}
			rm := p.collect(t)
			if got := counterTotal(t, rm, tracing.ForcedStopsMetric); got != 2 {
				t.Errorf("%s = %d, want 2", tracing.ForcedStopsMetric, got)
			}
			if got := counterTotal(t, rm, tracing.CancelledRPCsMetric); got != 4 {
				t.Errorf("%s = %d, want 4", tracing.CancelledRPCsMetric, got)
			}
		})
	}
}

func TestHookConcurrentDrains(t *testing.T) {
	const drains = 8
	p := newProviders(t)
	h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
	base := time.Now()
	errs := make(chan error, drains)
	for i := range drains {
		go func() {
			for _, e := range events(base.Add(time.Duration(i)*time.Millisecond),
				stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Force, stophook.Cleanup) {
				if err := h.OnStop(context.Background(), e); err != nil {
					errs <- fmt.Errorf("OnStop(%v) = %v, want nil", e.Phase, err)
					return
				}
			}
			errs <- nil
		}()
	}
	timeout := time.After(defaultTestTimeout)
	for range drains {
		select {
		case err := <-errs:
			if err != nil {
				t.Error(err)
			}
		case <-timeout:
			t.Fatalf("drains not recorded after %v", defaultTestTimeout)
		}
	}

	got, children := drainSpans(p.spans.Ended())
	if len(got) != drains {
		t.Fatalf("%d drain spans ended, want %d", len(got), drains)
	}
	want := []string{"drain.NotReady", "drain.Graceful", "drain.Cancel", "drain.Force", "drain.Cleanup"}
	for _, d := range got {
		if names := spanNames(children[d.SpanContext().SpanID().String()]); !slices.Equal(names, want) {
			t.Errorf("drain started at %v: child spans = %q, want %q", d.StartTime(), names, want)
		}
	}
	rm := p.collect(t)
	if got := counterTotal(t, rm, tracing.ForcedStopsMetric); got != drains {
		t.Errorf("%s = %d, want %d", tracing.ForcedStopsMetric, got, drains)
	}
	if got := counterTotal(t, rm, tracing.LeakedHandlersMetric); got != drains {
		t.Errorf("%s = %d, want %d", tracing.LeakedHandlersMetric, got, drains)
	}
}

func TestHookRestartedDrain(t *testing.T) {
	// A drain that never reached Cleanup, then another with the same start.
	p := newProviders(t)
	h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
	started := time.Now()
	feed(t, context.Background(), h, events(started, stophook.NotReady, stophook.Graceful))
	if got := len(p.spans.Ended()); got != 1 {
		t.Fatalf("%d spans ended before the drain's end, want 1 (drain.NotReady)", got)
	}
	feed(t, context.Background(), h, events(started, stophook.NotReady, stophook.Cleanup))

	drains, children := drainSpans(p.spans.Ended())
	if len(drains) != 2 {
		t.Fatalf("%d drain spans ended, want 2", len(drains))
	}
	if got := drains[0].Status().Code; got != codes.Error {
		t.Errorf("abandoned drain span status = %v, want %v", got, codes.Error)
	}
	if got := drains[1].Status().Code; got != codes.Unset {
		t.Errorf("second drain span status = %v, want %v", got, codes.Unset)
	}
	for i, want := range [][]string{
		{"drain.NotReady", "drain.Graceful"},
		{"drain.NotReady", "drain.Cleanup"},
	} {
		if got := spanNames(children[drains[i].SpanContext().SpanID().String()]); !slices.Equal(got, want) {
			t.Errorf("drain %d: child spans = %q, want %q", i+1, got, want)
		}
	}
}

func TestHookParentFromContext(t *testing.T) {
	p := newProviders(t)
	h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
	ctx, parent := p.tp.Tracer("test").Start(context.Background(), "shutdown")
	// The hook's context ends with each call; the spans outlive it.
	ctx, cancel := context.WithCancel(ctx)
	cancel()
	feed(t, ctx, h, events(time.Now(), stophook.NotReady, stophook.Cleanup))
	parent.End()

	drains, children := drainSpans(p.spans.Ended())
	if len(drains) != 1 {
		t.Fatalf("%d drain spans ended, want 1", len(drains))
	}
	if got, want := drains[0].Parent().SpanID(), parent.SpanContext().SpanID(); got != want {
		t.Errorf("drain span parent = %v, want the span of the context %v", got, want)
	}
	if got := len(children[drains[0].SpanContext().SpanID().String()]); got != 2 {
		t.Errorf("drain span has %d children, want 2", got)
	}
}

func TestHookIgnoresUnknownPhases(t *testing.T) {
	p := newProviders(t)
	h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
	for _, phase := range []stophook.Phase{0, stophook.Cleanup + 1} {
		if err := h.OnStop(context.Background(), stophook.Event{Phase: phase, Started: time.Now()}); err != nil {
			t.Errorf("OnStop(%v) = %v, want nil", phase, err)
		}
	}
	if got := len(p.spans.Started()); got != 0 {
		t.Errorf("%d spans started, want 0", got)
	}
}

func TestHookAttributes(t *testing.T) {
	p := newProviders(t)
	h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp),
		tracing.WithAttributes(attribute.String("server", "api")), tracing.WithAttributes(attribute.Int("shard", 3)))
	feed(t, context.Background(), h, events(time.Now(), stophook.Force, stophook.Cleanup))

	drains, _ := drainSpans(p.spans.Ended())
	if len(drains) != 1 {
		t.Fatalf("%d drain spans ended, want 1", len(drains))
	}
	if v, _ := attr(drains[0].Attributes(), "server"); v.AsString() != "api" {
		t.Errorf("drain span attribute server = %q, want %q", v.String(), "api")
	}
	if v, _ := attr(drains[0].Attributes(), "shard"); v.AsInt64() != 3 {
		t.Errorf("drain span attribute shard = %v, want 3", v.String())
	}
	rm := p.collect(t)
	for _, name := range []string{tracing.DrainDurationMetric, tracing.ForcedStopsMetric, tracing.CancelledRPCsMetric, tracing.LeakedHandlersMetric} {
		m, ok := findMetric(rm, name)
		if !ok {
			t.Errorf("metric %s not recorded", name)
			continue
		}
		var sets []attribute.Set
		switch d := m.Data.(type) {
		case metricdata.Sum[int64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		case metricdata.Histogram[float64]:
			for _, dp := range d.DataPoints {
				sets = append(sets, dp.Attributes)
			}
		}
		if len(sets) == 0 {
			t.Errorf("metric %s has no data points", name)
		}
		for _, s := range sets {
			if v, _ := s.Value("server"); v.AsString() != "api" {
				t.Errorf("metric %s attribute server = %q, want %q", name, v.String(), "api")
			}
		}
	}
}

// TestHookForceThatCutsNothing feeds a drain whose forced stop cut no RPC
// (Force with InFlight 0: it only closed connections that never
// acknowledged GOAWAY) and leaked nothing: it is not a forced drain.
func TestHookForceThatCutsNothing(t *testing.T) {
	p := newProviders(t)
	h := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
	started := time.Now()
	feed(t, context.Background(), h, []stophook.Event{
		{Phase: stophook.NotReady, Started: started},
		{Phase: stophook.Graceful, Started: started},
		{Phase: stophook.Force, Started: started},
		{Phase: stophook.Cleanup, Started: started},
	})
	drains, _ := drainSpans(p.spans.Ended())
	if len(drains) != 1 {
		t.Fatalf("%d drain spans ended, want 1", len(drains))
	}
	if v, _ := attr(drains[0].Attributes(), tracing.ForcedKey); v.AsBool() {
		t.Errorf("drain span %s = true, want false: the stop cut nothing", tracing.ForcedKey)
	}
	if got := counterTotal(t, p.collect(t), tracing.ForcedStopsMetric); got != 0 {
		t.Errorf("%s = %d, want 0", tracing.ForcedStopsMetric, got)
	}
}
