//go:build unix

package drain_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

// The tests of Serve send real signals to a child process: the test binary
// itself, run again with serveChildEnv naming what the child does (see
// serveChildMain).
const serveChildEnv = "DRAINKIT_TEST_SERVE_CHILD"

const (
	// serveQuietPeriod is how long a child must go on running to show that
	// a signal did not force its drain, whose grace period is 30s.
	serveQuietPeriod = 500 * time.Millisecond
	// serveForceBound is how soon a child must exit after the signal that
	// forces its drain: the forced stop waits for handlers 1s at most.
	serveForceBound = 5 * time.Second
)

// The exit codes of the child.
const (
	serveExitClean    = 0 // Serve returned nil
	serveExitError    = 1 // Serve returned an error that does not wrap ErrForced
	serveExitSetup    = 2 // the child could not start
	serveExitForced   = 3 // Serve returned an error wrapping ErrForced
	serveExitLingered = 4 // the child outlived a signal it should have died of
)

// TestHelperProcessServe is the child process of the tests of Serve. It
// does nothing unless run by serveStartChild.
func TestHelperProcessServe(t *testing.T) {
	mode := os.Getenv(serveChildEnv)
	if mode == "" {
		return
	}
	os.Exit(serveChildMain(mode))
}

// serveChildOutput prints the lines through which a child reports to its
// parent, one write per line.
type serveChildOutput struct{ mu sync.Mutex }

func (o *serveChildOutput) line(format string, args ...any) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// serveChildMain runs a gRPC server with drain.Serve on 127.0.0.1, with a
// 30s grace period, and returns the child's exit code. It prints the
// server's address ("ADDR host:port"), each hook event ("EVENT Graceful"),
// "HANDLER_STARTED" when UnaryCall starts, and what Serve returned
// ("SERVE_RETURNED forced=<wraps ErrForced> err=<error>"). The modes:
//
//   - clean: UnaryCall returns as soon as the drain sends Graceful.
//   - stubborn: UnaryCall ignores its context and never returns.
//   - programmatic: stubborn, and the child calls Drain when it reads
//     "drain" on its standard input; it prints "DRAIN_RETURNED ...".
//   - linger: after Serve has returned, the child waits for a signal to
//     kill it, and exits with serveExitLingered if none does.
//   - own-signal: linger, with a signal.Notify of the child's own for
//     SIGINT, installed before Serve; the child prints "OWN_SIGNAL <sig>"
//     and exits with serveExitClean when it receives SIGINT there.
//   - early: clean, with the signals caught by drain.CatchSignals before
//     anything else; the child's start-up waits for a signal (it prints
//     "STARTUP_INTERRUPTED <cause>" when the context of the Signals ends),
//     then it calls Serve, which must drain at once.
func serveChildMain(mode string) int {
	out := &serveChildOutput{}
	var sigs *drain.Signals
	if mode == "early" {
		sigs = drain.CatchSignals()
		defer sigs.Stop()
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		out.line("SETUP_ERROR %v", err)
		return serveExitSetup
	}
	goAway := make(chan struct{})
	var once sync.Once
	hook := stophook.Func(func(_ context.Context, e stophook.Event) error {
		out.line("EVENT %v", e.Phase)
		if e.Phase == stophook.Graceful {
			once.Do(func() { close(goAway) })
		}
		return nil
	})
	svc := &serveService{unary: func(ctx context.Context) error {
		out.line("HANDLER_STARTED")
		if mode != "clean" {
			select {} // ignores its context; the process ends it
		}
		select {
		case <-goAway:
			return nil
		case <-time.After(defaultTestTimeout):
			return errors.New("no drain began")
		}
	}}
	tr := interceptors.NewTracker()
	hs := health.NewServer()
	opts := []drain.Option{drain.WithGracePeriod(30 * time.Second), drain.WithHealth(hs), drain.WithHooks(hook)}
	if sigs != nil {
		opts = append(opts, drain.WithSignals(sigs))
	}
	d := drain.New(serveNewServer(tr, svc, hs), tr, opts...)

	var own chan os.Signal
	if mode == "own-signal" {
		own = make(chan os.Signal, 1)
		signal.Notify(own, os.Interrupt)
	}
	drained := make(chan struct{})
	if mode == "programmatic" {
		go func() {
			defer close(drained)
			sc := bufio.NewScanner(os.Stdin)
			for sc.Scan() {
				if sc.Text() == "drain" {
					r, err := d.Drain(context.Background())
					out.line("DRAIN_RETURNED forced=%t err=%v", r.Forced, err)
					return
				}
			}
		}()
	}

	out.line("ADDR %v", lis.Addr())
	if mode == "early" {
		select {
		case <-sigs.Context().Done():
			out.line("STARTUP_INTERRUPTED %v", context.Cause(sigs.Context()))
		case <-time.After(defaultTestTimeout):
			out.line("STARTUP_NOT_INTERRUPTED")
			return serveExitSetup
		}
	}
	err = d.Serve(lis)
	out.line("SERVE_RETURNED forced=%t err=%v", errors.Is(err, drain.ErrForced), err)
	switch mode {
	case "programmatic":
		select {
		case <-drained:
		case <-time.After(defaultTestTimeout):
			out.line("DRAIN_NOT_RETURNED")
		}
	case "linger", "own-signal":
		out.line("LINGERING")
		select {
		case sig := <-own: // never ready in mode linger: own is nil
			out.line("OWN_SIGNAL %v", sig)
			return serveExitClean
		case <-time.After(defaultTestTimeout):
			return serveExitLingered
		}
	}
	switch {
	case err == nil:
		return serveExitClean
	case errors.Is(err, drain.ErrForced):
		return serveExitForced
	default:
		return serveExitError
	}
}

