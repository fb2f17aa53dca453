package drain_test

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// pastGrace is the grace period of the drains whose calls outlive it.
const pastGrace = 200 * time.Millisecond

// serveH2C serves srv through grpc.Server.ServeHTTP on an http.Server
// that speaks unencrypted HTTP/2 on a loopback port, until the test ends,
// and returns that server and a client of it.
func serveH2C(t *testing.T, srv *grpc.Server) (*http.Server, *grpc.ClientConn) {
	t.Helper()
	var protocols http.Protocols
	protocols.SetUnencryptedHTTP2(true)
	hs := &http.Server{Protocols: &protocols, Handler: srv}
	lis := serveListenLocal(t)
	served := make(chan error, 1)
	go func() { served <- hs.Serve(lis) }()
	t.Cleanup(func() {
		hs.Close()
		<-served
	})
	return hs, serveDialAddr(t, lis.Addr().String())
}

// TestServeHTTPCallPastGrace drains a server mounted with ServeHTTP while a
// unary call outlives the grace period. GracefulStop would close its
// transport at once; the drain must instead cancel the call in the Cancel
// phase and let it end as its handler decides: with the drain's
// codes.Unavailable, marked as cancelled, for a handler that returns its
// context's error; with its result for one that returns a result once
// cancelled. A handler that ignores its cancellation is cut by the forced
// stop, and the drain says so.
func TestServeHTTPCallPastGrace(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler func(ctx context.Context, release <-chan struct{}) error
		check   func(t *testing.T, err error)
		forced  bool
	}{
		{
			name: "returns ctx.Err()",
			handler: func(ctx context.Context, _ <-chan struct{}) error {
				<-ctx.Done()
				return ctx.Err()
			},
			check: checkCancelledByDrain,
		},
		{
			name: "returns a result once cancelled",
			handler: func(ctx context.Context, _ <-chan struct{}) error {
				<-ctx.Done()
				return nil
			},
			check: func(t *testing.T, err error) {
				if err != nil {
					t.Errorf("UnaryCall() = %v, want the handler's result", err)
				}
			},
		},
		{
			name: "ignores its cancellation",
			handler: func(_ context.Context, release <-chan struct{}) error {
				<-release
				return nil
			},
			check: func(t *testing.T, err error) {
				if err == nil {
					t.Errorf("UnaryCall() cut by the forced stop = nil, want an error")
				}
			},
			forced: true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started, release := make(chan struct{}, 1), make(chan struct{})
			tr := interceptors.NewTracker()
			srv := serveNewServer(tr, &serveService{unary: func(ctx context.Context) error {
				started <- struct{}{}
				return tc.handler(ctx, release)
			}}, health.NewServer())
			t.Cleanup(srv.Stop)
			hs, cc := serveH2C(t, srv)

			call := make(chan error, 1)
			go func() {
				_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
				call <- err
			}()
			receive(t, started, "the handler to start")

			d := drain.New(srv, tr, drain.WithGracePeriod(pastGrace), drain.WithCancelGrace(200*time.Millisecond),
				drain.WithForceWait(200*time.Millisecond), drain.WithHooks(stophook.HTTPServer(hs)))
			r, err := d.Drain(context.Background())
			close(release)
			tc.check(t, receive(t, call, "the call"))

			if got, want := phaseNames(r), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cancel}; !slices.Equal(got[:min(len(got), 3)], want) {
				t.Errorf("Drain() phases = %v, want %v first", got, want)
			}
			if r.Cancelled != 1 {
				t.Errorf("Drain() report: %d cancelled, want 1", r.Cancelled)
			}
			if r.Forced != tc.forced || errors.Is(err, drain.ErrForced) != tc.forced {
				t.Errorf("Drain() = forced %t, %v; want forced %t, an error wrapping ErrForced %t", r.Forced, err, tc.forced, tc.forced)
			}
		})
	}
}

