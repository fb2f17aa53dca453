package client_test

import (
	"context"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
)

// silentListener accepts connections on a loopback port and never writes
// to them: a gRPC client stays Connecting, waiting for the server's HTTP/2
// preface. It is closed, with its connections, at the end of the test.
func silentListener(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return lis.Addr().String()
}

// stuckConstructor makes a ClientConn to target with client.NewClient and
// starts connecting it: its name is what Stuck's stack must name.
func stuckConstructor(t *testing.T, target string) *grpc.ClientConn {
	t.Helper()
	cc, err := client.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("client.NewClient(%q) = %v", target, err)
	}
	t.Cleanup(func() { cc.Close() })
	cc.Connect()
	return cc
}

// waitStuck calls Stuck(after) until it lists target, and returns it.
func waitStuck(t *testing.T, after time.Duration, target string) client.OpenConn {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for time.Now().Before(deadline) {
		if i := slices.IndexFunc(client.Stuck(after), func(c client.OpenConn) bool { return c.Target == target }); i >= 0 {
			return client.Stuck(after)[i]
		}
		time.Sleep(10 * time.Millisecond) // a bounded poll of a condition
	}
	t.Fatalf("Stuck(%v) never listed %s within %v", after, target, defaultTestTimeout)
	return client.OpenConn{}
}

func TestStuck(t *testing.T) {
	client.VerifyNone(t)
	t.Cleanup(func() { client.VerifyNone(t) })
	b := startBackend(t, "A", false)
	silent := silentListener(t)

	idle, err := client.NewClient("passthrough:///idle", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("client.NewClient() = %v", err)
	}
	t.Cleanup(func() { idle.Close() })
	ready, err := client.NewClient("passthrough:///ready",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return b.lis.DialContext(ctx) }))
	if err != nil {
		t.Fatalf("client.NewClient() = %v", err)
	}
	t.Cleanup(func() { ready.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	if _, err := demopb.NewDemoClient(ready).Echo(ctx, wrapperspb.String("hi"), grpc.WaitForReady(true)); err != nil {
		t.Fatalf("Echo() = %v", err)
	}

	start := time.Now()
	stuckConstructor(t, silent)
	c := waitStuck(t, time.Second, silent)
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("Stuck(1s) listed the conn after %v", waited)
	}
	if !strings.Contains(c.Stack, "client_test.stuckConstructor") || !strings.Contains(c.Stack, "client_test.TestStuck") {
		t.Errorf("Stuck() conn has stack\n%s\nwant stuckConstructor and TestStuck in it", c.Stack)
	}
	if s := c.String(); !strings.Contains(s, silent) || !strings.Contains(s, c.State.String()+" for ") {
		t.Errorf("Stuck() conn String() = %q, want its target, state and how long", s)
	}
	if c.State != connectivity.Connecting && c.State != connectivity.TransientFailure {
		t.Errorf("Stuck() conn in state %v, want Connecting or TransientFailure", c.State)
	}
	if s := ready.GetState(); s != connectivity.Ready {
		t.Fatalf("ready conn in state %v, want Ready", s)
	}
	for _, c := range client.Stuck(0) {
		if c.Target != silent {
			t.Errorf("Stuck(0) lists %s in state %v, want only %s", c.Target, c.State, silent)
		}
	}
	if n := len(client.Stuck(time.Hour)); n != 0 {
		t.Errorf("Stuck(1h) lists %d conns, want none", n)
	}
}

// records is a slog.Handler that keeps its records.
type records struct {
	mu   sync.Mutex
	recs []slog.Record
	got  chan struct{} // receives a value per record, if there is room
}

func (r *records) Enabled(context.Context, slog.Level) bool { return true }
func (r *records) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *records) WithGroup(string) slog.Handler            { return r }
func (r *records) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec.Clone())
	r.mu.Unlock()
	select {
	case r.got <- struct{}{}:
	default:
	}
	return nil
}

func (r *records) all() []slog.Record {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.recs)
}

