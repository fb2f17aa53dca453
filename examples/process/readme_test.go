//go:build unix

package process_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/drainkit/drainkit/examples/demopb"
)

// readmePath is README.md, from the directory of this package.
const readmePath = "../../README.md"

// The README's walkthrough of the demo, run against the built server as a
// person runs it, with text logs, Ctrl-C (SIGINT), grpc-health-probe and a
// Watch, but on a free port, with a temporary database and shorter waits.
// What the README quotes is read from README.md, so that the README cannot
// drift from what the server does.
func TestREADMEWalkthrough(t *testing.T) {
	readme := readREADME(t)
	t.Run("clean drain", func(t *testing.T) { testREADMECleanDrain(t, readme) })
	t.Run("forced drain", func(t *testing.T) { testREADMEForcedDrain(t, readme) })
	t.Run("bad flag", func(t *testing.T) { testREADMEBadFlag(t, readme) })
	t.Run("help", func(t *testing.T) { testREADMEHelp(t) })
}

func testREADMECleanDrain(t *testing.T, readme *readmeText) {
	const readinessDelay = 3 * time.Second
	_, probe := binaries(t)
	s := startTextServer(t, "readme-clean", "-readiness-delay", readinessDelay.String())
	s.checkRecord(readme.record(t, "serving", ""))

	// `grpc-health-probe -addr=127.0.0.1:50051   # status: SERVING, exit 0`
	servingOut, servingCode := readme.probeServing(t)
	if code, out := runProbe(t, probe, s.addr); code != servingCode || !strings.Contains(string(out), servingOut) {
		t.Errorf("grpc-health-probe before the signal: status %d, output %q; the README says %q, exit %d", code, out, servingOut, servingCode)
	}

	// A Watch that has sent its first tick, and a Sleep that ends within the
	// grace period.
	_, c := dial(t, s.addr)
	// The calls end with the drain, well before their deadline.
	ctx, cancel := context.WithTimeout(context.Background(), readinessDelay+defaultTestTimeout)
	t.Cleanup(cancel)
	watch, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	if _, err := watch.Recv(); err != nil {
		t.Fatalf("Watch: Recv() = %v, want a first tick", err)
	}
	sleepDone := make(chan error, 1)
	w := &headerWatcher{method: sleepMethod, sent: make(chan struct{}, 1)}
	_, sc := dial(t, s.addr, grpc.WithStatsHandler(w))
	go func() {
		_, err := sc.Sleep(ctx, durationpb.New(readinessDelay+time.Second))
		sleepDone <- err
	}()
	select {
	case <-w.sent:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("Sleep not sent after %v", defaultTestTimeout)
	}
	if err := echo(sc, "after the sleep"); err != nil { // the server has the Sleep
		t.Fatalf("Echo() = %v", err)
	}

	// "Now press Ctrl-C in the server's terminal."
	sent := s.signal(syscall.SIGINT)
	s.checkRecord(readme.record(t, "signal received, draining", ""))
	s.checkRecord(readme.record(t, "drain phase", "NotReady"))

	unhealthyOut, unhealthyCode := readme.probeUnhealthy(t)
	for {
		code, out := runProbe(t, probe, s.addr)
		if code == unhealthyCode {
			if !strings.Contains(string(out), unhealthyOut) {
				t.Errorf("grpc-health-probe during the readiness delay printed %q, the README says %q", out, unhealthyOut)
			}
			break
		}
		if code != servingCode {
			t.Fatalf("grpc-health-probe during the readiness delay: status %d, the README says %d; output:\n%s", code, unhealthyCode, out)
		}
		if time.Since(sent) > readinessDelay {
			t.Fatalf("grpc-health-probe still reports SERVING %v after the signal, past the readiness delay", time.Since(sent))
		}
	}
	// "Echo still answers, on new connections too."
	_, fresh := dial(t, s.addr)
	if err := echo(fresh, "during the readiness delay"); err != nil {
		t.Errorf("Echo() on a new connection during the readiness delay = %v, want nil", err)
	}
	if took := time.Since(sent); took >= readinessDelay {
		t.Fatalf("the checks took %v, past the readiness delay of %v: they prove nothing", took, readinessDelay)
	}

	// "Then the Graceful phase: the Watch ends with ..."
	wantCode, wantMsg := readme.watchEnd(t)
	for err == nil {
		_, err = watch.Recv()
	}
	if st := status.Convert(err); st.Code().String() != wantCode || st.Message() != wantMsg {
		t.Errorf("the Watch ended with code %s, message %q; the README says %s, %q", st.Code(), st.Message(), wantCode, wantMsg)
	}
	// "... while the Sleep call finishes on its own within the grace period."
	select {
	case err := <-sleepDone:
		if err != nil {
			t.Errorf("Sleep() = %v, want it to finish within the grace period", err)
		}
	case <-ctx.Done():
		t.Fatal("Sleep still running at its deadline")
	}

	code := s.wait(defaultTestTimeout)
	s.checkRecord(readme.record(t, "drain finished", "INFO"))
	exit := readme.record(t, "exit", "INFO")
	s.checkRecord(exit)
	if want := readme.exitStatus(t, "clean"); code != want || exit.vals["code"] != strconv.Itoa(want) {
		t.Errorf("exit status after a clean drain = %d; the README says %d, and logs code=%s", code, want, exit.vals["code"])
	}
}

