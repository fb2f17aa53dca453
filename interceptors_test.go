package drainkit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthgrpc "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/internal/servetest"
)

const (
	// defaultTestTimeout bounds every wait for something that must happen.
	defaultTestTimeout = 10 * time.Second
	// promptly is how soon after the last handler returns Wait must return.
	promptly = 500 * time.Millisecond
	// deadlineSlack allows for a client's deadline to travel to the server.
	deadlineSlack = time.Second
	// shortTimeout is an injected deadline the tests let fire.
	shortTimeout = 50 * time.Millisecond
)

const (
	unaryMethod  = "/grpc.testing.TestService/UnaryCall"
	duplexMethod = "/grpc.testing.TestService/FullDuplexCall"
	outputMethod = "/grpc.testing.TestService/StreamingOutputCall"
	checkMethod  = "/grpc.health.v1.Health/Check"
	watchMethod  = "/grpc.health.v1.Health/Watch"
)

var errDrain = errors.New("test drain")

// handlerFunc is what testService does for every call, given the call's
// context and full method. A call whose handler returns nil gets one
// response.
type handlerFunc func(ctx context.Context, method string) error

type testService struct {
	testgrpc.UnimplementedTestServiceServer
	handle handlerFunc
}

func (s *testService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	if err := s.handle(ctx, unaryMethod); err != nil {
		return nil, err
	}
	return &testgrpc.SimpleResponse{}, nil
}

func (s *testService) FullDuplexCall(stream testgrpc.TestService_FullDuplexCallServer) error {
	if err := s.handle(stream.Context(), duplexMethod); err != nil {
		return err
	}
	return stream.Send(&testgrpc.StreamingOutputCallResponse{})
}

func (s *testService) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	if err := s.handle(stream.Context(), outputMethod); err != nil {
		return err
	}
	return stream.Send(&testgrpc.StreamingOutputCallResponse{})
}

// env is a client of a grpc.Server that serves testService and the health
// service over bufconn.
type env struct {
	cc     *grpc.ClientConn
	test   testgrpc.TestServiceClient
	health healthgrpc.HealthClient
}

// startServer serves handle with opts until the test ends.
func startServer(t *testing.T, handle handlerFunc, opts ...grpc.ServerOption) *env {
	t.Helper()
	srv := grpc.NewServer(opts...)
	testgrpc.RegisterTestServiceServer(srv, &testService{handle: handle})
	healthgrpc.RegisterHealthServer(srv, health.NewServer())
	cc := servetest.Serve(t, srv, false)
	return &env{cc: cc, test: testgrpc.NewTestServiceClient(cc), health: healthgrpc.NewHealthClient(cc)}
}

// result is how a call ended for its client.
type result struct {
	msgs int   // responses received
	err  error // nil if the call ended with codes.OK
}

// call makes one call to method and returns how it ended.
func (e *env) call(ctx context.Context, method string) result {
	unary := func(_ any, err error) result {
		if err != nil {
			return result{err: err}
		}
		return result{msgs: 1}
	}
	switch method {
	case unaryMethod:
		return unary(e.test.UnaryCall(ctx, &testgrpc.SimpleRequest{}))
	case checkMethod:
		return unary(e.health.Check(ctx, &healthgrpc.HealthCheckRequest{}))
	case duplexMethod:
		stream, err := e.test.FullDuplexCall(ctx)
		if err != nil {
			return result{err: err}
		}
		if err := stream.CloseSend(); err != nil {
			return result{err: err}
		}
		return recvAll(stream.Recv)
	case outputMethod:
		stream, err := e.test.StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
		if err != nil {
			return result{err: err}
		}
		return recvAll(stream.Recv)
	case watchMethod:
		stream, err := e.health.Watch(ctx, &healthgrpc.HealthCheckRequest{})
		if err != nil {
			return result{err: err}
		}
		return recvAll(stream.Recv)
	}
	panic("no such method: " + method)
}

func recvAll[T any](recv func() (T, error)) result {
	var r result
	for {
		_, err := recv()
		if err == io.EOF {
			return r
		}
		if err != nil {
			r.err = err
			return r
		}
		r.msgs++
	}
}

// start makes a call to method in the background and returns how it ends.
func (e *env) start(ctx context.Context, method string) <-chan result {
	done := make(chan result, 1)
	go func() { done <- e.call(ctx, method) }()
	return done
}

// startWatch opens a health Watch, waits for its first response, which
// proves its handler is running, and returns how the stream ends.
func (e *env) startWatch(ctx context.Context, t *testing.T) <-chan result {
	t.Helper()
	stream, err := e.health.Watch(ctx, &healthgrpc.HealthCheckRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Watch: Recv() = %v, want the first status", err)
	}
	done := make(chan result, 1)
	go func() {
		r := recvAll(stream.Recv)
		r.msgs++
		done <- r
	}()
	return done
}

// receive returns the next value from ch, or ends the test if none arrives
// in time.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(defaultTestTimeout):
		t.Fatalf("no %s after %v", what, defaultTestTimeout)
		var zero T
		return zero
	}
}

// testContext returns a context that ends with the test or after
// defaultTestTimeout.
func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// checkIdle checks that tr has no handler running, waiting for the last one
// to return.
func checkIdle(t *testing.T, tr *interceptors.Tracker) {
	t.Helper()
	if err := tr.Wait(testContext(t)); err != nil {
		t.Fatalf("Wait() = %v, want nil", err)
	}
	if got := tr.InFlight(); got != 0 {
		t.Errorf("InFlight() = %d, want 0", got)
	}
	if got := tr.Calls(); len(got) != 0 {
		t.Errorf("Calls() = %+v, want none", got)
	}
}

// checkShuttingDown checks that err is what a client gets from a call that
// was refused or cancelled with cause.
func checkShuttingDown(t *testing.T, what string, err error, cause error) {
	t.Helper()
	s := status.Convert(err)
	if s.Code() != codes.Unavailable || !strings.Contains(s.Message(), "shutting down") {
		t.Errorf("%s = %v, want codes.Unavailable saying \"shutting down\"", what, err)
	}
	if cause != nil && !strings.Contains(s.Message(), cause.Error()) {
		t.Errorf("%s = %v, want it to carry the cause %q", what, err, cause)
	}
}

