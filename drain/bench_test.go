package drain_test

import (
	"context"
	"errors"
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

// benchServer is a gRPC server over bufconn whose RPCs a Tracker tracks,
// with ready client connections to it. Benchmarks close it themselves, at
// each iteration; tests register close with t.Cleanup.
type benchServer struct {
	srv    *grpc.Server
	tr     *interceptors.Tracker
	hs     *health.Server
	d      *drain.Drainer // serves the server, if not nil
	served <-chan error
	conns  []*grpc.ClientConn
}

// benchStartServer serves svc (when not nil) and a health service, and
// makes conns client connections ready with one health check each.
func benchStartServer(tb testing.TB, svc testgrpc.TestServiceServer, conns int) *benchServer {
	return benchStartServerWith(tb, svc, conns, nil)
}

// benchStartServerWith is benchStartServer, serving with d.Serve, as a
// program does, if d is not nil (given the server and Tracker to drain), and
// with grpc's Serve otherwise.
func benchStartServerWith(tb testing.TB, svc testgrpc.TestServiceServer, conns int, newDrainer func(*grpc.Server, *interceptors.Tracker) *drain.Drainer) *benchServer {
	tb.Helper()
	tr := interceptors.NewTracker()
	hs := health.NewServer()
	srv := serveNewServer(tr, svc, hs)
	lis := bufconn.Listen(1 << 16)
	s := &benchServer{srv: srv, tr: tr, hs: hs}
	if newDrainer == nil {
		s.served = serveStart(srv, lis)
	} else {
		s.d = newDrainer(srv, tr)
		served := make(chan error, 1)
		go func() { served <- s.d.Serve(lis) }()
		s.served = served
	}
	for range conns {
		s.conns = append(s.conns, serveDialBuf(tb, lis))
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	checked := make(chan error, conns)
	for _, cc := range s.conns {
		go func() {
			_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.WaitForReady(true))
			checked <- err
		}()
	}
	for range conns {
		if err := receive(tb, checked, "the connections to be ready"); err != nil {
			s.close()
			tb.Fatalf("Check() = %v, want nil", err)
		}
	}
	return s
}

// close stops the server, if it is still running, and closes the clients.
func (s *benchServer) close() {
	s.srv.Stop()
	<-s.served
	for _, cc := range s.conns {
		cc.Close()
	}
}

// BenchmarkDrainIdle100Conns times the stop of a server with 100 idle
// client connections, each made ready by one RPC: by a bare GracefulStop,
// the server served by grpc's Serve; and by Drain, the server served by
// drain.Serve, as a program that uses the drain serves it, so that the
// figure includes the drain's wait for grpc to take up the connections
// accepted last (up to 100ms after the last accept): at once after the
// connections are made ("stop=Drain", the settle included), and once
// 100ms have passed since ("stop=Drain-accepts-settled", a server whose
// clients connected earlier). Only the stop is timed.
func BenchmarkDrainIdle100Conns(b *testing.B) {
	for _, bc := range []struct {
		name   string
		d      func(*grpc.Server, *interceptors.Tracker) *drain.Drainer
		settle bool // let 100ms pass after the last accept, untimed
		stop   func(s *benchServer) error
	}{
		{name: "stop=GracefulStop", stop: func(s *benchServer) error {
			s.srv.GracefulStop()
			return nil
		}},
		{name: "stop=Drain",
			d: func(srv *grpc.Server, tr *interceptors.Tracker) *drain.Drainer { return drain.New(srv, tr) },
			stop: func(s *benchServer) error {
				_, err := s.d.Drain(context.Background())
				return err
			}},
		{name: "stop=Drain-accepts-settled",
			d:      func(srv *grpc.Server, tr *interceptors.Tracker) *drain.Drainer { return drain.New(srv, tr) },
			settle: true,
			stop: func(s *benchServer) error {
				_, err := s.d.Drain(context.Background())
				return err
			}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.StopTimer()
			for range b.N {
				s := benchStartServerWith(b, nil, 100, bc.d)
				if bc.settle {
					time.Sleep(100 * time.Millisecond) // the state measured, not synchronisation
				}
				b.StartTimer()
				err := bc.stop(s)
				b.StopTimer()
				s.close()
				if err != nil {
					b.Fatalf("stop = %v, want nil", err)
				}
			}
		})
	}
}