// serveChild is a child process started by serveStartChild.
type serveChild struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string   // the lines of its standard output; closed at its end
	exited chan struct{} // closed once it has exited and been waited for
	stderr bytes.Buffer  // read only after exited is closed
	output []string      // the lines read so far
	addr   string        // the address of its server
}

// serveStartChild starts a child in mode, waits for the address of its
// server and ensures it is killed when t ends.
func serveStartChild(t *testing.T, mode string) *serveChild {
	t.Helper()
	c := &serveChild{t: t, lines: make(chan string, 1000), exited: make(chan struct{})}
	c.cmd = exec.Command(os.Args[0], "-test.run=^TestHelperProcessServe$", "-test.count=1")
	// The race detector, when on, sleeps 1s before a process exits with
	// status 0 unless told otherwise.
	c.cmd.Env = append(os.Environ(), serveChildEnv+"="+mode, "GORACE="+strings.TrimSpace(os.Getenv("GORACE")+" atexit_sleep_ms=0"))
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("StdoutPipe() = %v", err)
	}
	if c.stdin, err = c.cmd.StdinPipe(); err != nil {
		t.Fatalf("StdinPipe() = %v", err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("starting the child: %v", err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.lines <- sc.Text()
		}
		close(c.lines)
		c.cmd.Wait() // its status is read from c.cmd.ProcessState
		close(c.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			c.cmd.Process.Kill()
			<-c.exited
		}
	})
	c.addr = strings.TrimPrefix(c.expect("ADDR "), "ADDR ")
	return c
}

// report describes what the child printed, for failure messages.
func (c *serveChild) report() string {
	s := fmt.Sprintf("child output:\n\t%s", strings.Join(c.output, "\n\t"))
	select {
	case <-c.exited:
		s += fmt.Sprintf("\nchild stderr:\n%s", c.stderr.String())
	default:
	}
	return s
}

// expect reads the child's output up to the first line that starts with
// prefix, and returns that line.
func (c *serveChild) expect(prefix string) string {
	c.t.Helper()
	timer := time.NewTimer(defaultTestTimeout)
	defer timer.Stop()
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				select {
				case <-c.exited:
				case <-timer.C:
				}
				c.t.Fatalf("the child ended without printing %q\n%s", prefix, c.report())
			}
			c.output = append(c.output, l)
			if strings.HasPrefix(l, prefix) {
				return l
			}
		case <-timer.C:
			c.t.Fatalf("the child did not print %q within %v\n%s", prefix, defaultTestTimeout, c.report())
		}
	}
}

// readPrinted reads the lines the child has printed so far.
func (c *serveChild) readPrinted() {
	for {
		select {
		case l, ok := <-c.lines:
			if ok {
				c.output = append(c.output, l)
				continue
			}
		default:
		}
		return
	}
}