// handlerStart is what a handler saw when it started.
type handlerStart struct {
	at       time.Time
	deadline time.Time
	ok       bool // the context has a deadline
}

func TestDeadlines(t *testing.T) {
	tests := []struct {
		name          string
		opts          []interceptors.Option
		method        string
		clientTimeout time.Duration // 0: the client sends no deadline
		want          time.Duration // the handler's deadline, from its start; 0: none
		injected      bool
	}{
		{name: "unary without options", method: unaryMethod},
		{name: "unary client deadline without options", method: unaryMethod, clientTimeout: 30 * time.Second, want: 30 * time.Second},
		{
			name:   "default timeout injected",
			opts:   []interceptors.Option{interceptors.WithDefaultTimeout(time.Minute)},
			method: unaryMethod, want: time.Minute, injected: true,
		},
		{
			name:   "default timeout keeps shorter client deadline",
			opts:   []interceptors.Option{interceptors.WithDefaultTimeout(time.Minute)},
			method: unaryMethod, clientTimeout: 30 * time.Second, want: 30 * time.Second,
		},
		{
			name:   "default timeout keeps longer client deadline",
			opts:   []interceptors.Option{interceptors.WithDefaultTimeout(time.Minute)},
			method: unaryMethod, clientTimeout: 5 * time.Minute, want: 5 * time.Minute,
		},
		{
			name:   "max timeout caps client deadline",
			opts:   []interceptors.Option{interceptors.WithMaxTimeout(2 * time.Minute)},
			method: unaryMethod, clientTimeout: 5 * time.Minute, want: 2 * time.Minute, injected: true,
		},
		{
			name:   "max timeout keeps shorter client deadline",
			opts:   []interceptors.Option{interceptors.WithMaxTimeout(2 * time.Minute)},
			method: unaryMethod, clientTimeout: 30 * time.Second, want: 30 * time.Second,
		},
		{
			name:   "max timeout caps a call without deadline",
			opts:   []interceptors.Option{interceptors.WithMaxTimeout(2 * time.Minute)},
			method: unaryMethod, want: 2 * time.Minute, injected: true,
		},
		{
			name:   "default and max timeouts inject default",
			opts:   []interceptors.Option{interceptors.WithDefaultTimeout(time.Minute), interceptors.WithMaxTimeout(2 * time.Minute)},
			method: unaryMethod, want: time.Minute, injected: true,
		},
		{
			name:   "default and max timeouts cap client deadline",
			opts:   []interceptors.Option{interceptors.WithDefaultTimeout(time.Minute), interceptors.WithMaxTimeout(2 * time.Minute)},
			method: unaryMethod, clientTimeout: 5 * time.Minute, want: 2 * time.Minute, injected: true,
		},
		{
			name: "method timeout overrides default",
			opts: []interceptors.Option{
				interceptors.WithDefaultTimeout(time.Minute), interceptors.WithMaxTimeout(2 * time.Minute),
				interceptors.WithMethodTimeout(unaryMethod, 10*time.Second),
			},
			method: unaryMethod, want: 10 * time.Second, injected: true,
		},
		{
			name: "method timeout overrides max",
			opts: []interceptors.Option{
				interceptors.WithDefaultTimeout(time.Minute), interceptors.WithMaxTimeout(2 * time.Minute),
				interceptors.WithMethodTimeout(unaryMethod, 10*time.Second),
			},
			method: unaryMethod, clientTimeout: 5 * time.Minute, want: 10 * time.Second, injected: true,
		},
		{
			name: "method timeout keeps shorter client deadline",
			opts: []interceptors.Option{
				interceptors.WithDefaultTimeout(time.Minute),
				interceptors.WithMethodTimeout(unaryMethod, 10*time.Second),
			},
			method: unaryMethod, clientTimeout: 3 * time.Second, want: 3 * time.Second,
		},
		{
			name: "method timeout of zero exempts from default",
			opts: []interceptors.Option{
				interceptors.WithDefaultTimeout(time.Minute),
				interceptors.WithMethodTimeout(unaryMethod, 0),
			},
			method: unaryMethod,
		},
		{
			name: "method timeout of zero exempts from max",
			opts: []interceptors.Option{
				interceptors.WithMaxTimeout(2 * time.Minute),
				interceptors.WithMethodTimeout(unaryMethod, 0),
			},
			method: unaryMethod, clientTimeout: 5 * time.Minute, want: 5 * time.Minute,
		},
		{
			name: "method timeout of another method",
			opts: []interceptors.Option{
				interceptors.WithDefaultTimeout(time.Minute),
				interceptors.WithMethodTimeout(duplexMethod, 10*time.Second),
			},
			method: unaryMethod, want: time.Minute, injected: true,
		},
		{
			name:   "stream timeout leaves unary",
			opts:   []interceptors.Option{interceptors.WithStreamTimeout(time.Minute)},
			method: unaryMethod,
		},
		{name: "stream without options", method: duplexMethod},
		{
			name:   "unary timeouts leave streams",
			opts:   []interceptors.Option{interceptors.WithDefaultTimeout(time.Minute), interceptors.WithMaxTimeout(2 * time.Minute)},
			method: duplexMethod, clientTimeout: 5 * time.Minute, want: 5 * time.Minute,
		},
		{
			name:   "stream timeout injected",
			opts:   []interceptors.Option{interceptors.WithStreamTimeout(time.Minute)},
			method: duplexMethod, want: time.Minute, injected: true,
		},
		{
			name:   "stream timeout caps client deadline",
			opts:   []interceptors.Option{interceptors.WithStreamTimeout(time.Minute)},
			method: duplexMethod, clientTimeout: 5 * time.Minute, want: time.Minute, injected: true,
		},
		{
			name:   "stream timeout keeps shorter client deadline",
			opts:   []interceptors.Option{interceptors.WithStreamTimeout(time.Minute)},
			method: duplexMethod, clientTimeout: 30 * time.Second, want: 30 * time.Second,
		},
		{
			name:   "stream timeout on server stream",
			opts:   []interceptors.Option{interceptors.WithStreamTimeout(time.Minute)},
			method: outputMethod, want: time.Minute, injected: true,
		},
		{
			name:   "stream timeout leaves long-lived stream",
			opts:   []interceptors.Option{interceptors.WithStreamTimeout(time.Minute), interceptors.WithLongLived(outputMethod)},
			method: outputMethod,
		},
		{
			name:   "stream timeout leaves long-lived stream client deadline",
			opts:   []interceptors.Option{interceptors.WithStreamTimeout(time.Minute), interceptors.WithLongLived(outputMethod)},
			method: outputMethod, clientTimeout: 5 * time.Minute, want: 5 * time.Minute,
		},
		{
			name: "method timeout on long-lived stream",
			opts: []interceptors.Option{
				interceptors.WithStreamTimeout(time.Minute), interceptors.WithLongLived(outputMethod),
				interceptors.WithMethodTimeout(outputMethod, 10*time.Second),
			},
			method: outputMethod, want: 10 * time.Second, injected: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := interceptors.NewTracker(tc.opts...)
			started := make(chan handlerStart, 1)
			release := make(chan struct{})
			e := startServer(t, func(ctx context.Context, _ string) error {
				d, ok := ctx.Deadline()
				started <- handlerStart{at: time.Now(), deadline: d, ok: ok}
				select {
				case <-release:
				case <-ctx.Done():
				}
				return nil
			}, tr.ServerOptions()...)

			ctx, cancel := context.WithCancel(context.Background())
			if tc.clientTimeout > 0 {
				ctx, cancel = context.WithTimeout(context.Background(), tc.clientTimeout)
			}
			defer cancel()
			before := time.Now()
			done := e.start(ctx, tc.method)
			s := receive(t, started, "handler start")

			calls := tr.Calls()
			if len(calls) != 1 {
				t.Fatalf("Calls() = %+v, want one call", calls)
			}
			c := calls[0]
			if !c.Deadline.Equal(s.deadline) {
				t.Errorf("Calls()[0].Deadline = %v, want %v, the handler's", c.Deadline, s.deadline)
			}
			if c.Injected != tc.injected {
				t.Errorf("Calls()[0].Injected = %v, want %v", c.Injected, tc.injected)
			}
			switch {
			case tc.want == 0 && s.ok:
				t.Errorf("handler's ctx.Deadline() = %v, want none", time.Until(s.deadline))
			case tc.want != 0 && !s.ok:
				t.Errorf("handler's ctx.Deadline() = none, want %v from its start", tc.want)
			case tc.want != 0:
				lo, hi := before.Add(tc.want-deadlineSlack), s.at.Add(tc.want+deadlineSlack)
				if tc.injected {
					lo, hi = before.Add(tc.want), s.at.Add(tc.want)
					if want := c.Started.Add(tc.want); !s.deadline.Equal(want) {
						t.Errorf("handler's ctx.Deadline() = Started+%v, want Started+%v", s.deadline.Sub(c.Started), tc.want)
					}
				}
				if s.deadline.Before(lo) || s.deadline.After(hi) {
					t.Errorf("handler's ctx.Deadline() = %v after the call, want %v", s.deadline.Sub(before), tc.want)
				}
			}

			close(release)
			if r := receive(t, done, "call result"); r.err != nil || r.msgs != 1 {
				t.Errorf("call = %d responses, %v; want 1 response, nil", r.msgs, r.err)
			}
			checkIdle(t, tr)
		})
	}
}

