package client_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/servetest"
)

// relay is a Demo service whose Append and Watch do their work, then call
// the same method of a downstream server and relay its error and its
// trailer, as gateways do: the error itself or a fresh status of its code.
type relay struct {
	demopb.UnimplementedDemoServer
	next  demopb.DemoClient
	fresh bool

	runs atomic.Int64 // handlers run
}

func (r *relay) relayed(err error) error {
	if r.fresh && err != nil {
		return status.Error(status.Code(err), "downstream failed")
	}
	return err
}

func (r *relay) Append(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.Int64Value, error) {
	r.runs.Add(1)
	var tr metadata.MD
	resp, err := r.next.Append(ctx, in, grpc.Trailer(&tr))
	grpc.SetTrailer(ctx, tr)
	return resp, r.relayed(err)
}

func (r *relay) Watch(in *demopb.WatchRequest, ss grpc.ServerStreamingServer[timestamppb.Timestamp]) error {
	r.runs.Add(1)
	ds, err := r.next.Watch(ss.Context(), in)
	if err != nil {
		return err
	}
	_, err = ds.Recv()
	ss.SetTrailer(ds.Trailer())
	return r.relayed(err)
}

// serveRelay serves svc, behind a Tracker, on grpc's own transport or
// through ServeHTTP, and returns a client of it made with opts.
func serveRelay(t *testing.T, svc demopb.DemoServer, serveHTTP bool, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	tr := interceptors.NewTracker()
	srv := grpc.NewServer(tr.ServerOptions()...)
	demopb.RegisterDemoServer(srv, svc)
	return servetest.Serve(t, srv, serveHTTP, opts...)
}

// TestRelayedRefusalRunsOnce calls, through DialOptions, a non-idempotent
// method whose handler relays the refusal of a draining server, with its
// trailer. The handler ran: it must run exactly once, and the caller get
// codes.Unavailable that is not this server's drain.
func TestRelayedRefusalRunsOnce(t *testing.T) {
	down := startBackend(t, "down", false)
	down.tracker.Reject(nil)
	next := demopb.NewDemoClient(dialBackends(t, []*backend{down}))

	for _, tc := range []struct {
		name             string
		fresh, serveHTTP bool
		stream           bool
	}{
		{name: "unary, error relayed"},
		{name: "unary, fresh status", fresh: true},
		{name: "stream, error relayed", stream: true},
		{name: "stream, fresh status", fresh: true, stream: true},
		{name: "ServeHTTP, unary, error relayed", serveHTTP: true},
		{name: "ServeHTTP, unary, fresh status", fresh: true, serveHTTP: true},
		{name: "ServeHTTP, stream, error relayed", serveHTTP: true, stream: true},
		{name: "ServeHTTP, stream, fresh status", fresh: true, serveHTTP: true, stream: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := &relay{next: next, fresh: tc.fresh}
			c := demopb.NewDemoClient(serveRelay(t, svc, tc.serveHTTP, client.DialOptions(client.WithBackoff(noBackoff))...))
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			var err error
			if tc.stream {
				var s demopb.Demo_WatchClient
				if s, err = c.Watch(ctx, &demopb.WatchRequest{}); err == nil {
					_, err = s.Recv()
				}
			} else {
				_, err = c.Append(ctx, wrapperspb.String("once"))
			}
			if status.Code(err) != codes.Unavailable || client.IsDraining(err) {
				t.Errorf("relayed call = %v, want codes.Unavailable, not a drain of this server (IsDraining false)", err)
			}
			if n := svc.runs.Load(); n != 1 {
				t.Errorf("the relaying handler ran %d times, want exactly once", n)
			}
		})
	}
}

// TestRelayedRetirementIsAFailure calls, with no retry budget, a resumable
// Watch whose handler relays, in a fresh status and its trailer, the
// retirement of a downstream stream that had lived past
// interceptors.MinStreamAge. The retirement is the downstream server's,
// not a move this server asked for: the resumption is a retry that the
// budget refuses, and the relaying handler runs once.
func TestRelayedRetirementIsAFailure(t *testing.T) {
	down := serveBackend(t, "down", interceptors.NewTracker(interceptors.WithLongLived(watchMethod),
		interceptors.WithMaxStreamAge(2*interceptors.MinStreamAge)), true)
	svc := &relay{next: demopb.NewDemoClient(dialBackends(t, []*backend{down})), fresh: true}
	c := demopb.NewDemoClient(serveRelay(t, svc, false,
		client.DialOptions(resumeWatch, client.WithRetryBudget(0, 0), client.WithBackoff(noBackoff))...))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable || client.IsDraining(err) {
		t.Errorf("Recv() = %v, want codes.Unavailable, not a drain of this server (IsDraining false)", err)
	}
	if n := svc.runs.Load(); n != 1 {
		t.Errorf("the relaying handler ran %d times with no retry budget, want once", n)
	}
}

// markedWatch is a Demo service, served without a Tracker, whose Watch
// lives past interceptors.MinStreamAge and returns err.
type markedWatch struct {
	demopb.UnimplementedDemoServer
	err  error
	runs atomic.Int64
}

func (m *markedWatch) Watch(*demopb.WatchRequest, grpc.ServerStreamingServer[timestamppb.Timestamp]) error {
	m.runs.Add(1)
	// The stream's age is the behaviour under test, not a wait for
	// another goroutine.
	time.Sleep(interceptors.MinStreamAge + 50*time.Millisecond)
	return m.err
}

// TestRetirementBesideHandlerRanIsAFailure has a server end a resumable
// Watch that lived past interceptors.MinStreamAge with a retirement's
// ErrorInfo beside HANDLER_RAN, as a relayed retirement reads: no move
// that server asked for. With no retry budget the resumption is refused,
// and the handler runs once.
func TestRetirementBesideHandlerRanIsAFailure(t *testing.T) {
	st, err := status.New(codes.Unavailable, "relayed retirement").WithDetails(
		&errdetails.ErrorInfo{Reason: interceptors.ReasonShuttingDown, Domain: interceptors.ErrorInfoDomain,
			Metadata: map[string]string{interceptors.MetadataHandler: interceptors.HandlerRan, interceptors.MetadataRetired: interceptors.RetiredStreamAge}},
		&errdetails.ErrorInfo{Reason: interceptors.ReasonHandlerRan, Domain: interceptors.ErrorInfoDomain,
			Metadata: map[string]string{interceptors.MetadataHandler: interceptors.HandlerRan}})
	if err != nil {
		t.Fatal(err)
	}
	svc := &markedWatch{err: st.Err()}
	srv := grpc.NewServer()
	demopb.RegisterDemoServer(srv, svc)
	c := demopb.NewDemoClient(servetest.Serve(t, srv, false,
		client.DialOptions(resumeWatch, client.WithRetryBudget(0, 0), client.WithBackoff(noBackoff))...))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	s, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	if _, err := s.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("Recv() = %v, want the server's codes.Unavailable", err)
	}
	if n := svc.runs.Load(); n != 1 {
		t.Errorf("Watch ran %d times with no retry budget, want once", n)
	}
}