// benchAfterLastRPC drains a server whose one RPC is in flight, lets the
// RPC end once the drain has sent Graceful, and returns the time from the
// handler's return to Drain's return. timing is called with true just
// before the handler is released and with false once Drain has returned.
func benchAfterLastRPC(tb testing.TB, timing func(on bool)) time.Duration {
	tb.Helper()
	started, release, returned := make(chan struct{}, 1), make(chan struct{}), make(chan time.Time, 1)
	s := benchStartServer(tb, &serveService{unary: func(context.Context) error {
		started <- struct{}{}
		<-release
		returned <- time.Now()
		return nil
	}}, 1)
	defer s.close()
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	call := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(s.conns[0]).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		call <- err
	}()
	receive(tb, started, "the handler to start")

	goAway := make(chan struct{})
	var once sync.Once
	d := drain.New(s.srv, s.tr, drain.WithGracePeriod(defaultTestTimeout), drain.WithHooks(stophook.Func(
		func(_ context.Context, e stophook.Event) error {
			if e.Phase == stophook.Graceful {
				once.Do(func() { close(goAway) })
			}
			return nil
		})))
	type result struct {
		err error
		end time.Time
	}
	drained := make(chan result, 1)
	go func() {
		_, err := d.Drain(context.Background())
		drained <- result{err, time.Now()}
	}()
	receive(tb, goAway, "the Graceful event")

	timing(true)
	close(release)
	r := receive(tb, drained, "Drain to return")
	timing(false)
	if r.err != nil {
		tb.Fatalf("Drain() = %v, want nil", r.err)
	}
	if err := receive(tb, call, "the call"); err != nil {
		tb.Fatalf("UnaryCall() in flight at the drain = %v, want nil", err)
	}
	return r.end.Sub(receive(tb, returned, "the handler's return"))
}

// BenchmarkDrainAfterLastRPC measures how soon Drain returns after the
// last RPC in flight ends. The timer runs from the release of the handler
// to the return of Drain; ms-after-last-rpc is the time from the handler's
// return to Drain's.
func BenchmarkDrainAfterLastRPC(b *testing.B) {
	b.StopTimer()
	var total time.Duration
	for range b.N {
		total += benchAfterLastRPC(b, func(on bool) {
			if on {
				b.StartTimer()
			} else {
				b.StopTimer()
			}
		})
	}
	b.ReportMetric(total.Seconds()*1e3/float64(b.N), "ms-after-last-rpc")
}

// benchAfterLastRPCBound is the margin for the 5ms goal of Drain's return
// after the last RPC, enough for a slow machine under the race detector.
const benchAfterLastRPCBound = 100 * time.Millisecond

func TestDrainReturnsSoonAfterLastRPC(t *testing.T) {
	for i := range 5 {
		after := benchAfterLastRPC(t, func(bool) {})
		t.Logf("run %d: Drain returned %v after the last handler", i, after)
		if after > benchAfterLastRPCBound {
			t.Errorf("run %d: Drain returned %v after the last handler returned, want at most %v", i, after, benchAfterLastRPCBound)
		}
	}
}

// TestDrainBoundedWithStubbornHandlers drains, again and again, a server
// whose handlers ignore their context, with small waits: Drain returns
// within Budget and a margin each time, and reports the handlers leaked.
// The handlers, and the stubborn hook, are released when the test ends.
func TestDrainBoundedWithStubbornHandlers(t *testing.T) {
	const (
		runs   = 5
		margin = 100 * time.Millisecond
		unary  = 3 // stubborn unary calls per run
	)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	stubborn := func(context.Context) error {
		<-release
		return nil
	}
	for _, tc := range []struct {
		name  string
		hooks []stophook.Hook
	}{
		{name: "no hooks"},
		{name: "stubborn hook", hooks: []stophook.Hook{stophook.Func(func(context.Context, stophook.Event) error {
			<-release
			return nil
		})}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for run := range runs {
				started := make(chan struct{}, unary+1)
				s := benchStartServer(t, &serveService{
					unary:  func(ctx context.Context) error { started <- struct{}{}; return stubborn(ctx) },
					stream: func(ctx context.Context) error { started <- struct{}{}; return stubborn(ctx) },
				}, 1)
				t.Cleanup(s.close)
				client := testgrpc.NewTestServiceClient(s.conns[0])
				calls := make(chan error, unary+1)
				for range unary {
					go func() {
						_, err := client.UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
						calls <- err
					}()
				}
				go func() {
					stream, err := client.StreamingOutputCall(context.Background(), &testgrpc.StreamingOutputCallRequest{})
					if err == nil {
						_, err = stream.Recv()
					}
					calls <- err
				}()
				for range unary + 1 {
					receive(t, started, "the handlers to start")
				}

				opts := []drain.Option{
					drain.WithGracePeriod(100 * time.Millisecond),
					drain.WithCancelGrace(100 * time.Millisecond),
					drain.WithForceWait(100 * time.Millisecond),
					drain.WithHookTimeout(100 * time.Millisecond),
				}
				if len(tc.hooks) > 0 {
					opts = append(opts, drain.WithHooks(tc.hooks...))
				}
				d := drain.New(s.srv, s.tr, opts...)
				start := time.Now()
				r, err := d.Drain(context.Background())
				took := time.Since(start)
				t.Logf("run %d: Drain took %v, budget %v", run, took, d.Budget())
				if took > d.Budget()+margin {
					t.Errorf("run %d: Drain took %v, want at most Budget() %v + %v", run, took, d.Budget(), margin)
				}
				if !errors.Is(err, drain.ErrForced) || !r.Forced {
					t.Errorf("run %d: Drain() = forced %t, %v, want forced, an error wrapping %v", run, r.Forced, err, drain.ErrForced)
				}
				if len(r.Leaked) != unary+1 {
					t.Errorf("run %d: Drain() leaked %d handlers, want %d: %+v", run, len(r.Leaked), unary+1, r.Leaked)
				}
				for range unary + 1 {
					if err := receive(t, calls, "the calls to end"); status.Code(err) != codes.Unavailable {
						t.Errorf("run %d: call cut by the forced stop = %v, want code %v", run, err, codes.Unavailable)
					}
				}
			}
		})
	}
}

