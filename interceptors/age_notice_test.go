package interceptors_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/servetest"
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
			srv := grpc.NewServer(tr.ServerOptions()...)
			testgrpc.RegisterTestServiceServer(srv, noticeService{ret: ret})
			c := testgrpc.NewTestServiceClient(servetest.Serve(t, srv, false))
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
