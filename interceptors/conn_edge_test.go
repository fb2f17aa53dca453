package interceptors_test

import (
	"context"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/stats"

	"github.com/drainkit/drainkit/interceptors"
)

// addrlessListener hands out connections that know neither of their
// addresses, as some tunnels and hand-written transports do; grpc serves
// them.
type addrlessListener struct{ net.Listener }

func (l addrlessListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return addrlessConn{c}, nil
}

type addrlessConn struct{ net.Conn }

func (addrlessConn) LocalAddr() net.Addr  { return nil }
func (addrlessConn) RemoteAddr() net.Addr { return nil }

// TestCredentialsServeConnectionsWithoutAddresses serves, with
// Tracker.Credentials, a listener whose connections have no addresses: the
// server must serve them as grpc does, not panic.
func TestCredentialsServeConnectionsWithoutAddresses(t *testing.T) {
	tr := interceptors.NewTracker(interceptors.WithLongLived(duplexMethod))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	srv := grpc.NewServer(append(tr.ServerOptions(), grpc.Creds(tr.Credentials(insecure.NewCredentials())))...)
	svc := &retireService{started: make(chan context.Context, 1), ended: make(chan retireEnd, 1)}
	testgrpc.RegisterTestServiceServer(srv, svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(addrlessListener{lis}) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	defer func() {
		cc.Close()
		srv.Stop()
		<-served
	}()
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()
	stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	<-svc.started
	if err := stream.CloseSend(); err != nil {
		t.Fatalf("CloseSend() = %v", err)
	}
	if end := <-svc.ended; end.cause != nil {
		t.Errorf("handler's context ended with %v, want it live", end.cause)
	}
}

// connEnds is a stats handler that reports the end of each connection.
type connEnds struct{ ended chan struct{} }

func (h connEnds) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context   { return ctx }
func (h connEnds) HandleRPC(context.Context, stats.RPCStats)                         {}
func (h connEnds) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }
func (h connEnds) HandleConn(_ context.Context, s stats.ConnStats) {
	if _, ok := s.(*stats.ConnEnd); ok {
		h.ended <- struct{}{}
	}
}

// dialReady returns a connection to the Unix socket path, once it is ready.
func dialReady(t *testing.T, ctx context.Context, path string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	cc.Connect()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(ctx, s) {
			t.Fatalf("connection not ready: %v", ctx.Err())
		}
	}
	return cc
}

// TestConnectionAgeOnSharedAddresses serves a Unix socket, whose
// connections all have the same addresses: two connections are open, the
// first closes, and the long-lived stream then opened on the second, now
// the only connection with its addresses, must be retired at its age.
func TestConnectionAgeOnSharedAddresses(t *testing.T) {
	tr := interceptors.NewTracker(interceptors.WithLongLived(duplexMethod))
	path := filepath.Join(t.TempDir(), "s")
	lis, err := net.Listen("unix", path)
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	ends := connEnds{ended: make(chan struct{}, 4)}
	srv := grpc.NewServer(append(tr.ServerOptions(),
		grpc.Creds(tr.Credentials(insecure.NewCredentials())),
		grpc.StatsHandler(ends),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionAge: 2 * time.Second, MaxConnectionAgeGrace: time.Minute}))...)
	svc := &retireService{started: make(chan context.Context, 1), ended: make(chan retireEnd, 1)}
	testgrpc.RegisterTestServiceServer(srv, svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	defer func() {
		srv.Stop()
		<-served
	}()
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()

	first := dialReady(t, ctx, path)
	second := dialReady(t, ctx, path)
	defer second.Close()
	first.Close()
	<-ends.ended

	stream, err := testgrpc.NewTestServiceClient(second).FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	<-svc.started
	_, err = stream.Recv()
	if why, marked := retiredFor(err); !marked || why != interceptors.RetiredConnectionAge {
		t.Fatalf("Recv() = %v, want codes.Unavailable marked cancelled and retired %q", err, interceptors.RetiredConnectionAge)
	}
	<-svc.ended
}
