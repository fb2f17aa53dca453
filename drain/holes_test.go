package drain_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/reflection"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// TestDrainZeroGraceIdle drains an idle server, with a client connection
// open, with no grace period: GracefulStop has no time to see the
// connection close, but no RPC runs, so the stop that closes it cuts
// nothing and the drain is clean.
func TestDrainZeroGraceIdle(t *testing.T) {
	ts := newTestServer(t, newService(false))
	serveWaitReady(t, ts.dial(t))
	d := drain.New(ts.srv, ts.tracker, drain.WithGracePeriod(0))
	r, err := d.Drain(context.Background())
	if err != nil || r.Forced {
		t.Errorf("Drain() with WithGracePeriod(0) on an idle server = forced %t, %v; want clean", r.Forced, err)
	}
}

// TestDrainConnectionNeverAcknowledgesGoAway drains a server one of whose
// clients never answers GOAWAY (a raw HTTP/2 connection that reads nothing
// after its preface), so that GracefulStop waits on it after the last RPC
// has ended. Closing it cuts nothing: the drain is not forced.
func TestDrainConnectionNeverAcknowledgesGoAway(t *testing.T) {
	svc := newService(false)
	ts := newTestServer(t, svc)
	raw, err := ts.lis.DialContext(context.Background())
	if err != nil {
		t.Fatalf("bufconn Dial() = %v", err)
	}
	t.Cleanup(func() { raw.Close() })
	if _, err := raw.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatalf("writing the HTTP/2 preface: %v", err)
	}
	if err := http2.NewFramer(raw, raw).WriteSettings(); err != nil {
		t.Fatalf("writing the HTTP/2 settings: %v", err)
	}
	call := startCall(t, ts.dial(t), svc)

	d := drain.New(ts.srv, ts.tracker, drain.WithGracePeriod(200*time.Millisecond), drain.WithCancelGrace(defaultTestTimeout))
	done := startDrain(context.Background(), d)
	close(svc.release) // the call ends within the grace; the raw connection stays
	if err := receive(t, call, "the call"); err != nil {
		t.Errorf("UnaryCall() during the grace period = %v, want success", err)
	}
	res := receive(t, done, "Drain")
	if res.err != nil || res.report.Forced {
		t.Errorf("Drain() = forced %t, %v; want not forced: no RPC was left to cut", res.report.Forced, res.err)
	}
	if got, want := phaseNames(res.report), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Force, stophook.Cleanup}; !slices.Equal(got, want) {
		t.Errorf("Drain() phases = %v, want %v: Stop closes the connection", got, want)
	}
}

// TestServeAfterDrainClosesListener checks that Serve, called once the
// drain has begun, closes the listener it is given, as grpc's Serve does
// after Stop: the port must not accept connections that nobody serves.
func TestServeAfterDrainClosesListener(t *testing.T) {
	ts := newTestServer(t, newService(false))
	d := drain.New(ts.srv, ts.tracker)
	if _, err := d.Drain(context.Background()); err != nil {
		t.Fatalf("Drain() = %v", err)
	}
	lis := serveListenLocal(t)
	if err := d.Serve(lis); !errors.Is(err, drain.ErrDrained) {
		t.Errorf("Serve() after Drain = %v, want an error wrapping %v", err, drain.ErrDrained)
	}
	if conn, err := net.DialTimeout("tcp", lis.Addr().String(), defaultTestTimeout); err == nil {
		conn.Close()
		t.Errorf("dial %v after Serve returned ErrDrained: accepted, want refused", lis.Addr())
	}
}

// TestDrainSkipEndsBusyHook ends the context of Drain while a hook is busy
// with Graceful, honouring its context: the hook's context must end too, so
// that the forced stop and the return of Drain follow at once rather than
// after the hook's timeout of an hour.
func TestDrainSkipEndsBusyHook(t *testing.T) {
	svc := newService(false)
	ts := newTestServer(t, svc)
	t.Cleanup(func() { close(svc.release) })
	startCall(t, ts.dial(t), svc) // keeps the Graceful phase waiting
	busy := make(chan struct{})
	hook := stophook.Func(func(ctx context.Context, e stophook.Event) error {
		if e.Phase != stophook.Graceful {
			return nil
		}
		close(busy)
		<-ctx.Done()
		return ctx.Err()
	})
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(hook), drain.WithHookTimeout(time.Hour),
		drain.WithGracePeriod(time.Hour), drain.WithCancelGrace(time.Hour), drain.WithForceWait(defaultTestShortTimeout))
	ctx, cancel := context.WithCancel(context.Background())
	done := startDrain(ctx, d)
	receive(t, busy, "the hook to be busy with Graceful")
	cancel()
	start := time.Now()
	res := receive(t, done, "Drain after its context ended")
	if took := time.Since(start); took > defaultTestTimeout/2 {
		t.Errorf("Drain returned %v after its context ended, want at once", took)
	}
	var he *drain.HookError
	if !errors.As(res.err, &he) || he.Phase != stophook.Graceful || !strings.Contains(he.Error(), "context of Drain ended") {
		t.Errorf("Drain() = %v, want a HookError at Graceful saying the hook was abandoned when the context ended", res.err)
	}
	if !strings.Contains(res.report.Skipped, "context of Drain ended") {
		t.Errorf("Report.Skipped = %q, want it to say the context ended", res.report.Skipped)
	}
}

// blockingStringer is a hook that fails, and whose String method, used to
// name it in the error, blocks until release is closed.
type blockingStringer struct{ release chan struct{} }

func (h *blockingStringer) OnStop(context.Context, stophook.Event) error {
	return errors.New("hook failed")
}

