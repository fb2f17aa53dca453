//go:build unix

package process_test

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/examples/demopb"
)

// The exit statuses of the demo server.
const (
	exitOK     = 0
	exitForced = 1
	exitUsage  = 2
)

func dbPath(t *testing.T) string { return filepath.Join(t.TempDir(), "demo.db") }

// An idle server drains in its readiness delay and exits with status 0.
func TestIdleServerExits(t *testing.T) {
	const readinessDelay = 500 * time.Millisecond
	s := startServer(t, "idle", dbPath(t), "-readiness-delay", readinessDelay.String())

	sent := s.signal(syscall.SIGTERM)
	checkExit(t, s, sent, readinessDelay, readinessDelay+exitMargin, exitOK)

	want := []string{"NotReady", "Graceful", "Cleanup"}
	if got := s.log.phases(); !slices.Equal(got, want) {
		t.Errorf("drain phases = %q, want %q", got, want)
	}
}

// Open Watch streams end with UNAVAILABLE and the toolkit's message, not
// with a broken connection, and do not hold the drain up.
func TestWatchStreamsEnd(t *testing.T) {
	const (
		readinessDelay = 500 * time.Millisecond
		conns          = 5
		streamsPerConn = 10
		streams        = conns * streamsPerConn
	)
	s := startServer(t, "watch", dbPath(t), "-readiness-delay", readinessDelay.String())

	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	started := make(chan error, streams)
	errs := make(chan error, streams)
	for range conns {
		_, c := dial(t, s.addr)
		for range streamsPerConn {
			stream, err := c.Watch(ctx, &demopb.WatchRequest{})
			if err != nil {
				t.Fatalf("Watch() = %v", err)
			}
			go func() {
				// A first message shows that the handler runs.
				_, err := stream.Recv()
				started <- err
				for err == nil {
					_, err = stream.Recv()
				}
				errs <- err
			}()
		}
	}
	timeout := time.After(defaultTestTimeout)
	for i := range streams {
		select {
		case err := <-started:
			if err != nil {
				t.Fatalf("Watch: Recv() = %v, want a first message", err)
			}
		case <-timeout:
			t.Fatalf("%d of %d streams without a first message after %v", streams-i, streams, defaultTestTimeout)
		}
	}

	sent := s.signal(syscall.SIGTERM)
	checkExit(t, s, sent, readinessDelay, readinessDelay+exitMargin, exitOK)

	timeout = time.After(defaultTestTimeout)
	for i := range streams {
		select {
		case err := <-errs:
			st := status.Convert(err)
			if st.Code() != codes.Unavailable || !strings.Contains(st.Message(), shuttingDown) {
				t.Errorf("stream %d ended with %v, want code %v and a message with %q", i, err, codes.Unavailable, shuttingDown)
			}
		case <-timeout:
			t.Fatalf("%d of %d streams still open %v after the exit", streams-i, streams, defaultTestTimeout)
		}
	}
	if got, _ := drainReport(t, s)["cancelled"].(float64); got != streams {
		t.Errorf("drain report: %v handlers cancelled, want %d", got, streams)
	}
}

// A server whose handlers ignore cancellation is stopped by force within
// the sum of its waits, reports the leaked handlers, and exits with the
// status of a forced drain.
func TestStubbornHandlersForced(t *testing.T) {
	const (
		grace       = 200 * time.Millisecond
		cancelGrace = 200 * time.Millisecond
		forceWait   = 200 * time.Millisecond
		waits       = grace + cancelGrace + forceWait
		sleeps      = 5
	)
	s := startServer(t, "stubborn", dbPath(t), "-stubborn",
		"-grace", grace.String(), "-cancel-grace", cancelGrace.String(), "-force-wait", forceWait.String())
	errs := startSleeps(t, s.addr, sleeps)

	sent := s.signal(syscall.SIGTERM)
	checkExit(t, s, sent, waits, waits+exitMargin, exitForced)
	checkUnavailable(t, "Sleep call", sleeps, errs)

	want := []string{"NotReady", "Graceful", "Cancel", "Force", "Cleanup"}
	if got := s.log.phases(); !slices.Equal(got, want) {
		t.Errorf("drain phases = %q, want %q", got, want)
	}
	report := drainReport(t, s)
	if forced, _ := report["forced"].(bool); !forced {
		t.Errorf("drain report %v: forced is not true", report)
	}
	leaked, _ := report["leaked_handlers"].([]any)
	named := 0
	for _, h := range leaked {
		if s, _ := h.(string); strings.HasPrefix(s, sleepMethod+" ") {
			named++
		}
	}
	if named != sleeps {
		t.Errorf("drain report names %d leaked %s handlers (%v), want %d", named, sleepMethod, leaked, sleeps)
	}
}