func testREADMEForcedDrain(t *testing.T, readme *readmeText) {
	const wait = 200 * time.Millisecond
	s := startTextServer(t, "readme-forced", "-stubborn",
		"-grace", wait.String(), "-cancel-grace", wait.String(), "-force-wait", wait.String())
	errs := startSleeps(t, s.addr, 1)

	s.signal(syscall.SIGINT)
	code := s.wait(defaultTestTimeout)
	checkUnavailable(t, "Sleep call", 1, errs)
	s.checkRecord(readme.record(t, "drain finished", "WARN"))
	exit := readme.record(t, "exit", "WARN")
	s.checkRecord(exit)
	if want := readme.exitStatus(t, "forced"); code != want || exit.vals["code"] != strconv.Itoa(want) {
		t.Errorf("exit status after a forced drain = %d; the README says %d, and logs code=%s", code, want, exit.vals["code"])
	}
}

// The README's "$ ./demo -readiness-delay 10" and what it prints.
func testREADMEBadFlag(t *testing.T, readme *readmeText) {
	bin, _ := binaries(t)
	m := regexp.MustCompile("(?m)^\\$ \\./demo (.*)\n((?:[^`\n].*\n)+)```").FindStringSubmatch(readme.text)
	if m == nil {
		t.Fatalf("%s: no \"$ ./demo\" command with its output", readmePath)
	}
	args, want := strings.Fields(m[1]), m[2]
	code, stdout, stderr := runDemo(t, bin, args...)
	if wantCode := readme.exitStatus(t, "usage"); code != wantCode {
		t.Errorf("%s %q: exit status %d, the README says %d", bin, args, code, wantCode)
	}
	if stderr != want || stdout != "" {
		t.Errorf("%s %q printed %q on stderr and %q on stdout; the README says %q", bin, args, stderr, stdout, want)
	}
}

// -h answers on standard output, and exits 0.
func testREADMEHelp(t *testing.T) {
	bin, _ := binaries(t)
	code, stdout, stderr := runDemo(t, bin, "-h")
	if code != 0 || !strings.HasPrefix(stdout, "Usage: drainkit-demo") || stderr != "" {
		t.Errorf("%s -h: exit status %d, stdout %q, stderr %q; want 0, the usage, nothing", bin, code, stdout, stderr)
	}
}