// printed reports whether the child has printed a line that starts with
// prefix so far.
func (c *serveChild) printed(prefix string) bool {
	c.readPrinted()
	return slices.ContainsFunc(c.output, func(l string) bool { return strings.HasPrefix(l, prefix) })
}

func (c *serveChild) signal(sig os.Signal) {
	c.t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		c.t.Fatalf("sending %v to the child: %v", sig, err)
	}
}

func (c *serveChild) send(line string) {
	c.t.Helper()
	if _, err := io.WriteString(c.stdin, line+"\n"); err != nil {
		c.t.Fatalf("writing to the child: %v", err)
	}
}

// stillRunning fails the test if the child exits within serveQuietPeriod.
func (c *serveChild) stillRunning(why string) {
	c.t.Helper()
	select {
	case <-c.exited:
		c.readPrinted()
		c.t.Fatalf("the child exited (%v) %s\n%s", c.cmd.ProcessState, why, c.report())
	case <-time.After(serveQuietPeriod):
	}
}

// wait waits up to within for the child to exit, reads the rest of its
// output and returns its wait status and how long it took.
func (c *serveChild) wait(within time.Duration) (syscall.WaitStatus, time.Duration) {
	c.t.Helper()
	start := time.Now()
	select {
	case <-c.exited:
	case <-time.After(within):
		c.t.Fatalf("the child has not exited after %v\n%s", within, c.report())
	}
	took := time.Since(start)
	c.readPrinted()
	return c.cmd.ProcessState.Sys().(syscall.WaitStatus), took
}

// exitCode waits for the child to exit and returns its exit code; it fails
// the test if a signal killed it.
func (c *serveChild) exitCode(within time.Duration) (int, time.Duration) {
	c.t.Helper()
	ws, took := c.wait(within)
	if ws.Signaled() {
		c.t.Fatalf("the child was killed by %v\n%s", ws.Signal(), c.report())
	}
	return ws.ExitStatus(), took
}

// startUnary starts a UnaryCall to the child's server, once the server is
// known to serve, and waits for its handler to start.
func (c *serveChild) startUnary() <-chan error {
	c.t.Helper()
	cc := serveDialAddr(c.t, c.addr)
	serveWaitReady(c.t, cc)
	errc := make(chan error, 1)
	go func() {
		_, err := testgrpc.NewTestServiceClient(cc).UnaryCall(context.Background(), &testgrpc.SimpleRequest{})
		errc <- err
	}()
	c.expect("HANDLER_STARTED")
	return errc
}

func TestServeDrainsOnSignal(t *testing.T) {
	for _, tc := range []struct {
		name string
		sig  os.Signal
	}{
		{name: "SIGTERM", sig: syscall.SIGTERM},
		{name: "SIGINT", sig: os.Interrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := serveStartChild(t, "clean")
			call := c.startUnary()

			c.signal(tc.sig)
			if err := receive(t, call, "the in-flight call"); err != nil {
				t.Errorf("in-flight UnaryCall() = %v, want nil", err)
			}
			if code, _ := c.exitCode(defaultTestTimeout); code != serveExitClean {
				t.Errorf("child exit code = %d, want %d (Serve returned nil)\n%s", code, serveExitClean, c.report())
			}
			for _, want := range []string{"EVENT NotReady", "EVENT Graceful", "EVENT Cleanup", "SERVE_RETURNED forced=false err=<nil>"} {
				if !c.printed(want) {
					t.Errorf("the child did not print %q\n%s", want, c.report())
				}
			}
			for _, unwanted := range []string{"EVENT Cancel", "EVENT Force"} {
				if c.printed(unwanted) {
					t.Errorf("the child printed %q, want a clean drain\n%s", unwanted, c.report())
				}
			}
		})
	}
}