func (h *blockingStringer) String() string {
	<-h.release
	return "blocking"
}

// TestDrainHookStringCannotHoldDrain checks that no code of a hook but
// OnStop runs where it could hold the drain: a String method that blocks
// delays Drain no more than Budget.
func TestDrainHookStringCannotHoldDrain(t *testing.T) {
	ts := newTestServer(t, newService(false))
	h := &blockingStringer{release: make(chan struct{})}
	t.Cleanup(func() { close(h.release) })
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(h), drain.WithHookTimeout(50*time.Millisecond),
		drain.WithGracePeriod(50*time.Millisecond), drain.WithCancelGrace(0), drain.WithForceWait(0))
	start := time.Now()
	res := receive(t, startDrain(context.Background(), d), "Drain with a hook whose String blocks")
	if took, budget := time.Since(start), d.Budget(); took > budget+time.Second {
		t.Errorf("Drain() took %v, want within its budget %v and a margin", took, budget)
	}
	var he *drain.HookError
	if !errors.As(res.err, &he) || !strings.Contains(he.Hook, "blockingStringer") {
		t.Errorf("Drain() = %v, want a HookError naming the hook by its type", res.err)
	}
}

// TestBudgetSaturates checks that settings whose sum is beyond the largest
// time.Duration give that duration as the budget, which CheckBudget
// refuses, rather than a negative budget that passes any limit.
func TestBudgetSaturates(t *testing.T) {
	huge := time.Duration(math.MaxInt64/2 + 1)
	nop := stophook.Func(func(context.Context, stophook.Event) error { return nil })
	for _, tc := range []struct {
		name string
		opts []drain.Option
	}{
		{"waits", []drain.Option{drain.WithGracePeriod(2562047 * time.Hour), drain.WithReadinessDelay(2562047 * time.Hour)}},
		{"hooks", []drain.Option{drain.WithHooks(nop, nop, nop), drain.WithHookTimeout(huge)}},
		{"waits and hooks", []drain.Option{drain.WithForceWait(huge), drain.WithHooks(nop), drain.WithHookTimeout(huge)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := grpc.NewServer()
			d := drain.New(srv, interceptors.NewTracker(), tc.opts...)
			if got := d.Budget(); got != math.MaxInt64 {
				t.Errorf("Budget() = %v, want the largest duration %v", got, time.Duration(math.MaxInt64))
			}
			if err := d.CheckBudget(40 * time.Second); err == nil {
				t.Errorf("CheckBudget(40s) = nil, want an error")
			}
		})
	}
}

// TestDrainEndsReflectionSession drains a server with an idle reflection
// session open, as grpcurl's shell and GUI clients keep one: the drain must
// be clean, ending the session with codes.Unavailable at the Graceful
// phase, not wait for the forced stop.
func TestDrainEndsReflectionSession(t *testing.T) {
	tr := interceptors.NewTracker()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(tr.StreamServerInterceptor()),
	)
	reflection.Register(srv)
	lis := serveListenLocal(t)
	serveStart(srv, lis)
	t.Cleanup(srv.Stop)
	cc := serveDialAddr(t, lis.Addr().String())
	session, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatalf("ServerReflectionInfo() = %v", err)
	}
	if err := session.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatalf("Send() = %v", err)
	}
	if _, err := session.Recv(); err != nil {
		t.Fatalf("Recv() = %v, want the list of services", err)
	}
	d := drain.New(srv, tr, drain.WithGracePeriod(defaultTestTimeout), drain.WithCancelGrace(defaultTestTimeout))
	r, err := d.Drain(context.Background())
	if err != nil || r.Forced || r.Cancelled != 1 {
		t.Errorf("Drain() with an idle reflection session = %+v, %v; want clean, 1 cancelled", r, err)
	}
	_, err = session.Recv()
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "shutting down") {
		t.Errorf("reflection session after the drain = %v, want codes.Unavailable saying \"shutting down\"", err)
	}
}

// TestDrainLogsProgress checks the log of a drain whose Graceful phase
// waits: each phase record says its bound, a progress record comes about
// once a second with the time left and the RPCs in flight by method, and
// skipped phases say why.
func TestDrainLogsProgress(t *testing.T) {
	svc := newService(false)
	ts := newTestServer(t, svc)
	call := startCall(t, ts.dial(t), svc)
	logs := newSyncBuffer(`"msg":"drain progress"`)
	d := drain.New(ts.srv, ts.tracker, drain.WithGracePeriod(defaultTestTimeout),
		drain.WithLogger(slog.New(slog.NewJSONHandler(logs, nil))))
	done := startDrain(context.Background(), d)
	receive(t, logs.seen, "a progress record")
	close(svc.release)
	receive(t, call, "the call")
	if res := receive(t, done, "Drain"); res.err != nil {
		t.Fatalf("Drain() = %v", res.err)
	}
	out := logs.String()
	for _, want := range []string{
		`"msg":"drain phase","phase":"Graceful","in_flight":1,"max":"10s"`,
		`"msg":"drain progress","phase":"Graceful"`,
		`"in_flight":1,"methods":{"` + unaryMethod + `":1}`,
		`"msg":"drain phase skipped","phase":"Cancel","why":"every RPC finished within the grace period"`,
		`"msg":"drain phase skipped","phase":"Force"`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader at once,
// which closes seen the first time a write contains want.
type syncBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func newSyncBuffer(want string) *syncBuffer {
	return &syncBuffer{want: want, seen: make(chan struct{})}
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.want != "" && bytes.Contains(p, []byte(b.want)) {
		close(b.seen)
		b.want = ""
	}
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
