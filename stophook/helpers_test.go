package stophook_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/stophook"
)

// defaultTestTimeout bounds every wait of these tests.
const defaultTestTimeout = 10 * time.Second

var errBoom = errors.New("boom")

var phases = []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel, stophook.Force, stophook.Cleanup}

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

func event(p stophook.Phase) stophook.Event {
	return stophook.Event{Phase: p, Started: time.Now()}
}

// httpFixture is an HTTP server on 127.0.0.1. "/" answers at once; "/block"
// answers only once release is closed, which happens at the latest when the
// test ends.
type httpFixture struct {
	srv  *http.Server
	addr string

	served   chan struct{} // closed when Serve has returned
	serveErr error         // what Serve returned; read after served is closed

	entered chan struct{} // receives when a "/block" handler starts
	release func()        // lets the "/block" handlers return
	closed  chan struct{} // receives when the server closes a connection
}

func newHTTPFixture(t *testing.T, wrap func(net.Listener) net.Listener) *httpFixture {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("net.Listen() = %v", err)
	}
	f := &httpFixture{
		addr:    lis.Addr().String(),
		served:  make(chan struct{}),
		entered: make(chan struct{}, 16),
		closed:  make(chan struct{}, 64),
	}
	release := make(chan struct{})
	var once sync.Once
	f.release = func() { once.Do(func() { close(release) }) }

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		f.entered <- struct{}{}
		<-release
		io.WriteString(w, "done")
	})
	serving := make(chan struct{})
	f.srv = &http.Server{
		Handler: mux,
		// Serve calls BaseContext once it tracks the listener: Shutdown
		// and Close will then close it.
		BaseContext: func(net.Listener) context.Context {
			close(serving)
			return context.Background()
		},
		ErrorLog: log.New(io.Discard, "", 0),
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateClosed {
				select {
				case f.closed <- struct{}{}:
				default:
				}
			}
		},
	}
	if wrap != nil {
		lis = wrap(lis)
	}
	go func() {
		defer close(f.served)
		f.serveErr = f.srv.Serve(lis)
	}()
	t.Cleanup(func() {
		f.release()
		f.srv.Close()
		f.waitServed(t)
	})
	select {
	case <-serving:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("Serve() not serving within %v", defaultTestTimeout)
	}
	return f
}

func (f *httpFixture) url(path string) string { return "http://" + f.addr + path }

// waitServed waits for Serve to return and checks that it was shut down.
func (f *httpFixture) waitServed(t *testing.T) {
	t.Helper()
	select {
	case <-f.served:
		if !errors.Is(f.serveErr, http.ErrServerClosed) {
			t.Errorf("Serve() = %v, want %v", f.serveErr, http.ErrServerClosed)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatalf("Serve() did not return within %v", defaultTestTimeout)
	}
}

func (f *httpFixture) waitEntered(t *testing.T) {
	t.Helper()
	select {
	case <-f.entered:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("handler of /block not entered within %v", defaultTestTimeout)
	}
}

func (f *httpFixture) waitConnClosed(t *testing.T) {
	t.Helper()
	select {
	case <-f.closed:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("server did not close a connection within %v", defaultTestTimeout)
	}
}

// checkRefused checks that the server accepts no new connection.
func (f *httpFixture) checkRefused(t *testing.T) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", f.addr, defaultTestTimeout)
	if err == nil {
		conn.Close()
		t.Errorf("Dial(%s) succeeded, want the connection refused", f.addr)
	}
}

// newClient returns an HTTP client with a transport of its own.
func newClient(t *testing.T) (*http.Client, *http.Transport) {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: defaultTestTimeout}, tr
}

type result struct {
	body  string
	close bool // the response said "Connection: close"
	err   error
}

func get(c *http.Client, url string) result {
	resp, err := c.Get(url)
	if err != nil {
		return result{err: err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %s", resp.Status)
	}
	return result{body: string(b), close: resp.Close, err: err}
}

// getAsync sends a GET in the background.
func getAsync(c *http.Client, url string) <-chan result {
	ch := make(chan result, 1)
	go func() { ch <- get(c, url) }()
	return ch
}

func waitResult(t *testing.T, ch <-chan result) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(defaultTestTimeout):
		t.Fatalf("request not finished within %v", defaultTestTimeout)
		return result{}
	}
}

