package drain_test

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
)

// lateListener holds back the first connection it accepts once holding is
// set, and returns it from Accept only when Close is called: a connection
// that the socket gave the wrapped Accept at the very moment the drain
// stopped accepting. Under socket activation, that connection belongs to
// no other process: closing it unread resets its client.
type lateListener struct {
	net.Listener
	holding chan struct{} // receives when a connection is held
	mu      sync.Mutex
	hold    bool
	closing chan struct{}
	once    sync.Once
}

func (l *lateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	hold := l.hold
	l.hold = false
	l.mu.Unlock()
	if !hold {
		return c, nil
	}
	l.holding <- struct{}{}
	<-l.closing
	return c, nil
}

func (l *lateListener) Close() error {
	l.once.Do(func() { close(l.closing) })
	return l.Listener.Close()
}

// TestConnectionAcceptedAsDrainStops gives the drain a connection that the
// wrapped listener returns while the drain closes it: grpc must take it up
// and drain it, so that the call made on it succeeds, rather than the
// drain closing it unread.
func TestConnectionAcceptedAsDrainStops(t *testing.T) {
	tr := interceptors.NewTracker()
	srv := serveNewServer(tr, &serveService{unary: func(context.Context) error { return nil }}, health.NewServer())
	t.Cleanup(srv.Stop)
	d := drain.New(srv, tr, drain.WithGracePeriod(5*time.Second))
	lis := &lateListener{Listener: serveListenLocal(t), holding: make(chan struct{}, 1), closing: make(chan struct{})}
	served := make(chan error, 1)
	go func() { served <- d.Serve(lis) }()
	serveWaitReady(t, serveDialAddr(t, lis.Addr().String()))

	lis.mu.Lock()
	lis.hold = true
	lis.mu.Unlock()
	late := serveDialAddr(t, lis.Addr().String())
	call := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
		defer cancel()
		_, err := testgrpc.NewTestServiceClient(late).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		call <- err
	}()
	receive(t, lis.holding, "the wrapped Accept to hold the connection")

	drained := make(chan error, 1)
	go func() {
		_, err := d.Drain(context.Background())
		drained <- err
	}()
	if err := receive(t, call, "the call on the connection accepted as the drain stopped"); err != nil {
		t.Errorf("UnaryCall() on the connection accepted as the drain stopped = %v, want nil", err)
	}
	if err := receive(t, drained, "Drain to return"); err != nil {
		t.Errorf("Drain() = %v, want nil", err)
	}
	if err := receive(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
}