// The long-lived streams of TestCancelLongLived10k and
// BenchmarkCancelLongLived10k: health Watch streams, over a handful of
// connections.
const (
	benchLongLivedStreams = 10000
	benchLongLivedConns   = 10
	// benchLongLivedBound is the margin for the 200ms goal of draining
	// them from the Graceful event on, enough for a slow machine under the
	// race detector.
	benchLongLivedBound = 2 * time.Second
	// benchLongLivedPhaseBound bounds the time from the start of the
	// Graceful phase, which cancels them, to the return of Drain. That
	// includes waking 10,000 handlers and the in-process clients receiving
	// 10,000 statuses, which takes seconds under the race detector on a
	// busy machine; it stays well below benchLongLivedGrace, which a drain
	// that did not cancel them would wait out.
	benchLongLivedPhaseBound = 8 * time.Second
	benchLongLivedGrace      = 30 * time.Second
)

// benchOpenWatches opens n health Watch streams, spread over the
// connections of s, and waits for each to receive its first status: its
// handler runs. The returned channel receives each stream's final error.
func (s *benchServer) benchOpenWatches(tb testing.TB, n int) <-chan error {
	tb.Helper()
	ends := make(chan error, n)
	opened := make(chan error, n)
	for i := range n {
		client := healthpb.NewHealthClient(s.conns[i%len(s.conns)])
		go func() {
			stream, err := client.Watch(context.Background(), &healthpb.HealthCheckRequest{})
			if err == nil {
				_, err = stream.Recv()
			}
			opened <- err
			if err != nil {
				return
			}
			for {
				if _, err := stream.Recv(); err != nil {
					ends <- err
					return
				}
			}
		}()
	}
	for range n {
		if err := receive(tb, opened, "the streams to open"); err != nil {
			tb.Fatalf("opening Watch streams: %v", err)
		}
	}
	if got := s.tr.InFlight(); got != n {
		tb.Fatalf("InFlight() = %d after opening %d streams, want %d", got, n, n)
	}
	return ends
}

// benchCancelResult is what benchDrainLongLived measured.
type benchCancelResult struct {
	setup           time.Duration // opening the streams
	drain           time.Duration // the whole of Drain
	goAwayToReturn  time.Duration // from the Graceful event to Drain's return
	gracefulPhaseOn time.Duration // from the start of the Graceful phase to Drain's return
}

