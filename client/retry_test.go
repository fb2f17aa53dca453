package client_test

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/interceptors"
)

// shuttingDown returns a status marked as drainkit marks them, with the
// handler metadata given and a RetryInfo of delay if delay >= 0.
func shuttingDown(t *testing.T, handler string, delay time.Duration) error {
	t.Helper()
	details := []any{&errdetails.ErrorInfo{
		Reason:   interceptors.ReasonShuttingDown,
		Domain:   interceptors.ErrorInfoDomain,
		Metadata: map[string]string{interceptors.MetadataHandler: handler},
	}}
	s := status.New(codes.Unavailable, "drainkit: server is shutting down")
	var err error
	if delay >= 0 {
		s, err = s.WithDetails(details[0].(*errdetails.ErrorInfo), &errdetails.RetryInfo{RetryDelay: durationpb.New(delay)})
	} else {
		s, err = s.WithDetails(details[0].(*errdetails.ErrorInfo))
	}
	if err != nil {
		t.Fatal(err)
	}
	return s.Err()
}

func TestIsDraining(t *testing.T) {
	otherDomain, err := status.New(codes.Unavailable, "x").WithDetails(&errdetails.ErrorInfo{
		Reason: interceptors.ReasonShuttingDown, Domain: "example.com",
		Metadata: map[string]string{interceptors.MetadataHandler: interceptors.HandlerNotRun},
	})
	if err != nil {
		t.Fatal(err)
	}
	ranAndRefused, err := status.New(codes.Unavailable, "x").WithDetails(
		&errdetails.ErrorInfo{Reason: interceptors.ReasonShuttingDown, Domain: interceptors.ErrorInfoDomain,
			Metadata: map[string]string{interceptors.MetadataHandler: interceptors.HandlerNotRun}},
		&errdetails.ErrorInfo{Reason: interceptors.ReasonHandlerRan, Domain: interceptors.ErrorInfoDomain,
			Metadata: map[string]string{interceptors.MetadataHandler: interceptors.HandlerRan}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{name: "nil", err: nil, want: false},
		{name: "refusal beside HANDLER_RAN", err: ranAndRefused.Err(), want: false},
		{name: "not a status", err: errors.New("drainkit: server is shutting down"), want: false},
		{name: "unavailable without details", err: status.Error(codes.Unavailable, "drainkit: server is shutting down"), want: false},
		{name: "ErrorInfo of another domain", err: otherDomain.Err(), want: false},
		{name: "refused", err: shuttingDown(t, interceptors.HandlerNotRun, 0), want: true},
		{name: "cancelled", err: shuttingDown(t, interceptors.HandlerCancelled, -1), want: true},
		{name: "wrapped", err: fmt.Errorf("watching: %w", shuttingDown(t, interceptors.HandlerCancelled, -1)), want: true},
		{name: "another code", err: status.Error(codes.Internal, "drainkit: server is shutting down"), want: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := client.IsDraining(tc.err); got != tc.want {
				t.Errorf("IsDraining(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

// refusing returns a server option that makes every Echo fail with err
// and counts the calls in n.
func refusing(err error, n *atomic.Int64) grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if info.FullMethod != echoMethod {
			return handler(ctx, req)
		}
		n.Add(1)
		return nil, err
	})
}

func TestRetryLimits(t *testing.T) {
	const never = time.Hour
	for _, tc := range []struct {
		name     string
		refusal  func(t *testing.T) error
		opts     []client.Option
		deadline time.Duration
		// wantAttempts is the number of calls the server must see.
		wantAttempts int64
		// wantAtLeast and wantAtMost bound the time of the call.
		wantAtLeast, wantAtMost time.Duration
		wantCode                codes.Code
	}{
		{
			name:         "default attempts",
			refusal:      func(t *testing.T) error { return shuttingDown(t, interceptors.HandlerNotRun, 0) },
			opts:         []client.Option{client.WithBackoff(func(context.Context, uint) time.Duration { return 0 })},
			deadline:     defaultTestTimeout,
			wantAttempts: client.DefaultMax,
			wantAtMost:   defaultTestTimeout / 2,
			wantCode:     codes.Unavailable,
		},
		{
			name:         "WithMax",
			refusal:      func(t *testing.T) error { return shuttingDown(t, interceptors.HandlerNotRun, 0) },
			opts:         []client.Option{client.WithMax(3), client.WithBackoff(func(context.Context, uint) time.Duration { return 0 })},
			deadline:     defaultTestTimeout,
			wantAttempts: 3,
			wantAtMost:   defaultTestTimeout / 2,
			wantCode:     codes.Unavailable,
		},
		{
			name:         "RetryInfo delay honoured",
			refusal:      func(t *testing.T) error { return shuttingDown(t, interceptors.HandlerNotRun, 200*time.Millisecond) },
			opts:         []client.Option{client.WithMax(2), client.WithBackoff(func(context.Context, uint) time.Duration { return 0 })},
			deadline:     defaultTestTimeout,
			wantAttempts: 2,
			wantAtLeast:  200 * time.Millisecond,
			wantAtMost:   defaultTestTimeout / 2,
			wantCode:     codes.Unavailable,
		},
		{
			name:         "wait beyond the deadline not made",
			refusal:      func(t *testing.T) error { return shuttingDown(t, interceptors.HandlerNotRun, 0) },
			opts:         []client.Option{client.WithBackoff(func(context.Context, uint) time.Duration { return never })},
			deadline:     defaultTestTimeout,
			wantAttempts: 1,
			wantAtMost:   defaultTestTimeout / 2,
			wantCode:     codes.Unavailable,
		},
		{
			name:         "cancelled call of a method not idempotent",
			refusal:      func(t *testing.T) error { return shuttingDown(t, interceptors.HandlerCancelled, -1) },
			deadline:     defaultTestTimeout,
			wantAttempts: 1,
			wantAtMost:   defaultTestTimeout / 2,
			wantCode:     codes.Unavailable,
		},
		{
			name:         "unmarked unavailable, idempotent",
			refusal:      func(*testing.T) error { return status.Error(codes.Unavailable, "db down") },
			opts:         []client.Option{client.WithIdempotent(echoMethod), client.WithMax(2)},
			deadline:     defaultTestTimeout,
			wantAttempts: 2,
			wantAtMost:   defaultTestTimeout / 2,
			wantCode:     codes.Unavailable,
		},
		{
			name:         "other code, idempotent",
			refusal:      func(*testing.T) error { return status.Error(codes.ResourceExhausted, "quota") },
			opts:         []client.Option{client.WithIdempotent(echoMethod)},
			deadline:     defaultTestTimeout,
			wantAttempts: 1,
			wantAtMost:   defaultTestTimeout / 2,
			wantCode:     codes.ResourceExhausted,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			a := startBackend(t, "A", false, refusing(tc.refusal(t), &n))
			c := dialBackends(t, []*backend{a}, client.DialOptions(tc.opts...)...)
			ctx, cancel := context.WithTimeout(context.Background(), tc.deadline)
			defer cancel()
			start := time.Now()
			var out wrapperspb.StringValue
			err := c.Invoke(ctx, echoMethod, wrapperspb.String("x"), &out, grpc.WaitForReady(true))
			took := time.Since(start)
			if status.Code(err) != tc.wantCode {
				t.Errorf("Echo() = %v, want code %v", err, tc.wantCode)
			}
			if got := n.Load(); got != tc.wantAttempts {
				t.Errorf("attempts = %d, want %d", got, tc.wantAttempts)
			}
			if took < tc.wantAtLeast || took > tc.wantAtMost {
				t.Errorf("Echo() took %v, want between %v and %v", took, tc.wantAtLeast, tc.wantAtMost)
			}
		})
	}
}

func TestRetryStopsWhenContextEnds(t *testing.T) {
	refused := make(chan struct{}, 1)
	a := startBackend(t, "A", false, grpc.ChainUnaryInterceptor(func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) {
		refused <- struct{}{}
		return nil, shuttingDown(t, interceptors.HandlerNotRun, 0)
	}))
	c := dialBackends(t, []*backend{a}, client.DialOptions(
		client.WithBackoff(func(context.Context, uint) time.Duration { return time.Hour }),
	)...)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() {
		errs <- c.Invoke(ctx, echoMethod, wrapperspb.String("x"), new(wrapperspb.StringValue), grpc.WaitForReady(true))
	}()
	receive(t, refused, "first attempt")
	cancel()
	if err := receive(t, errs, "end of the call"); status.Code(err) != codes.Canceled {
		t.Errorf("Echo() = %v, want code %v", err, codes.Canceled)
	}
}

func TestOptionsPanic(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    func()
		want string
	}{
		{name: "WithMax(0)", f: func() { client.WithMax(0) }, want: "client: WithMax(0)"},
		{name: "WithBackoff(nil)", f: func() { client.WithBackoff(nil) }, want: "client: WithBackoff(nil)"},
		{name: "WithOnRetryCallback(nil)", f: func() { client.WithOnRetryCallback(nil) }, want: "client: WithOnRetryCallback(nil)"},
		{name: "WithIdempotent bad name", f: func() { client.WithIdempotent("Echo") }, want: `client: WithIdempotent("Echo"): not a full method name`},
		{name: "WithResumable empty name", f: func() { client.WithResumable("") }, want: "client: WithResumable: empty method name"},
		{name: "WithResume nil", f: func() {
			client.WithResume[*wrapperspb.StringValue, *wrapperspb.StringValue](watchMethod, nil)
		}, want: "client: WithResume(\"" + watchMethod + "\"): nil function"},
		{name: "nil option", f: func() { client.DialOptions(nil) }, want: "client: DialOptions: option 0 is nil"},
		{name: "WithRetryBudget negative percent", f: func() { client.WithRetryBudget(-1, 10) }, want: "client: WithRetryBudget(-1, 10): percent must be"},
		{name: "WithRetryBudget NaN", f: func() { client.WithRetryBudget(math.NaN(), 10) }, want: "client: WithRetryBudget(NaN, 10): percent must be"},
		{name: "WithRetryBudget infinite", f: func() { client.WithRetryBudget(math.Inf(1), 10) }, want: "client: WithRetryBudget(+Inf, 10): percent must be"},
		{name: "WithRetryBudget negative reserve", f: func() { client.WithRetryBudget(20, -1) }, want: "client: WithRetryBudget(20, -1): minPerSecond must be"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if s, _ := r.(string); len(s) < len(tc.want) || s[:len(tc.want)] != tc.want {
					t.Errorf("panic %v, want one starting with %q", r, tc.want)
				}
			}()
			tc.f()
		})
	}
}

