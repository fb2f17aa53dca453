package interceptors

import (
	"context"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/internal/servetest"
)

// internalTestTimeout bounds every wait of the package's internal tests.
const internalTestTimeout = 10 * time.Second

// returnService's FullDuplexCall reports its context on started, then
// returns nil once ret is closed.
type returnService struct {
	testgrpc.UnimplementedTestServiceServer
	started chan<- context.Context
	ret     <-chan struct{}
}

func (s *returnService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	s.started <- stream.Context()
	<-s.ret
	return nil
}

// waitBlockedIn waits until a goroutine is in fn, a function named as in
// a stack trace, for internalTestTimeout at the most.
func waitBlockedIn(t *testing.T, fn string) {
	t.Helper()
	deadline := time.Now().Add(internalTestTimeout)
	for servetest.Goroutines(fn) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no goroutine in %s after %v", fn, internalTestTimeout)
		}
		time.Sleep(time.Millisecond) // polls a condition
	}
}

// TestRetirementAsHandlerReturns retires a long-lived stream for its age
// at the moment its handler, told by Retiring, returns nil: the end of the
// notice comes as the Tracker ends the call, which waits for the
// retirement's lock. Whichever comes first, the handler returned after
// Retiring's channel was closed, so its client must get the retirement's
// status, and resume the stream, not codes.OK.
func TestRetirementAsHandlerReturns(t *testing.T) {
	const duplex = "/grpc.testing.TestService/FullDuplexCall"
	tr := NewTracker(WithLongLived(duplex), WithMaxStreamAge(time.Hour))
	started, ret := make(chan context.Context, 1), make(chan struct{})
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, &returnService{started: started, ret: ret})
	client := testgrpc.NewTestServiceClient(servetest.Serve(t, srv, false))
	ctx, cancel := context.WithTimeout(context.Background(), internalTestTimeout)
	defer cancel()
	stream, err := client.FullDuplexCall(ctx)
	if err != nil {
		t.Fatalf("FullDuplexCall() = %v", err)
	}
	var hctx context.Context
	select {
	case hctx = <-started:
	case <-ctx.Done():
		t.Fatalf("handler not started after %v", internalTestTimeout)
	}
	r := hctx.Value(retireKey{}).(*retirement)

	// The stream reaches its age: Retiring's channel closes, and the end
	// is due after the notice.
	r.warn(time.Hour, ErrStreamAge)
	r.mu.Lock()
	close(ret) // the handler returns nil, on the notice
	waitBlockedIn(t, "interceptors.(*retirement).detach(")
	r.endLocked(ErrStreamAge) // the notice ends now, as its timer would
	r.mu.Unlock()

	_, err = stream.Recv()
	s := status.Convert(err)
	retired := ""
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorInfoDomain {
			retired = info.GetMetadata()[MetadataRetired]
		}
	}
	if s.Code() != codes.Unavailable || retired != RetiredStreamAge {
		t.Errorf("client Recv() = %v (retired %q), want codes.Unavailable retired %q", err, retired, RetiredStreamAge)
	}
	if err := tr.Wait(ctx); err != nil {
		t.Fatalf("Wait() = %v, InFlight() = %d, want 0", err, tr.InFlight())
	}
}