// handlerEnd is what a handler saw when its context ended.
type handlerEnd struct {
	err   error // ctx.Err()
	cause error // context.Cause(ctx)
}

// returns are what a handler whose context has ended may return.
var returns = []struct {
	name string
	ret  func(ctx context.Context) error
}{
	{"ctx.Err()", func(ctx context.Context) error { return ctx.Err() }},
	{"Canceled status", func(context.Context) error { return status.Error(codes.Canceled, "handler stopped") }},
	{"own error", func(context.Context) error { return errors.New("query abandoned") }},
	{"wrapped cause", func(ctx context.Context) error { return fmt.Errorf("query abandoned: %w", context.Cause(ctx)) }},
	{"FromContextError", func(ctx context.Context) error { return status.FromContextError(ctx.Err()).Err() }},
	{"result", func(context.Context) error { return nil }},
}

func TestInjectedDeadlineExceeded(t *testing.T) {
	setups := []struct {
		name          string
		opts          []interceptors.Option
		method        string
		clientTimeout time.Duration
	}{
		{"default timeout", []interceptors.Option{interceptors.WithDefaultTimeout(shortTimeout)}, unaryMethod, 0},
		{"max timeout", []interceptors.Option{interceptors.WithMaxTimeout(shortTimeout)}, unaryMethod, defaultTestTimeout},
		{"method timeout", []interceptors.Option{interceptors.WithMethodTimeout(unaryMethod, shortTimeout)}, unaryMethod, 0},
		{"stream timeout", []interceptors.Option{interceptors.WithStreamTimeout(shortTimeout)}, duplexMethod, 0},
		{"stream timeout server stream", []interceptors.Option{interceptors.WithStreamTimeout(shortTimeout)}, outputMethod, defaultTestTimeout},
		{
			"method timeout long-lived stream",
			[]interceptors.Option{interceptors.WithLongLived(outputMethod), interceptors.WithMethodTimeout(outputMethod, shortTimeout)},
			outputMethod, 0,
		},
	}
	tests := []struct {
		name          string
		opts          []interceptors.Option
		method        string
		clientTimeout time.Duration
		ret           func(ctx context.Context) error
		wantResult    bool
	}{}
	for _, s := range setups {
		for _, r := range returns {
			tests = append(tests, struct {
				name          string
				opts          []interceptors.Option
				method        string
				clientTimeout time.Duration
				ret           func(ctx context.Context) error
				wantResult    bool
			}{s.name + "/" + r.name, s.opts, s.method, s.clientTimeout, r.ret,
				// A stream's handler answers by sending after its
				// deadline: the Tracker has ended the stream by then.
				r.name == "result" && s.method == unaryMethod})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tr := interceptors.NewTracker(tc.opts...)
			ended := make(chan handlerEnd, 1)
			e := startServer(t, func(ctx context.Context, _ string) error {
				<-ctx.Done()
				ended <- handlerEnd{err: ctx.Err(), cause: context.Cause(ctx)}
				return tc.ret(ctx)
			}, tr.ServerOptions()...)

			ctx, cancel := context.WithCancel(context.Background())
			if tc.clientTimeout > 0 {
				ctx, cancel = context.WithTimeout(context.Background(), tc.clientTimeout)
			}
			defer cancel()
			before := time.Now()
			done := e.start(ctx, tc.method)
			h := receive(t, ended, "end of the handler's context")
			if h.err != context.DeadlineExceeded {
				t.Errorf("handler's ctx.Err() = %v, want %v", h.err, context.DeadlineExceeded)
			}
			if h.cause != interceptors.ErrServerDeadline {
				t.Errorf("handler's context.Cause() = %v, want %v", h.cause, interceptors.ErrServerDeadline)
			}
			r := receive(t, done, "call result")
			if elapsed := time.Since(before); elapsed < shortTimeout {
				t.Errorf("call ended after %v, before its deadline of %v", elapsed, shortTimeout)
			}
			if tc.wantResult {
				if r.err != nil || r.msgs != 1 {
					t.Errorf("call = %d responses, %v; want 1 response, nil", r.msgs, r.err)
				}
			} else if got := status.Code(r.err); got != codes.DeadlineExceeded {
				t.Errorf("call = %v, want codes.DeadlineExceeded", r.err)
			}
			checkIdle(t, tr)
		})
	}
}

