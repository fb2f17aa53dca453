package drainkit_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/readmesnippet"
	"github.com/drainkit/drainkit/keepalive"
)

// newRebalancingServer is the README's server whose long-lived streams
// follow the servers added after they opened.
func newRebalancingServer(creds credentials.TransportCredentials, streamAge time.Duration) (*grpc.Server, *interceptors.Tracker) {
	t := interceptors.NewTracker(
		// grpc's health Watch is long-lived by default; add your own.
		interceptors.WithLongLived("/drainkit.demo.v1.Demo/Watch"),
		// Each long-lived stream ends after streamAge ±10%, resumable.
		interceptors.WithMaxStreamAge(streamAge),
	)
	opts := append(t.ServerOptions(),
		// The long-lived streams of a connection end at its GOAWAY.
		grpc.Creds(t.Credentials(creds)),
	)
	// MaxConnectionAge 5m ±10%; its grace lets every call finish.
	opts = append(opts, keepalive.ServerOptions()...)
	return grpc.NewServer(opts...), t
}

func TestREADMERebalanceSnippet(t *testing.T) {
	readmesnippet.Check(t, "README.md", "rebalance_test.go", "rebalance_test.go", "newRebalancingServer")
}

// TestRebalancingServerRetiresWatch runs the README's server with a stream
// age of 200ms: a health Watch must end with the retirement's status.
func TestRebalancingServerRetiresWatch(t *testing.T) {
	srv, _ := newRebalancingServer(insecure.NewCredentials(), 200*time.Millisecond)
	healthpb.RegisterHealthServer(srv, health.NewServer())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := healthpb.NewHealthClient(cc).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	for {
		_, err := stream.Recv()
		if err == nil {
			continue
		}
		if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != interceptors.ErrStreamAge.Error() {
			t.Fatalf("Watch ended with %v, want %v and %q", err, codes.Unavailable, interceptors.ErrStreamAge.Error())
		}
		return
	}
}

// TestMaxStreamAgeOnTransports retires a bidi stream whose handler waits
// in Recv, on the server's own listener and through ServeHTTP: the client
// must receive the retirement's status, and the handler return.
func TestMaxStreamAgeOnTransports(t *testing.T) {
	const duplex = "/grpc.testing.TestService/FullDuplexCall"
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			tracker := interceptors.NewTracker(interceptors.WithLongLived(duplex), interceptors.WithMaxStreamAge(100*time.Millisecond))
			returned := make(chan error, 1)
			srv := grpc.NewServer(tracker.ServerOptions()...)
			testgrpc.RegisterTestServiceServer(srv, &streamService{duplex: func(stream testgrpc.TestService_FullDuplexCallServer) error {
				_, err := stream.Recv()
				returned <- err
				return err
			}})
			cc := tr.serve(t, srv)
			stream, err := testgrpc.NewTestServiceClient(cc).FullDuplexCall(testContext(t))
			if err != nil {
				t.Fatalf("FullDuplexCall() = %v", err)
			}
			_, err = stream.Recv()
			if st := status.Convert(err); st.Code() != codes.Unavailable || st.Message() != interceptors.ErrStreamAge.Error() {
				t.Fatalf("Recv() = %v, want %v and %q", err, codes.Unavailable, interceptors.ErrStreamAge.Error())
			}
			if err := receive(t, returned, "the handler to return"); err == nil {
				t.Errorf("the handler's Recv() = nil, want an error")
			}
		})
	}
}
