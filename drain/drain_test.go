package drain_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

const (
	unaryMethod  = "/grpc.testing.TestService/UnaryCall"
	streamMethod = "/grpc.testing.TestService/StreamingOutputCall"
)

// service answers UnaryCall when released, or when its context ends unless
// it is stubborn, and keeps StreamingOutputCall open until its context ends.
type service struct {
	testgrpc.UnimplementedTestServiceServer
	stubborn bool
	started  chan string   // receives the method of each handler that starts
	release  chan struct{} // closed to let unary handlers return
	causes   chan error    // receives context.Cause of each handler that saw its context end
}

func newService(stubborn bool) *service {
	return &service{
		stubborn: stubborn,
		started:  make(chan string, 100),
		release:  make(chan struct{}),
		causes:   make(chan error, 100),
	}
}

func (s *service) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.started <- unaryMethod
	if s.stubborn {
		<-s.release
		return &testgrpc.SimpleResponse{}, nil
	}
	select {
	case <-s.release:
		return &testgrpc.SimpleResponse{}, nil
	case <-ctx.Done():
		s.causes <- context.Cause(ctx)
		return nil, ctx.Err()
	}
}

func (s *service) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	s.started <- streamMethod
	<-stream.Context().Done()
	s.causes <- context.Cause(stream.Context())
	return stream.Context().Err()
}

// testServer is a gRPC server over bufconn with a Tracker, and its health
// service.
type testServer struct {
	srv     *grpc.Server
	tracker *interceptors.Tracker
	health  *health.Server
	lis     *bufconn.Listener
}

func newTestServer(t *testing.T, svc *service) *testServer {
	t.Helper()
	tr := interceptors.NewTracker(interceptors.WithLongLived(streamMethod))
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(tr.StreamServerInterceptor()),
	)
	testgrpc.RegisterTestServiceServer(srv, svc)
	h := health.NewServer()
	healthpb.RegisterHealthServer(srv, h)
	lis := bufconn.Listen(1 << 20)
	served := serveStart(srv, lis)
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return &testServer{srv: srv, tracker: tr, health: h, lis: lis}
}

// dial returns a new client connection to ts.
func (ts *testServer) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc := serveDialBuf(t, ts.lis)
	t.Cleanup(func() { cc.Close() })
	return cc
}

// startCall starts a unary call on cc and waits for its handler to run; the
// call's error arrives on the returned channel.
func startCall(t *testing.T, cc *grpc.ClientConn, svc *service) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		errc <- err
	}()
	waitStarted(t, svc, unaryMethod)
	return errc
}

// startStream opens a long-lived stream on cc and waits for its handler to
// run; the stream's final error arrives on the returned channel.
func startStream(t *testing.T, cc *grpc.ClientConn, svc *service) <-chan error {
	t.Helper()
	errc := make(chan error, 1)
	stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(context.Background(), &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	go func() {
		_, err := stream.Recv()
		errc <- err
	}()
	waitStarted(t, svc, streamMethod)
	return errc
}

func waitStarted(t *testing.T, svc *service, method string) {
	t.Helper()
	select {
	case m := <-svc.started:
		if m != method {
			t.Fatalf("handler started: %s, want %s", m, method)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatalf("handler %s did not start", method)
	}
}

// recorder is a hook that records the events it sees.
type recorder struct {
	mu     sync.Mutex
	events []stophook.Event
	seen   chan stophook.Phase
}

func newRecorder() *recorder { return &recorder{seen: make(chan stophook.Phase, 10)} }

func (r *recorder) OnStop(_ context.Context, e stophook.Event) error {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
	r.seen <- e.Phase
	return nil
}

func (r *recorder) phases() []stophook.Phase {
	r.mu.Lock()
	defer r.mu.Unlock()
	var ps []stophook.Phase
	for _, e := range r.events {
		ps = append(ps, e.Phase)
	}
	return ps
}

// waitPhase waits until the recorder has seen phase p.
func (r *recorder) waitPhase(t *testing.T, p stophook.Phase) {
	t.Helper()
	for {
		if got := receive(t, r.seen, "event "+p.String()); got == p {
			return
		}
	}
}

// drainResult is what a call of Drain returned, and how long it took.
type drainResult struct {
	report drain.Report
	err    error
	took   time.Duration
}

// startDrain calls d.Drain(ctx) in the background; the returned channel
// receives its result.
func startDrain(ctx context.Context, d *drain.Drainer) <-chan drainResult {
	c := make(chan drainResult, 1)
	begun := time.Now()
	go func() {
		r, err := d.Drain(ctx)
		c <- drainResult{r, err, time.Since(begun)}
	}()
	return c
}

func TestDrainIdle(t *testing.T) {
	ts := newTestServer(t, newService(false))
	rec := newRecorder()
	d := drain.New(ts.srv, ts.tracker, drain.WithHealth(ts.health), drain.WithHooks(rec))
	r, err := d.Drain(context.Background())
	if err != nil {
		t.Fatalf("Drain() = %v, want nil", err)
	}
	if got, want := phaseNames(r), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("Drain() phases = %v, want %v", got, want)
	}
	if r.Forced || len(r.Leaked) != 0 || r.Cancelled != 0 {
		t.Errorf("Drain() = %+v, want not forced, nothing leaked or cancelled", r)
	}
	if got, want := rec.phases(), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("hook events = %v, want %v", got, want)
	}
	resp, err := ts.health.Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health Check() after Drain = %v, %v; want NOT_SERVING", resp.GetStatus(), err)
	}
}