func TestCancelAllStatus(t *testing.T) {
	type test struct {
		name       string
		method     string
		cause      error
		ret        func(ctx context.Context) error
		wantResult bool
	}
	var tests []test
	for _, m := range []string{unaryMethod, duplexMethod, outputMethod} {
		for _, cause := range []error{nil, errDrain} {
			for _, r := range returns {
				tests = append(tests, test{
					name:   fmt.Sprintf("%s/cause %v/%s", m, cause, r.name),
					method: m, cause: cause, ret: r.ret,
					// A stream's handler answers by sending after the
					// cancellation: the Tracker has ended the stream by then.
					wantResult: r.name == "result" && m == unaryMethod,
				})
			}
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := interceptors.NewTracker()
			started := make(chan struct{}, 1)
			ended := make(chan handlerEnd, 1)
			e := startServer(t, func(ctx context.Context, _ string) error {
				started <- struct{}{}
				<-ctx.Done()
				ended <- handlerEnd{err: ctx.Err(), cause: context.Cause(ctx)}
				return tc.ret(ctx)
			}, tr.ServerOptions()...)

			done := e.start(testContext(t), tc.method)
			receive(t, started, "handler start")
			if got := tr.CancelAll(tc.cause); got != 1 {
				t.Errorf("CancelAll(%v) = %d, want 1", tc.cause, got)
			}
			h := receive(t, ended, "end of the handler's context")
			wantCause := tc.cause
			if wantCause == nil {
				wantCause = interceptors.ErrShuttingDown
			}
			if h.cause != wantCause {
				t.Errorf("handler's context.Cause() = %v, want %v", h.cause, wantCause)
			}
			if h.err != context.Canceled {
				t.Errorf("handler's ctx.Err() = %v, want %v", h.err, context.Canceled)
			}
			r := receive(t, done, "call result")
			if tc.wantResult {
				if r.err != nil || r.msgs != 1 {
					t.Errorf("call = %d responses, %v; want 1 response, nil", r.msgs, r.err)
				}
			} else {
				checkShuttingDown(t, "call", r.err, tc.cause)
			}
			checkIdle(t, tr)
		})
	}
}

// causeList is an error type whose values cannot be compared with ==.
type causeList []error

func (l causeList) Error() string { return errors.Join(l...).Error() }

func TestCancelUncomparableCause(t *testing.T) {
	tests := []struct {
		name   string
		cancel func(*interceptors.Tracker, error) int
	}{
		{"CancelAll", (*interceptors.Tracker).CancelAll},
		{"CancelLongLived", (*interceptors.Tracker).CancelLongLived},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithLongLived(outputMethod))
			started := make(chan struct{}, 1)
			ended := make(chan handlerEnd, 1)
			e := startServer(t, func(ctx context.Context, _ string) error {
				started <- struct{}{}
				<-ctx.Done()
				ended <- handlerEnd{err: ctx.Err(), cause: context.Cause(ctx)}
				return ctx.Err()
			}, tr.ServerOptions()...)

			done := e.start(testContext(t), outputMethod)
			receive(t, started, "handler start")
			cause := causeList{errDrain}
			if got := tc.cancel(tr, cause); got != 1 {
				t.Errorf("%s(%v) = %d, want 1", tc.name, cause, got)
			}
			h := receive(t, ended, "end of the handler's context")
			if got, ok := h.cause.(causeList); !ok || len(got) != 1 || got[0] != errDrain {
				t.Errorf("handler's context.Cause() = %#v, want %#v", h.cause, cause)
			}
			checkShuttingDown(t, "call", receive(t, done, "call result").err, cause)
			checkIdle(t, tr)
		})
	}
}

