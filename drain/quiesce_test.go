package drain_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
)

// holdingListener holds the connection it accepts once hold is set: its
// Accept returns that connection only when the listener is closed, as a
// listener whose Accept is slow (PROXY protocol, TLS) returns a connection
// at the moment the server stops.
type holdingListener struct {
	net.Listener
	hold      atomic.Bool
	held      chan struct{} // receives when Accept holds a connection
	closeOnce sync.Once
	closed    chan struct{}
}

func (l *holdingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.hold.CompareAndSwap(true, false) {
		l.held <- struct{}{}
		<-l.closed
	}
	return c, err
}

func (l *holdingListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// TestDrainTakesUpConnectionAcceptedAsItStops drains a server whose
// listener returns a connection only as the drain closes it: the drain must
// let grpc take that connection up before it stops, so that the call on it
// is served and drained, not reset with its connection.
func TestDrainTakesUpConnectionAcceptedAsItStops(t *testing.T) {
	tr := interceptors.NewTracker()
	srv := serveNewServer(tr, &serveService{unary: func(context.Context) error { return nil }}, health.NewServer())
	hl := &holdingListener{Listener: serveListenLocal(t), held: make(chan struct{}, 1), closed: make(chan struct{})}
	d := drain.New(srv, tr, drain.WithGracePeriod(defaultTestTimeout))
	served := make(chan error, 1)
	go func() { served <- d.Serve(hl) }()
	t.Cleanup(srv.Stop)
	serveWaitReady(t, serveDialAddr(t, hl.Addr().String()))

	hl.hold.Store(true)
	cc := serveDialAddr(t, hl.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	call := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		call <- err
	}()
	receive(t, hl.held, "the listener to hold the new connection")
	r, err := d.Drain(context.Background())
	if err != nil || r.Forced {
		t.Errorf("Drain() = forced %t, %v; want a clean drain", r.Forced, err)
	}
	if err := receive(t, call, "the call on the connection accepted last"); err != nil {
		t.Errorf("UnaryCall() on the connection accepted as the drain stopped = %v, want nil", err)
	}
	if err := receive(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
}