// During the readiness delay the health check says NOT_SERVING while the
// server still takes new connections and calls.
func TestHealthDuringReadinessDelay(t *testing.T) {
	const readinessDelay = 3 * time.Second
	_, probe := binaries(t)
	s := startServer(t, "health", dbPath(t), "-readiness-delay", readinessDelay.String())

	if code, out := runProbe(t, probe, s.addr); code != probeServing {
		t.Fatalf("grpc-health-probe before the signal: status %d, want %d (SERVING); output:\n%s", code, probeServing, out)
	}

	sent := s.signal(syscall.SIGTERM)
	s.waitLog("NotReady phase", isPhase("NotReady"))
	// Health turns NOT_SERVING just after the phase is logged: poll until
	// it does, within the delay.
	for attempt := 1; ; attempt++ {
		code, out := runProbe(t, probe, s.addr)
		if code == probeUnhealthy {
			t.Logf("grpc-health-probe: status %d (NOT_SERVING) at attempt %d, %v after the signal", code, attempt, time.Since(sent))
			break
		}
		if code != probeServing {
			t.Fatalf("grpc-health-probe during the readiness delay: status %d, want %d (NOT_SERVING), not %d (connection failure); output:\n%s",
				code, probeUnhealthy, probeConnectionFailure, out)
		}
		if time.Since(sent) > readinessDelay {
			t.Fatalf("grpc-health-probe still reports SERVING %v after the signal, past the readiness delay", time.Since(sent))
		}
	}

	_, c := dial(t, s.addr)
	if err := echo(c, "during the readiness delay"); err != nil {
		t.Errorf("Echo() on a new connection during the readiness delay = %v, want nil", err)
	}
	if took := time.Since(sent); took >= readinessDelay {
		t.Fatalf("the checks took %v, past the readiness delay of %v: they prove nothing", took, readinessDelay)
	}

	checkExit(t, s, sent, readinessDelay, readinessDelay+exitMargin, exitOK)
}

// runProbe runs grpc-health-probe against addr and returns its exit status
// and output.
func runProbe(t *testing.T, probe, addr string) (int, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	// The default timeouts of one second are short for a loaded machine.
	cmd := exec.CommandContext(ctx, probe, "-addr="+addr, "-connect-timeout=5s", "-rpc-timeout=5s")
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running grpc-health-probe: %v", err)
	}
	return cmd.ProcessState.ExitCode(), out
}

// Every write the server acknowledged before or during its drain is in the
// store when it restarts.
func TestAcknowledgedWritesSurvive(t *testing.T) {
	const (
		readinessDelay = 500 * time.Millisecond
		writers        = 8
		// acksBeforeSignal is how many writes are acknowledged before the
		// signal is sent, so that it comes under load.
		acksBeforeSignal = 5 * writers
	)
	db := dbPath(t)
	s := startServer(t, "writes", db, "-readiness-delay", readinessDelay.String())

	type ack struct {
		id    int64
		value string
		at    time.Time
	}
	type result struct {
		acks     []ack
		failures map[codes.Code]int
		sample   error
	}
	var acked atomic.Int64
	loaded := make(chan struct{})
	results := make(chan result, writers)
	for w := range writers {
		_, c := dial(t, s.addr)
		go func() {
			r := result{failures: make(map[codes.Code]int)}
			defer func() { results <- r }()
			tick := time.NewTicker(callInterval)
			defer tick.Stop()
			for i := 0; ; i++ {
				select {
				case <-s.exited:
					return
				case <-tick.C:
				}
				value := fmt.Sprintf("writer %d value %d", w, i)
				ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
				resp, err := c.Append(ctx, wrapperspb.String(value))
				cancel()
				if err != nil {
					r.failures[status.Code(err)]++
					r.sample = err
					continue
				}
				r.acks = append(r.acks, ack{resp.GetValue(), value, time.Now()})
				if acked.Add(1) == acksBeforeSignal {
					close(loaded)
				}
			}
		}()
	}
	select {
	case <-loaded:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("%d writes acknowledged after %v, want %d", acked.Load(), defaultTestTimeout, acksBeforeSignal)
	}

	sent := s.signal(syscall.SIGTERM)
	// The writes in flight at the end of the readiness delay are committed
	// one after the other, each synced to disk, before the server exits:
	// how long that takes depends on the disk, and the exit is not timed
	// closely here.
	checkExit(t, s, sent, readinessDelay, readinessDelay+defaultTestTimeout, exitOK)

	var acks []ack
	failures := make(map[codes.Code]int)
	var sample error
	for range writers {
		select {
		case r := <-results:
			acks = append(acks, r.acks...)
			for code, n := range r.failures {
				failures[code] += n
			}
			if r.sample != nil {
				sample = r.sample
			}
		case <-time.After(defaultTestTimeout):
			t.Fatalf("writers still running %v after the exit", defaultTestTimeout)
		}
	}
	during := 0
	for _, a := range acks {
		if a.at.After(sent) {
			during++
		}
	}
	t.Logf("%d writes acknowledged, %d of them after the signal; failed writes by code: %v (e.g. %v)", len(acks), during, failures, sample)
	if during == 0 {
		t.Errorf("no write acknowledged after the signal: the drain did not come under load")
	}
	for code, n := range failures {
		if code != codes.Unavailable {
			t.Errorf("%d writes failed with code %v, want only %v", n, code, codes.Unavailable)
		}
	}

	s2 := startServer(t, "writes-restarted", db)
	_, c := dial(t, s2.addr)
	ids := make(map[int64]bool)
	lost := 0
	for _, a := range acks {
		if ids[a.id] {
			t.Errorf("id %d acknowledged twice", a.id)
		}
		ids[a.id] = true
		ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
		got, err := c.Get(ctx, wrapperspb.Int64(a.id))
		cancel()
		switch {
		case status.Code(err) == codes.NotFound:
			lost++
		case err != nil:
			t.Fatalf("Get(%d) = %v", a.id, err)
		case got.GetValue() != a.value:
			t.Errorf("Get(%d) = %q, want %q", a.id, got.GetValue(), a.value)
		}
	}
	if lost > 0 {
		t.Errorf("%d of %d acknowledged writes lost", lost, len(acks))
	}
}

