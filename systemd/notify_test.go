package systemd_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/systemd"
)

const (
	// defaultTestTimeout bounds every wait for something that must happen.
	defaultTestTimeout = 10 * time.Second
)

// fakeSystemd is the receiving end of NOTIFY_SOCKET: a unixgram socket of
// the test's own, whose datagrams it reads.
type fakeSystemd struct {
	conn     *net.UnixConn
	messages chan []string // the assignments of each datagram
}

// newFakeSystemd listens on a unixgram socket and points NOTIFY_SOCKET at
// it for the rest of the test.
func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("NOTIFY_SOCKET", path)
	s := &fakeSystemd{conn: conn, messages: make(chan []string, 100)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed
			}
			s.messages <- strings.Split(string(buf[:n]), "\n")
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

// next returns the assignments of the next datagram.
func (s *fakeSystemd) next(t *testing.T) map[string]string {
	t.Helper()
	select {
	case msg := <-s.messages:
		m := map[string]string{}
		for _, a := range msg {
			k, v, ok := strings.Cut(a, "=")
			if !ok {
				t.Fatalf("datagram %q: %q is not an assignment", msg, a)
			}
			m[k] = v
		}
		return m
	case <-time.After(defaultTestTimeout):
		t.Fatalf("no datagram after %v", defaultTestTimeout)
		return nil
	}
}

// wantKeys checks that the datagram m assigns exactly keys.
func wantKeys(t *testing.T, what string, m map[string]string, keys ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	slices.Sort(keys)
	if !slices.Equal(got, keys) {
		t.Errorf("%s: datagram %v assigns %v, want %v", what, m, got, keys)
	}
}

func TestNotifierReadyReloadingStatus(t *testing.T) {
	s := newFakeSystemd(t)
	n := systemd.NewNotifier()

	if err := n.Ready("serving on 127.0.0.1:50051"); err != nil {
		t.Fatalf("Ready() = %v, want nil", err)
	}
	m := s.next(t)
	wantKeys(t, "Ready", m, "READY", "MAINPID", "STATUS")
	if m["READY"] != "1" || m["MAINPID"] != strconv.Itoa(os.Getpid()) || m["STATUS"] != "serving on 127.0.0.1:50051" {
		t.Errorf("Ready() sent %v, want READY=1, MAINPID=%d, STATUS=serving on 127.0.0.1:50051", m, os.Getpid())
	}

	if err := n.Reloading("upgrading"); err != nil {
		t.Fatalf("Reloading() = %v, want nil", err)
	}
	m = s.next(t)
	wantKeys(t, "Reloading", m, "RELOADING", "MONOTONIC_USEC", "STATUS")
	if usec, err := strconv.ParseInt(m["MONOTONIC_USEC"], 10, 64); err != nil || usec <= 0 {
		t.Errorf("Reloading() sent MONOTONIC_USEC=%q, want a positive number", m["MONOTONIC_USEC"])
	}

	// A newline would start an assignment of its own.
	if err := n.Status("two\nREADY=1"); err != nil {
		t.Fatalf("Status() = %v, want nil", err)
	}
	m = s.next(t)
	wantKeys(t, "Status", m, "STATUS")
	if want := "two READY=1"; m["STATUS"] != want {
		t.Errorf("Status() sent STATUS=%q, want %q", m["STATUS"], want)
	}
}