func onStop(t *testing.T, h stophook.Hook, p stophook.Phase) {
	t.Helper()
	if err := h.OnStop(testContext(t), event(p)); err != nil {
		t.Errorf("OnStop(%v) = %v, want nil", p, err)
	}
}

func TestHTTPServerDrainsGracefully(t *testing.T) {
	f := newHTTPFixture(t, nil)
	hook := stophook.HTTPServer(f.srv)
	client, _ := newClient(t)
	slow := getAsync(client, f.url("/block"))
	f.waitEntered(t)

	onStop(t, hook, stophook.NotReady)
	// During the readiness delay, the server takes new connections.
	other, _ := newClient(t)
	if r := get(other, f.url("/")); r.err != nil || r.body != "ok" {
		t.Errorf("GET / after NotReady = %q, %v; want %q, nil", r.body, r.err, "ok")
	}

	// Graceful returns at once, with the slow request still running.
	onStop(t, hook, stophook.Graceful)
	f.checkRefused(t)
	select {
	case r := <-slow:
		t.Fatalf("GET /block ended after Graceful with %+v, want it still running", r)
	default:
	}

	f.release()
	r := waitResult(t, slow)
	if r.err != nil || r.body != "done" {
		t.Errorf("GET /block = %q, %v; want %q, nil", r.body, r.err, "done")
	}
	if !r.close {
		t.Errorf("GET /block: response without Connection: close, want it closing the connection")
	}
	onStop(t, hook, stophook.Cleanup)
	f.waitServed(t)
}

func TestHTTPServerForcedCutsRequests(t *testing.T) {
	f := newHTTPFixture(t, nil)
	hook := stophook.HTTPServer(f.srv)
	client, _ := newClient(t)
	stuck := getAsync(client, f.url("/block")) // released only by the cleanup
	f.waitEntered(t)

	onStop(t, hook, stophook.NotReady)
	onStop(t, hook, stophook.Graceful)
	onStop(t, hook, stophook.Cancel)
	onStop(t, hook, stophook.Force)
	if r := waitResult(t, stuck); r.err == nil {
		t.Errorf("GET /block after Force = %q, nil; want an error", r.body)
	}
	onStop(t, hook, stophook.Cleanup)
	f.waitServed(t)
}

func TestHTTPServerStoppedContextEnds(t *testing.T) {
	f := newHTTPFixture(t, nil)
	hook := stophook.HTTPServer(f.srv)
	client, _ := newClient(t)
	stuck := getAsync(client, f.url("/block")) // released only by the cleanup
	f.waitEntered(t)

	onStop(t, hook, stophook.Graceful)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := hook.OnStop(ctx, event(stophook.Cleanup))
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("OnStop(Cleanup) = %v, want %v", err, context.DeadlineExceeded)
	}
	if r := waitResult(t, stuck); r.err == nil {
		t.Errorf("GET /block after Cleanup timed out = %q, nil; want an error", r.body)
	}
	f.waitServed(t)
}

// TestHTTPServerPhases runs every sequence of events a drain can send and
// checks that each leaves the server shut down, its idle connection closed.
func TestHTTPServerPhases(t *testing.T) {
	for mask := range 1 << 4 {
		var seq []stophook.Phase
		for i, p := range phases[:4] {
			if mask&(1<<i) != 0 {
				seq = append(seq, p)
			}
		}
		seq = append(seq, stophook.Cleanup)
		name := fmt.Sprint(seq)
		t.Run(name, func(t *testing.T) {
			f := newHTTPFixture(t, nil)
			hook := stophook.HTTPServer(f.srv)
			client, _ := newClient(t)
			if r := get(client, f.url("/")); r.err != nil {
				t.Fatalf("GET / = %v", r.err)
			}
			for _, p := range seq {
				onStop(t, hook, p)
			}
			f.waitServed(t)
			f.waitConnClosed(t)
			f.checkRefused(t)
		})
	}
}

func TestHTTPServerRepeatedEvents(t *testing.T) {
	f := newHTTPFixture(t, nil)
	hook := stophook.HTTPServer(f.srv)
	for _, p := range phases {
		onStop(t, hook, p)
		onStop(t, hook, p)
	}
	f.waitServed(t)
}

// failingListener fails to close, after closing.
type failingListener struct{ net.Listener }

func (l failingListener) Close() error {
	l.Listener.Close()
	return errBoom
}