func TestDrainNotReadyKeepsServing(t *testing.T) {
	svc := newService(false)
	close(svc.release) // calls return at once
	ts := newTestServer(t, svc)
	rec := newRecorder()
	d := drain.New(ts.srv, ts.tracker, drain.WithHealth(ts.health), drain.WithHooks(rec),
		drain.WithReadinessDelay(defaultTestTimeout))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := startDrain(ctx, d)
	rec.waitPhase(t, stophook.NotReady)

	// A new connection is still served, and health says NOT_SERVING.
	cc := ts.dial(t)
	resp, err := healthpb.NewHealthClient(cc).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("health Check() during the readiness delay = %v, %v; want NOT_SERVING, nil", resp.GetStatus(), err)
	}
	if _, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{}); err != nil {
		t.Errorf("UnaryCall() during the readiness delay = %v, want nil", err)
	}
	select {
	case res := <-done:
		t.Fatalf("Drain() returned during the readiness delay: %+v", res)
	default:
	}
	cancel() // skips the rest of the delay
	res := receive(t, done, "Drain")
	if !slices.Contains(phaseNames(res.report), stophook.NotReady) {
		t.Errorf("Drain() phases = %v, want NotReady among them", phaseNames(res.report))
	}
}

func TestDrainGracefulWaitsForInFlight(t *testing.T) {
	svc := newService(false)
	ts := newTestServer(t, svc)
	cc := ts.dial(t)
	call := startCall(t, cc, svc)
	rec := newRecorder()
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(rec))
	done := startDrain(context.Background(), d)
	rec.waitPhase(t, stophook.Graceful)
	select {
	case res := <-done:
		t.Fatalf("Drain() returned with a call in flight: %+v", res)
	case <-time.After(defaultTestShortTimeout):
	}
	close(svc.release)
	if err := receive(t, call, "the call"); err != nil {
		t.Errorf("UnaryCall() in flight during the drain = %v, want nil", err)
	}
	res := receive(t, done, "Drain")
	if res.err != nil {
		t.Errorf("Drain() = %v, want nil", res.err)
	}
	if got, want := phaseNames(res.report), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("Drain() phases = %v, want %v", got, want)
	}
	if got := res.report.Phases[1].InFlight; got != 1 {
		t.Errorf("Graceful phase InFlight = %d, want 1", got)
	}
}

