package interceptors_test

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"

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