// A second signal during a long drain forces the exit at once.
func TestSecondSignalForces(t *testing.T) {
	const (
		grace = 30 * time.Second
		// forcedExitLimit bounds the exit after the second signal: the
		// force wait (1s by default) when handlers ignore cancellation,
		// and a margin.
		forcedExitLimit = 3 * time.Second
		sleeps          = 5
	)
	for _, tc := range []struct {
		name     string
		stubborn bool
	}{
		{name: "cooperative handlers"},
		{name: "stubborn handlers", stubborn: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"-grace", grace.String()}
			if tc.stubborn {
				args = append(args, "-stubborn")
			}
			s := startServer(t, "second-signal", dbPath(t), args...)
			errs := startSleeps(t, s.addr, sleeps)

			s.signal(syscall.SIGTERM)
			s.waitLog("Graceful phase", isPhase("Graceful"))
			// A signal within drain.SignalRepeatWindow (300ms) of the first
			// is the same signal; the first progress record comes a second
			// into the phase.
			s.waitLog("progress record", isMsg("drain progress"))
			sent := s.signal(syscall.SIGTERM)
			checkExit(t, s, sent, 0, forcedExitLimit, exitForced)
			checkUnavailable(t, "Sleep call", sleeps, errs)

			if got := s.log.find(isMsg("signal received during the drain")); len(got) != 1 {
				t.Errorf("%d records of a signal during the drain, want 1", len(got))
			}
			if got := s.log.phases(); !slices.Contains(got, "Force") || slices.Contains(got, "Cancel") {
				t.Errorf("drain phases = %q, want Force and no Cancel", got)
			}
			if got, _ := drainReport(t, s)["skipped"].(string); got != "a second signal arrived during the drain" {
				t.Errorf("drain report: skipped = %q, want the second signal named", got)
			}
		})
	}
}