func TestServeSecondSignalForces(t *testing.T) {
	c := serveStartChild(t, "stubborn")
	call := c.startUnary()

	c.signal(syscall.SIGTERM)
	c.expect("EVENT Graceful")
	c.stillRunning("after the first SIGTERM; the grace period is 30s")
	if c.printed("EVENT Force") {
		t.Fatalf("the first SIGTERM forced the drain\n%s", c.report())
	}

	c.signal(syscall.SIGTERM)
	code, took := c.exitCode(serveForceBound)
	if code != serveExitForced {
		t.Errorf("child exit code = %d, want %d (Serve returned an error wrapping ErrForced)\n%s", code, serveExitForced, c.report())
	}
	t.Logf("the child exited %v after the second SIGTERM", took)
	if !c.printed("EVENT Force") || !c.printed("SERVE_RETURNED forced=true") {
		t.Errorf("the child did not report a forced drain\n%s", c.report())
	}
	if c.printed("EVENT Cancel") {
		t.Errorf("the child ran the Cancel phase, want it skipped by the second signal\n%s", c.report())
	}
	if err := receive(t, call, "the in-flight call"); status.Code(err) != codes.Unavailable {
		t.Errorf("in-flight UnaryCall() = %v, want code %v", err, codes.Unavailable)
	}
}

func TestServeSignalDuringProgrammaticDrain(t *testing.T) {
	c := serveStartChild(t, "programmatic")
	call := c.startUnary()

	c.send("drain")
	c.expect("EVENT Graceful")
	c.signal(syscall.SIGTERM)
	c.stillRunning("after one SIGTERM during a programmatic drain; the grace period is 30s")
	if c.printed("EVENT Force") {
		t.Fatalf("the first SIGTERM forced the drain\n%s", c.report())
	}

	c.signal(syscall.SIGTERM)
	code, took := c.exitCode(serveForceBound)
	if code != serveExitForced {
		t.Errorf("child exit code = %d, want %d (Serve returned an error wrapping ErrForced)\n%s", code, serveExitForced, c.report())
	}
	t.Logf("the child exited %v after the second SIGTERM", took)
	for _, want := range []string{"EVENT Force", "DRAIN_RETURNED forced=true", "SERVE_RETURNED forced=true"} {
		if !c.printed(want) {
			t.Errorf("the child did not print %q\n%s", want, c.report())
		}
	}
	if err := receive(t, call, "the in-flight call"); status.Code(err) != codes.Unavailable {
		t.Errorf("in-flight UnaryCall() = %v, want code %v", err, codes.Unavailable)
	}
}

// TestServeStopsListeningWhenItReturns checks that Serve gives signals back
// when it returns: a SIGTERM then kills a process that handles no signal
// itself, and a SIGINT still reaches the process's own signal.Notify.
func TestServeStopsListeningWhenItReturns(t *testing.T) {
	for _, tc := range []struct {
		name     string
		mode     string
		after    os.Signal // sent once Serve has returned
		wantKill bool      // the child must die of after; otherwise exit 0
	}{
		{name: "default action restored", mode: "linger", after: syscall.SIGTERM, wantKill: true},
		{name: "own Notify kept", mode: "own-signal", after: os.Interrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := serveStartChild(t, tc.mode)
			serveWaitReady(t, serveDialAddr(t, c.addr))
			c.signal(syscall.SIGTERM)
			c.expect("SERVE_RETURNED forced=false err=<nil>")
			c.expect("LINGERING")

			c.signal(tc.after)
			ws, _ := c.wait(defaultTestTimeout)
			switch {
			case tc.wantKill && !(ws.Signaled() && ws.Signal() == tc.after):
				t.Errorf("child status after %v = %v, want killed by it: Serve still receives it\n%s", tc.after, c.cmd.ProcessState, c.report())
			case !tc.wantKill && (ws.Signaled() || ws.ExitStatus() != serveExitClean || !c.printed("OWN_SIGNAL")):
				t.Errorf("child status after %v = %v, want exit %d after its own signal.Notify got it\n%s", tc.after, c.cmd.ProcessState, serveExitClean, c.report())
			}
		})
	}
}

func TestServeAfterDrain(t *testing.T) {
	tr := interceptors.NewTracker()
	d := drain.New(serveNewServer(tr, nil, health.NewServer()), tr)
	if _, err := d.Drain(context.Background()); err != nil {
		t.Fatalf("Drain() = %v, want nil", err)
	}
	lis := bufconn.Listen(1 << 10)
	defer lis.Close()
	served := make(chan error, 1)
	go func() { served <- d.Serve(lis) }()
	if err := receive(t, served, "Serve to return"); !errors.Is(err, drain.ErrDrained) {
		t.Errorf("Serve() after Drain = %v, want an error wrapping %v", err, drain.ErrDrained)
	}
}

