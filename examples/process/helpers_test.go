//go:build unix

package process_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/examples/demopb"
)

const (
	// defaultTestTimeout bounds every wait for something expected within
	// moments: a log record, a stream's end, a process's exit.
	defaultTestTimeout = 10 * time.Second
	// buildTimeout bounds the build of the server and of the probe, which
	// may have to compile their dependencies first.
	buildTimeout = 5 * time.Minute
	// startTimeout bounds the time from the start of a server to its
	// "serving" record.
	startTimeout = 20 * time.Second
	// exitMargin is what a drain may take beyond its waits: for the signal
	// to arrive, the hooks to run and the process to exit.
	exitMargin = 300 * time.Millisecond
	// callTimeout is the deadline of the unary calls of the load the tests
	// put on servers.
	callTimeout = 2 * time.Second
	// callInterval paces each client of that load, so that a client whose
	// calls fail at once does not spin.
	callInterval = 10 * time.Millisecond
	// longSleep is the duration of the Sleep calls that a drain has to end.
	longSleep = time.Hour
)

const (
	sleepMethod = "/drainkit.demo.v1.Demo/Sleep"
	// shuttingDown is in the message of the calls a drain ends.
	shuttingDown = "shutting down"
)

// The exit statuses of grpc-health-probe.
const (
	probeServing           = 0
	probeConnectionFailure = 2
	probeUnhealthy         = 4
)

// The binaries the tests run, built once per test binary.
var (
	buildOnce sync.Once
	binDir    string
	buildErr  error
)

// binaries returns the paths of the demo server and of grpc-health-probe,
// building them on the first call.
func binaries(t *testing.T) (server, probe string) {
	t.Helper()
	buildOnce.Do(func() { binDir, buildErr = build() })
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "server"), filepath.Join(binDir, "grpc-health-probe")
}

func build() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %v", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("go env GOMOD: not in a module")
	}
	root := filepath.Dir(gomod)
	commands := []string{"./examples/server", "github.com/grpc-ecosystem/grpc-health-probe"}
	if err := readSources(ctx, root, commands); err != nil {
		return "", err
	}

	dir, err := os.MkdirTemp("", "drainkit-process-")
	if err != nil {
		return "", err
	}
	// With -o naming a directory, each command is written there under the
	// last element of its import path.
	cmd := exec.CommandContext(ctx, "go", append([]string{"build", "-buildvcs=false", "-o", dir + string(filepath.Separator)}, commands...)...)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("%v: %v\n%s", cmd, err, out)
	}
	return dir, nil
}

// readSources opens go.mod, go.sum and the directory of every package of
// the module that the commands are built from. The test binary does not
// contain the commands; without these reads, go test would reuse a cached
// result after their sources change. It notes the files a test opens, and
// reuses its result only while they, and the entries of the directories,
// are unchanged.
func readSources(ctx context.Context, root string, commands []string) error {
	list := exec.CommandContext(ctx, "go", append([]string{"list", "-deps", "-f", "{{if .Module}}{{if .Module.Main}}{{.Dir}}{{end}}{{end}}"}, commands...)...)
	list.Dir = root
	out, err := list.Output()
	if err != nil {
		return fmt.Errorf("%v: %v", list, err)
	}
	for _, name := range []string{"go.mod", "go.sum"} {
		if _, err := os.ReadFile(filepath.Join(root, name)); err != nil {
			return err
		}
	}
	for dir := range strings.Lines(string(out)) {
		if dir = strings.TrimSpace(dir); dir == "" {
			continue // not a package of the module
		}
		if _, err := os.ReadDir(dir); err != nil {
			return err
		}
	}
	return nil
}

// removeBinaries removes what build made.
func removeBinaries() {
	if binDir != "" {
		os.RemoveAll(binDir)
	}
}

// A record is one line of a server's JSON log.
type record map[string]any

func (r record) str(key string) string {
	s, _ := r[key].(string)
	return s
}

