package interceptors_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
)

// waitFor waits until cond holds, for statusTestTimeout at the most.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(statusTestTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v", what, statusTestTimeout)
		}
		time.Sleep(time.Millisecond) // polls a condition
	}
}

// waitIdle waits, with Tracker.Wait, until no handler of tr is running,
// for statusTestTimeout at the most.
func waitIdle(t *testing.T, tr *interceptors.Tracker, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), statusTestTimeout)
	defer cancel()
	if err := tr.Wait(ctx); err != nil {
		t.Fatalf("%s: Wait() = %v after %v, InFlight() = %d", what, err, statusTestTimeout, tr.InFlight())
	}
}

func methods(tr *interceptors.Tracker) []string {
	var ms []string
	for _, c := range tr.Calls() {
		ms = append(ms, c.Method)
	}
	slices.Sort(ms)
	return ms
}

// TestTrackerKnowsEveryCall runs three calls and ends them one by one, the
// middle one first: Calls lists exactly those still running, InFlight
// counts them, and Wait returns only once none is left.
func TestTrackerKnowsEveryCall(t *testing.T) {
	const (
		unary  = "/grpc.testing.TestService/UnaryCall"
		output = "/grpc.testing.TestService/StreamingOutputCall"
		duplex = "/grpc.testing.TestService/FullDuplexCall"
	)
	tr := interceptors.NewTracker()
	client, svc := statusClient(t, tr)
	cancels := map[string]context.CancelFunc{}
	start := func(method string, call func(ctx context.Context)) {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		cancels[method] = cancel
		go call(ctx)
		svc.waitStarted(t)
	}
	start(unary, func(ctx context.Context) { client.UnaryCall(ctx, &testgrpc.SimpleRequest{}) })
	start(output, func(ctx context.Context) {
		if s, err := client.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{}); err == nil {
			s.Recv()
		}
	})
	start(duplex, func(ctx context.Context) {
		if s, err := client.FullDuplexCall(ctx); err == nil {
			s.Recv()
		}
	})
	if got, want := methods(tr), []string{duplex, output, unary}; !slices.Equal(got, want) || tr.InFlight() != 3 {
		t.Fatalf("Calls() = %v, InFlight() = %d; want %v, 3", got, tr.InFlight(), want)
	}

	for _, end := range []struct {
		method string
		left   []string
	}{
		{output, []string{duplex, unary}}, // the middle of the three
		{unary, []string{duplex}},
	} {
		cancels[end.method]()
		waitFor(t, "the handler of "+end.method+" to return", func() bool { return tr.InFlight() == len(end.left) })
		if got := methods(tr); !slices.Equal(got, end.left) {
			t.Fatalf("Calls() after %s ended = %v, want %v", end.method, got, end.left)
		}
	}

	short, cancelShort := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancelShort()
	if err := tr.Wait(short); err != context.DeadlineExceeded {
		t.Errorf("Wait() with a call running = %v, want %v", err, context.DeadlineExceeded)
	}
	waited := make(chan error, 1)
	go func() { waited <- tr.Wait(context.Background()) }()
	cancels[duplex]()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("Wait() = %v, want nil", err)
		}
	case <-time.After(statusTestTimeout):
		t.Fatalf("Wait() did not return after the last call ended")
	}
	if got := tr.Calls(); len(got) != 0 || tr.InFlight() != 0 {
		t.Errorf("Calls() = %v, InFlight() = %d after every call ended; want none", got, tr.InFlight())
	}
}

// TestTrackerDeadlines gives calls the deadlines of the Tracker's options:
// a handler that waits for its context ends with codes.DeadlineExceeded
// soon after, whatever deadline its client sent.
func TestTrackerDeadlines(t *testing.T) {
	const d = 50 * time.Millisecond
	tests := []struct {
		name   string
		opts   []interceptors.Option
		client time.Duration // the client's deadline; 0 for none
		call   func(ctx context.Context, c testgrpc.TestServiceClient) error
	}{
		{name: "default timeout, no client deadline", opts: []interceptors.Option{interceptors.WithDefaultTimeout(d)},
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
				return err
			}},
		{name: "max timeout caps the client's", opts: []interceptors.Option{interceptors.WithMaxTimeout(d)}, client: time.Hour,
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				_, err := c.UnaryCall(ctx, &testgrpc.SimpleRequest{})
				return err
			}},
		{name: "stream timeout ends a handler waiting in Recv", opts: []interceptors.Option{interceptors.WithStreamTimeout(d)},
			call: func(ctx context.Context, c testgrpc.TestServiceClient) error {
				s, err := c.FullDuplexCall(ctx)
				if err != nil {
					return err
				}
				_, err = s.Recv()
				return err
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := interceptors.NewTracker(tt.opts...)
			client, _ := statusClient(t, tr)
			ctx := context.Background()
			if tt.client > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.client)
				defer cancel()
			}
			start := time.Now()
			errc := make(chan error, 1)
			go func() { errc <- tt.call(ctx, client) }()
			select {
			case err := <-errc:
				if status.Code(err) != codes.DeadlineExceeded {
					t.Errorf("call = %v, want code %v", err, codes.DeadlineExceeded)
				}
				if took := time.Since(start); took < d {
					t.Errorf("call ended after %v, before the deadline of %v", took, d)
				}
			case <-time.After(statusTestTimeout):
				t.Fatalf("call still running after %v, want it ended at the Tracker's deadline of %v", statusTestTimeout, d)
			}
			waitIdle(t, tr, "the handler to return")
		})
	}
}

// TestTrackerManyCalls runs 100 calls, so that the Tracker's lists hold
// several each, and ends every other one: Calls lists exactly those left.
func TestTrackerManyCalls(t *testing.T) {
	const calls = 100
	tr := interceptors.NewTracker()
	client, svc := statusClient(t, tr)
	cancels := make([]context.CancelFunc, calls)
	for i := range calls {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		cancels[i] = cancel
		go client.UnaryCall(ctx, &testgrpc.SimpleRequest{})
		svc.waitStarted(t)
	}
	for i := 0; i < calls; i += 2 {
		cancels[i]()
	}
	waitFor(t, "half the handlers to return", func() bool { return tr.InFlight() == calls/2 })
	if got := len(tr.Calls()); got != calls/2 {
		t.Fatalf("len(Calls()) = %d with %d handlers running, want %d", got, tr.InFlight(), calls/2)
	}
	for i := 1; i < calls; i += 2 {
		cancels[i]()
	}
	waitIdle(t, tr, "every handler to return")
	if got := tr.Calls(); len(got) != 0 {
		t.Fatalf("Calls() = %d calls with none running, want none", len(got))
	}
}