// TestUnaryResumableNotIdempotent checks that WithResumable, meant for
// server streams, does not make a unary method idempotent: a call cut after
// its handler ran is not retried.
func TestUnaryResumableNotIdempotent(t *testing.T) {
	var n atomic.Int64
	a := startBackend(t, "A", false, refusing(shuttingDown(t, interceptors.HandlerCancelled, -1), &n))
	c := dialBackends(t, []*backend{a}, client.DialOptions(client.WithResumable(echoMethod))...)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	err := c.Invoke(ctx, echoMethod, wrapperspb.String("x"), new(wrapperspb.StringValue), grpc.WaitForReady(true))
	if !client.IsDraining(err) || n.Load() != 1 {
		t.Errorf("Echo() marked resumable, cut after its handler ran = %v after %d attempts, want the drain's error after 1", err, n.Load())
	}
}

// TestRetryInfoDelay checks how the client reads a RetryInfo: honoured, at
// most MaxRetryDelay, from a draining server; ignored without drainkit's
// mark.
func TestRetryInfoDelay(t *testing.T) {
	unmarked, err := status.New(codes.Unavailable, "elsewhere").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		err       error
		wantAbove time.Duration
		wantBelow time.Duration
	}{
		{"an hour asked by a draining server", shuttingDown(t, interceptors.HandlerNotRun, time.Hour), client.MaxRetryDelay, client.MaxRetryDelay + defaultTestTimeout},
		{"an hour asked without drainkit's mark", unmarked.Err(), 0, defaultTestTimeout / 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if testing.Short() && tc.wantAbove > 0 {
				t.Skip("waits MaxRetryDelay")
			}
			var n atomic.Int64
			a := startBackend(t, "A", false, refusing(tc.err, &n))
			c := dialBackends(t, []*backend{a}, client.DialOptions(client.WithMax(2), client.WithIdempotent(echoMethod),
				client.WithBackoff(func(context.Context, uint) time.Duration { return 0 }))...)
			ctx, cancel := context.WithTimeout(context.Background(), client.MaxRetryDelay+2*defaultTestTimeout)
			defer cancel()
			start := time.Now()
			c.Invoke(ctx, echoMethod, wrapperspb.String("x"), new(wrapperspb.StringValue), grpc.WaitForReady(true))
			if took := time.Since(start); took < tc.wantAbove || took > tc.wantBelow || n.Load() != 2 {
				t.Errorf("Echo() took %v and %d attempts, want 2 attempts, between %v and %v", took, n.Load(), tc.wantAbove, tc.wantBelow)
			}
		})
	}
}