// runWatchdog runs a Watchdog that looks every 20ms and reports conns stuck
// for after into the records it returns. stop ends it and waits for Run to
// return; it is also called at the end of the test.
func runWatchdog(t *testing.T, after time.Duration) (rec *records, stop func()) {
	t.Helper()
	rec = &records{got: make(chan struct{}, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		client.Watchdog{Logger: slog.New(rec), Interval: 20 * time.Millisecond, After: after}.Run(ctx)
	}()
	stop = func() {
		cancel()
		<-stopped
	}
	t.Cleanup(stop)
	return rec, stop
}

func TestWatchdog(t *testing.T) {
	const after = 300 * time.Millisecond
	silent := silentListener(t)
	rec, stop := runWatchdog(t, after)

	stuckConstructor(t, silent)
	receive(t, rec.got, "watchdog record")
	// Let the watchdog look again, many times, at the same episode.
	waitStuck(t, 5*after, silent)
	stop()
	recs := rec.all()
	if len(recs) != 1 {
		t.Fatalf("watchdog logged %d records, want 1 for one episode", len(recs))
	}
	r := recs[0]
	attrs := map[string]string{}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	if r.Level != slog.LevelWarn || attrs["target"] != silent || !strings.Contains(attrs["created_at"], "client_test.stuckConstructor") {
		t.Errorf("watchdog record %v %q %v, want WARN with the target and where the conn was made", r.Level, r.Message, attrs)
	}
	if s := attrs["state"]; s != connectivity.Connecting.String() && s != connectivity.TransientFailure.String() {
		t.Errorf("watchdog record state %q, want CONNECTING or TRANSIENT_FAILURE", s)
	}
	if d, err := time.ParseDuration(attrs["stuck_for"]); err != nil || d < after {
		t.Errorf("watchdog record stuck_for %q, want at least %v", attrs["stuck_for"], after)
	}
}

func TestWatchdogPanics(t *testing.T) {
	for _, tc := range []struct {
		name string
		w    client.Watchdog
		want string
	}{
		{name: "no logger", w: client.Watchdog{}, want: "client: Watchdog.Run: nil Logger"},
		{name: "negative interval", w: client.Watchdog{Logger: slog.New(slog.DiscardHandler), Interval: -1}, want: "client: Watchdog.Run: negative Interval"},
		{name: "negative after", w: client.Watchdog{Logger: slog.New(slog.DiscardHandler), After: -1}, want: "client: Watchdog.Run: negative Interval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if r, _ := recover().(string); !strings.HasPrefix(r, tc.want) {
					t.Errorf("panic %q, want one starting with %q", r, tc.want)
				}
			}()
			tc.w.Run(context.Background())
		})
	}
}

// TestWatchdogEpisodes checks that a conn is reported again once it has
// recovered and got stuck again: a conn to a port where nothing listens
// fails, is reported, connects once a server listens there, and fails
// again when the server stops.
func TestWatchdogEpisodes(t *testing.T) {
	const after = 200 * time.Millisecond
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens: connections are refused

	rec, stop := runWatchdog(t, after)
	cc := stuckConstructor(t, addr)
	receive(t, rec.got, "first watchdog record")

	// A server on the port: the conn recovers.
	lis, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: net.Listen(%s) = %v", addr, err)
	}
	srv := grpc.NewServer()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	waitCtx, waitCancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer waitCancel()
	for s := cc.GetState(); s != connectivity.Ready; s = cc.GetState() {
		if !cc.WaitForStateChange(waitCtx, s) {
			t.Fatalf("conn in state %v after %v, want Ready once a server listens", s, defaultTestTimeout)
		}
	}
	// Seen Ready by the registry, then the server goes: a new episode.
	if n := len(client.Stuck(0)); n != 0 {
		t.Fatalf("Stuck(0) lists %d conns while the conn is Ready", n)
	}
	if n := len(rec.all()); n != 1 {
		t.Fatalf("watchdog logged %d records before the second episode, want 1", n)
	}
	srv.Stop()
	<-served
	// The conn goes Idle when its server goes away; a caller makes it
	// connect again.
	if !cc.WaitForStateChange(waitCtx, connectivity.Ready) {
		t.Fatalf("conn still Ready after its server stopped")
	}
	cc.Connect()
	receive(t, rec.got, "second watchdog record")
	stop()
	if n := len(rec.all()); n != 2 {
		t.Errorf("watchdog logged %d records for two episodes, want 2", n)
	}
}
