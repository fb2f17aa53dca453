package drain_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// closeBlockingListener is a listener wrapper whose Close closes the
// listener it wraps, then waits for release, as a wrapper does that waits
// for its own goroutines (a PROXY preamble being read, a connection being
// handed over) before Close returns.
type closeBlockingListener struct {
	net.Listener
	closing chan struct{} // closed when Close is first called
	release chan struct{}
}

func (l *closeBlockingListener) Close() error {
	err := l.Listener.Close()
	select {
	case <-l.closing:
	default:
		close(l.closing)
	}
	<-l.release
	return err
}

// TestDrainCloseBlockingListener serves, through Serve, a listener whose
// Close does not return: the drain must return within its budget, and at
// once when its context ends, whatever the wrapped Close does.
func TestDrainCloseBlockingListener(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel bool
	}{
		{name: "budget"},
		{name: "context ended", cancel: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := interceptors.NewTracker()
			srv := serveNewServer(tr, nil, health.NewServer())
			grace := time.Hour
			if !tc.cancel {
				grace = 400 * time.Millisecond
			}
			recorder, phases := httpPhases()
			d := drain.New(srv, tr, drain.WithGracePeriod(grace), drain.WithCancelGrace(100*time.Millisecond),
				drain.WithForceWait(100*time.Millisecond), drain.WithHooks(recorder))
			lis := &closeBlockingListener{Listener: serveListenLocal(t), closing: make(chan struct{}), release: make(chan struct{})}
			served := make(chan error, 1)
			go func() { served <- d.Serve(lis) }()
			t.Cleanup(func() {
				close(lis.release)
				receive(t, served, "Serve to return")
			})
			serveWaitReady(t, serveDialAddr(t, lis.Addr().String()))

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			drained := startDrain(ctx, d)
			httpWaitPhase(t, phases, stophook.Graceful)
			if tc.cancel {
				receive(t, lis.closing, "the wrapped Close to be called")
				cancel()
			}
			res := receive(t, drained, "Drain to return")
			checkDrainTook(t, d, res, tc.cancel)
			if res.err != nil && !errors.Is(res.err, drain.ErrForced) {
				t.Errorf("Drain() = %v", res.err)
			}
		})
	}
}

// closeNotifyingListener reports on closed when its Close is first called.
type closeNotifyingListener struct {
	net.Listener
	once   sync.Once
	closed chan struct{}
}

func (l *closeNotifyingListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// TestMixedServerStopsAccepting drains a server that serves its own
// listener through Serve and ServeHTTP beside it, while a ServeHTTP call
// outlives the start of the grace period. The drain waits for that call
// before GracefulStop, which would cut it; its own listener must still
// stop accepting as the Graceful phase begins, so that new clients go to
// other servers rather than start calls here that the Cancel phase may
// cut.
func TestMixedServerStopsAccepting(t *testing.T) {
	tr, srv, started, release := serveHeldUnary(t)
	hs, hcc := serveH2C(t, srv)
	recorder, phases := httpPhases()
	d := drain.New(srv, tr, drain.WithGracePeriod(time.Hour), drain.WithCancelGrace(100*time.Millisecond),
		drain.WithForceWait(100*time.Millisecond), drain.WithHooks(stophook.HTTPServer(hs), recorder))
	lis := &closeNotifyingListener{Listener: serveListenLocal(t), closed: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- d.Serve(lis) }()
	serveWaitReady(t, serveDialAddr(t, lis.Addr().String()))

	call := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(hcc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		call <- err
	}()
	receive(t, started, "the ServeHTTP call to start")
	drained := make(chan error, 1)
	go func() {
		_, err := d.Drain(context.Background())
		drained <- err
	}()
	httpWaitPhase(t, phases, stophook.Graceful)
	select {
	case <-lis.closed:
	case <-time.After(defaultTestTimeout):
		t.Errorf("own listener still accepting %v into the Graceful phase, while a ServeHTTP call runs", defaultTestTimeout)
	}
	close(release)
	if err := receive(t, call, "the ServeHTTP call"); err != nil {
		t.Errorf("ServeHTTP call = %v, want its result", err)
	}
	if err := receive(t, drained, "Drain to return"); err != nil {
		t.Errorf("Drain() = %v, want a clean drain", err)
	}
	if err := receive(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
}

// TestServeHTTPSkippedDrain ends the context of a drain in its Graceful
// phase while a ServeHTTP call runs whose handler honours its context:
// the forced stop cancels it, and its client must get a status it can act
// on, codes.Unavailable, as it would on grpc's own listeners, not a
// malformed response.
func TestServeHTTPSkippedDrain(t *testing.T) {
	for i := range 20 {
		started := make(chan struct{}, 1)
		tr := interceptors.NewTracker()
		srv := serveNewServer(tr, &serveService{unary: func(ctx context.Context) error {
			started <- struct{}{}
			<-ctx.Done()
			return ctx.Err()
		}}, health.NewServer())
		hs, cc := serveH2C(t, srv)
		recorder, phases := httpPhases()
		d := drain.New(srv, tr, drain.WithGracePeriod(time.Hour), drain.WithHooks(stophook.HTTPServer(hs), recorder))
		call := make(chan error, 1)
		go func() {
			_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
			call <- err
		}()
		receive(t, started, "the handler to start")
		ctx, cancel := context.WithCancel(context.Background())
		drained := make(chan error, 1)
		go func() {
			_, err := d.Drain(ctx)
			drained <- err
		}()
		httpWaitPhase(t, phases, stophook.Graceful)
		cancel()
		err := receive(t, call, "the call")
		receive(t, drained, "Drain to return")
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("run %d: call cancelled by a skipped drain = %v, want codes.Unavailable", i, err)
		}
	}
}
