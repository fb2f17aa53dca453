package client_test

import (
	"context"
	"fmt"
	"strings"
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

// TestResumeWithWrongTypes checks that WithResume refuses, when it is
// called, types that are not the method's messages, value types, and
// methods that are not server streams: a mistake found at the first drain,
// in production, would end streams for good.
func TestResumeWithWrongTypes(t *testing.T) {
	for _, tc := range []struct {
		name   string
		option func()
		want   string
	}{
		{
			name: "request type",
			option: func() {
				client.WithResume(watchMethod, func(req *wrapperspb.StringValue, _ *timestamppb.Timestamp) *wrapperspb.StringValue { return req })
			},
			want: `the request type *wrapperspb.StringValue is not the method's input drainkit.demo.v1.WatchRequest`,
		},
		{
			name: "response type",
			option: func() {
				client.WithResume(watchMethod, func(req *demopb.WatchRequest, _ *wrapperspb.StringValue) *demopb.WatchRequest { return req })
			},
			want: `the response type *wrapperspb.StringValue is not the method's output google.protobuf.Timestamp`,
		},
		{
			name: "value type",
			option: func() {
				client.WithResume(watchMethod, func(req string, _ *timestamppb.Timestamp) string { return req })
			},
			want: `string is not a pointer type`,
		},
		{
			name: "bidi stream",
			option: func() {
				client.WithResume(chatMethod, func(req *wrapperspb.StringValue, _ *wrapperspb.StringValue) *wrapperspb.StringValue { return req })
			},
			want: `not a server-streaming method`,
		},
		{
			name: "no such method",
			option: func() {
				client.WithResume("/drainkit.demo.v1.Demo/Nothing", func(req *demopb.WatchRequest, _ *timestamppb.Timestamp) *demopb.WatchRequest { return req })
			},
			want: `service drainkit.demo.v1.Demo has no method Nothing`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				msg := fmt.Sprint(recover())
				if !strings.Contains(msg, tc.want) || !strings.Contains(msg, "WithResume(") {
					t.Errorf("WithResume panicked with %q, want it to name the option and say %q", msg, tc.want)
				}
			}()
			tc.option()
		})
	}
}

// TestResumedStreamContextLives checks that the context of a resumable
// stream lives as long as the stream, not as long as its attempt: taken
// before a resume, it has not ended after; it ends with the caller's.
func TestResumedStreamContextLives(t *testing.T) {
	a, b := startBackend(t, "A", false), startBackend(t, "B", false)
	c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, client.DialOptions(resumeWatch)...))
	waitAllServe(t, c, a, b)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, first := openWatch(t, ctx, c, 2, a, b)
	sctx := stream.Context()
	first.srv.Stop() // the attempt ends; the stream goes on elsewhere
	for i := range 3 {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv() #%d after the connection loss = %v, want the stream to go on", i, err)
		}
	}
	if err := sctx.Err(); err != nil {
		t.Errorf("stream's Context().Err() after a resume = %v, want nil: the stream goes on", err)
	}
	cancel()
	select {
	case <-sctx.Done():
	case <-time.After(defaultTestTimeout):
		t.Errorf("stream's Context() not done %v after the caller's ended", defaultTestTimeout)
	}
}