// Clients of a rolling restart behind a balancer see no failure when the
// readiness delay outlasts the balancer's propagation delay, and some
// without it.
func TestRollingRestart(t *testing.T) {
	const (
		propagationDelay = time.Second
		clients          = 8
	)
	for _, tc := range []struct {
		name           string
		readinessDelay time.Duration
		wantFailures   bool
	}{
		{name: "readiness delay above the propagation delay", readinessDelay: 2 * propagationDelay},
		{name: "no readiness delay", readinessDelay: 0, wantFailures: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			flags := []string{"-readiness-delay", tc.readinessDelay.String()}
			a := startServer(t, "A", dbPath(t), flags...)
			b := startServer(t, "B", dbPath(t), flags...)
			lb := newBalancer(t, propagationDelay, a.addr, b.addr)

			loops := startCallLoops(t, lb.addr(), clients, a.exited)
			loops.waitAll(t, "a first successful call", loops.ready)
			if conns, _ := lb.stats(); conns[a.addr] == 0 {
				t.Fatalf("no client connected to A: connections per backend %v", conns)
			}

			// The kubelet signals the pod while the endpoints controller
			// removes it from the Service, and a replacement starts.
			sent := a.signal(syscall.SIGTERM)
			lb.terminating(a.addr)
			c := startServer(t, "C", dbPath(t), flags...)
			lb.add(c.addr)

			exited, code := a.wait(tc.readinessDelay + defaultTestTimeout)
			t.Logf("server A exited with status %d %v after the signal", code, exited.Sub(sent))
			if code != exitOK {
				t.Errorf("server A exit status = %d, want %d", code, exitOK)
			}
			// Every client must have had a call succeed after A exited,
			// through a new connection to B or C.
			loops.waitAll(t, "a successful call after A exited", loops.recovered)
			r := loops.stop(t)

			conns, refused := lb.stats()
			t.Logf("readiness delay %v, propagation delay %v: %d calls, %d failed %v (e.g. %v); balancer connections A=%d B=%d C=%d, refused by A: %d",
				tc.readinessDelay, propagationDelay, r.calls, r.failed, r.failures, r.sample,
				conns[a.addr], conns[b.addr], conns[c.addr], refused[a.addr])
			if tc.wantFailures {
				if r.failed == 0 {
					t.Errorf("no call failed without a readiness delay: the test does not reproduce what the delay prevents")
				}
			} else if r.failed != 0 {
				t.Errorf("%d of %d calls failed (%v, e.g. %v), want none", r.failed, r.calls, r.failures, r.sample)
			}
		})
	}
}

// callLoops are clients, each with its own connection, that call Echo in a
// loop.
type callLoops struct {
	ready, recovered []chan struct{}
	results          chan callLoop
	halt             chan struct{}
	once             sync.Once
	total            callLoop
}

// startCallLoops starts n clients of addr. after is closed when the server
// the test stops has exited. The clients stop at the end of the test, if
// not before.
func startCallLoops(t *testing.T, addr string, n int, after <-chan struct{}) *callLoops {
	t.Helper()
	l := &callLoops{results: make(chan callLoop, n), halt: make(chan struct{})}
	for range n {
		_, c := dial(t, addr)
		ready, recovered := make(chan struct{}), make(chan struct{})
		l.ready = append(l.ready, ready)
		l.recovered = append(l.recovered, recovered)
		go func() { l.results <- runCallLoop(c, l.halt, after, ready, recovered) }()
	}
	// Registered after the connections, so that it runs before they close.
	t.Cleanup(func() { l.stop(t) })
	return l
}

// waitAll waits for every channel of chans to be closed.
func (l *callLoops) waitAll(t *testing.T, what string, chans []chan struct{}) {
	t.Helper()
	timeout := time.After(defaultTestTimeout)
	for i, ch := range chans {
		select {
		case <-ch:
		case <-timeout:
			t.Fatalf("client %d: no %s after %v", i, what, defaultTestTimeout)
		}
	}
}

// stop stops the clients and returns their results added up.
func (l *callLoops) stop(t *testing.T) callLoop {
	l.once.Do(func() {
		close(l.halt)
		l.total.failures = make(map[codes.Code]int)
		timeout := time.After(defaultTestTimeout)
		for range len(l.ready) {
			select {
			case r := <-l.results:
				l.total.calls += r.calls
				l.total.failed += r.failed
				for code, n := range r.failures {
					l.total.failures[code] += n
				}
				if r.sample != nil {
					l.total.sample = r.sample
				}
			case <-timeout:
				t.Errorf("clients still calling %v after they were stopped", defaultTestTimeout)
				return
			}
		}
	})
	return l.total
}

// callLoop is what the calls of clients came to.
type callLoop struct {
	calls, failed int
	failures      map[codes.Code]int // failed calls by code
	sample        error              // one of the failures
}

// runCallLoop calls Echo through c every callInterval until stop is
// closed. It closes ready at its first success, and recovered at the first
// success of a call made after after was closed.
func runCallLoop(c demopb.DemoClient, stop, after <-chan struct{}, ready, recovered chan<- struct{}) callLoop {
	r := callLoop{failures: make(map[codes.Code]int)}
	var readyOnce, recoveredOnce sync.Once
	tick := time.NewTicker(callInterval)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return r
		case <-tick.C:
		}
		isAfter := false
		select {
		case <-after:
			isAfter = true
		default:
		}
		r.calls++
		if err := echo(c, "rolling"); err != nil {
			r.failed++
			r.failures[status.Code(err)]++
			r.sample = err
			continue
		}
		readyOnce.Do(func() { close(ready) })
		if isAfter {
			recoveredOnce.Do(func() { close(recovered) })
		}
	}
}