func TestCancelCounts(t *testing.T) {
	tr := interceptors.NewTracker(interceptors.WithLongLived(outputMethod))
	started := make(chan string, 5)
	ended := make(chan handlerEnd, 5)
	e := startServer(t, func(ctx context.Context, method string) error {
		started <- method
		<-ctx.Done()
		ended <- handlerEnd{err: ctx.Err(), cause: context.Cause(ctx)}
		return ctx.Err()
	}, tr.ServerOptions()...)
	ctx := testContext(t)

	var short []<-chan result
	for _, m := range []string{unaryMethod, unaryMethod, duplexMethod, duplexMethod} {
		short = append(short, e.start(ctx, m))
		receive(t, started, "handler start")
	}
	output := e.start(ctx, outputMethod)
	receive(t, started, "handler start")
	watch := e.startWatch(ctx, t)
	if got := tr.InFlight(); got != 6 {
		t.Fatalf("InFlight() = %d, want 6", got)
	}

	if got := tr.CancelLongLived(errDrain); got != 2 {
		t.Errorf("CancelLongLived(%v) = %d, want 2", errDrain, got)
	}
	for _, c := range tr.Calls() {
		if c.Cancelled != c.LongLived {
			t.Errorf("after CancelLongLived, Calls() has %s with Cancelled %v, want %v", c.Method, c.Cancelled, c.LongLived)
		}
	}
	if got := tr.CancelLongLived(errDrain); got != 0 {
		t.Errorf("CancelLongLived(%v) again = %d, want 0", errDrain, got)
	}
	if h := receive(t, ended, "end of the long-lived handler's context"); h.cause != errDrain {
		t.Errorf("long-lived handler's context.Cause() = %v, want %v", h.cause, errDrain)
	}
	checkShuttingDown(t, "StreamingOutputCall", receive(t, output, "StreamingOutputCall result").err, errDrain)
	checkShuttingDown(t, "Watch", receive(t, watch, "Watch result").err, errDrain)
	// The Watch's handler may return a moment after its client has the
	// status (see TestCalls).
	if got := len(waitCalls(t, tr, 4)); got != 4 {
		t.Errorf("Calls() = %d calls, want the 4 that are not long-lived", got)
	}
	select {
	case h := <-ended:
		t.Errorf("a handler that is not long-lived ended with %v after CancelLongLived", h.cause)
	default:
	}

	if got := tr.CancelAll(nil); got != 4 {
		t.Errorf("CancelAll(nil) = %d, want 4", got)
	}
	for i, done := range short {
		if h := receive(t, ended, "end of a handler's context"); h.cause != interceptors.ErrShuttingDown {
			t.Errorf("handler's context.Cause() = %v, want %v", h.cause, interceptors.ErrShuttingDown)
		}
		checkShuttingDown(t, fmt.Sprintf("call %d", i), receive(t, done, "call result").err, nil)
	}
	checkIdle(t, tr)
	if got := tr.CancelAll(nil); got != 0 {
		t.Errorf("CancelAll(nil) with no call = %d, want 0", got)
	}
}

// countCalls returns interceptors that count the calls to each method that
// reach them.
func countCalls() (*sync.Map, grpc.UnaryServerInterceptor, grpc.StreamServerInterceptor) {
	var counts sync.Map // method -> *atomic.Int64
	count := func(method string) {
		n, _ := counts.LoadOrStore(method, new(atomic.Int64))
		n.(*atomic.Int64).Add(1)
	}
	return &counts,
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
			count(info.FullMethod)
			return handler(ctx, req)
		},
		func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
			count(info.FullMethod)
			return handler(srv, ss)
		}
}

func loadCount(counts *sync.Map, method string) int64 {
	n, ok := counts.Load(method)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

func TestReject(t *testing.T) {
	tr := interceptors.NewTracker()
	counts, unaryCount, streamCount := countCalls()
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	e := startServer(t, func(ctx context.Context, _ string) error {
		started <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	},
		grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor(), unaryCount),
		grpc.ChainStreamInterceptor(tr.StreamServerInterceptor(), streamCount))
	ctx := testContext(t)

	running := e.start(ctx, unaryMethod)
	receive(t, started, "handler start")
	tr.Reject(errDrain)
	tr.Reject(errors.New("second cause"))

	for _, m := range []string{unaryMethod, checkMethod, duplexMethod, outputMethod, watchMethod} {
		r := e.call(ctx, m)
		checkShuttingDown(t, m, r.err, errDrain)
		if r.err != nil && strings.Contains(r.err.Error(), "second cause") {
			t.Errorf("%s = %v, want the first cause given to Reject only", m, r.err)
		}
		if r.msgs != 0 {
			t.Errorf("%s got %d responses, want 0", m, r.msgs)
		}
	}
	for _, m := range []string{checkMethod, duplexMethod, outputMethod, watchMethod} {
		if got := loadCount(counts, m); got != 0 {
			t.Errorf("%s reached its handler %d times after Reject, want 0", m, got)
		}
	}
	if got := loadCount(counts, unaryMethod); got != 1 {
		t.Errorf("%s reached its handler %d times, want only the call made before Reject", unaryMethod, got)
	}
	if got := tr.InFlight(); got != 1 {
		t.Errorf("InFlight() = %d, want 1, the call made before Reject", got)
	}
	if got := tr.Calls(); len(got) != 1 || got[0].Method != unaryMethod {
		t.Errorf("Calls() = %+v, want the call made before Reject", got)
	}

	close(release)
	if r := receive(t, running, "result of the call made before Reject"); r.err != nil || r.msgs != 1 {
		t.Errorf("call made before Reject = %d responses, %v; want 1 response, nil", r.msgs, r.err)
	}
	checkIdle(t, tr)
}

func TestRejectNilCause(t *testing.T) {
	tr := interceptors.NewTracker()
	e := startServer(t, func(context.Context, string) error { return nil }, tr.ServerOptions()...)
	tr.Reject(nil)
	r := e.call(testContext(t), unaryMethod)
	checkShuttingDown(t, "UnaryCall", r.err, nil)
	if r.err != nil && status.Convert(r.err).Message() != interceptors.ErrShuttingDown.Error() {
		t.Errorf("UnaryCall() = %v, want the message %q", r.err, interceptors.ErrShuttingDown)
	}
}