func TestHTTPServerReportsErrors(t *testing.T) {
	tests := []struct {
		name    string
		phases  []stophook.Phase
		errAt   stophook.Phase
		wantErr string
	}{
		{
			name:    "shutdown",
			phases:  []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup},
			errAt:   stophook.Cleanup,
			wantErr: "stophook: shutting down http server: boom",
		},
		{
			name:    "close",
			phases:  []stophook.Phase{stophook.NotReady, stophook.Force, stophook.Cleanup},
			errAt:   stophook.Force,
			wantErr: "stophook: closing http server: boom",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newHTTPFixture(t, func(l net.Listener) net.Listener { return failingListener{l} })
			hook := stophook.HTTPServer(f.srv)
			for _, p := range tt.phases {
				err := hook.OnStop(testContext(t), event(p))
				if p != tt.errAt {
					if err != nil {
						t.Errorf("OnStop(%v) = %v, want nil", p, err)
					}
					continue
				}
				if !errors.Is(err, errBoom) || err.Error() != tt.wantErr {
					t.Errorf("OnStop(%v) = %v, want %q", p, err, tt.wantErr)
				}
			}
			f.waitServed(t)
		})
	}
}

// fakeCloser counts its calls to Close, which waits for release if it is
// not nil, and returns err.
type fakeCloser struct {
	calls   atomic.Int32
	release chan struct{}
	err     error
}

func (c *fakeCloser) Close() error {
	c.calls.Add(1)
	if c.release != nil {
		<-c.release
	}
	return c.err
}

func TestCloserClosesOnceAtStopped(t *testing.T) {
	c := &fakeCloser{}
	hook := stophook.Closer("db", c)
	for _, p := range phases[:4] {
		onStop(t, hook, p)
		if n := c.calls.Load(); n != 0 {
			t.Fatalf("Close called %d times after %v, want 0", n, p)
		}
	}
	onStop(t, hook, stophook.Cleanup)
	onStop(t, hook, stophook.Cleanup)
	if n := c.calls.Load(); n != 1 {
		t.Errorf("Close called %d times after Cleanup twice, want 1", n)
	}
}

func TestCloserError(t *testing.T) {
	hook := stophook.Closer("db", &fakeCloser{err: errBoom})
	err := hook.OnStop(testContext(t), event(stophook.Cleanup))
	if want := "stophook: closing db: boom"; !errors.Is(err, errBoom) || err.Error() != want {
		t.Errorf("OnStop(Cleanup) = %v, want %q", err, want)
	}
	// The error is reported once.
	onStop(t, hook, stophook.Cleanup)
}

func TestCloserBlocked(t *testing.T) {
	c := &fakeCloser{release: make(chan struct{}), err: errBoom}
	hook := stophook.Closer("cache", c)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := hook.OnStop(ctx, event(stophook.Cleanup))
	if want := "stophook: closing cache: " + context.DeadlineExceeded.Error(); !errors.Is(err, context.DeadlineExceeded) || err.Error() != want {
		t.Errorf("OnStop(Cleanup) = %v, want %q", err, want)
	}

	// A later Cleanup waits for the same Close, and reports its error.
	close(c.release)
	err = hook.OnStop(testContext(t), event(stophook.Cleanup))
	if !errors.Is(err, errBoom) {
		t.Errorf("second OnStop(Cleanup) = %v, want %v", err, errBoom)
	}
	if n := c.calls.Load(); n != 1 {
		t.Errorf("Close called %d times, want 1", n)
	}
}

type panickingCloser struct{}

func (panickingCloser) Close() error { panic("oops") }

func TestCloserPanic(t *testing.T) {
	hook := stophook.Closer("queue", panickingCloser{})
	err := hook.OnStop(testContext(t), event(stophook.Cleanup))
	if want := "stophook: closing queue: panic: oops"; err == nil || err.Error() != want {
		t.Errorf("OnStop(Cleanup) = %v, want %q", err, want)
	}
}

func TestCloserFile(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "journal"))
	if err != nil {
		t.Fatal(err)
	}
	hook := stophook.Closer("journal", f)
	onStop(t, hook, stophook.Cleanup)
	if err := f.Close(); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Close() after Cleanup = %v, want %v", err, os.ErrClosed)
	}
}

