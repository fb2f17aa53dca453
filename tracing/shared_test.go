package tracing_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	grpccodes "google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/tracing"
)

// TestHookSharedByConcurrentDrains gives one tracing hook to two Drainers
// that drain at once, each forced by a stubborn handler, so that their
// events interleave: each drain makes exactly one drain span, which ends in
// Cleanup with the attributes of its own report.
func TestHookSharedByConcurrentDrains(t *testing.T) {
	const rounds = 10
	short := 20 * time.Millisecond
	p := newProviders(t)
	tracer := tracing.Hook(tracing.WithTracerProvider(p.tp), tracing.WithMeterProvider(p.mp))
	for round := range rounds {
		var (
			ds      []*drain.Drainer
			svcs    []*stubbornService
			calls   []chan error
			wg      sync.WaitGroup
			reports [2]drain.Report
		)
		for range 2 {
			svc := &stubbornService{entered: make(chan struct{}, 1), release: make(chan struct{})}
			tracker := interceptors.NewTracker()
			cc, srv := serve(t, svc, tracker.ServerOptions()...)
			client := testgrpc.NewTestServiceClient(cc)
			if _, err := client.EmptyCall(context.Background(), &testgrpc.Empty{}); status.Code(err) != grpccodes.Unimplemented {
				t.Fatalf("EmptyCall() = %v, want code Unimplemented", err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
				done <- err
			}()
			receive(t, svc.entered, "the handler to start")
			ds = append(ds, drain.New(srv, tracker, drain.WithHooks(tracer),
				drain.WithGracePeriod(short), drain.WithCancelGrace(short), drain.WithForceWait(short)))
			svcs, calls = append(svcs, svc), append(calls, done)
		}
		for i, d := range ds {
			wg.Add(1)
			go func() {
				defer wg.Done()
				reports[i], _ = d.Drain(context.Background())
			}()
		}
		wg.Wait()
		for i, svc := range svcs {
			close(svc.release)
			receive(t, calls[i], "the call to end")
		}

		spans, children := drainSpans(p.spans.Ended())
		if len(spans) != 2*(round+1) {
			t.Fatalf("round %d: %d drain spans ended in all, want %d", round, len(spans), 2*(round+1))
		}
		var got, want []string
		for _, s := range spans[2*round:] {
			kids := spanNames(children[s.SpanContext().SpanID().String()])
			if len(kids) == 0 || kids[len(kids)-1] != "drain.Cleanup" {
				t.Errorf("round %d: drain span with phases %v, want it ended at Cleanup", round, kids)
			}
			forced, _ := attr(s.Attributes(), tracing.ForcedKey)
			cancelled, _ := attr(s.Attributes(), tracing.CancelledKey)
			leaked, _ := attr(s.Attributes(), tracing.LeakedKey)
			got = append(got, fmt.Sprintf("start=%v forced=%t cancelled=%d leaked=%d", s.StartTime().UnixNano(), forced.AsBool(), cancelled.AsInt64(), leaked.AsInt64()))
		}
		for _, r := range reports {
			want = append(want, fmt.Sprintf("start=%v forced=%t cancelled=%d leaked=%d", r.Started.UnixNano(), r.Forced, r.Cancelled, len(r.Leaked)))
		}
		if !(got[0] == want[0] && got[1] == want[1] || got[0] == want[1] && got[1] == want[0]) {
			t.Errorf("round %d: drain spans %v, want those of the reports %v", round, got, want)
		}
	}
}
