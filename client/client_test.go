package client_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/examples/demopb"
)

// retries records the errors after which the client retried.
type retries struct {
	mu   sync.Mutex
	errs []error
}

func (r *retries) option() client.Option {
	return client.WithOnRetryCallback(func(_ context.Context, _ uint, err error) {
		r.mu.Lock()
		r.errs = append(r.errs, err)
		r.mu.Unlock()
	})
}

func (r *retries) get() []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.errs)
}

// drainBackend drains b with a short grace period and returns the drain's
// error once it has finished.
func drainBackend(b *backend) <-chan error {
	d := drain.New(b.srv, b.tracker,
		drain.WithGracePeriod(50*time.Millisecond),
		drain.WithCancelGrace(time.Second),
		drain.WithForceWait(time.Second),
		drain.WithLogger(slog.New(slog.DiscardHandler)))
	done := make(chan error, 1)
	go func() {
		_, err := d.Drain(context.Background())
		done <- err
	}()
	return done
}

func TestRefusedCallRetriedOnAnotherBackend(t *testing.T) {
	const calls = 10
	for _, tc := range []struct {
		name       string
		drainkit   bool
		wantFailed bool
	}{
		{name: "client.DialOptions", drainkit: true},
		{name: "plain grpc client", wantFailed: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startBackend(t, "A", false), startBackend(t, "B", false)
			var r retries
			var opts []grpc.DialOption
			if tc.drainkit {
				opts = client.DialOptions(r.option())
			}
			c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, opts...))
			waitAllServe(t, c, a, b)

			a.tracker.Reject(nil)
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			var acked []string
			failed := 0
			for i := range calls {
				v := fmt.Sprint("value ", i)
				if _, err := c.Append(ctx, wrapperspb.String(v)); err != nil {
					failed++
					if !client.IsDraining(err) {
						t.Errorf("Append(%q) = %v, want a refusal that IsDraining", v, err)
					}
					continue
				}
				acked = append(acked, v)
			}

			if tc.wantFailed {
				if failed == 0 {
					t.Errorf("no Append failed through a plain client: the test does not reach the refusing backend")
				}
				return
			}
			if failed != 0 {
				t.Errorf("%d of %d Appends failed, want none", failed, calls)
			}
			if n := a.svc.count(appendMethod); n != 0 {
				t.Errorf("Append handlers run on the refusing backend = %d, want 0", n)
			}
			if got := b.svc.appended(); !slices.Equal(got, acked) {
				t.Errorf("values appended on the other backend = %q, want each acknowledged value once: %q", got, acked)
			}
			errs := r.get()
			if len(errs) == 0 {
				t.Errorf("no call was retried: round_robin never sent one to the refusing backend")
			}
			for _, err := range errs {
				if !client.IsDraining(err) {
					t.Errorf("retried after %v, want only refusals", err)
				}
			}
		})
	}
}

// startSleeps makes two Sleep calls at once through c, which round_robin
// sends one to each backend, and returns their errors once they end.
func startSleeps(t *testing.T, c demopb.DemoClient) <-chan error {
	errs := make(chan error, 2)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	for range 2 {
		go func() {
			_, err := c.Sleep(ctx, durationpb.New(10*time.Millisecond))
			errs <- err
		}()
	}
	return errs
}

func TestCallCutByDrain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    []client.Option
		wantErr bool
	}{
		{name: "idempotent: retried", opts: []client.Option{client.WithIdempotent(sleepMethod)}},
		{name: "not idempotent: not retried", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A holds its Sleep calls until a drain cancels them; B
			// answers.
			a, b := startBackend(t, "A", true), startBackend(t, "B", false)
			var r retries
			c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, client.DialOptions(append(tc.opts, r.option())...)...))
			waitAllServe(t, c, a, b)

			errs := startSleeps(t, c)
			receive(t, a.svc.started, "Sleep call held by A")
			if err := receive(t, errs, "end of the Sleep call sent to B"); err != nil {
				t.Fatalf("Sleep() on B = %v, want nil", err)
			}
			drained := drainBackend(a)
			err := receive(t, errs, "end of the Sleep call cut on A")
			receive(t, drained, "end of the drain")

			if n := a.svc.count(sleepMethod); n != 1 {
				t.Errorf("Sleep handlers run on A = %d, want 1", n)
			}
			if tc.wantErr {
				if status.Code(err) != codes.Unavailable || !client.IsDraining(err) {
					t.Errorf("Sleep() cut on A = %v, want codes.Unavailable that IsDraining", err)
				}
				if errs := r.get(); len(errs) != 0 {
					t.Errorf("retried after %v, want no retry", errs)
				}
				if n := b.svc.count(sleepMethod); n != 1 {
					t.Errorf("Sleep handlers run on B = %d, want 1 (the other call only)", n)
				}
				return
			}
			if err != nil {
				t.Errorf("Sleep() cut on A = %v, want success on retry", err)
			}
			if n := b.svc.count(sleepMethod); n != 2 {
				t.Errorf("Sleep handlers run on B = %d, want 2 (the other call and the retry)", n)
			}
			if errs := r.get(); len(errs) != 1 || !client.IsDraining(errs[0]) {
				t.Errorf("retried after %v, want once, after the drain's cancellation", errs)
			}
		})
	}
}

