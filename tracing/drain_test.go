package tracing_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/grpc"
	grpccodes "google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
	"github.com/drainkit/drainkit/tracing"
)

// stubbornService blocks UnaryCall until release is closed, whatever its
// context does; it sends on entered when a handler starts.
type stubbornService struct {
	testgrpc.UnimplementedTestServiceServer
	entered chan struct{}
	release chan struct{}
}

func (s *stubbornService) UnaryCall(context.Context, *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.entered <- struct{}{}
	<-s.release
	return &testgrpc.SimpleResponse{}, nil
}

// TestHookOneSpanPerDrain runs 100 real drains of each kind, beside a hook
// that blocks until its context ends at NotReady: each makes exactly one
// drain span, with its phases in order, whose attributes and whose share
// of the metrics are those of the drain's report; the forced event is on
// the forced drains only.
func TestHookOneSpanPerDrain(t *testing.T) {
	const drains = 100
	short := 10 * time.Millisecond
	blocker := stophook.Func(func(ctx context.Context, e stophook.Event) error {
		if e.Phase == stophook.NotReady {
			<-ctx.Done()
		}
		return nil
	})
	tests := []struct {
		name       string
		opts       []drain.Option
		busy       bool // a stubborn handler runs: the drain is forced
		skip       bool // the context of Drain has ended
		tracerLast bool // the tracing hook is called last
	}{
		{name: "forced, tracing hook called first", busy: true,
			opts: []drain.Option{drain.WithGracePeriod(short), drain.WithCancelGrace(short), drain.WithForceWait(short)}},
		{name: "forced, tracing hook called last", busy: true, tracerLast: true,
			opts: []drain.Option{drain.WithGracePeriod(short), drain.WithCancelGrace(short), drain.WithForceWait(short)}},
		{name: "every wait zero", busy: true,
			opts: []drain.Option{drain.WithGracePeriod(0), drain.WithCancelGrace(0), drain.WithForceWait(0)}},
		{name: "skipped on an idle server", skip: true,
			opts: []drain.Option{drain.WithGracePeriod(time.Hour), drain.WithHookTimeout(short)}},
		{name: "idle", opts: []drain.Option{drain.WithGracePeriod(time.Hour), drain.WithHookTimeout(short)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newProviders(t)
			tracer := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
			hooks := []stophook.Hook{tracer, blocker} // the blocker is called first
			if !tt.tracerLast {
				hooks = []stophook.Hook{blocker, tracer}
			}
			var forced, cancelled, leaked int64
			for i := range drains {
				svc := &stubbornService{entered: make(chan struct{}, 1), release: make(chan struct{})}
				tracker := interceptors.NewTracker()
				cc, srv := serve(t, svc, tracker.ServerOptions()...)
				// An answer, Unimplemented, shows the server serving.
				if _, err := testgrpc.NewTestServiceClient(cc).EmptyCall(context.Background(), &testgrpc.Empty{}); status.Code(err) != grpccodes.Unimplemented {
					t.Fatalf("EmptyCall() = %v, want code Unimplemented", err)
				}
				callDone := make(chan error, 1)
				if tt.busy {
					go func() {
						_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
						callDone <- err
					}()
					receive(t, svc.entered, "the handler to start")
				}
				d := drain.New(srv, tracker, append([]drain.Option{drain.WithHooks(hooks...), drain.WithHookTimeout(time.Hour)}, tt.opts...)...)
				ctx, cancel := context.WithCancel(context.Background())
				if tt.skip {
					cancel()
				}
				r, _ := d.Drain(ctx)
				cancel()
				close(svc.release)
				if tt.busy {
					receive(t, callDone, "the call to end")
				}
				if r.Forced {
					forced++
				}
				cancelled += int64(r.Cancelled)
				leaked += int64(len(r.Leaked))

				spans, children := drainSpans(p.spans.Ended())
				if len(spans) != i+1 {
					t.Fatalf("drain %d: %d drain spans ended in all, want %d", i, len(spans), i+1)
				}
				s := spans[i]
				kids := children[s.SpanContext().SpanID().String()]
				var want []string
				for _, ph := range r.Phases {
					want = append(want, "drain."+ph.Phase.String())
				}
				got := spanNames(kids)
				if !isSubsequence(got, want) || len(got) == 0 || got[len(got)-1] != "drain.Cleanup" {
					t.Fatalf("drain %d: phase spans %v, want some of the report's %v in order, Cleanup last", i, got, want)
				}
				if v, _ := attr(s.Attributes(), tracing.ForcedKey); v.AsBool() != r.Forced {
					t.Errorf("drain %d: span %s = %v, report Forced = %t", i, tracing.ForcedKey, v.AsBool(), r.Forced)
				}
				if v, _ := attr(s.Attributes(), tracing.CancelledKey); v.AsInt64() != int64(r.Cancelled) {
					t.Errorf("drain %d: span %s = %d, report Cancelled = %d", i, tracing.CancelledKey, v.AsInt64(), r.Cancelled)
				}
				if v, _ := attr(s.Attributes(), tracing.LeakedKey); v.AsInt64() != int64(len(r.Leaked)) {
					t.Errorf("drain %d: span %s = %d, report leaked %d", i, tracing.LeakedKey, v.AsInt64(), len(r.Leaked))
				}
				if hasForced := slices.Contains(eventNames(s), tracing.ForcedEventName); hasForced != r.Forced {
					t.Errorf("drain %d: span events %v: %s present %t, report Forced = %t", i, eventNames(s), tracing.ForcedEventName, hasForced, r.Forced)
				}
				if (s.Status().Code == codes.Error) != r.Forced {
					t.Errorf("drain %d: span status %v, report Forced = %t", i, s.Status(), r.Forced)
				}
			}
			if tt.busy && forced == 0 {
				t.Errorf("no drain was forced, want the stubborn handler to force them")
			}
			rm := p.collect(t)
			for _, m := range []struct {
				name string
				want int64
			}{
				{tracing.ForcedStopsMetric, forced},
				{tracing.CancelledRPCsMetric, cancelled},
				{tracing.LeakedHandlersMetric, leaked},
			} {
				if got := counterTotal(t, rm, m.name); got != m.want {
					t.Errorf("%s = %d, want %d, the sum of the reports", m.name, got, m.want)
				}
			}
		})
	}
}

