package client_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
)

// openWatch opens a Watch through c and receives n ticks; it returns the
// stream and the backend of bs that serves it, if bs are given.
func openWatch(t *testing.T, ctx context.Context, c demopb.DemoClient, n int, bs ...*backend) (demopb.Demo_WatchClient, *backend) {
	t.Helper()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	for range n {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv() = %v", err)
		}
	}
	if len(bs) == 0 {
		return stream, nil
	}
	for _, b := range bs {
		if b.svc.count(watchMethod) == 1 {
			return stream, b
		}
	}
	t.Fatal("no backend serves the Watch")
	return nil, nil
}

func TestResumableStreamRidesThroughConnectionLoss(t *testing.T) {
	a, b := startBackend(t, "A", false), startBackend(t, "B", false)
	var r retries
	c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, client.DialOptions(resumeWatch, r.option())...))
	waitAllServe(t, c, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, first := openWatch(t, ctx, c, 3, a, b)
	other := a
	if first == a {
		other = b
	}

	first.srv.Stop() // every connection closed, no status sent
	last := time.Time{}
	for i := range 5 {
		ts, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv() #%d after the connection loss = %v, want the stream to go on", i, err)
		}
		if !last.IsZero() && ts.AsTime().Sub(last) != tick {
			t.Errorf("tick %v after %v, want %v apart", ts.AsTime(), last, tick)
		}
		last = ts.AsTime()
	}
	if n := other.svc.count(watchMethod); n != 1 {
		t.Errorf("Watch handlers run on backend %s = %d, want 1", other.name, n)
	}
	errs := r.get()
	if len(errs) == 0 || status.Code(errs[0]) != codes.Unavailable || client.IsDraining(errs[0]) {
		t.Errorf("resumed after %v, want a codes.Unavailable of the connection, not of a drain", errs)
	}
}

func TestRefusedServerStreamRetried(t *testing.T) {
	a, b := startBackend(t, "A", false), startBackend(t, "B", false)
	var r retries
	// No option names Watch: refused streams are retried all the same.
	c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, client.DialOptions(r.option())...))
	waitAllServe(t, c, a, b)
	a.tracker.RejectLongLived(nil)

	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// Two Watch streams: round_robin sends at least one of them to A.
	for range 2 {
		openWatch(t, ctx, c, 1)
	}
	if na, nb := a.svc.count(watchMethod), b.svc.count(watchMethod); na != 0 || nb != 2 {
		t.Errorf("Watch handlers run on A, B = %d, %d, want 0, 2", na, nb)
	}
	errs := r.get()
	if len(errs) == 0 {
		t.Errorf("no Watch retried: round_robin sent none to A")
	}
	for _, err := range errs {
		if !client.IsDraining(err) {
			t.Errorf("retried after %v, want only A's refusals", err)
		}
	}
}

func TestStreamNotResumable(t *testing.T) {
	// Idempotent but not resumable: once a message has been received, a
	// retry would repeat it.
	a, b := startBackend(t, "A", false), startBackend(t, "B", false)
	var r retries
	c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, client.DialOptions(client.WithIdempotent(watchMethod), r.option())...))
	waitAllServe(t, c, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, first := openWatch(t, ctx, c, 3, a, b)
	drained := drainBackend(first)
	var err error
	for err == nil {
		_, err = stream.Recv()
	}
	receive(t, drained, "end of the drain")
	if !client.IsDraining(err) {
		t.Errorf("Recv() through the drain = %v, want an error that IsDraining", err)
	}
	if errs := r.get(); len(errs) != 0 {
		t.Errorf("retried after %v, want no retry", errs)
	}
}

func TestResumeWithWrongTypes(t *testing.T) {
	a, b := startBackend(t, "A", false), startBackend(t, "B", false)
	wrong := client.WithResume(watchMethod, func(req *wrapperspb.StringValue, _ *timestamppb.Timestamp) *wrapperspb.StringValue {
		return req
	})
	c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, client.DialOptions(wrong)...))
	waitAllServe(t, c, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, first := openWatch(t, ctx, c, 1, a, b)
	drained := drainBackend(first)
	var err error
	for err == nil {
		_, err = stream.Recv()
	}
	receive(t, drained, "end of the drain")
	want := `client: WithResume("/drainkit.demo.v1.Demo/Watch"): the request is a *demopb.WatchRequest, want *wrapperspb.StringValue`
	if s := status.Convert(err); s.Code() != codes.Internal || s.Message() != want {
		t.Errorf("Recv() = %v, want code %v and message %q", err, codes.Internal, want)
	}
	runs := a.svc.count(watchMethod) + b.svc.count(watchMethod)
	if _, again := stream.Recv(); again != err {
		t.Errorf("Recv() again = %v, want the same error %v", again, err)
	}
	if n := a.svc.count(watchMethod) + b.svc.count(watchMethod); n != runs {
		t.Errorf("Watch handlers run = %d after receiving again, want %d: no new attempt", n, runs)
	}
}