// resumeWatch makes a resumed Watch start after the last tick received.
var resumeWatch = client.WithResume(watchMethod, func(_ *demopb.WatchRequest, last *timestamppb.Timestamp) *demopb.WatchRequest {
	return &demopb.WatchRequest{After: last}
})

func TestResumableStreamRidesThroughDrain(t *testing.T) {
	for _, tc := range []struct {
		name     string
		drainkit bool
	}{
		{name: "client.DialOptions", drainkit: true},
		{name: "plain grpc client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startBackend(t, "A", false), startBackend(t, "B", false)
			var r retries
			var opts []grpc.DialOption
			if tc.drainkit {
				opts = client.DialOptions(resumeWatch, r.option())
			}
			c := demopb.NewDemoClient(dialBackends(t, []*backend{a, b}, opts...))
			waitAllServe(t, c, a, b)

			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			stream, err := c.Watch(ctx, &demopb.WatchRequest{})
			if err != nil {
				t.Fatalf("Watch() = %v", err)
			}
			var ticks []time.Time
			recv := func() error {
				ts, err := stream.Recv()
				if err == nil {
					ticks = append(ticks, ts.AsTime())
				}
				return err
			}
			for range 5 {
				if err := recv(); err != nil {
					t.Fatalf("Recv() = %v before the drain", err)
				}
			}
			first, other := a, b
			if b.svc.count(watchMethod) == 1 {
				first, other = b, a
			}
			drained := drainBackend(first)

			if !tc.drainkit {
				for {
					if err = recv(); err != nil {
						break
					}
				}
				if status.Code(err) != codes.Unavailable || !client.IsDraining(err) {
					t.Errorf("Recv() through the drain = %v, want codes.Unavailable that IsDraining", err)
				}
				receive(t, drained, "end of the drain")
				return
			}
			if err := receive(t, drained, "end of the drain"); err != nil {
				t.Errorf("Drain() = %v, want nil", err)
			}
			// Ticks go on from the other backend.
			for range 5 {
				if err := recv(); err != nil {
					t.Fatalf("Recv() = %v through the drain, want the stream to go on", err)
				}
			}
			if n := other.svc.count(watchMethod); n != 1 {
				t.Errorf("Watch handlers run on backend %s = %d, want 1 (resumed there)", other.name, n)
			}
			for i := 1; i < len(ticks); i++ {
				if d := ticks[i].Sub(ticks[i-1]); d != tick {
					t.Errorf("tick %d is %v after tick %d, want %v: ticks lost or repeated", i, d, i-1, tick)
				}
			}
			if errs := r.get(); len(errs) != 1 || !client.IsDraining(errs[0]) {
				t.Errorf("resumed after %v, want once, after the drain's cancellation", errs)
			}
			cancel()
			if err := stream.RecvMsg(new(timestamppb.Timestamp)); status.Code(err) != codes.Canceled {
				t.Errorf("Recv() after cancel = %v, want code %v", err, codes.Canceled)
			}
		})
	}
}

func TestBidiStreamNotResumed(t *testing.T) {
	// A's Chat waits for its context, so that the drain's cancellation
	// ends it with the drain's status.
	a := startBackend(t, "A", true)
	var r retries
	c := demopb.NewDemoClient(dialBackends(t, []*backend{a}, client.DialOptions(client.WithResumable(chatMethod), r.option())...))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, err := c.Chat(ctx)
	if err != nil {
		t.Fatalf("Chat() = %v", err)
	}
	if err := stream.Send(wrapperspb.String("hello")); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	receive(t, a.svc.started, "Chat handler")
	drained := drainBackend(a)
	_, err = stream.Recv()
	receive(t, drained, "end of the drain")
	if err == io.EOF || !client.IsDraining(err) {
		t.Errorf("Recv() through the drain = %v, want an error that IsDraining", err)
	}
	if n := a.svc.count(chatMethod); n != 1 {
		t.Errorf("Chat handlers run = %d, want 1", n)
	}
	if errs := r.get(); len(errs) != 0 {
		t.Errorf("retried after %v, want no retry", errs)
	}
}