func TestNotifierHandOver(t *testing.T) {
	s := newFakeSystemd(t)
	n := systemd.NewNotifier(systemd.WithStopBudget(func() time.Duration { return time.Minute }))
	if err := n.HandOver(4242, "serving on 127.0.0.1:50051 (pid 4242)"); err != nil {
		t.Fatalf("HandOver(4242) = %v, want nil", err)
	}
	m := s.next(t)
	wantKeys(t, "HandOver", m, "MAINPID", "READY", "STATUS")
	if m["MAINPID"] != "4242" || m["READY"] != "1" || m["STATUS"] != "serving on 127.0.0.1:50051 (pid 4242)" {
		t.Errorf("HandOver(4242) sent %v, want MAINPID=4242, READY=1 and the status", m)
	}

	// The drain of a process that handed over says nothing.
	t1, srv, _, _ := newServer(t)
	d := drain.New(srv, t1, drain.WithHooks(n))
	if _, err := d.Drain(context.Background()); err != nil {
		t.Fatalf("Drain() = %v, want nil", err)
	}
	if err := n.Ready("serving"); err != nil {
		t.Fatalf("Ready() after HandOver = %v, want nil", err)
	}
	if err := systemd.NewNotifier().Status("marker"); err != nil {
		t.Fatalf("Status() = %v, want nil", err)
	}
	if m := s.next(t); m["STATUS"] != "marker" {
		t.Errorf("after HandOver, got datagram %v, want none before the marker", m)
	}
}

func TestNotifierOutsideSystemd(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	n := systemd.NewNotifier()
	for name, err := range map[string]error{
		"Ready":     n.Ready("serving"),
		"Reloading": n.Reloading("upgrading"),
		"Status":    n.Status("x"),
		"HandOver":  n.HandOver(1, "x"),
		"Check":     n.Check(),
	} {
		if err != nil {
			t.Errorf("%s() without NOTIFY_SOCKET = %v, want nil", name, err)
		}
	}
}

func TestNotifierSocketGone(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing")
	t.Setenv("NOTIFY_SOCKET", path)
	err := systemd.NewNotifier().Ready("serving")
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Errorf("Ready() with NOTIFY_SOCKET=%s missing = %v, want an error naming it", path, err)
	}
}

// blockingService answers UnaryCall once release is closed, and reports on
// started that a call has begun.
type blockingService struct {
	testgrpc.UnimplementedTestServiceServer
	started chan struct{}
	release chan struct{}
}

