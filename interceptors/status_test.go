package interceptors_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/servetest"
)

// statusTestTimeout bounds every wait of the status tests.
const statusTestTimeout = 10 * time.Second

const outputCallMethod = "/grpc.testing.TestService/StreamingOutputCall"

// blockingService blocks every call until its context ends, after telling
// started, and returns the context's error, as handlers commonly do.
type blockingService struct {
	testgrpc.UnimplementedTestServiceServer
	started chan struct{}
}

func (s *blockingService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (s *blockingService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	s.started <- struct{}{}
	<-stream.Context().Done()
	return stream.Context().Err()
}

// FullDuplexCall waits in Recv, as a bidi handler waits for its client,
// and returns what Recv returns: only the Tracker ending the stream frees
// it.
func (s *blockingService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	s.started <- struct{}{}
	_, err := stream.Recv()
	return err
}

// waitStarted waits for a handler to start.
func (s *blockingService) waitStarted(t *testing.T) {
	t.Helper()
	select {
	case <-s.started:
	case <-time.After(statusTestTimeout):
		t.Fatalf("no handler started after %v", statusTestTimeout)
	}
}

// statusClient serves a blockingService tracked by tr over bufconn.
func statusClient(t *testing.T, tr *interceptors.Tracker) (testgrpc.TestServiceClient, *blockingService) {
	t.Helper()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(tr.StreamServerInterceptor()))
	svc := &blockingService{started: make(chan struct{}, 1)}
	testgrpc.RegisterTestServiceServer(srv, svc)
	return testgrpc.NewTestServiceClient(servetest.Serve(t, srv, false)), svc
}