// isSubsequence reports whether sub is made of elements of seq in the same
// order.
func isSubsequence(sub, seq []string) bool {
	i := 0
	for _, s := range seq {
		if i < len(sub) && sub[i] == s {
			i++
		}
	}
	return i == len(sub)
}

func receive[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(defaultTestTimeout):
		t.Fatalf("timed out after %v waiting for %s", defaultTestTimeout, what)
		panic("unreachable")
	}
}

// TestServerHandlerMarksDrainEndedRPCs drains a server with a call whose
// handler the drain cancels and then refuses another: their spans say a
// drain ended them and the counter counts them, by how; an RPC failing
// with codes.Unavailable of its own is neither marked nor counted.
func TestServerHandlerMarksDrainEndedRPCs(t *testing.T) {
	const method = "grpc.testing.TestService/UnaryCall"
	p := newProviders(t)
	svc := newBlockingService()
	tracker := interceptors.NewTracker()
	otel := tracing.ServerHandler(otelgrpc.NewServerHandler(otelgrpc.WithTracerProvider(p.tp), otelgrpc.WithMeterProvider(p.mp)),
		tracing.WithMeterProvider(p.mp))
	cc, srv := serve(t, svc, append(tracker.ServerOptions(), grpc.StatsHandler(otel))...)
	client := testgrpc.NewTestServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()

	// An outage, on a server beside it: codes.Unavailable, without
	// drainkit's mark.
	outageCC, _ := serve(t, unavailableService{}, grpc.StatsHandler(otel))
	if _, err := testgrpc.NewTestServiceClient(outageCC).EmptyCall(ctx, &testgrpc.Empty{}); status.Code(err) != grpccodes.Unavailable {
		t.Fatalf("EmptyCall() of the failing server = %v, want code Unavailable", err)
	}

	cancelledErr := make(chan error, 1)
	go func() {
		_, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		cancelledErr <- err
	}()
	receive(t, svc.entered, "the handler to start")
	tracker.Reject(drain.ErrDraining)
	if n := tracker.CancelAll(drain.ErrDraining); n != 1 {
		t.Fatalf("CancelAll() = %d, want 1", n)
	}
	if err := receive(t, cancelledErr, "the cancelled call"); status.Code(err) != grpccodes.Unavailable {
		t.Fatalf("cancelled UnaryCall() = %v, want code Unavailable", err)
	}
	if _, err := client.UnaryCall(ctx, &testgrpc.SimpleRequest{}); status.Code(err) != grpccodes.Unavailable {
		t.Fatalf("refused UnaryCall() = %v, want code Unavailable", err)
	}
	outageCC.Close()
	cc.Close()
	srv.GracefulStop()

	byHandler := map[string]int{}
	outageSpans := 0
	for _, s := range p.spans.Ended() {
		v, ok := attr(s.Attributes(), tracing.DrainEndedKey)
		if s.Name() == "grpc.testing.TestService/EmptyCall" {
			outageSpans++
			if ok {
				t.Errorf("span of the outage's call has %s = %v, want none", tracing.DrainEndedKey, v.String())
			}
			continue
		}
		if !ok || !v.AsBool() {
			t.Errorf("span %s (status %v) not marked %s", s.Name(), s.Status(), tracing.DrainEndedKey)
			continue
		}
		h, _ := attr(s.Attributes(), tracing.HandlerKey)
		byHandler[h.AsString()]++
	}
	if outageSpans != 1 {
		t.Errorf("%d spans of the outage's call, want 1", outageSpans)
	}
	if want := map[string]int{"cancelled": 1, "not_run": 1}; fmt.Sprint(byHandler) != fmt.Sprint(want) {
		t.Errorf("marked spans by %s = %v, want %v", tracing.HandlerKey, byHandler, want)
	}
	m, ok := findMetric(p.collect(t), tracing.DrainEndedRPCsMetric)
	if !ok {
		t.Fatalf("metric %s not recorded", tracing.DrainEndedRPCsMetric)
	}
	counts := map[string]int64{}
	for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
		h, _ := dp.Attributes.Value(tracing.HandlerKey)
		meth, _ := dp.Attributes.Value("rpc.method")
		code, _ := dp.Attributes.Value("rpc.response.status_code")
		counts[fmt.Sprintf("%s %s %s", meth.AsString(), code.AsString(), h.AsString())] += dp.Value
	}
	want := map[string]int64{
		method + " UNAVAILABLE cancelled": 1,
		method + " UNAVAILABLE not_run":   1,
	}
	if fmt.Sprint(counts) != fmt.Sprint(want) {
		t.Errorf("%s = %v, want %v", tracing.DrainEndedRPCsMetric, counts, want)
	}
}

// unavailableService fails EmptyCall with codes.Unavailable of its own.
type unavailableService struct {
	testgrpc.UnimplementedTestServiceServer
}

func (unavailableService) EmptyCall(context.Context, *testgrpc.Empty) (*testgrpc.Empty, error) {
	return nil, status.Error(grpccodes.Unavailable, "the database is down")
}