func TestDrainCancelsLongLivedStreams(t *testing.T) {
	svc := newService(false)
	ts := newTestServer(t, svc)
	cc := ts.dial(t)
	stream := startStream(t, cc, svc)
	d := drain.New(ts.srv, ts.tracker)
	r, err := d.Drain(context.Background())
	if err != nil {
		t.Fatalf("Drain() = %v, want nil", err)
	}
	if got := receive(t, svc.causes, "the stream's cause"); !errors.Is(got, drain.ErrDraining) {
		t.Errorf("context.Cause() in the stream handler = %v, want %v", got, drain.ErrDraining)
	}
	err = receive(t, stream, "the stream")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
		t.Errorf("stream Recv() = %v, want Unavailable, shutting down", err)
	}
	if r.Cancelled != 1 || r.Forced {
		t.Errorf("Drain() = %+v, want 1 cancelled, not forced", r)
	}
}

func TestDrainCancelPhase(t *testing.T) {
	svc := newService(false)
	ts := newTestServer(t, svc)
	call := startCall(t, ts.dial(t), svc)
	rec := newRecorder()
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(rec),
		drain.WithGracePeriod(defaultTestShortTimeout), drain.WithCancelGrace(defaultTestTimeout))
	r, err := d.Drain(context.Background())
	if err != nil {
		t.Fatalf("Drain() = %v, want nil", err)
	}
	if got := receive(t, svc.causes, "the handler's cause"); got != drain.ErrDraining {
		t.Errorf("context.Cause() in the handler = %v, want %v", got, drain.ErrDraining)
	}
	if err := receive(t, call, "the call"); status.Code(err) != codes.Unavailable {
		t.Errorf("UnaryCall() = %v, want code Unavailable", err)
	}
	if got, want := phaseNames(r), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("Drain() phases = %v, want %v", got, want)
	}
	if got, want := rec.phases(), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("hook events = %v, want %v", got, want)
	}
	if r.Cancelled != 1 || r.Forced {
		t.Errorf("Drain() = %+v, want 1 cancelled, not forced", r)
	}
}

func TestDrainForcedReportsLeaked(t *testing.T) {
	svc := newService(true)
	ts := newTestServer(t, svc)
	t.Cleanup(func() { close(svc.release) }) // before the server's Stop
	call := startCall(t, ts.dial(t), svc)
	rec := newRecorder()
	var logs bytes.Buffer
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(rec),
		drain.WithLogger(slog.New(slog.NewJSONHandler(&logs, nil))),
		drain.WithGracePeriod(50*time.Millisecond), drain.WithCancelGrace(50*time.Millisecond), drain.WithForceWait(50*time.Millisecond))
	start := time.Now()
	r, err := d.Drain(context.Background())
	elapsed := time.Since(start)
	if !errors.Is(err, drain.ErrForced) {
		t.Fatalf("Drain() = %v, want an error wrapping ErrForced", err)
	}
	if budget := d.Budget(); elapsed > budget+time.Second {
		t.Errorf("Drain() took %v, want at most the budget %v (and a margin)", elapsed, budget)
	}
	if !r.Forced || len(r.Leaked) != 1 || r.Leaked[0].Method != unaryMethod {
		t.Errorf("Drain() = %+v, want forced with %s leaked", r, unaryMethod)
	}
	if got, want := rec.phases(), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Force, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("hook events = %v, want %v", got, want)
	}
	if last := rec.events[len(rec.events)-1]; len(last.Leaked) != 1 || last.Leaked[0].Method != unaryMethod {
		t.Errorf("Cleanup event Leaked = %v, want %s", last.Leaked, unaryMethod)
	}
	if err := receive(t, call, "the call"); status.Code(err) != codes.Unavailable {
		t.Errorf("UnaryCall() = %v, want code Unavailable", err)
	}
	// One record per phase, then the report naming the leaked method.
	var records []map[string]any
	for line := range strings.Lines(logs.String()) {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		records = append(records, rec)
	}
	if len(records) != 6 {
		t.Fatalf("logged %d records, want 5 phases and the report:\n%s", len(records), logs.String())
	}
	if last := logs.String()[strings.LastIndex(strings.TrimSpace(logs.String()), "\n")+1:]; !strings.Contains(last, unaryMethod) || !strings.Contains(last, `"forced":true`) {
		t.Errorf("report record = %s, want it to name %s and say forced", last, unaryMethod)
	}
}