// runDemo runs bin with args and returns its exit status and output.
func runDemo(t *testing.T, bin string, args ...string) (int, string, string) {
	t.Helper()
	return runBounded(t, exec.Command(bin, args...))
}

// runBounded runs cmd, for up to defaultTestTimeout, and returns its exit
// status and output.
func runBounded(t *testing.T, cmd *exec.Cmd) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("running %v: %v", cmd, err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait() // an exit status other than 0 is an error too
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(defaultTestTimeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v still ran after %v", cmd, defaultTestTimeout)
	}
	return cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()
}

// readmeText is README.md, with what the walkthrough reads from it.
type readmeText struct {
	text    string
	records []textRecord // the log lines it quotes
}

func readREADME(t *testing.T) *readmeText {
	t.Helper()
	b, err := os.ReadFile(readmePath)
	if err != nil {
		t.Fatal(err)
	}
	r := &readmeText{text: string(b)}
	for line := range strings.Lines(r.text) {
		if line = strings.TrimSpace(line); strings.HasPrefix(line, "time=") {
			rec, err := parseTextRecord(line)
			if err != nil {
				t.Fatalf("%s: log line %q: %v", readmePath, line, err)
			}
			r.records = append(r.records, rec)
		}
	}
	return r
}

// record returns the README's log line with message msg, and with phase or
// level qualifier when it is not empty.
func (r *readmeText) record(t *testing.T, msg, qualifier string) textRecord {
	t.Helper()
	for _, rec := range r.records {
		if rec.vals["msg"] == msg && (qualifier == "" || rec.vals["phase"] == qualifier || rec.vals["level"] == qualifier) {
			return rec
		}
	}
	t.Fatalf("%s quotes no log line with msg=%q %s", readmePath, msg, qualifier)
	return textRecord{}
}

// probeServing returns what the README says the probe prints, and its exit
// status, when the server serves.
func (r *readmeText) probeServing(t *testing.T) (string, int) {
	t.Helper()
	return r.match(t, `grpc-health-probe -addr=\S+\s+# (status: \w+), exit (\d+)`)
}

// probeUnhealthy returns the same during the readiness delay.
func (r *readmeText) probeUnhealthy(t *testing.T) (string, int) {
	t.Helper()
	return r.match(t, "prints\\s+`([^`]+)`\\s+and exits (\\d+)")
}

// match returns the two groups of the first match of expr, the second a
// number.
func (r *readmeText) match(t *testing.T, expr string) (string, int) {
	t.Helper()
	m := regexp.MustCompile(expr).FindStringSubmatch(r.text)
	if m == nil {
		t.Fatalf("%s: nothing matches %q", readmePath, expr)
	}
	n, err := strconv.Atoi(m[2])
	if err != nil {
		t.Fatalf("%s: %q: %v", readmePath, m[0], err)
	}
	return m[1], n
}

// watchEnd returns the code and the message with which the README says the
// Watch ends, as grpcurl prints them.
func (r *readmeText) watchEnd(t *testing.T) (string, string) {
	t.Helper()
	m := regexp.MustCompile("ERROR:\n  Code: (\\w+)\n  Message: (.+)\n").FindStringSubmatch(r.text)
	if m == nil {
		t.Fatalf("%s: no grpcurl error with a code and a message", readmePath)
	}
	return m[1], m[2]
}

// exitStatus returns the exit status that the README gives for a clean
// drain, a forced one, or bad flags ("clean", "forced", "usage").
func (r *readmeText) exitStatus(t *testing.T, what string) int {
	t.Helper()
	m := regexp.MustCompile(`It exits (\d+) after a clean drain, (\d+) when the drain had to force[^.]*?,\s+and (\d+)\s+on bad flags`).FindStringSubmatch(r.text)
	if m == nil {
		t.Fatalf("%s: no sentence giving the exit statuses", readmePath)
	}
	i := map[string]int{"clean": 1, "forced": 2, "usage": 3}[what]
	n, _ := strconv.Atoi(m[i])
	return n
}

