package drain_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
)

// gateListener tells when it accepts a connection once watch is set, and
// opens gate when it is closed.
type gateListener struct {
	net.Listener
	watch    atomic.Bool
	accepted chan struct{}
	once     sync.Once
	gate     chan struct{}
}

func (l *gateListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil && l.watch.CompareAndSwap(true, false) {
		l.accepted <- struct{}{}
	}
	return c, err
}

func (l *gateListener) Close() error {
	l.once.Do(func() { close(l.gate) })
	return l.Listener.Close()
}

// gatedConn is a client connection whose writes wait for gate: its
// handshake reaches the server only then.
type gatedConn struct {
	net.Conn
	gate <-chan struct{}
}

func (c *gatedConn) Write(p []byte) (int, error) {
	<-c.gate
	return c.Conn.Write(p)
}

// TestDrainTakesUpConnectionAcceptedLast drains, 12 times, a server that has
// just accepted a connection whose client sends its handshake only as the
// drain stops accepting: the drain must let grpc take that connection up
// before it stops the server, so that the call on it is served, and
// drained, not turned away with its connection. Without the drain's wait
// for the connections accepted last, each drain turns the call away with a
// probability of about 40% on this machine: the test then passes with a
// probability of about 0.2%.
func TestDrainTakesUpConnectionAcceptedLast(t *testing.T) {
	for i := range 12 {
		t.Run(fmt.Sprint(i), testDrainTakesUpConnectionAcceptedLast)
	}
}

func testDrainTakesUpConnectionAcceptedLast(t *testing.T) {
	tr := interceptors.NewTracker()
	srv := serveNewServer(tr, &serveService{unary: func(context.Context) error { return nil }}, health.NewServer())
	gl := &gateListener{Listener: serveListenLocal(t), accepted: make(chan struct{}, 1), gate: make(chan struct{})}
	d := drain.New(srv, tr, drain.WithGracePeriod(defaultTestTimeout))
	served := make(chan error, 1)
	go func() { served <- d.Serve(gl) }()
	t.Cleanup(srv.Stop)
	serveWaitReady(t, serveDialAddr(t, gl.Addr().String()))

	gl.watch.Store(true)
	cc, err := grpc.NewClient(gl.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return &gatedConn{Conn: c, gate: gl.gate}, nil
		}))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	call := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{}, grpc.WaitForReady(true))
		call <- err
	}()
	receive(t, gl.accepted, "the server to accept the gated connection")
	r, err := d.Drain(context.Background())
	if err != nil || r.Forced {
		t.Errorf("Drain() = forced %t, %v; want a clean drain", r.Forced, err)
	}
	if err := receive(t, call, "the call on the connection accepted last"); err != nil {
		t.Errorf("UnaryCall() on the connection accepted last = %v, want nil", err)
	}
	if err := receive(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve() = %v, want nil", err)
	}
}
