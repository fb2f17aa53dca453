package tracing

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/drainkit/drainkit/stophook"
)

// Names of the spans and span events made by Hook.
const (
	DrainSpanName = "drainkit.drain"

	GraceTimeoutEventName  = "drain.grace_timeout"
	ForcedEventName        = "drain.forced"
	LeakedHandlerEventName = "drain.leaked_handler"
)

// phaseSpanNames names the span of the drain phase that each event begins.
var phaseSpanNames = [...]string{
	stophook.NotReady: "drain.NotReady",
	stophook.Graceful: "drain.Graceful",
	stophook.Cancel:   "drain.Cancel",
	stophook.Force:    "drain.Force",
	stophook.Cleanup:  "drain.Cleanup",
}

// Hook returns a stophook.Hook that records each drain as a span named
// "drainkit.drain", with one child span per phase the drain goes through, and
// as metrics. Register it with the drain's other hooks; it never fails. It
// waits for nothing of its own, but ending a span runs the tracer provider's
// span processors: use a batching one (sdktrace.WithBatcher), not a
// synchronous exporter, so that the hook returns at once.
//
// The drain span starts when the drain started (Event.Started), and ends at
// the Cleanup event. Its parent is the span in the context of the first event
// the hook receives, if any; otherwise it is a root span. Each event ends the
// span of the phase before it and starts its own: "drain.NotReady" at
// NotReady, "drain.Graceful" at Graceful, "drain.Cancel" at Cancel,
// "drain.Force" at Force and "drain.Cleanup" at Cleanup, with the
// attributes drainkit.in_flight and drainkit.cancelled of the event. The
// drain span gets the event "drain.grace_timeout" at Cancel,
// "drain.forced" once, at Force or at Cleanup, if and only if the drain is
// forced (its forced stop cut RPCs or handlers leaked: Event.Forced, as the
// drain's Report.Forced says), and one "drain.leaked_handler" per handler
// still running at Cleanup, with its rpc.method, drainkit.handler.age
// (seconds) and drainkit.handler.stream. At its end it gets the attributes
// drainkit.forced, drainkit.cancelled and drainkit.leaked, equal to the
// report's Forced, Cancelled and len(Leaked), and the status Error if the
// drain was forced. A Force phase that cuts nothing (an idle server whose
// drain was skipped, or connections that never acknowledged GOAWAY) is
// recorded as a phase, without the forced event.
//
// The metrics are described in the package documentation.
//
// Phases start when the hook is called, which can be a little after the drain
// entered them if hooks registered after this one are slow: hooks run in
// reverse order of registration, so register this one last to have it called
// first.
//
// A drain calls each hook for its events in phase order, one at a time, and
// always for Cleanup (see package stophook), so each drain makes exactly one
// drain span, whose phase children are those of the events the hook got. A
// hook that misses an event (the drain says so in its error) misses its
// phase span; the counts, taken from the Cleanup event, stay equal to the
// report's.
//
// The hook may serve several drains, one after the other or at once (of
// several servers): it tells them apart by Event.Started. Events given out
// of that order by hand, going back to an earlier phase or repeating one,
// are taken as a new drain: the spans of the one before, which never reached
// Cleanup, are ended with the status Error. The spans of a drain that never
// reaches Cleanup, and does not start again, are left open.
//
// It panics if an option is nil.
func Hook(opts ...Option) stophook.Hook {
	o := evaluateOptions("Hook", opts)
	return &hook{
		tracer:  o.tracerProvider.Tracer(ScopeName),
		metrics: newHookMetrics(o),
		attrs:   o.attrs,
		drains:  map[time.Time]*drainState{},
	}
}

type hook struct {
	tracer  trace.Tracer
	metrics *hookMetrics
	attrs   []attribute.KeyValue

	mu     sync.Mutex
	drains map[time.Time]*drainState // by drainKey; removed at Cleanup
}

// drainKey returns the key of the drain that started at started: the time
// without its monotonic reading and location, which == compares reliably.
func drainKey(started time.Time) time.Time { return started.Round(0).UTC() }

// drainState is what a hook knows of one drain in progress.
type drainState struct {
	start     time.Time       // when the drain started
	span      trace.Span      // the drain span
	ctx       context.Context // carries span, to start the phase spans
	phase     trace.Span      // the span of the current phase, or nil
	last      stophook.Phase  // the last phase seen
	cancelled int             // Event.Cancelled already counted
	forced    bool            // the drain's forced event and count are recorded
}