func TestDrainContextEndSkipsToForce(t *testing.T) {
	svc := newService(true)
	ts := newTestServer(t, svc)
	t.Cleanup(func() { close(svc.release) })
	startCall(t, ts.dial(t), svc)
	rec := newRecorder()
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(rec),
		drain.WithGracePeriod(time.Hour), drain.WithCancelGrace(time.Hour), drain.WithForceWait(50*time.Millisecond))
	ctx, cancel := context.WithCancel(context.Background())
	done := startDrain(ctx, d)
	rec.waitPhase(t, stophook.Graceful)
	cancel()
	res := receive(t, done, "Drain")
	if !errors.Is(res.err, drain.ErrForced) {
		t.Errorf("Drain() = %v, want an error wrapping ErrForced", res.err)
	}
	if got, want := phaseNames(res.report), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Force, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("Drain() phases = %v, want %v", got, want)
	}
}

func TestDrainEndedContextGoesStraightToForce(t *testing.T) {
	for i := range 20 { // the skip must not depend on goroutine scheduling
		ts := newTestServer(t, newService(false))
		rec := newRecorder()
		d := drain.New(ts.srv, ts.tracker, drain.WithHooks(rec), drain.WithReadinessDelay(time.Hour))
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		r, err := d.Drain(ctx)
		if got, want := phaseNames(r), []stophook.Phase{stophook.NotReady, stophook.Force, stophook.Cleanup}; !slices.Equal(got, want) {
			t.Fatalf("Drain(ended context) %d: phases = %v, want %v", i, got, want)
		}
		// Nothing was in flight: the forced stop cut nothing.
		if err != nil || r.Forced {
			t.Fatalf("Drain(ended context) %d = forced %t, %v; want not forced, nil", i, r.Forced, err)
		}
		if !strings.Contains(r.Skipped, "context of Drain ended") {
			t.Fatalf("Drain(ended context) %d: Skipped = %q, want it to say the context ended", i, r.Skipped)
		}
		if got, want := rec.phases(), []stophook.Phase{stophook.NotReady, stophook.Force, stophook.Cleanup}; !slices.Equal(got, want) {
			t.Fatalf("Drain(ended context) %d: hook events = %v, want %v", i, got, want)
		}
	}
}

func TestDrainTwice(t *testing.T) {
	svc := newService(false)
	ts := newTestServer(t, svc)
	startCall(t, ts.dial(t), svc)
	d := drain.New(ts.srv, ts.tracker, drain.WithGracePeriod(defaultTestTimeout))
	var results []<-chan drainResult
	for range 5 {
		results = append(results, startDrain(context.Background(), d))
	}
	close(svc.release)
	first := receive(t, results[0], "Drain")
	for i, c := range results[1:] {
		res := receive(t, c, "Drain")
		if res.err != first.err || !res.report.Started.Equal(first.report.Started) || res.report.Duration != first.report.Duration {
			t.Errorf("concurrent Drain() %d = %+v, %v; want the same as the first, %+v, %v", i+1, res.report, res.err, first.report, first.err)
		}
	}
	again, err := d.Drain(context.Background())
	if err != first.err || !again.Started.Equal(first.report.Started) {
		t.Errorf("Drain() after Drain = %+v, %v; want the first result", again, err)
	}
}