func TestRejectLongLived(t *testing.T) {
	tr := interceptors.NewTracker(interceptors.WithLongLived(outputMethod))
	counts, unaryCount, streamCount := countCalls()
	e := startServer(t, func(context.Context, string) error { return nil },
		grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor(), unaryCount),
		grpc.ChainStreamInterceptor(tr.StreamServerInterceptor(), streamCount))
	ctx := testContext(t)

	watch := e.startWatch(ctx, t)
	tr.RejectLongLived(errDrain)

	tests := []struct {
		name    string
		method  string
		refused bool
	}{
		{"health watch", watchMethod, true},
		{"method marked long-lived", outputMethod, true},
		{"stream", duplexMethod, false},
		{"unary", unaryMethod, false},
		{"health check", checkMethod, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := loadCount(counts, tc.method)
			r := e.call(ctx, tc.method)
			handled := loadCount(counts, tc.method) - before
			if tc.refused {
				checkShuttingDown(t, tc.method, r.err, errDrain)
				if handled != 0 {
					t.Errorf("%s reached its handler %d times, want 0", tc.method, handled)
				}
				return
			}
			if r.err != nil || r.msgs != 1 {
				t.Errorf("%s = %d responses, %v; want 1 response, nil", tc.method, r.msgs, r.err)
			}
			if handled != 1 {
				t.Errorf("%s reached its handler %d times, want 1", tc.method, handled)
			}
		})
	}

	if got := tr.InFlight(); got != 1 {
		t.Errorf("InFlight() = %d, want 1, the Watch opened before RejectLongLived", got)
	}
	if got := tr.CancelLongLived(nil); got != 1 {
		t.Errorf("CancelLongLived(nil) = %d, want 1", got)
	}
	checkShuttingDown(t, "Watch opened before RejectLongLived", receive(t, watch, "Watch result").err, nil)
	checkIdle(t, tr)
}

func TestPanics(t *testing.T) {
	rec := recovery.WithRecoveryHandler(func(p any) error { return status.Errorf(codes.Internal, "panic: %v", p) })
	chains := []struct {
		name string
		opts func(tr *interceptors.Tracker) []grpc.ServerOption
	}{
		{"recovery outside", func(tr *interceptors.Tracker) []grpc.ServerOption {
			return []grpc.ServerOption{
				grpc.ChainUnaryInterceptor(recovery.UnaryServerInterceptor(rec), tr.UnaryServerInterceptor()),
				grpc.ChainStreamInterceptor(recovery.StreamServerInterceptor(rec), tr.StreamServerInterceptor()),
			}
		}},
		{"recovery inside", func(tr *interceptors.Tracker) []grpc.ServerOption {
			return []grpc.ServerOption{
				grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor(), recovery.UnaryServerInterceptor(rec)),
				grpc.ChainStreamInterceptor(tr.StreamServerInterceptor(), recovery.StreamServerInterceptor(rec)),
			}
		}},
	}
	var tests []struct {
		name   string
		opts   func(tr *interceptors.Tracker) []grpc.ServerOption
		method string
	}
	for _, c := range chains {
		for _, m := range []string{unaryMethod, duplexMethod, outputMethod} {
			tests = append(tests, struct {
				name   string
				opts   func(tr *interceptors.Tracker) []grpc.ServerOption
				method string
			}{c.name + m, c.opts, m})
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithDefaultTimeout(time.Minute), interceptors.WithStreamTimeout(time.Minute))
			var panicNext atomic.Bool
			panicNext.Store(true)
			started := make(chan struct{}, 1)
			release := make(chan struct{})
			e := startServer(t, func(ctx context.Context, _ string) error {
				if panicNext.Swap(false) {
					panic("handler bug")
				}
				started <- struct{}{}
				select {
				case <-release:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			}, tc.opts(tr)...)
			ctx := testContext(t)

			r := e.call(ctx, tc.method)
			if got := status.Code(r.err); got != codes.Internal {
				t.Errorf("call to a panicking handler = %v, want codes.Internal", r.err)
			}
			if got := tr.InFlight(); got != 0 {
				t.Errorf("InFlight() after a panic = %d, want 0", got)
			}
			checkIdle(t, tr)

			done := e.start(ctx, tc.method)
			receive(t, started, "handler start")
			if got := tr.InFlight(); got != 1 {
				t.Errorf("InFlight() = %d during the call after a panic, want 1", got)
			}
			if got := tr.Calls(); len(got) != 1 || got[0].Method != tc.method {
				t.Errorf("Calls() = %+v, want the call to %s", got, tc.method)
			}
			close(release)
			if r := receive(t, done, "call result"); r.err != nil || r.msgs != 1 {
				t.Errorf("call after a panic = %d responses, %v; want 1 response, nil", r.msgs, r.err)
			}
			checkIdle(t, tr)
		})
	}
}

func TestClientGoesAway(t *testing.T) {
	tests := []struct {
		name      string
		method    string
		closeConn bool // close the ClientConn rather than cancel the call
	}{
		{"unary call cancelled", unaryMethod, false},
		{"stream cancelled", duplexMethod, false},
		{"server stream cancelled", outputMethod, false},
		{"unary call connection closed", unaryMethod, true},
		{"stream connection closed", duplexMethod, true},
		{"server stream connection closed", outputMethod, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := interceptors.NewTracker(interceptors.WithDefaultTimeout(time.Minute), interceptors.WithStreamTimeout(time.Minute))
			started := make(chan struct{}, 2)
			ended := make(chan handlerEnd, 2)
			release := make(chan struct{})
			e := startServer(t, func(ctx context.Context, _ string) error {
				started <- struct{}{}
				<-ctx.Done()
				ended <- handlerEnd{err: ctx.Err(), cause: context.Cause(ctx)}
				<-release // outlive the client
				return ctx.Err()
			}, tr.ServerOptions()...)
			releaseOnce := sync.OnceFunc(func() { close(release) })
			t.Cleanup(releaseOnce)

			ctx, cancel := context.WithCancel(testContext(t))
			defer cancel()
			done := e.start(ctx, tc.method)
			receive(t, started, "handler start")
			if tc.closeConn {
				e.cc.Close()
			} else {
				cancel()
			}
			if r := receive(t, done, "call result"); r.err == nil {
				t.Errorf("call = %d responses, nil; want an error", r.msgs)
			}
			h := receive(t, ended, "end of the handler's context")
			if h.err != context.Canceled {
				t.Errorf("handler's ctx.Err() = %v, want %v", h.err, context.Canceled)
			}

			// The handler still runs: it is counted, but not cancelled again.
			if got := tr.InFlight(); got != 1 {
				t.Errorf("InFlight() = %d while the handler outlives its client, want 1", got)
			}
			if got := tr.CancelAll(errDrain); got != 0 {
				t.Errorf("CancelAll(%v) = %d after the client went away, want 0", errDrain, got)
			}
			if got := tr.Calls(); len(got) != 1 || got[0].Cancelled {
				t.Errorf("Calls() = %+v, want one call, not Cancelled", got)
			}
			releaseOnce()
			checkIdle(t, tr)
			if tc.closeConn {
				return
			}

			// The count is still right for the next call.
			ctx, cancel = context.WithCancel(testContext(t))
			defer cancel()
			done = e.start(ctx, tc.method)
			receive(t, started, "handler start")
			if got := tr.InFlight(); got != 1 {
				t.Errorf("InFlight() = %d during the next call, want 1", got)
			}
			cancel()
			receive(t, done, "call result")
			receive(t, ended, "end of the handler's context")
			checkIdle(t, tr)
		})
	}
}