// TestStatusDetails checks the wire format of the statuses of a server
// shutting down, as a client receives them.
func TestStatusDetails(t *testing.T) {
	errCause := errors.New("maintenance")
	for _, tc := range []struct {
		name string
		// act makes one call and acts on tr so that the call fails; it
		// returns the call's error.
		act         func(ctx context.Context, t *testing.T, tr *interceptors.Tracker, c testgrpc.TestServiceClient, svc *blockingService) error
		wantMsg     string
		wantHandler string
		wantRetry   bool
	}{
		{
			name: "unary refused by Reject",
			act: func(ctx context.Context, t *testing.T, tr *interceptors.Tracker, c testgrpc.TestServiceClient, _ *blockingService) error {
				tr.Reject(nil)
				_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
				return err
			},
			wantMsg:     "drainkit: server is shutting down",
			wantHandler: interceptors.HandlerNotRun,
			wantRetry:   true,
		},
		{
			name: "long-lived stream refused by RejectLongLived",
			act: func(ctx context.Context, t *testing.T, tr *interceptors.Tracker, c testgrpc.TestServiceClient, _ *blockingService) error {
				tr.RejectLongLived(errCause)
				s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
				if err != nil {
					return err
				}
				_, err = s.Recv()
				return err
			},
			wantMsg:     "drainkit: server is shutting down: maintenance",
			wantHandler: interceptors.HandlerNotRun,
			wantRetry:   true,
		},
		{
			name: "unary cancelled by CancelAll",
			act: func(ctx context.Context, t *testing.T, tr *interceptors.Tracker, c testgrpc.TestServiceClient, svc *blockingService) error {
				errs := make(chan error, 1)
				go func() {
					_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
					errs <- err
				}()
				svc.waitStarted(t)
				if n := tr.CancelAll(errCause); n != 1 {
					t.Errorf("CancelAll() = %d, want 1", n)
				}
				return <-errs
			},
			wantMsg:     "drainkit: server is shutting down: maintenance",
			wantHandler: interceptors.HandlerCancelled,
		},
		{
			name: "long-lived stream cancelled by CancelLongLived",
			act: func(ctx context.Context, t *testing.T, tr *interceptors.Tracker, c testgrpc.TestServiceClient, svc *blockingService) error {
				s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
				if err != nil {
					return err
				}
				svc.waitStarted(t)
				if n := tr.CancelLongLived(nil); n != 1 {
					t.Errorf("CancelLongLived() = %d, want 1", n)
				}
				_, err = s.Recv()
				return err
			},
			wantMsg:     "drainkit: server is shutting down",
			wantHandler: interceptors.HandlerCancelled,
		},
		{
			name: "stream waiting in Recv, ended by CancelAll",
			act: func(ctx context.Context, t *testing.T, tr *interceptors.Tracker, c testgrpc.TestServiceClient, svc *blockingService) error {
				s, err := c.FullDuplexCall(ctx)
				if err != nil {
					return err
				}
				svc.waitStarted(t)
				if n := tr.CancelAll(errCause); n != 1 {
					t.Errorf("CancelAll() = %d, want 1", n)
				}
				_, err = s.Recv()
				return err
			},
			wantMsg:     "drainkit: server is shutting down: maintenance",
			wantHandler: interceptors.HandlerCancelled,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithLongLived(outputCallMethod))
			c, svc := statusClient(t, tr)
			ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
			defer cancel()
			err := tc.act(ctx, t, tr, c, svc)

			s := status.Convert(err)
			if s.Code() != codes.Unavailable || s.Message() != tc.wantMsg {
				t.Fatalf("error = %v, want code %v and message %q", err, codes.Unavailable, tc.wantMsg)
			}
			var info *errdetails.ErrorInfo
			var retry *errdetails.RetryInfo
			for _, d := range s.Details() {
				switch d := d.(type) {
				case *errdetails.ErrorInfo:
					info = d
				case *errdetails.RetryInfo:
					retry = d
				default:
					t.Errorf("unexpected detail %T %v", d, d)
				}
			}
			if info == nil {
				t.Fatalf("no ErrorInfo in the details of %v", err)
			}
			if info.GetReason() != interceptors.ReasonShuttingDown || info.GetDomain() != interceptors.ErrorInfoDomain {
				t.Errorf("ErrorInfo reason, domain = %q, %q, want %q, %q", info.GetReason(), info.GetDomain(), interceptors.ReasonShuttingDown, interceptors.ErrorInfoDomain)
			}
			if got := info.GetMetadata()[interceptors.MetadataHandler]; got != tc.wantHandler || len(info.GetMetadata()) != 1 {
				t.Errorf("ErrorInfo metadata = %v, want only %s=%s", info.GetMetadata(), interceptors.MetadataHandler, tc.wantHandler)
			}
			switch {
			case tc.wantRetry && retry == nil:
				t.Errorf("no RetryInfo in the details of %v", err)
			case tc.wantRetry && retry.GetRetryDelay().AsDuration() != 0:
				t.Errorf("RetryInfo delay = %v, want 0", retry.GetRetryDelay().AsDuration())
			case !tc.wantRetry && retry != nil:
				t.Errorf("RetryInfo %v in the details of a cancelled call, want none", retry)
			}
		})
	}
}

// forwardingService passes on, as its own, the error of the same call to
// another server.
type forwardingService struct {
	testgrpc.UnimplementedTestServiceServer
	next testgrpc.TestServiceClient
}

func (s *forwardingService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	return s.next.UnaryCall(ctx, req)
}

// TestForwardedRefusalIsUnmarked calls a handler that passes on the refusal
// of a draining server it called. Its handler ran, so its client must not
// read the refusal's "not_run": the Tracker drops the ErrorInfo and the
// RetryInfo, adds its HANDLER_RAN, and keeps the code and the message.
func TestForwardedRefusalIsUnmarked(t *testing.T) {
	down := interceptors.NewTracker()
	down.Reject(nil)
	next, _ := statusClient(t, down)

	up := interceptors.NewTracker()
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(up.UnaryServerInterceptor()))
	testgrpc.RegisterTestServiceServer(srv, &forwardingService{next: next})
	cc := servetest.Serve(t, srv, false)

	// A deadline, so that a broken refusal (the downstream handler then
	// runs and blocks) fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(ctx, &testgrpc.SimpleRequest{})
	s := status.Convert(err)
	if s.Code() != codes.Unavailable || s.Message() != interceptors.ErrShuttingDown.Error() {
		t.Errorf("forwarded refusal = %v, want the downstream's code and message", err)
	}
	// The refusal's ErrorInfo and RetryInfo dropped, HANDLER_RAN added.
	checkHandlerRan(t, err)
}