func TestHookRules(t *testing.T) {
	ts := newTestServer(t, newService(false))
	var (
		mu    sync.Mutex
		calls []string
	)
	record := func(name string) stophook.Func {
		return func(_ context.Context, e stophook.Event) error {
			mu.Lock()
			defer mu.Unlock()
			calls = append(calls, name+"@"+e.Phase.String())
			return nil
		}
	}
	errFirst := errors.New("first failed")
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	hangs := stophook.Func(func(ctx context.Context, e stophook.Event) error {
		if e.Phase == stophook.Cleanup {
			<-release // ignores ctx: the drain must abandon it
		}
		return nil
	})
	panics := stophook.Func(func(_ context.Context, e stophook.Event) error {
		if e.Phase == stophook.Graceful {
			panic("boom")
		}
		return nil
	})
	fails := stophook.Func(func(_ context.Context, e stophook.Event) error {
		if e.Phase == stophook.NotReady {
			return errFirst
		}
		return nil
	})
	const hookTimeout = 200 * time.Millisecond
	d := drain.New(ts.srv, ts.tracker, drain.WithHookTimeout(hookTimeout),
		drain.WithHooks(record("a"), fails), drain.WithHooks(panics, hangs, record("b")))
	start := time.Now()
	_, err := d.Drain(context.Background())
	elapsed := time.Since(start)

	// Reverse order of registration, every hook at every event.
	want := []string{"b@NotReady", "a@NotReady", "b@Graceful", "a@Graceful", "b@Cleanup", "a@Cleanup"}
	mu.Lock()
	got := slices.Clone(calls)
	mu.Unlock()
	if !slices.Equal(got, want) {
		t.Errorf("hook calls = %v, want %v", got, want)
	}
	if !errors.Is(err, errFirst) {
		t.Errorf("Drain() = %v, want it to join %v", err, errFirst)
	}
	var pe *drain.PanicError
	if !errors.As(err, &pe) || pe.Value != "boom" {
		t.Errorf("Drain() = %v, want a PanicError carrying boom", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Drain() = %v, want the hung hook's context.DeadlineExceeded", err)
	}
	var hes []*drain.HookError
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		var he *drain.HookError
		if errors.As(e, &he) {
			hes = append(hes, he)
		}
	}
	gotHooks := map[string]stophook.Phase{}
	for _, he := range hes {
		gotHooks[he.Hook] = he.Phase
	}
	wantHooks := map[string]stophook.Phase{
		"hook 1 (stophook.Func)": stophook.NotReady,
		"hook 2 (stophook.Func)": stophook.Graceful,
		"hook 3 (stophook.Func)": stophook.Cleanup,
	}
	if len(gotHooks) != len(wantHooks) {
		t.Errorf("hook errors = %v, want %v", gotHooks, wantHooks)
	}
	for h, p := range wantHooks {
		if gotHooks[h] != p {
			t.Errorf("hook errors = %v, want %s at %v", gotHooks, h, p)
		}
	}
	// The hung hook cost its timeout, and nothing more.
	if elapsed < hookTimeout || elapsed > hookTimeout+2*time.Second {
		t.Errorf("Drain() took %v, want about the hook timeout %v", elapsed, hookTimeout)
	}
}