func TestServeReturnsResultOfDrain(t *testing.T) {
	tr := interceptors.NewTracker()
	d := drain.New(serveNewServer(tr, nil, health.NewServer()), tr)
	lis := bufconn.Listen(1 << 20)
	served := make(chan error, 1)
	go func() { served <- d.Serve(lis) }()
	cc := serveDialBuf(t, lis)
	defer cc.Close()
	serveWaitReady(t, cc) // Serve is serving: it began before the drain

	if _, err := d.Drain(context.Background()); err != nil {
		t.Fatalf("Drain() = %v, want nil", err)
	}
	if err := receive(t, served, "Serve to return"); err != nil {
		t.Errorf("Serve() = %v, want nil, the result of Drain", err)
	}
}

func TestServeNilListener(t *testing.T) {
	tr := interceptors.NewTracker()
	srv := serveNewServer(tr, nil, health.NewServer())
	defer srv.Stop()
	err := drain.New(srv, tr).Serve(nil)
	if err == nil || !strings.Contains(err.Error(), "nil net.Listener") {
		t.Errorf("Serve(nil) = %v, want an error naming the nil net.Listener", err)
	}
}

// TestServeRepeatedSignalIsOne sends a child with a stubborn call two
// SIGTERMs back to back, as coreutils' timeout does (to the process, then to
// its group): that is one request to stop, so the drain must not be forced.
// A signal after SignalRepeatWindow is the operator's second, and forces it.
func TestServeRepeatedSignalIsOne(t *testing.T) {
	if serveQuietPeriod <= drain.SignalRepeatWindow {
		t.Fatalf("serveQuietPeriod %v must exceed drain.SignalRepeatWindow %v", serveQuietPeriod, drain.SignalRepeatWindow)
	}
	c := serveStartChild(t, "stubborn")
	call := c.startUnary()
	c.signal(syscall.SIGTERM)
	// Sent once the first has arrived, lest the kernel merge the two, and
	// a few milliseconds later: well within the window.
	c.expect("EVENT NotReady")
	c.signal(syscall.SIGTERM)
	c.expect("EVENT Graceful")
	c.stillRunning("after two SIGTERMs within the repeat window; the grace period is 30s")
	if c.printed("EVENT Force") {
		t.Fatalf("a repeated SIGTERM forced the drain\n%s", c.report())
	}
	c.signal(syscall.SIGTERM) // serveQuietPeriod after: past the window
	if code, _ := c.exitCode(serveForceBound); code != serveExitForced {
		t.Errorf("child exit code = %d, want %d after a second SIGTERM past the repeat window\n%s", code, serveExitForced, c.report())
	}
	if err := receive(t, call, "the in-flight call"); status.Code(err) != codes.Unavailable {
		t.Errorf("in-flight UnaryCall() = %v, want code %v", err, codes.Unavailable)
	}
}

// TestServeSignalBeforeServe sends SIGTERM to a child that caught signals
// with drain.CatchSignals from its start, while it is still starting up:
// the child must live, its start-up must see the signal, and Serve must
// then drain at once and return nil.
func TestServeSignalBeforeServe(t *testing.T) {
	c := serveStartChild(t, "early")
	c.signal(syscall.SIGTERM)
	if l := c.expect("STARTUP_INTERRUPTED"); !strings.Contains(l, "terminated") {
		t.Errorf("start-up saw %q, want the cause to name SIGTERM (\"terminated\")", l)
	}
	code, took := c.exitCode(serveForceBound)
	if code != serveExitClean {
		t.Errorf("child exit code = %d, want %d\n%s", code, serveExitClean, c.report())
	}
	t.Logf("the child exited %v after its start-up was interrupted", took)
	for _, want := range []string{"EVENT NotReady", "EVENT Cleanup", "SERVE_RETURNED forced=false err=<nil>"} {
		if !c.printed(want) {
			t.Errorf("the child did not print %q\n%s", want, c.report())
		}
	}
}