// serverLog collects the standard error of a server: its raw text, for
// failure messages, and its JSON records, for assertions.
type serverLog struct {
	mu      sync.Mutex
	raw     bytes.Buffer
	records []record
	ended   bool          // standard error is closed
	changed chan struct{} // closed and replaced at each line, and at the end
}

func newServerLog() *serverLog { return &serverLog{changed: make(chan struct{})} }

// collect reads lines from r until its end.
func (l *serverLog) collect(r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		var rec record
		if json.Unmarshal(sc.Bytes(), &rec) != nil {
			rec = nil
		}
		l.mu.Lock()
		l.raw.Write(sc.Bytes())
		l.raw.WriteByte('\n')
		if rec != nil {
			l.records = append(l.records, rec)
		}
		close(l.changed)
		l.changed = make(chan struct{})
		l.mu.Unlock()
	}
	l.mu.Lock()
	if err := sc.Err(); err != nil {
		fmt.Fprintf(&l.raw, "[reading standard error: %v]\n", err)
	}
	l.ended = true
	close(l.changed)
	l.mu.Unlock()
}

// waitFor waits up to timeout for a record that matches, and returns it.
// It fails when the log ends or the timeout passes first.
func (l *serverLog) waitFor(timeout time.Duration, what string, match func(record) bool) (record, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	next := 0
	for {
		l.mu.Lock()
		recs, ended, changed := l.records[next:], l.ended, l.changed
		next = len(l.records)
		l.mu.Unlock()
		for _, r := range recs {
			if match(r) {
				return r, nil
			}
		}
		if ended {
			return nil, fmt.Errorf("the log ended without %s", what)
		}
		select {
		case <-changed:
		case <-timer.C:
			return nil, fmt.Errorf("no %s in the log after %v", what, timeout)
		}
	}
}

// waitEnd waits up to timeout for the end of the log.
func (l *serverLog) waitEnd(timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		ended, changed := l.ended, l.changed
		l.mu.Unlock()
		if ended {
			return nil
		}
		select {
		case <-changed:
		case <-timer.C:
			return fmt.Errorf("standard error still open %v after the exit", timeout)
		}
	}
}

// find returns the records that match.
func (l *serverLog) find(match func(record) bool) []record {
	l.mu.Lock()
	defer l.mu.Unlock()
	var found []record
	for _, r := range l.records {
		if match(r) {
			found = append(found, r)
		}
	}
	return found
}

func (l *serverLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raw.String()
}

// phases returns the phases of the drain in the order the log records them.
func (l *serverLog) phases() []string {
	var names []string
	for _, r := range l.find(isMsg("drain phase")) {
		names = append(names, r.str("phase"))
	}
	return names
}

// drainReport returns the report of the server's "drain finished" record.
func drainReport(t *testing.T, s *server) map[string]any {
	t.Helper()
	finished := s.log.find(isMsg("drain finished"))
	if len(finished) != 1 {
		t.Fatalf("server %s: %d \"drain finished\" records, want 1", s.name, len(finished))
	}
	report, ok := finished[0]["report"].(map[string]any)
	if !ok {
		t.Fatalf("server %s: no report in %v", s.name, finished[0])
	}
	return report
}

func isMsg(msg string) func(record) bool {
	return func(r record) bool { return r.str("msg") == msg }
}

func isPhase(name string) func(record) bool {
	return func(r record) bool { return r.str("msg") == "drain phase" && r.str("phase") == name }
}

// A server is a running demo server process.
type server struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	addr string // its listening address
	log  *serverLog

	exited   chan struct{} // closed when the process has exited
	exitedAt time.Time     // set before exited is closed
	state    *os.ProcessState
}