// A textRecord is a line of the server's text log: key=value pairs, the
// values quoted as strconv.Quote does when they need it.
type textRecord struct {
	line string
	keys []string // in their order
	vals map[string]string
}

func parseTextRecord(line string) (textRecord, error) {
	r := textRecord{line: line, vals: map[string]string{}}
	for rest := line; rest != ""; rest = strings.TrimLeft(rest, " ") {
		key, v, ok := strings.Cut(rest, "=")
		if !ok || key == "" || strings.ContainsAny(key, ` "`) {
			return r, fmt.Errorf("no key=value at %q", rest)
		}
		if strings.HasPrefix(v, `"`) {
			q, err := strconv.QuotedPrefix(v)
			if err != nil {
				return r, fmt.Errorf("value of %s: %v", key, err)
			}
			r.vals[key], _ = strconv.Unquote(q)
			rest = v[len(q):]
		} else {
			end := strings.IndexByte(v, ' ')
			if end < 0 {
				end = len(v)
			}
			r.vals[key], rest = v[:end], v[end:]
		}
		r.keys = append(r.keys, key)
	}
	return r, nil
}

// leakedAges matches the leakedAges of leaked handlers in a report.
var leakedAges = regexp.MustCompile(`\(age [0-9.]+[µnm]?s\)`)

// variableKey reports whether the value of key depends on the run rather
// than on what the README describes: times and durations, the address, the
// process id and the database (the test's own), the drain's budget and the
// bounds of its phases (of the test's waits), and counts of RPCs, which
// include the server reflection streams of grpcurl in the README and not in
// the test.
func variableKey(key string) bool {
	switch key {
	case "time", "addr", "pid", "db", "drain_budget", "report.cancelled", "max", "left":
		return true
	}
	return strings.HasSuffix(key, "duration") || strings.HasSuffix(key, "in_flight")
}

// sameRecord returns an error unless got has every key of want, in the
// same order (it may have more), with the same values but for the
// variable ones.
func sameRecord(got, want textRecord) error {
	i := 0
	for _, k := range want.keys {
		j := slices.Index(got.keys[i:], k)
		if j < 0 {
			return fmt.Errorf("no key %s after %q", k, got.keys[:i])
		}
		i += j + 1
		if variableKey(k) {
			continue
		}
		if g, w := leakedAges.ReplaceAllString(got.vals[k], "(age …)"), leakedAges.ReplaceAllString(want.vals[k], "(age …)"); g != w {
			return fmt.Errorf("%s=%q, want %q", k, got.vals[k], want.vals[k])
		}
	}
	return nil
}

// A textServer is a demo server process that logs text, as it does by
// default.
type textServer struct {
	t    *testing.T
	name string
	cmd  *exec.Cmd
	addr string

	mu      sync.Mutex
	raw     bytes.Buffer
	records []textRecord
	ended   bool
	changed chan struct{} // closed and replaced at each line, and at the end

	exited chan struct{}
	code   int
}

// startTextServer starts a demo server with args, on a free port of
// 127.0.0.1 and a database of the test's, and returns once it serves.
func startTextServer(t *testing.T, name string, args ...string) *textServer {
	t.Helper()
	bin, _ := binaries(t)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	args = append([]string{"-addr", "127.0.0.1:0", "-db", dbPath(t)}, args...)
	s := &textServer{t: t, name: name, cmd: exec.Command(bin, args...), changed: make(chan struct{}), exited: make(chan struct{})}
	s.cmd.Stderr = w
	err = s.cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		t.Fatalf("starting server %s: %v", name, err)
	}
	go s.collect(r)
	go func() {
		s.cmd.Wait()
		s.code = s.cmd.ProcessState.ExitCode()
		close(s.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-s.exited:
		default:
			s.cmd.Process.Kill()
			<-s.exited
		}
		s.waitEnd()
		if t.Failed() {
			s.mu.Lock()
			t.Logf("log of server %s (%q):\n%s", name, args, s.raw.String())
			s.mu.Unlock()
		}
	})
	s.addr = s.waitRecord("serving", startTimeout).vals["addr"]
	if s.addr == "" {
		t.Fatalf("server %s: no addr in its serving record", name)
	}
	return s
}