func TestCalls(t *testing.T) {
	tr := interceptors.NewTracker(
		interceptors.WithDefaultTimeout(time.Minute),
		interceptors.WithStreamTimeout(time.Minute),
		interceptors.WithLongLived(outputMethod))
	started := make(chan time.Time, 3)
	release := make(chan struct{})
	e := startServer(t, func(ctx context.Context, _ string) error {
		started <- time.Now()
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}, tr.ServerOptions()...)
	if got := tr.Calls(); len(got) != 0 {
		t.Errorf("Calls() before any call = %+v, want none", got)
	}

	wants := []struct {
		method        string
		clientTimeout time.Duration // 0: the client sends no deadline
		stream        bool
		longLived     bool
		deadline      time.Duration // from the call; 0: none
		injected      bool
	}{
		{method: unaryMethod, deadline: time.Minute, injected: true},
		{method: duplexMethod, clientTimeout: 30 * time.Second, stream: true, deadline: 30 * time.Second},
		{method: outputMethod, stream: true, longLived: true},
		{method: watchMethod, clientTimeout: 5 * time.Minute, stream: true, longLived: true, deadline: 5 * time.Minute},
	}
	// The window in which each call started.
	type window struct{ from, to time.Time }
	var starts []window
	var dones []<-chan result
	for _, want := range wants {
		ctx, cancel := context.WithCancel(context.Background())
		if want.clientTimeout > 0 {
			ctx, cancel = context.WithTimeout(context.Background(), want.clientTimeout)
		}
		t.Cleanup(cancel)
		before := time.Now()
		if want.method == watchMethod {
			dones = append(dones, e.startWatch(ctx, t))
			starts = append(starts, window{before, time.Now()})
			continue
		}
		dones = append(dones, e.start(ctx, want.method))
		starts = append(starts, window{before, receive(t, started, "handler start")})
	}

	calls := tr.Calls()
	if len(calls) != len(wants) {
		t.Fatalf("Calls() = %+v, want %d calls", calls, len(wants))
	}
	if got := tr.InFlight(); got != len(wants) {
		t.Errorf("InFlight() = %d, want %d", got, len(wants))
	}
	for i, want := range wants {
		c := calls[i]
		if c.Method != want.method || c.Stream != want.stream || c.LongLived != want.longLived || c.Injected != want.injected || c.Cancelled {
			t.Errorf("Calls()[%d] = %+v, want Method %s, Stream %v, LongLived %v, Injected %v, Cancelled false",
				i, c, want.method, want.stream, want.longLived, want.injected)
		}
		if c.Started.Before(starts[i].from) || c.Started.After(starts[i].to) {
			t.Errorf("Calls()[%d].Started = %v, want between the call and its handler's start", i, c.Started)
		}
		switch {
		case want.deadline == 0:
			if !c.Deadline.IsZero() {
				t.Errorf("Calls()[%d].Deadline = %v, want none", i, c.Deadline)
			}
		case want.injected:
			if !c.Deadline.Equal(c.Started.Add(want.deadline)) {
				t.Errorf("Calls()[%d].Deadline = Started+%v, want Started+%v", i, c.Deadline.Sub(c.Started), want.deadline)
			}
		default:
			lo, hi := starts[i].from.Add(want.deadline-deadlineSlack), starts[i].to.Add(want.deadline+deadlineSlack)
			if c.Deadline.Before(lo) || c.Deadline.After(hi) {
				t.Errorf("Calls()[%d].Deadline = %v after the call, want %v", i, c.Deadline.Sub(starts[i].from), want.deadline)
			}
		}
	}

	if got := tr.CancelLongLived(nil); got != 2 {
		t.Errorf("CancelLongLived(nil) = %d, want 2", got)
	}
	checkShuttingDown(t, "StreamingOutputCall", receive(t, dones[2], "StreamingOutputCall result").err, nil)
	checkShuttingDown(t, "Watch", receive(t, dones[3], "Watch result").err, nil)
	// A handler still in Send when it was cancelled has its stream ended
	// by the Tracker, and may return a moment after its client has the
	// status.
	calls = waitCalls(t, tr, 2)
	if len(calls) != 2 || calls[0].Method != unaryMethod || calls[1].Method != duplexMethod {
		t.Errorf("Calls() after CancelLongLived = %+v, want the unary call and the stream", calls)
	}
	close(release)
	for _, done := range dones[:2] {
		if r := receive(t, done, "call result"); r.err != nil {
			t.Errorf("call = %v, want nil", r.err)
		}
	}
	checkIdle(t, tr)
}

// waitCalls waits, up to defaultTestTimeout, for tr to track n calls, and
// returns them. No event marks a handler's return, so it looks again every
// millisecond.
func waitCalls(t *testing.T, tr *interceptors.Tracker, n int) []interceptors.Call {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	calls := tr.Calls()
	for len(calls) != n && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
		calls = tr.Calls()
	}
	return calls
}

