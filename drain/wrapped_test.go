package drain_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc/health"

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
			type result struct {
				r   drain.Report
				err error
			}
			drained := make(chan result, 1)
			begun := time.Now()
			go func() {
				r, err := d.Drain(ctx)
				drained <- result{r, err}
			}()
			httpWaitPhase(t, phases, stophook.Graceful)
			if tc.cancel {
				receive(t, lis.closing, "the wrapped Close to be called")
				cancel()
			}
			res := receive(t, drained, "Drain to return")
			took := time.Since(begun)
			if tc.cancel {
				if took > defaultTestTimeout/2 {
					t.Errorf("Drain() with its context ended took %v, want it at once", took)
				}
			} else if budget := d.Budget(); took > budget+time.Second {
				t.Errorf("Drain() took %v, want within its budget of %v", took, budget)
			}
			if res.err != nil && !errors.Is(res.err, drain.ErrForced) {
				t.Errorf("Drain() = %v", res.err)
			}
		})
	}
}