// OnStop records e. It returns nil: it ignores phases it does not know.
func (h *hook) OnStop(ctx context.Context, e stophook.Event) error {
	if e.Phase < stophook.NotReady || e.Phase > stophook.Cleanup {
		return nil
	}
	now := time.Now()

	key := drainKey(e.Started)
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.drains[key]
	if d != nil && e.Phase <= d.last {
		h.abandon(d, now)
		d = nil
	}
	if d == nil {
		d = h.begin(ctx, e, now)
		h.drains[key] = d
	}
	d.last = e.Phase

	phaseStart := now
	if e.Phase == stophook.NotReady {
		phaseStart = d.start
	}
	if d.phase != nil {
		d.phase.End(trace.WithTimestamp(now))
	}
	_, d.phase = h.tracer.Start(d.ctx, phaseSpanNames[e.Phase],
		trace.WithTimestamp(phaseStart),
		trace.WithAttributes(InFlightKey.Int(e.InFlight), CancelledKey.Int(e.Cancelled)))

	if n := e.Cancelled - d.cancelled; n > 0 {
		h.metrics.cancelled.Add(context.Background(), int64(n), h.metrics.attrs)
		d.cancelled = e.Cancelled
	}

	switch e.Phase {
	case stophook.Cancel:
		d.span.AddEvent(GraceTimeoutEventName, trace.WithTimestamp(now),
			trace.WithAttributes(InFlightKey.Int(e.InFlight)))
	case stophook.Force:
		// A stop that cuts no RPC only closes connections: the drain
		// is forced when RPCs are cut, or handlers leak.
		if e.Forced || e.InFlight > 0 {
			h.markForced(d, e, now)
		}
	case stophook.Cleanup:
		for _, c := range e.Leaked {
			d.span.AddEvent(LeakedHandlerEventName, trace.WithTimestamp(now),
				trace.WithAttributes(
					rpcMethod(c.Method),
					AgeKey.Float64(now.Sub(c.Started).Seconds()),
					StreamKey.Bool(c.Stream)))
		}
		if len(e.Leaked) > 0 {
			h.metrics.leaked.Add(context.Background(), int64(len(e.Leaked)), h.metrics.attrs)
		}
		if e.Forced || len(e.Leaked) > 0 {
			h.markForced(d, e, now)
		}
		h.end(d, e, now)
		delete(h.drains, key)
	}
	return nil
}

// markForced records, once, that drain d is forced: the span event
// "drain.forced" with the counts of e, and the forced stop's count.
func (h *hook) markForced(d *drainState, e stophook.Event, now time.Time) {
	if d.forced {
		return
	}
	d.forced = true
	d.span.AddEvent(ForcedEventName, trace.WithTimestamp(now),
		trace.WithAttributes(InFlightKey.Int(e.InFlight), CancelledKey.Int(e.Cancelled)))
	h.metrics.forced.Add(context.Background(), 1, h.metrics.attrs)
}

// begin starts the span of a drain whose first event the hook got is e.
func (h *hook) begin(ctx context.Context, e stophook.Event, now time.Time) *drainState {
	start := e.Started
	if start.IsZero() || start.After(now) {
		start = now
	}
	// Only the parent span is taken from ctx: the hook's context ends with
	// the call, and the drain span outlives it.
	parent := trace.ContextWithSpanContext(context.Background(), trace.SpanContextFromContext(ctx))
	sctx, span := h.tracer.Start(parent, DrainSpanName,
		trace.WithTimestamp(start),
		trace.WithSpanKind(trace.SpanKindInternal),
		trace.WithAttributes(h.attrs...))
	return &drainState{start: start, span: span, ctx: sctx}
}

// end ends the spans of d at its Cleanup event e, and records its duration.
func (h *hook) end(d *drainState, e stophook.Event, now time.Time) {
	d.phase.End(trace.WithTimestamp(now))
	d.span.SetAttributes(
		ForcedKey.Bool(d.forced),
		CancelledKey.Int(e.Cancelled),
		LeakedKey.Int(len(e.Leaked)))
	if d.forced {
		d.span.SetStatus(codes.Error, "drain forced")
	}
	d.span.End(trace.WithTimestamp(now))
	attrs := h.metrics.notForcedAttrs
	if d.forced {
		attrs = h.metrics.forcedAttrs
	}
	h.metrics.duration.Record(context.Background(), now.Sub(d.start).Seconds(), attrs)
}

// abandon ends the spans of d, a drain that never reached Cleanup.
func (h *hook) abandon(d *drainState, now time.Time) {
	if d.phase != nil {
		d.phase.End(trace.WithTimestamp(now))
	}
	d.span.SetStatus(codes.Error, "drain ended without a Cleanup event")
	d.span.End(trace.WithTimestamp(now))
}
