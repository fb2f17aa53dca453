package drain_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

const (
	// defaultTestTimeout bounds every wait for something that must happen.
	defaultTestTimeout = 10 * time.Second
	// defaultTestShortTimeout is how long a test waits to see that
	// something does not happen.
	defaultTestShortTimeout = 100 * time.Millisecond
)

// receive returns the next value from c, or fails tb after
// defaultTestTimeout.
func receive[T any](tb testing.TB, c <-chan T, what string) T {
	tb.Helper()
	timer := time.NewTimer(defaultTestTimeout)
	defer timer.Stop()
	select {
	case v := <-c:
		return v
	case <-timer.C:
		tb.Fatalf("timed out after %v waiting for %s", defaultTestTimeout, what)
		panic("unreachable")
	}
}

// phaseNames returns the names of the phases of r.
func phaseNames(r drain.Report) []stophook.Phase {
	var names []stophook.Phase
	for _, p := range r.Phases {
		names = append(names, p.Phase)
	}
	return names
}

// serveService is a TestService whose UnaryCall and StreamingOutputCall
// run the functions given by the test; StreamingOutputCall sends nothing.
type serveService struct {
	testgrpc.UnimplementedTestServiceServer
	unary  func(ctx context.Context) error
	stream func(ctx context.Context) error
}

func (s *serveService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if s.stream == nil {
		return status.Error(codes.Unimplemented, "no stream handler")
	}
	return s.stream(stream.Context())
}

func (s *serveService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := s.unary(ctx); err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{}, nil
}

// serveNewServer returns a gRPC server whose RPCs tr tracks, with svc as its
// TestService (unless nil) and hs as its health service.
func serveNewServer(tr *interceptors.Tracker, svc testgrpc.TestServiceServer, hs *health.Server) *grpc.Server {
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(tr.StreamServerInterceptor()),
	)
	if svc != nil {
		testgrpc.RegisterTestServiceServer(srv, svc)
	}
	healthpb.RegisterHealthServer(srv, hs)
	return srv
}

// serveStart serves srv on lis in the background; the returned channel
// receives the error of srv.Serve.
func serveStart(srv *grpc.Server, lis net.Listener) <-chan error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	return served
}

// serveListenLocal listens on a free port of 127.0.0.1.
func serveListenLocal(tb testing.TB) net.Listener {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("net.Listen() = %v", err)
	}
	return lis
}

// serveDialAddr returns a client connection to addr, closed when tb ends.
func serveDialAddr(tb testing.TB, addr string) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("grpc.NewClient(%q) = %v", addr, err)
	}
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// serveDialBuf returns a client connection to lis, which the caller closes.
func serveDialBuf(tb testing.TB, lis *bufconn.Listener) *grpc.ClientConn {
	tb.Helper()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatalf("grpc.NewClient() = %v", err)
	}
	return cc
}

// serveBuf serves srv on a new bufconn listener and returns a client
// connection to it; at the end of the test the connection is closed, then
// srv stopped.
func serveBuf(tb testing.TB, srv *grpc.Server) *grpc.ClientConn {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	served := serveStart(srv, lis)
	tb.Cleanup(func() {
		srv.Stop()
		<-served
	})
	cc := serveDialBuf(tb, lis)
	tb.Cleanup(func() { cc.Close() })
	return cc
}

// serveWaitReady makes one health check on cc, waiting for the connection
// to be ready, so that the server is known to be serving.
func serveWaitReady(tb testing.TB, cc *grpc.ClientConn) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true)); err != nil {
		tb.Fatalf("Check() = %v, want nil", err)
	}
}

// serveHeldUnary returns a server whose RPCs the returned Tracker tracks,
// stopped when t ends, whose UnaryCall sends on started and returns once
// release is closed.
func serveHeldUnary(t *testing.T) (tr *interceptors.Tracker, srv *grpc.Server, started <-chan struct{}, release chan struct{}) {
	t.Helper()
	start := make(chan struct{}, 1)
	release = make(chan struct{})
	tr = interceptors.NewTracker()
	srv = serveNewServer(tr, &serveService{unary: func(context.Context) error {
		start <- struct{}{}
		<-release
		return nil
	}}, health.NewServer())
	t.Cleanup(srv.Stop)
	return tr, srv, start, release
}

// checkDrainTook fails t if res, the result of d's drain, took longer than
// d's budget (with a second's margin), or, if the drain's context ended
// once it had begun, if it did not return at once.
func checkDrainTook(t *testing.T, d *drain.Drainer, res drainResult, cancelled bool) {
	t.Helper()
	if cancelled {
		if res.took > defaultTestTimeout/2 {
			t.Errorf("Drain() with its context ended took %v, want it at once", res.took)
		}
	} else if budget := d.Budget(); res.took > budget+time.Second {
		t.Errorf("Drain() took %v, want within its budget of %v", res.took, budget)
	}
}
