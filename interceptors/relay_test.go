package interceptors_test

import (
	"context"
	"sync/atomic"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/servetest"
)

// relayService passes on to its client what the same call to another
// server returned, as gateways and proxies do: the error, or a fresh status
// of the same code, and the trailer, which carries the other server's
// grpc-status-details-bin.
type relayService struct {
	testgrpc.UnimplementedTestServiceServer
	next  testgrpc.TestServiceClient
	fresh bool // return a fresh status.Error instead of the error received

	relayedDetails atomic.Bool // a relayed trailer carried grpc-status-details-bin
}

func (s *relayService) relay(err error) error {
	if s.fresh && err != nil {
		return status.Error(status.Code(err), "downstream failed")
	}
	return err
}

func (s *relayService) UnaryCall(ctx context.Context, req *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	var tr metadata.MD
	resp, err := s.next.UnaryCall(ctx, req, grpc.Trailer(&tr))
	s.relayedDetails.Store(len(tr["grpc-status-details-bin"]) > 0)
	grpc.SetTrailer(ctx, tr)
	return resp, s.relay(err)
}

func (s *relayService) StreamingOutputCall(req *testgrpc.StreamingOutputCallRequest, ss testgrpc.TestService_StreamingOutputCallServer) error {
	ds, err := s.next.StreamingOutputCall(ss.Context(), req)
	if err != nil {
		return err
	}
	_, err = ds.Recv()
	s.relayedDetails.Store(len(ds.Trailer()["grpc-status-details-bin"]) > 0)
	ss.SetTrailer(ds.Trailer())
	return s.relay(err)
}

// TestRelayedMarksAreOverridden calls a server whose handler relays the
// refusal, or the cancellation, of a draining server it called, with its
// trailer, on grpc's own transport and through ServeHTTP. Its handler ran:
// its client must read neither "not_run" nor "cancelled", whether the mark
// comes in the status's details or in the grpc-status-details-bin of the
// relayed trailer, but the Tracker's HANDLER_RAN.
func TestRelayedMarksAreOverridden(t *testing.T) {
	refusing := interceptors.NewTracker()
	refusing.Reject(nil)
	refusingClient, _ := statusClient(t, refusing)

	cancelling := interceptors.NewTracker()
	cancellingClient, blocking := statusClient(t, cancelling)

	tests := []struct {
		name   string
		next   testgrpc.TestServiceClient
		cancel bool // the downstream call is cancelled by its server's drain once it runs
		fresh  bool
		stream bool
	}{
		{name: "unary, refusal relayed", next: refusingClient},
		{name: "unary, fresh status, refusal's trailer relayed", next: refusingClient, fresh: true},
		{name: "unary, cancellation relayed", next: cancellingClient, cancel: true},
		{name: "unary, fresh status, cancellation's trailer relayed", next: cancellingClient, cancel: true, fresh: true},
		{name: "stream, refusal relayed", next: refusingClient, stream: true},
		{name: "stream, fresh status, refusal's trailer relayed", next: refusingClient, fresh: true, stream: true},
		{name: "stream, cancellation relayed", next: cancellingClient, cancel: true, stream: true},
		{name: "stream, fresh status, cancellation's trailer relayed", next: cancellingClient, cancel: true, fresh: true, stream: true},
	}
	for _, serveHTTP := range []bool{false, true} {
		for _, tt := range tests {
			name := tt.name
			if serveHTTP {
				name = "ServeHTTP, " + name
			}
			t.Run(name, func(t *testing.T) {
				up := interceptors.NewTracker()
				srv := grpc.NewServer(up.ServerOptions()...)
				relay := &relayService{next: tt.next, fresh: tt.fresh}
				testgrpc.RegisterTestServiceServer(srv, relay)
				c := testgrpc.NewTestServiceClient(servetest.Serve(t, srv, serveHTTP))

				ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
				defer cancel()
				errs := make(chan error, 1)
				go func() {
					if tt.stream {
						s, err := c.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
						if err == nil {
							_, err = s.Recv()
						}
						errs <- err
						return
					}
					_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
					errs <- err
				}()
				if tt.cancel {
					blocking.waitStarted(t)
					if n := cancelling.CancelAll(nil); n != 1 {
						t.Fatalf("CancelAll() = %d, want 1", n)
					}
				}
				err := <-errs
				if !relay.relayedDetails.Load() {
					t.Fatalf("the relayed trailer has no grpc-status-details-bin: the test relays nothing")
				}
				checkHandlerRan(t, err)
			})
		}
	}
}

// checkHandlerRan fails t unless err is codes.Unavailable with the
// Tracker's HANDLER_RAN ErrorInfo and no drainkit mark of a drain.
func checkHandlerRan(t *testing.T, err error) {
	t.Helper()
	s := status.Convert(err)
	if s.Code() != codes.Unavailable {
		t.Fatalf("relayed call = %v, want codes.Unavailable", err)
	}
	ran := 0
	for _, d := range s.Details() {
		switch d := d.(type) {
		case *errdetails.ErrorInfo:
			if d.GetDomain() != interceptors.ErrorInfoDomain {
				continue
			}
			if d.GetReason() != interceptors.ReasonHandlerRan || d.GetMetadata()[interceptors.MetadataHandler] != interceptors.HandlerRan {
				t.Errorf("relayed call = %v, carries ErrorInfo %v, want HANDLER_RAN only", err, d)
				continue
			}
			ran++
		case *errdetails.RetryInfo:
			t.Errorf("relayed call = %v, carries RetryInfo %v, want it dropped", err, d)
		}
	}
	if ran != 1 {
		t.Errorf("relayed call = %v with %d HANDLER_RAN ErrorInfo, want 1", err, ran)
	}
}