// startServer starts a demo server named name on 127.0.0.1 with the
// database db and the extra flags args, and returns once it serves. The
// server is killed at the end of the test if it still runs, and its log is
// printed if the test failed.
func startServer(t *testing.T, name, db string, args ...string) *server {
	t.Helper()
	s := launchServer(t, name, db, args...)
	rec, err := s.log.waitFor(startTimeout, `"serving" record`, isMsg("serving"))
	if err != nil {
		t.Fatalf("server %s: %v", name, err)
	}
	if s.addr = rec.str("addr"); s.addr == "" {
		t.Fatalf("server %s: no addr in the serving record %v", name, rec)
	}
	return s
}

// launchServer is startServer without the wait for the "serving" record.
func launchServer(t *testing.T, name, db string, args ...string) *server {
	t.Helper()
	bin, _ := binaries(t)
	// The records are read as JSON; the default, text, is for people.
	args = append([]string{"-addr", "127.0.0.1:0", "-db", db, "-log", "json"}, args...)
	s, err := spawn(t, name, exec.Command(bin, args...))
	if err != nil {
		t.Fatalf("starting server %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of server %s (%v):\n%s", name, args, s.log)
		}
	})
	t.Cleanup(func() {
		s.kill()
		// Standard error ends with the process.
		if err := s.log.waitEnd(defaultTestTimeout); err != nil {
			t.Errorf("server %s: %v", name, err)
		}
	})
	return s
}

// spawn starts cmd as the server named name, with its standard error read
// as the server's log, and watches for its exit.
//
// Standard error is a pipe of the test's own, not one made by exec: then
// Wait returns as soon as the process exits, and the time of the exit is
// measured without the reading of its output.
func spawn(t *testing.T, name string, cmd *exec.Cmd) (*server, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		return nil, err
	}
	s := &server{t: t, name: name, cmd: cmd, log: newServerLog(), exited: make(chan struct{})}
	go s.log.collect(r)
	go func() {
		cmd.Wait()
		s.exitedAt = time.Now()
		s.state = cmd.ProcessState
		close(s.exited)
	}()
	return s, nil
}

// kill kills the server if it still runs, and waits for its exit.
func (s *server) kill() {
	select {
	case <-s.exited:
	default:
		s.cmd.Process.Kill()
		<-s.exited
	}
}

// signal sends sig to the server and returns when it was sent.
func (s *server) signal(sig syscall.Signal) time.Time {
	s.t.Helper()
	sent := time.Now()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("server %s: sending %v: %v", s.name, sig, err)
	}
	return sent
}

// wait waits for the server to exit and for the end of its log, and
// returns when it exited and its exit status: -1 if a signal killed it.
func (s *server) wait(timeout time.Duration) (time.Time, int) {
	s.t.Helper()
	select {
	case <-s.exited:
	case <-time.After(timeout):
		s.t.Fatalf("server %s still runs %v later", s.name, timeout)
	}
	// The log is complete once standard error has been read to its end.
	if err := s.log.waitEnd(defaultTestTimeout); err != nil {
		s.t.Fatalf("server %s: %v", s.name, err)
	}
	return s.exitedAt, s.state.ExitCode()
}

// waitLog is log.waitFor that fails the test.
func (s *server) waitLog(what string, match func(record) bool) record {
	s.t.Helper()
	r, err := s.log.waitFor(defaultTestTimeout, what, match)
	if err != nil {
		s.t.Fatalf("server %s: %v", s.name, err)
	}
	return r
}

// dial returns a client of addr, closed at the end of the test.
func dial(t *testing.T, addr string, opts ...grpc.DialOption) (*grpc.ClientConn, demopb.DemoClient) {
	t.Helper()
	opts = append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatalf("grpc.NewClient(%q) = %v", addr, err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc, demopb.NewDemoClient(cc)
}

// echo calls Echo with callTimeout.
func echo(c demopb.DemoClient, msg string) error {
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := c.Echo(ctx, wrapperspb.String(msg))
	if err != nil {
		return err
	}
	if resp.GetValue() != msg {
		return fmt.Errorf("Echo(%q) = %q", msg, resp.GetValue())
	}
	return nil
}

// headerWatcher is a client stats.Handler that reports each call to method
// whose headers have been queued for the server.
type headerWatcher struct {
	method string
	sent   chan struct{}
}

func (h *headerWatcher) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context { return ctx }
func (h *headerWatcher) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}
func (h *headerWatcher) HandleConn(context.Context, stats.ConnStats) {}

