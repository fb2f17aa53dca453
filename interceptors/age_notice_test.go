package interceptors_test

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
)

// noticeService's FullDuplexCall does what Retiring's documentation asks
// of a handler: when the channel closes, it sends a last message and
// returns, with ret.
type noticeService struct {
	testgrpc.UnimplementedTestServiceServer
	ret error
}

func (s noticeService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	select {
	case <-interceptors.Retiring(stream.Context()):
	case <-stream.Context().Done():
		return stream.Context().Err()
	}
	if err := stream.Send(&testgrpc.StreamingOutputCallResponse{}); err != nil {
		return err
	}
	return s.ret
}

// TestHandlerReturnsOnRetiringNotice: a handler that returns on its own
// once Retiring's channel is closed, before the Tracker ends its stream,
// still ends the stream with the retirement's status, nil or error: its
// client must resume the stream, not take it as complete.
func TestHandlerReturnsOnRetiringNotice(t *testing.T) {
	for _, ret := range []error{nil, status.Error(codes.Internal, "bye")} {
		t.Run(status.Code(ret).String(), func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithLongLived(duplexMethod), interceptors.WithMaxStreamAge(time.Second))
			c := serveNotice(t, tr, noticeService{ret: ret})
			ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
			defer cancel()
			stream, err := c.FullDuplexCall(ctx)
			if err != nil {
				t.Fatalf("FullDuplexCall() = %v", err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("Recv() = %v, want the last message", err)
			}
			_, err = stream.Recv()
			if why, marked := retiredFor(err); !marked || why != interceptors.RetiredStreamAge {
				t.Fatalf("Recv() = %v, want codes.Unavailable marked cancelled and retired %q", err, interceptors.RetiredStreamAge)
			}
		})
	}
}

// serveNotice serves svc, tracked by tr, on a loopback TCP port and
// returns a client of it.
func serveNotice(t *testing.T, tr *interceptors.Tracker, svc noticeService) testgrpc.TestServiceClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, svc)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() {
		cc.Close()
		srv.Stop()
		<-served
	})
	return testgrpc.NewTestServiceClient(cc)
}