func TestWait(t *testing.T) {
	tr := interceptors.NewTracker()
	methods := []string{unaryMethod, duplexMethod, outputMethod}
	started := make(chan struct{}, len(methods))
	release := map[string]chan struct{}{}
	for _, m := range methods {
		release[m] = make(chan struct{})
	}
	returned := make(chan time.Time, len(methods))
	e := startServer(t, func(ctx context.Context, method string) error {
		started <- struct{}{}
		select {
		case <-release[method]:
		case <-ctx.Done():
		}
		returned <- time.Now()
		return nil
	}, tr.ServerOptions()...)
	ctx := testContext(t)

	if err := tr.Wait(ctx); err != nil {
		t.Errorf("Wait() with no call = %v, want nil", err)
	}

	var dones []<-chan result
	for _, m := range methods {
		dones = append(dones, e.start(ctx, m))
		receive(t, started, "handler start")
	}

	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	if err := tr.Wait(cancelled); err != context.Canceled {
		t.Errorf("Wait(cancelled context) = %v, want %v", err, context.Canceled)
	}
	before := time.Now() // before the deadline is set, which is then no earlier than before+shortTimeout
	short, cancel := context.WithTimeout(ctx, shortTimeout)
	defer cancel()
	if err := tr.Wait(short); err != context.DeadlineExceeded {
		t.Errorf("Wait(context with timeout %v) = %v, want %v", shortTimeout, err, context.DeadlineExceeded)
	}
	if elapsed := time.Since(before); elapsed < shortTimeout {
		t.Errorf("Wait(context with timeout %v) returned after %v, before the timeout", shortTimeout, elapsed)
	}

	type waited struct {
		err error
		at  time.Time
	}
	const waiters = 2
	waits := make(chan waited, waiters)
	for range waiters {
		go func() {
			err := tr.Wait(ctx)
			waits <- waited{err, time.Now()}
		}()
	}

	for i, m := range methods[:2] {
		close(release[m])
		receive(t, returned, "handler return")
		if r := receive(t, dones[i], "call result"); r.err != nil {
			t.Errorf("%s = %v, want nil", m, r.err)
		}
	}
	select {
	case w := <-waits:
		t.Errorf("Wait() = %v while a handler was still running", w.err)
	default:
	}
	if got := tr.InFlight(); got != 1 {
		t.Errorf("InFlight() = %d, want 1", got)
	}

	close(release[methods[2]])
	last := receive(t, returned, "last handler return")
	for range waiters {
		w := receive(t, waits, "Wait() result")
		if w.err != nil {
			t.Errorf("Wait() = %v, want nil", w.err)
		}
		if w.at.Before(last) {
			t.Errorf("Wait() returned %v before the last handler", last.Sub(w.at))
		}
		if d := w.at.Sub(last); d > promptly {
			t.Errorf("Wait() returned %v after the last handler, want within %v", d, promptly)
		}
	}
	if r := receive(t, dones[2], "call result"); r.err != nil {
		t.Errorf("last call = %v, want nil", r.err)
	}
	checkIdle(t, tr)
}

func TestConcurrentCallsCancelAndReject(t *testing.T) {
	const (
		clients        = 16
		callsPerClient = 25
		cancellers     = 4
		cancels        = 50
	)
	tr := interceptors.NewTracker(interceptors.WithLongLived(outputMethod))
	e := startServer(t, func(ctx context.Context, _ string) error {
		// Some work, cut short by a cancellation.
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
			return nil
		}
	}, tr.ServerOptions()...)
	ctx := testContext(t)

	// tally counts how the calls of one client ended.
	type tally struct {
		ok, unavailable int
		unexpected      []error
	}
	warm := make(chan struct{})     // closed once a client has made some calls
	rejected := make(chan struct{}) // closed after Reject
	tallies := make(chan tally, clients)
	for i := range clients {
		method := []string{unaryMethod, duplexMethod, outputMethod, checkMethod}[i%4]
		go func() {
			var tl tally
			// Call until both callsPerClient calls are made and Reject has
			// been called: the calls made after are refused.
			for n := 0; ; n++ {
				select {
				case <-rejected:
					if n >= callsPerClient {
						tallies <- tl
						return
					}
				default:
				}
				if i == 0 && n == callsPerClient/2 {
					close(warm)
				}
				r := e.call(ctx, method)
				s := status.Convert(r.err)
				switch {
				case s.Code() == codes.OK && r.msgs == 1:
					tl.ok++
				case s.Code() == codes.Unavailable && strings.Contains(s.Message(), "shutting down") && strings.Contains(s.Message(), errDrain.Error()):
					tl.unavailable++
				default:
					tl.unexpected = append(tl.unexpected, fmt.Errorf("%s = %d responses, %w", method, r.msgs, r.err))
				}
			}
		}()
	}
	cancelled := make(chan int, cancellers)
	for i := range cancellers {
		go func() {
			<-warm
			n := 0
			for j := range cancels {
				if i == 0 && j == cancels/2 {
					tr.Reject(errDrain)
					close(rejected)
				}
				if j%2 == 0 {
					n += tr.CancelAll(errDrain)
				} else {
					n += tr.CancelLongLived(errDrain)
				}
				_ = tr.InFlight()
				_ = tr.Calls()
			}
			cancelled <- n
		}()
	}

	var sum tally
	for range clients {
		tl := receive(t, tallies, "client tally")
		sum.ok += tl.ok
		sum.unavailable += tl.unavailable
		sum.unexpected = append(sum.unexpected, tl.unexpected...)
	}
	total := 0
	for range cancellers {
		total += receive(t, cancelled, "canceller count")
	}
	for _, err := range sum.unexpected {
		t.Errorf("call ended with %v, want codes.OK or codes.Unavailable saying \"shutting down\"", err)
	}
	if sum.ok == 0 || sum.unavailable == 0 {
		t.Errorf("calls: %d OK and %d Unavailable, want some of each", sum.ok, sum.unavailable)
	}
	if calls := sum.ok + sum.unavailable + len(sum.unexpected); total > calls {
		t.Errorf("cancellations counted %d, more than the %d calls", total, calls)
	}
	checkIdle(t, tr)
}