func (h *headerWatcher) HandleRPC(_ context.Context, s stats.RPCStats) {
	if o, ok := s.(*stats.OutHeader); ok && o.Client && o.FullMethod == h.method {
		select {
		case h.sent <- struct{}{}:
		default:
		}
	}
}

// startSleeps makes n calls of Sleep(longSleep) to addr, on one connection,
// and returns once the server has accepted them all. Each call's error is
// sent on the channel returned; the calls end with the test.
func startSleeps(t *testing.T, addr string, n int) <-chan error {
	t.Helper()
	_, errs := sendSleeps(t, addr, n, longSleep)
	return errs
}

// sendSleeps makes n calls of Sleep(d) to addr, on one connection, and
// returns once the server has accepted them all, with the client of that
// connection and the channel on which each call's error is sent. Each call
// has a deadline of d plus defaultTestTimeout, and ends with the test.
//
// The server has accepted them when it has answered an Echo sent after
// their headers on the same connection: it reads the headers of a
// connection in order, and registers each stream as it reads its headers.
func sendSleeps(t *testing.T, addr string, n int, d time.Duration) (demopb.DemoClient, <-chan error) {
	t.Helper()
	w := &headerWatcher{method: sleepMethod, sent: make(chan struct{}, n)}
	_, c := dial(t, addr, grpc.WithStatsHandler(w))
	ctx, cancel := context.WithTimeout(context.Background(), d+defaultTestTimeout)
	t.Cleanup(cancel)
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := c.Sleep(ctx, durationpb.New(d))
			errs <- err
		}()
	}
	timeout := time.After(defaultTestTimeout)
	for i := range n {
		select {
		case <-w.sent:
		case err := <-errs:
			t.Fatalf("Sleep() = %v before the server had it", err)
		case <-timeout:
			t.Fatalf("%d of %d Sleep calls sent after %v", i, n, defaultTestTimeout)
		}
	}
	if err := echo(c, "after the sleeps"); err != nil {
		t.Fatalf("Echo() = %v, want nil", err)
	}
	return c, errs
}

// checkUnavailable receives n errors from errs and checks that each is
// codes.Unavailable.
func checkUnavailable(t *testing.T, what string, n int, errs <-chan error) {
	t.Helper()
	timeout := time.After(defaultTestTimeout)
	for i := range n {
		select {
		case err := <-errs:
			if status.Code(err) != codes.Unavailable {
				t.Errorf("%s %d: error %v, want code %v", what, i, err, codes.Unavailable)
			}
		case <-timeout:
			t.Fatalf("%d of %d %s still running %v after the server exited", n-i, n, what, defaultTestTimeout)
		}
	}
}

// checkExit checks that the server exited within limit of the signal sent
// at sent, not before atLeast, with status want, and returns the time it
// took.
func checkExit(t *testing.T, s *server, sent time.Time, atLeast, limit time.Duration, want int) time.Duration {
	t.Helper()
	exited, code := s.wait(limit + defaultTestTimeout)
	took := exited.Sub(sent)
	t.Logf("server %s exited with status %d %v after the signal (limit %v)", s.name, code, took, limit)
	if took > limit {
		t.Errorf("server %s exited %v after the signal, want at most %v", s.name, took, limit)
	}
	if took < atLeast {
		t.Errorf("server %s exited %v after the signal, want at least %v", s.name, took, atLeast)
	}
	if code != want {
		t.Errorf("server %s exit status = %d, want %d", s.name, code, want)
	}
	return took
}