func (s *textServer) collect(r *os.File) {
	defer r.Close()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 4*1024*1024)
	for sc.Scan() {
		rec, err := parseTextRecord(sc.Text())
		s.mu.Lock()
		s.raw.WriteString(sc.Text() + "\n")
		if err == nil {
			s.records = append(s.records, rec)
		} else {
			fmt.Fprintf(&s.raw, "[not a text record: %v]\n", err)
		}
		close(s.changed)
		s.changed = make(chan struct{})
		s.mu.Unlock()
	}
	s.mu.Lock()
	s.ended = true
	close(s.changed)
	s.mu.Unlock()
}

// waitRecord waits up to timeout for a record with message msg and
// returns the first.
func (s *textServer) waitRecord(msg string, timeout time.Duration) textRecord {
	s.t.Helper()
	return s.waitMatch(fmt.Sprintf("msg=%q", msg), timeout, func(r textRecord) bool { return r.vals["msg"] == msg })
}

func (s *textServer) waitMatch(what string, timeout time.Duration, match func(textRecord) bool) textRecord {
	s.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		i := slices.IndexFunc(s.records, match)
		var rec textRecord
		if i >= 0 {
			rec = s.records[i]
		}
		ended, changed := s.ended, s.changed
		s.mu.Unlock()
		switch {
		case i >= 0:
			return rec
		case ended:
			s.t.Fatalf("server %s: the log ended without a record %s", s.name, what)
		}
		select {
		case <-changed:
		case <-timer.C:
			s.t.Fatalf("server %s: no record %s after %v", s.name, what, timeout)
		}
	}
}

// checkRecord waits for the server's record that has the message, and the
// phase if any, of want, the README's, and checks that it reads as want.
func (s *textServer) checkRecord(want textRecord) {
	s.t.Helper()
	msg, phase := want.vals["msg"], want.vals["phase"]
	got := s.waitMatch(fmt.Sprintf("msg=%q phase=%q", msg, phase), defaultTestTimeout, func(r textRecord) bool {
		return r.vals["msg"] == msg && r.vals["phase"] == phase
	})
	if err := sameRecord(got, want); err != nil {
		s.t.Errorf("server %s logged\n\t%s\nthe README quotes\n\t%s\n%v", s.name, got.line, want.line, err)
	} else if extra := len(got.keys) - len(want.keys); extra > 0 {
		s.t.Logf("server %s: %d keys more than the README shows in\n\t%s", s.name, extra, got.line)
	}
}

func (s *textServer) signal(sig syscall.Signal) time.Time {
	s.t.Helper()
	sent := time.Now()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("server %s: sending %v: %v", s.name, sig, err)
	}
	return sent
}

// wait waits up to timeout for the server to exit, and for the end of its
// log, and returns its exit status.
func (s *textServer) wait(timeout time.Duration) int {
	s.t.Helper()
	select {
	case <-s.exited:
	case <-time.After(timeout):
		s.t.Fatalf("server %s still runs %v later", s.name, timeout)
	}
	s.waitEnd()
	return s.code
}

// waitEnd waits for standard error to be read to its end.
func (s *textServer) waitEnd() {
	s.t.Helper()
	timer := time.NewTimer(defaultTestTimeout)
	defer timer.Stop()
	for {
		s.mu.Lock()
		ended, changed := s.ended, s.changed
		s.mu.Unlock()
		if ended {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			s.t.Errorf("server %s: standard error still open %v after the exit", s.name, defaultTestTimeout)
			return
		}
	}
}
