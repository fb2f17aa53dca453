package drain_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/stophook"
)

// watchHealth opens a health Watch stream on cc, reads its first status,
// SERVING, and returns a channel that receives each status the stream sends
// from then on, then its error.
func watchHealth(t *testing.T, cc *grpc.ClientConn) <-chan any {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	if m, err := w.Recv(); err != nil || m.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Watch().Recv() = %v, %v, want SERVING", m.GetStatus(), err)
	}
	got := make(chan any, 10)
	go func() {
		for {
			m, err := w.Recv()
			if err != nil {
				got <- err
				return
			}
			got <- m.GetStatus()
		}
	}()
	return got
}

// checkDrainEnd fails t unless err is the end of a stream cancelled by the
// drain.
func checkDrainEnd(t *testing.T, err any) {
	t.Helper()
	e, ok := err.(error)
	if !ok || status.Code(e) != codes.Unavailable || !strings.Contains(status.Convert(e).Message(), drain.ErrDraining.Error()) {
		t.Errorf("Watch ended with %v, want %v and %q", err, codes.Unavailable, drain.ErrDraining)
	}
}

// With no readiness delay, the drain ends the health watchers before it
// turns health NOT_SERVING: each reads the end of its stream, not a
// NOT_SERVING a moment before it, and Check reads NOT_SERVING. (Ended the
// other way round, most of 100 watchers read NOT_SERVING first.)
func TestDrainEndsWatchersFirstWithoutReadinessDelay(t *testing.T) {
	const watchers = 100
	ts := newTestServer(t, newService(false))
	cc := ts.dial(t)
	var got []<-chan any
	for range watchers {
		got = append(got, watchHealth(t, cc))
	}
	r, err := drain.New(ts.srv, ts.tracker, drain.WithHealth(ts.health)).Drain(context.Background())
	if err != nil || r.Cancelled != watchers {
		t.Errorf("Drain() = cancelled %d, %v; want %d, nil", r.Cancelled, err, watchers)
	}
	for _, g := range got {
		checkDrainEnd(t, receive(t, g, "the end of Watch"))
	}
	resp, err := ts.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health Check() after Drain = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
}

// With a readiness delay, a health watcher hears NOT_SERVING as the drain
// starts, keeps its stream through the delay, and is ended at Graceful.
func TestDrainTellsWatchersWithReadinessDelay(t *testing.T) {
	ts := newTestServer(t, newService(false))
	got := watchHealth(t, ts.dial(t))
	rec := newRecorder()
	d := drain.New(ts.srv, ts.tracker, drain.WithHealth(ts.health), drain.WithHooks(rec),
		drain.WithReadinessDelay(200*time.Millisecond))
	done := startDrain(context.Background(), d)
	if m := receive(t, got, "NOT_SERVING on Watch"); m != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("Watch as the drain starts: %v, want NOT_SERVING", m)
	}
	rec.waitPhase(t, stophook.Graceful)
	checkDrainEnd(t, receive(t, got, "the end of Watch"))
	if res := receive(t, done, "Drain to return"); res.err != nil || res.report.Cancelled != 1 {
		t.Errorf("Drain() = cancelled %d, %v; want 1, nil", res.report.Cancelled, res.err)
	}
}
