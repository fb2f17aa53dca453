package drain_test

import (
	"context"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// refused reports whether err is the refusal of a call before its handler
// ran: codes.Unavailable with drainkit's not_run mark.
func refused(err error) bool {
	st := status.Convert(err)
	if st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == interceptors.ErrorInfoDomain {
			return info.GetMetadata()[interceptors.MetadataHandler] == interceptors.HandlerNotRun
		}
	}
	return false
}

// prober makes calls, at each event of a drain, through a second server
// that shares the drained server's Tracker but is not stopped by the drain:
// what it answers is what the Tracker refuses at that phase, whatever grpc
// does to the drained server's connections.
type prober struct {
	client testgrpc.TestServiceClient

	mu     sync.Mutex
	unary  map[stophook.Phase]error // the error of a unary call at each phase
	stream map[stophook.Phase]error // the error of a long-lived stream at each phase
}

func newProber(t *testing.T, tr *interceptors.Tracker) *prober {
	t.Helper()
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, &serveService{
		unary:  func(context.Context) error { return nil },
		stream: func(context.Context) error { return nil },
	})
	return &prober{client: testgrpc.NewTestServiceClient(serveBuf(t, srv)), unary: map[stophook.Phase]error{}, stream: map[stophook.Phase]error{}}
}

func (p *prober) OnStop(ctx context.Context, e stophook.Event) error {
	if e.Phase == stophook.Cleanup {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), defaultTestTimeout)
	defer cancel()
	_, uerr := p.client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
	var serr error
	if s, err := p.client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{}); err != nil {
		serr = err
	} else {
		if _, serr = s.Recv(); serr == io.EOF { // the handler returned nil
			serr = nil
		}
	}
	p.mu.Lock()
	p.unary[e.Phase], p.stream[e.Phase] = uerr, serr
	p.mu.Unlock()
	return nil
}

func (p *prober) at(t *testing.T, ph stophook.Phase) (unary, stream error) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.unary[ph]; !ok {
		t.Fatalf("no probe at %v: the hook saw %v", ph, p.unary)
	}
	return p.unary[ph], p.stream[ph]
}

// TestDrainRefusesAtEachPhase checks what the Tracker refuses at each phase
// of a drain: long-lived streams from Graceful on, every call from Cancel
// on, and every call at Force even when the drain skipped Cancel.
func TestDrainRefusesAtEachPhase(t *testing.T) {
	t.Run("every phase", func(t *testing.T) {
		svc := newService(true) // its handler outlives the grace and the cancel grace
		ts := newTestServer(t, svc)
		t.Cleanup(func() { close(svc.release) })
		startCall(t, ts.dial(t), svc)
		p := newProber(t, ts.tracker)
		// The probes at NotReady and Graceful must come before the next
		// phase: they take milliseconds, the phases last a second.
		short := 50 * time.Millisecond
		d := drain.New(ts.srv, ts.tracker, drain.WithHooks(p), drain.WithReadinessDelay(time.Second), drain.WithGracePeriod(time.Second),
			drain.WithCancelGrace(short), drain.WithForceWait(short), drain.WithHookTimeout(defaultTestTimeout))
		r, _ := d.Drain(context.Background())
		if got, want := phaseNames(r), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Force, stophook.Cleanup}; !slices.Equal(got, want) {
			t.Fatalf("Drain() phases = %v, want %v", got, want)
		}
		u, s := p.at(t, stophook.NotReady)
		if u != nil || s != nil {
			t.Errorf("at NotReady: unary call = %v, long-lived stream = %v; want both served", u, s)
		}
		u, s = p.at(t, stophook.Graceful)
		if u != nil {
			t.Errorf("at Graceful: unary call = %v, want served (GOAWAY, not the Tracker, turns new calls away)", u)
		}
		if !refused(s) {
			t.Errorf("at Graceful: long-lived stream = %v, want refused before its handler ran", s)
		}
		for _, ph := range []stophook.Phase{stophook.Cancel, stophook.Force} {
			if u, s := p.at(t, ph); !refused(u) || !refused(s) {
				t.Errorf("at %v: unary call = %v, long-lived stream = %v; want both refused before their handler ran", ph, u, s)
			}
		}
	})
	t.Run("skipped to Force", func(t *testing.T) {
		ts := newTestServer(t, newService(false))
		p := newProber(t, ts.tracker)
		d := drain.New(ts.srv, ts.tracker, drain.WithHooks(p), drain.WithHookTimeout(defaultTestTimeout))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r, _ := d.Drain(ctx)
		if got, want := phaseNames(r), []stophook.Phase{stophook.NotReady, stophook.Force, stophook.Cleanup}; !slices.Equal(got, want) {
			t.Fatalf("Drain() phases = %v, want %v", got, want)
		}
		if u, _ := p.at(t, stophook.Force); !refused(u) {
			t.Errorf("at Force, Cancel skipped: unary call = %v, want refused before its handler ran", u)
		}
	})
}