// checkCancelledByDrain checks that err is the status of a call the drain
// cancelled: codes.Unavailable with the drain's message, marked as
// cancelled.
func checkCancelledByDrain(t *testing.T, err error) {
	t.Helper()
	s := status.Convert(err)
	if s.Code() != codes.Unavailable || !strings.Contains(s.Message(), drain.ErrDraining.Error()) {
		t.Errorf("call cancelled by the drain = %v, want code %v and %q", err, codes.Unavailable, drain.ErrDraining)
		return
	}
	for _, d := range s.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetMetadata()[interceptors.MetadataHandler] == interceptors.HandlerCancelled {
			return
		}
	}
	t.Errorf("call cancelled by the drain = %v with details %v, want an ErrorInfo marking it %q", err, s.Details(), interceptors.HandlerCancelled)
}

// proxyListener reads a one-line preamble from each connection inside
// Accept, as listeners of the PROXY protocol do, before it returns the
// connection. It sends the remote address of each connection on reading
// as it begins to read its preamble.
type proxyListener struct {
	net.Listener
	reading chan string
}

func (l *proxyListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.reading <- c.RemoteAddr().String()
		r := bufio.NewReader(c)
		line, err := r.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "PROXY ") {
			c.Close()
			continue
		}
		return &bufferedConn{Conn: c, r: r}, nil
	}
}

// bufferedConn is a connection whose first bytes were read into r.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