func TestBudget(t *testing.T) {
	srv := grpc.NewServer()
	tr := interceptors.NewTracker()
	nop := stophook.Func(func(context.Context, stophook.Event) error { return nil })
	tests := []struct {
		name string
		opts []drain.Option
		want time.Duration
	}{
		{"defaults", nil, 19 * time.Second},
		{"readiness delay", []drain.Option{drain.WithReadinessDelay(5 * time.Second)}, 24 * time.Second},
		// Hooks run beside the waits, and handle Cleanup after them.
		{"one hook", []drain.Option{drain.WithHooks(nop)}, 21 * time.Second},
		{"three hooks", []drain.Option{drain.WithHooks(nop, nop), drain.WithHooks(nop)}, 25 * time.Second},
		{"hook timeout", []drain.Option{drain.WithHooks(nop, nop), drain.WithHookTimeout(time.Second)}, 21 * time.Second},
		{"small", []drain.Option{drain.WithGracePeriod(time.Second), drain.WithCancelGrace(time.Second), drain.WithForceWait(time.Second)}, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := drain.New(srv, tr, tt.opts...).Budget(); got != tt.want {
				t.Errorf("Budget() = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckBudget(t *testing.T) {
	srv := grpc.NewServer()
	tr := interceptors.NewTracker()
	nop := stophook.Func(func(context.Context, stophook.Event) error { return nil })
	// A budget of 5s + 10s + 2s + 1s + 1 hook × 2s = 20s, whatever the
	// defaults.
	d := drain.New(srv, tr, drain.WithReadinessDelay(5*time.Second), drain.WithGracePeriod(10*time.Second),
		drain.WithCancelGrace(2*time.Second), drain.WithForceWait(time.Second),
		drain.WithHooks(nop), drain.WithHookTimeout(2*time.Second))
	if got, want := d.Budget(), 20*time.Second; got != want {
		t.Fatalf("Budget() = %v, want %v", got, want)
	}
	tests := []struct {
		name  string
		limit time.Duration
		want  []string // in the error; none for nil
	}{
		{"margin kept", 20*time.Second + drain.BudgetMargin, nil},
		{"plenty", time.Minute, nil},
		{"budget equal to the limit", 20 * time.Second, []string{"20s", "margin of 1s (BudgetMargin)", "the hook time"}},
		{"a millisecond short", 21*time.Second - time.Millisecond, []string{"margin of 1s", "the hook time"}},
		{"grace period", 10 * time.Second, []string{"grace period (WithGracePeriod) takes it past"}},
		{"margin alone", 500 * time.Millisecond, []string{"the margin (BudgetMargin) alone takes it past"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := d.CheckBudget(tt.limit)
			if tt.want == nil {
				if err != nil {
					t.Errorf("CheckBudget(%v) = %v, want nil", tt.limit, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckBudget(%v) = nil, want an error saying %q", tt.limit, tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckBudget(%v) = %v, want it to say %q", tt.limit, err, w)
				}
			}
		})
	}
}

// TestDefaultsFitKubernetes checks the promise of the defaults: the set-up
// of the README (a readiness delay of 5s) with up to two hooks fits
// Kubernetes' default terminationGracePeriodSeconds of 30, with a second or
// more to spare for the signal to arrive and the process to exit.
func TestDefaultsFitKubernetes(t *testing.T) {
	const (
		kubernetesDefault = 30 * time.Second
		margin            = time.Second
	)
	srv := grpc.NewServer()
	tr := interceptors.NewTracker()
	nop := stophook.Func(func(context.Context, stophook.Event) error { return nil })
	for hooks := 1; hooks <= 2; hooks++ {
		d := drain.New(srv, tr, drain.WithReadinessDelay(5*time.Second), drain.WithHooks(slices.Repeat([]stophook.Hook{nop}, hooks)...))
		if err := d.CheckBudget(kubernetesDefault - margin); err != nil {
			t.Errorf("with a 5s readiness delay and %d hooks: CheckBudget(%v) = %v, want nil", hooks, kubernetesDefault-margin, err)
		}
	}
}

func TestNewRefusesBadInput(t *testing.T) {
	srv := grpc.NewServer()
	tr := interceptors.NewTracker()
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"nil server", func() { drain.New(nil, tr) }, "nil *grpc.Server"},
		{"nil tracker", func() { drain.New(srv, nil) }, "nil *interceptors.Tracker"},
		{"nil option", func() { drain.New(srv, tr, nil) }, "option 0 is nil"},
		{"negative readiness delay", func() { drain.WithReadinessDelay(-1) }, "WithReadinessDelay"},
		{"negative grace period", func() { drain.WithGracePeriod(-1) }, "WithGracePeriod"},
		{"negative cancel grace", func() { drain.WithCancelGrace(-1) }, "WithCancelGrace"},
		{"negative force wait", func() { drain.WithForceWait(-1) }, "WithForceWait"},
		{"zero hook timeout", func() { drain.WithHookTimeout(0) }, "WithHookTimeout"},
		{"nil hook", func() { drain.WithHooks(stophook.Func(nil), nil) }, "hook 1 is nil"},
		{"nil health", func() { drain.WithHealth(nil) }, "WithHealth"},
		{"nil logger", func() { drain.WithLogger(nil) }, "WithLogger"},
		{"hook registered twice", func() {
			h := newRecorder()
			drain.New(srv, tr, drain.WithHooks(h, newRecorder()), drain.WithHooks(h))
		}, "drain: New: hook 2 (*drain_test.recorder) is hook 0 again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Errorf("panic = %v, want a message containing %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}