// benchDrainLongLived opens benchLongLivedStreams long-lived streams and
// drains the server, with a long grace period: the drain must end the
// streams in its Graceful phase, by cancelling them, without waiting it out.
// timing is called with true just before Drain and with false once it has
// returned.
func benchDrainLongLived(tb testing.TB, timing func(on bool)) benchCancelResult {
	tb.Helper()
	var res benchCancelResult
	start := time.Now()
	s := benchStartServer(tb, nil, benchLongLivedConns)
	defer s.close()
	ends := s.benchOpenWatches(tb, benchLongLivedStreams)
	res.setup = time.Since(start)

	goAway := make(chan time.Time, 1)
	d := drain.New(s.srv, s.tr, drain.WithGracePeriod(benchLongLivedGrace), drain.WithHooks(stophook.Func(
		func(_ context.Context, e stophook.Event) error {
			if e.Phase == stophook.Graceful {
				goAway <- time.Now()
			}
			return nil
		})))
	timing(true)
	start = time.Now()
	r, err := d.Drain(context.Background())
	end := time.Now()
	timing(false)
	res.drain = end.Sub(start)

	if err != nil || r.Forced {
		tb.Fatalf("Drain() = forced %t, %v, want a clean drain", r.Forced, err)
	}
	if got, want := phaseNames(r), []stophook.Phase{stophook.NotReady, stophook.Graceful, stophook.Cleanup}; !slices.Equal(got, want) {
		tb.Errorf("Drain() phases = %v, want %v", got, want)
	}
	if r.Cancelled != benchLongLivedStreams {
		tb.Errorf("Drain() cancelled %d handlers, want %d", r.Cancelled, benchLongLivedStreams)
	}
	res.goAwayToReturn = end.Sub(receive(tb, goAway, "the Graceful event"))
	for i, p := range r.Phases {
		if p.Phase == stophook.Graceful {
			for _, q := range r.Phases[i:] {
				res.gracefulPhaseOn += q.Duration
			}
		}
	}
	bad := 0
	var example error
	for range benchLongLivedStreams {
		err := receive(tb, ends, "the streams to end")
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "shutting down") {
			bad++
			example = err
		}
	}
	if bad > 0 {
		tb.Errorf("%d streams of %d ended with another error than codes.Unavailable, \"shutting down\", such as %v", bad, benchLongLivedStreams, example)
	}
	return res
}

// BenchmarkCancelLongLived10k drains a server with 10,000 open health
// Watch streams over 10 connections. Only Drain is timed; ms-setup is the
// time to open the streams, ms-goaway-to-return the time from the Graceful
// event to Drain's return, ms-graceful-to-return from the start of the
// Graceful phase (which cancels the streams) to Drain's return.
func BenchmarkCancelLongLived10k(b *testing.B) {
	b.StopTimer()
	var total benchCancelResult
	for range b.N {
		r := benchDrainLongLived(b, func(on bool) {
			if on {
				b.StartTimer()
			} else {
				b.StopTimer()
			}
		})
		total.setup += r.setup
		total.goAwayToReturn += r.goAwayToReturn
		total.gracefulPhaseOn += r.gracefulPhaseOn
	}
	ms := func(d time.Duration) float64 { return d.Seconds() * 1e3 / float64(b.N) }
	b.ReportMetric(ms(total.setup), "ms-setup")
	b.ReportMetric(ms(total.goAwayToReturn), "ms-goaway-to-return")
	b.ReportMetric(ms(total.gracefulPhaseOn), "ms-graceful-to-return")
}

// TestCancelLongLived10k checks that Drain cancels and drains 10,000
// long-lived streams promptly, while a bare GracefulStop never returns
// with them open.
func TestCancelLongLived10k(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 10,000 streams")
	}
	t.Run("Drain", func(t *testing.T) {
		r := benchDrainLongLived(t, func(bool) {})
		t.Logf("opening %d streams took %v; Drain took %v, %v from Graceful, %v from the start of the Graceful phase",
			benchLongLivedStreams, r.setup, r.drain, r.goAwayToReturn, r.gracefulPhaseOn)
		if r.goAwayToReturn > benchLongLivedBound {
			t.Errorf("Drain returned %v after the Graceful event, want at most %v", r.goAwayToReturn, benchLongLivedBound)
		}
		if r.gracefulPhaseOn > benchLongLivedPhaseBound {
			t.Errorf("Drain returned %v after the Graceful phase began, want at most %v", r.gracefulPhaseOn, benchLongLivedPhaseBound)
		}
	})
	t.Run("GracefulStop", func(t *testing.T) {
		const wait = time.Second
		s := benchStartServer(t, nil, benchLongLivedConns)
		t.Cleanup(s.close)
		ends := s.benchOpenWatches(t, benchLongLivedStreams)
		stopped := make(chan struct{})
		go func() {
			s.srv.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
			t.Fatalf("GracefulStop() returned with %d long-lived streams open, want it blocked", benchLongLivedStreams)
		case <-time.After(wait):
		}
		if got := s.tr.InFlight(); got != benchLongLivedStreams {
			t.Errorf("InFlight() = %d after GracefulStop ran %v, want all %d streams still open", got, wait, benchLongLivedStreams)
		}
		s.srv.Stop()
		receive(t, stopped, "GracefulStop to return after Stop")
		for range benchLongLivedStreams {
			receive(t, ends, "the streams to end")
		}
	})
}