func (s *blockingService) UnaryCall(ctx context.Context, _ *testgrpc.SimpleRequest) (*testgrpc.SimpleResponse, error) {
	s.started <- struct{}{}
	select {
	case <-s.release:
		return &testgrpc.SimpleResponse{}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// newServer serves a blockingService over bufconn, and returns the Tracker
// of its calls, the server, the service and the listener.
func newServer(t *testing.T) (*interceptors.Tracker, *grpc.Server, *blockingService, *bufconn.Listener) {
	t.Helper()
	tr := interceptors.NewTracker()
	srv := grpc.NewServer(
		grpc.ChainUnaryInterceptor(tr.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(tr.StreamServerInterceptor()),
	)
	svc := &blockingService{started: make(chan struct{}, 1), release: make(chan struct{})}
	testgrpc.RegisterTestServiceServer(srv, svc)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	return tr, srv, svc, lis
}

func TestNotifierFollowsTheDrain(t *testing.T) {
	s := newFakeSystemd(t)
	const margin = 3 * time.Second
	tr, srv, svc, lis := newServer(t)
	var d *drain.Drainer
	n := systemd.NewNotifier(
		systemd.WithStopBudget(func() time.Duration { return d.Budget() }),
		systemd.WithTimeoutMargin(margin),
	)
	d = drain.New(srv, tr, drain.WithHooks(n), drain.WithGracePeriod(time.Minute))

	// One call in flight, which the Graceful phase waits for.
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	callErr := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		callErr <- err
	}()
	select {
	case <-svc.started:
	case <-time.After(defaultTestTimeout):
		t.Fatal("the call did not start")
	}

	drained := make(chan error, 1)
	go func() {
		_, err := d.Drain(context.Background())
		drained <- err
	}()
	budget := d.Budget()
	extend := func(what string, m map[string]string) {
		t.Helper()
		usec, err := strconv.ParseInt(m["EXTEND_TIMEOUT_USEC"], 10, 64)
		if err != nil {
			t.Fatalf("%s: EXTEND_TIMEOUT_USEC=%q: %v", what, m["EXTEND_TIMEOUT_USEC"], err)
		}
		got, most := time.Duration(usec)*time.Microsecond, budget+margin
		if got > most || got < most-defaultTestTimeout {
			t.Errorf("%s: EXTEND_TIMEOUT_USEC=%v, want at most the budget %v plus the margin %v, less the time since the drain began", what, got, budget, margin)
		}
	}

	m := s.next(t)
	wantKeys(t, "NotReady", m, "STOPPING", "STATUS", "EXTEND_TIMEOUT_USEC")
	if want := "draining: NotReady, health NOT_SERVING, 1 RPCs in flight"; m["STOPPING"] != "1" || m["STATUS"] != want {
		t.Errorf("NotReady: sent %v, want STOPPING=1 and STATUS=%s", m, want)
	}
	extend("NotReady", m)

	m = s.next(t)
	wantKeys(t, "Graceful", m, "STATUS", "EXTEND_TIMEOUT_USEC")
	if want := "draining: Graceful, GOAWAY sent, 1 RPCs in flight"; m["STATUS"] != want {
		t.Errorf("Graceful: sent STATUS=%q, want %q", m["STATUS"], want)
	}
	extend("Graceful", m)

	close(svc.release)
	if err := <-callErr; err != nil {
		t.Errorf("UnaryCall() = %v, want nil", err)
	}
	m = s.next(t)
	wantKeys(t, "Cleanup", m, "STATUS", "EXTEND_TIMEOUT_USEC")
	if m["STATUS"] != "drained" {
		t.Errorf("Cleanup: sent STATUS=%q, want %q", m["STATUS"], "drained")
	}
	extend("Cleanup", m)
	if err := <-drained; err != nil {
		t.Errorf("Drain() = %v, want nil", err)
	}
}

// A NOTIFY_SOCKET that cannot be used: Check says so, naming it, and the
// drain's result stays clean, its failures going to the error handler.
func TestNotifierSocketUnusable(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, addr, wantErr string
	}{
		{name: "missing", addr: filepath.Join(dir, "missing"), wantErr: "no such file or directory"},
		{name: "directory", addr: dir, wantErr: "not a socket"},
		{name: "vsock", addr: "vsock:2:1234", wantErr: "AF_VSOCK"},
		{name: "relative", addr: "notify", wantErr: "neither an absolute path nor an abstract address"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("NOTIFY_SOCKET", tt.addr)
			var failures []error
			n := systemd.NewNotifier(systemd.WithErrorHandler(func(err error) { failures = append(failures, err) }))
			err := n.Check()
			if err == nil || !strings.Contains(err.Error(), "NOTIFY_SOCKET="+tt.addr) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("Check() = %v, want an error naming NOTIFY_SOCKET=%s and saying %q", err, tt.addr, tt.wantErr)
			}
			tr, srv, _, _ := newServer(t)
			d := drain.New(srv, tr, drain.WithHooks(n))
			if _, err := d.Drain(context.Background()); err != nil {
				t.Errorf("Drain() = %v, want nil: a notification that fails is not the drain's failure", err)
			}
			if len(failures) == 0 || !strings.Contains(failures[0].Error(), "systemd: notifying") {
				t.Errorf("the error handler got %v, want the failed notifications", failures)
			}
		})
	}
}

func TestNotifierCheckAccepts(t *testing.T) {
	newFakeSystemd(t)
	if err := systemd.NewNotifier().Check(); err != nil {
		t.Errorf("Check() with a listening NOTIFY_SOCKET = %v, want nil", err)
	}
}

func TestOptionsPanic(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  func()
	}{
		{name: "nil budget", opt: func() { systemd.WithStopBudget(nil) }},
		{name: "negative margin", opt: func() { systemd.WithTimeoutMargin(-time.Second) }},
		{name: "nil error handler", opt: func() { systemd.WithErrorHandler(nil) }},
		{name: "nil option", opt: func() { systemd.NewNotifier(nil) }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic, want one", tt.name)
				}
			}()
			tt.opt()
		})
	}
}