func TestHTTPTransport(t *testing.T) {
	tests := []struct {
		name string
		hook func(*http.Client, *http.Transport) stophook.Hook
	}{
		{"transport", func(_ *http.Client, tr *http.Transport) stophook.Hook { return stophook.HTTPTransport(tr) }},
		{"client", func(c *http.Client, _ *http.Transport) stophook.Hook { return stophook.HTTPTransport(c) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newHTTPFixture(t, nil)
			client, tr := newClient(t)
			hook := tt.hook(client, tr)
			if r := get(client, f.url("/")); r.err != nil {
				t.Fatalf("GET / = %v", r.err)
			}
			for _, p := range phases[:4] {
				onStop(t, hook, p)
				var reused bool
				trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
				req, err := http.NewRequestWithContext(httptrace.WithClientTrace(testContext(t), trace), http.MethodGet, f.url("/"), nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("GET / after %v = %v", p, err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if !reused {
					t.Errorf("GET / after %v opened a new connection, want the idle one reused", p)
				}
			}
			onStop(t, hook, stophook.Cleanup)
			f.waitConnClosed(t)
		})
	}
}

func newClientConn(t *testing.T) *grpc.ClientConn {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	served := make(chan struct{})
	go func() {
		defer close(served)
		srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-served
	})
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func check(ctx context.Context, cc *grpc.ClientConn) error {
	_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func TestClientConn(t *testing.T) {
	ctx := testContext(t)
	cc := newClientConn(t)
	hook := stophook.ClientConn(cc)
	for _, p := range phases[:4] {
		onStop(t, hook, p)
		if err := check(ctx, cc); err != nil {
			t.Fatalf("Check() after %v = %v, want nil", p, err)
		}
	}
	onStop(t, hook, stophook.Cleanup)
	if got := cc.GetState(); got != connectivity.Shutdown {
		t.Errorf("GetState() after Cleanup = %v, want %v", got, connectivity.Shutdown)
	}
	if err := check(ctx, cc); status.Code(err) != codes.Canceled {
		t.Errorf("Check() after Cleanup = %v, want code %v", err, codes.Canceled)
	}
	onStop(t, hook, stophook.Cleanup)
}

func TestClientConnClosedBefore(t *testing.T) {
	cc := newClientConn(t)
	hook := stophook.ClientConn(cc)
	if err := cc.Close(); err != nil {
		t.Fatalf("Close() = %v", err)
	}
	onStop(t, hook, stophook.Cleanup)
}

func TestHookNames(t *testing.T) {
	tests := []struct {
		name string
		hook stophook.Hook
		want string
	}{
		{"closer", stophook.Closer("db", &fakeCloser{}), `stophook.Closer("db")`},
		{"http server", stophook.HTTPServer(&http.Server{Addr: ":8080"}), `stophook.HTTPServer(":8080")`},
		{"http server without address", stophook.HTTPServer(&http.Server{}), `stophook.HTTPServer`},
		{"http transport", stophook.HTTPTransport(&http.Transport{}), `stophook.HTTPTransport(*http.Transport)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(tt.hook); got != tt.want {
				t.Errorf("fmt.Sprint(hook) = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestValidation(t *testing.T) {
	tests := []struct {
		name string
		f    func()
		want string
	}{
		{"closer empty name", func() { stophook.Closer("", &fakeCloser{}) }, "stophook: Closer: name is empty"},
		{"closer nil", func() { stophook.Closer("db", nil) }, `stophook: Closer("db", c): c is nil`},
		{"closer typed nil", func() { stophook.Closer("db", (*os.File)(nil)) }, `stophook: Closer("db", c): c is nil`},
		{"http server nil", func() { stophook.HTTPServer(nil) }, "stophook: HTTPServer: srv is nil"},
		{"http transport nil", func() { stophook.HTTPTransport(nil) }, "stophook: HTTPTransport: tr is nil"},
		{"http transport typed nil", func() { stophook.HTTPTransport((*http.Transport)(nil)) }, "stophook: HTTPTransport: tr is nil"},
		{"client conn nil", func() { stophook.ClientConn(nil) }, "stophook: ClientConn: cc is nil"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				r := recover()
				if msg, _ := r.(string); !strings.Contains(msg, tt.want) {
					t.Errorf("panic = %v, want %q", r, tt.want)
				}
			}()
			tt.f()
		})
	}
}