// dialProxy returns a client of addr that sends the PROXY preamble first.
func dialProxy(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			if _, err := c.Write([]byte("PROXY TCP4 192.0.2.1 192.0.2.2 1234 80\r\n")); err != nil {
				c.Close()
				return nil, err
			}
			return c, nil
		}))
	if err != nil {
		t.Fatalf("grpc.NewClient() = %v", err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestDrainBlockingAccept serves, through Serve, a listener whose Accept
// reads a preamble from each connection, and connects a client that sends
// nothing: the wrapped Accept waits on it for as long as it stays. The
// drain must not: it returns within its budget, at once when its context
// ends, and the call in progress on another connection is drained as
// usual.
func TestDrainBlockingAccept(t *testing.T) {
	for _, tc := range []struct {
		name   string
		cancel bool // end the context of Drain once it has begun
	}{
		{name: "budget"},
		{name: "context ended", cancel: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, srv, started, release := serveHeldUnary(t)
			grace := time.Hour
			if !tc.cancel {
				grace = 400 * time.Millisecond
			}
			recorder, phases := httpPhases()
			d := drain.New(srv, tr, drain.WithGracePeriod(grace), drain.WithCancelGrace(100*time.Millisecond),
				drain.WithForceWait(100*time.Millisecond), drain.WithHooks(recorder))
			lis := serveListenLocal(t)
			served := make(chan error, 1)
			reading := make(chan string, 10)
			go func() { served <- d.Serve(&proxyListener{Listener: lis, reading: reading}) }()

			cc := dialProxy(t, lis.Addr().String())
			serveWaitReady(t, cc)
			call := make(chan error, 1)
			go func() {
				_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
				call <- err
			}()
			receive(t, started, "the handler to start")
			silent, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				t.Fatalf("net.Dial() = %v", err)
			}
			t.Cleanup(func() { silent.Close() })
			for receive(t, reading, "the wrapped Accept to read from the silent client") != silent.LocalAddr().String() {
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			drained := startDrain(ctx, d)
			httpWaitPhase(t, phases, stophook.Graceful)
			if tc.cancel {
				cancel()
			}
			res := receive(t, drained, "Drain to return")
			checkDrainTook(t, d, res, tc.cancel)
			if tc.cancel && res.report.Skipped == "" {
				t.Errorf("Drain() report: not skipped, want the waits skipped")
			}
			close(release)
			if err := receive(t, call, "the call"); err != nil && !res.report.Forced {
				t.Errorf("call in progress = %v in a drain that was not forced", err)
			}
			if err := receive(t, served, "Serve to return"); err != nil && !errors.Is(err, drain.ErrForced) {
				t.Errorf("Serve() = %v, want nil or ErrForced", err)
			}
		})
	}
}

// TestServeHTTPStreamBlockedInSend drains a server mounted with ServeHTTP
// while a stream's handler is held in Send by a client that reads nothing.
// Through ServeHTTP, only closing the connection frees it: the drain must
// stay within its budget, cut the stream at the forced stop and say so,
// and leave no goroutine behind (goleak checks).
func TestServeHTTPStreamBlockedInSend(t *testing.T) {
	tr := interceptors.NewTracker()
	srv := grpc.NewServer(tr.ServerOptions()...)
	testgrpc.RegisterTestServiceServer(srv, blockedSender{})
	t.Cleanup(srv.Stop)
	hs, cc := serveH2C(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	stream, err := testgrpc.NewTestServiceClient(cc).StreamingOutputCall(ctx, &testgrpc.StreamingOutputCallRequest{})
	if err != nil {
		t.Fatalf("StreamingOutputCall() = %v", err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatalf("Recv() = %v, want the first message", err)
	}
	// The client reads no more: whether the handler is held in Send
	// already or only once the flow-control windows are full, nothing
	// but the end of its connection frees it.

	d := drain.New(srv, tr, drain.WithGracePeriod(100*time.Millisecond), drain.WithCancelGrace(100*time.Millisecond),
		drain.WithForceWait(500*time.Millisecond), drain.WithHooks(stophook.HTTPServer(hs)))
	begun := time.Now()
	r, err := d.Drain(context.Background())
	if took, budget := time.Since(begun), d.Budget(); took > budget+time.Second {
		t.Errorf("Drain() took %v, want within its budget of %v", took, budget)
	}
	if !r.Forced || !errors.Is(err, drain.ErrForced) {
		t.Errorf("Drain() = forced %t, %v; want forced: the stream was cut", r.Forced, err)
	}
	if len(r.Leaked) != 0 {
		t.Errorf("Drain() leaked %v, want the handler freed by the closed connection", r.Leaked)
	}
}

// blockedSender is a TestService whose StreamingOutputCall sends 64 KiB
// messages until Send fails.
type blockedSender struct {
	testgrpc.UnimplementedTestServiceServer
}

func (blockedSender) StreamingOutputCall(_ *testgrpc.StreamingOutputCallRequest, stream testgrpc.TestService_StreamingOutputCallServer) error {
	msg := &testgrpc.StreamingOutputCallResponse{Payload: &testgrpc.Payload{Body: make([]byte, 64<<10)}}
	for {
		if err := stream.Send(msg); err != nil {
			return err
		}
	}
}

// TestDrainBlockingAcceptOnManyListeners serves, through Serve, several
// listeners whose wrapped Accept reads a preamble, each held by a client
// that sends nothing. The drain waits up to acceptSettle (100ms) for the
// wrapped Accepts to end: for all of them at once, not for each in turn,
// which would add 100ms per listener to a drain that has nothing else to
// wait for.
func TestDrainBlockingAcceptOnManyListeners(t *testing.T) {
	const listeners = 10
	tr := interceptors.NewTracker()
	srv := serveNewServer(tr, nil, health.NewServer())
	t.Cleanup(srv.Stop)
	d := drain.New(srv, tr, drain.WithGracePeriod(time.Hour))
	var served []chan error
	for range listeners {
		lis := serveListenLocal(t)
		reading := make(chan string, 10)
		s := make(chan error, 1)
		go func() { s <- d.Serve(&proxyListener{Listener: lis, reading: reading}) }()
		served = append(served, s)
		serveWaitReady(t, dialProxy(t, lis.Addr().String()))
		silent, err := net.Dial("tcp", lis.Addr().String())
		if err != nil {
			t.Fatalf("net.Dial() = %v", err)
		}
		t.Cleanup(func() { silent.Close() })
		for receive(t, reading, "the wrapped Accept to read from the silent client") != silent.LocalAddr().String() {
		}
	}
	r, err := d.Drain(context.Background())
	if err != nil {
		t.Errorf("Drain() = %v, want nil", err)
	}
	// 100ms for every listener at once, against a second for ten in turn.
	if limit := 600 * time.Millisecond; r.Duration > limit {
		t.Errorf("Drain() of an idle server with %d listeners whose wrapped Accept blocks took %v, want under %v", listeners, r.Duration, limit)
	}
	for _, s := range served {
		if err := receive(t, s, "Serve to return"); err != nil {
			t.Errorf("Serve() = %v, want nil", err)
		}
	}
}
