//go:build linux

package process_test

import (
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/drainkit/drainkit/examples/demopb"
)

// prSetChildSubreaper is PR_SET_CHILD_SUBREAPER of prctl(2).
const prSetChildSubreaper = 36

var subreaperOnce sync.Once

// becomeSubreaper makes the test process the subreaper of its descendants,
// as systemd is: a successor that the demo starts in an upgrade becomes a
// child of the test when the demo exits, and the test can wait for it.
func becomeSubreaper(t *testing.T) {
	t.Helper()
	var err error
	subreaperOnce.Do(func() {
		if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, prSetChildSubreaper, 1, 0); errno != 0 {
			err = errno
		}
	})
	if err != nil {
		t.Fatalf("prctl(PR_SET_CHILD_SUBREAPER): %v", err)
	}
}

// A demoStart says how to start a demo server.
type demoStart struct {
	bin    string   // the executable; the demo server if empty
	args   []string // flags, -db included
	socket *os.File // if not nil, passed as descriptor 3 with LISTEN_FDS=1
	env    []string // added to the environment
}

// startDemo starts a demo server as st says, and returns once it serves,
// as startServer does. With a socket, it is started the way systemd starts
// a socket-activated service: the socket as descriptor 3, LISTEN_FDS=1 and
// LISTEN_PID set to the server's own process ID. At the end of the test it
// is killed if it still runs, and so is every successor it started.
func startDemo(t *testing.T, name string, st demoStart) *server {
	t.Helper()
	bin := st.bin
	if bin == "" {
		bin, _ = binaries(t)
	}
	args := append([]string{"-log", "json"}, st.args...)
	var cmd *exec.Cmd
	if st.socket != nil {
		// sh exports its own process ID, which exec keeps.
		cmd = exec.Command("sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin}, args...)...)
		cmd.ExtraFiles = []*os.File{st.socket}
	} else {
		cmd = exec.Command(bin, args...)
	}
	// The server never speaks to the service manager that may run the
	// tests: NOTIFY_SOCKET is the test's, or none.
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	cmd.Env = append(cmd.Env, st.env...)
	s, err := spawn(t, name, cmd)
	if err != nil {
		t.Fatalf("starting server %s: %v", name, err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log of server %s (%v):\n%s", name, st.args, s.log)
		}
	})
	t.Cleanup(func() {
		s.kill()
		// Successors share standard error, which ends with the last.
		for _, pid := range s.pids() {
			if pid != s.cmd.Process.Pid {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		if err := s.log.waitEnd(defaultTestTimeout); err != nil {
			t.Errorf("server %s: %v", name, err)
		}
	})

	rec, err := s.log.waitFor(startTimeout, `"serving" record`, isMsg("serving"))
	if err != nil {
		t.Fatalf("server %s: %v", name, err)
	}
	if s.addr = rec.str("addr"); s.addr == "" {
		t.Fatalf("server %s: no addr in the serving record %v", name, rec)
	}
	return s
}

// startInPIDNamespace starts cmd, a demo server or an init that runs one,
// as PID 1 of a new PID namespace, and reads its standard error as the log
// of the server named name; the test waits for the "serving" record itself.
// The test is skipped where no PID namespace can be created. At the end of
// the test cmd is killed if it still runs, and the kernel then kills the
// rest of its namespace.
func startInPIDNamespace(t *testing.T, name string, cmd *exec.Cmd) *server {
	t.Helper()
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	s, err := spawn(t, name, cmd)
	if err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOSPC) {
			t.Skipf("no new PID namespace here: %v", err)
		}
		t.Fatalf("starting server %s: %v", name, err)
	}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("log of server %s:\n%s", name, s.log)
		}
	})
	return s
}

// pids returns the process IDs of the "serving" records of the server's
// log: its own, then its successors'.
func (s *server) pids() []int {
	var pids []int
	for _, r := range s.log.find(isMsg("serving")) {
		if pid, ok := r["pid"].(float64); ok && !slices.Contains(pids, int(pid)) {
			pids = append(pids, int(pid))
		}
	}
	return pids
}

// heldSocket is the listening socket that the test holds as systemd does,
// and passes to each server it starts.
func heldSocket(t *testing.T) (addr string, f *os.File) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, err = lis.(*net.TCPListener).File()
	lis.Close() // f holds the socket
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return lis.Addr().String(), f
}

// freeAddr returns an address of 127.0.0.1 with a port that was free a
// moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	return lis.Addr().String()
}

// A call is one Echo of a load.
type call struct {
	start time.Time
	took  time.Duration
	err   error
}

// A load is callers that call Echo in a loop, each every callInterval:
// half on one connection each, the other half opening a new connection
// every reconnectEvery calls.
type load struct {
	t    *testing.T
	halt chan struct{}
	wg   sync.WaitGroup

	mu      sync.Mutex
	calls   []call        // guarded by mu
	changed chan struct{} // closed and replaced at each call; guarded by mu
}

// reconnectEvery is how many calls the reconnecting callers make on one
// connection.
const reconnectEvery = 10

// startLoad starts callers of addr, stopped at the end of the test if not
// before.
func startLoad(t *testing.T, addr string, callers int) *load {
	t.Helper()
	l := &load{t: t, halt: make(chan struct{}), changed: make(chan struct{})}
	for i := range callers {
		l.wg.Add(1)
		go l.run(addr, i%2 == 1)
	}
	t.Cleanup(l.stop)
	return l
}

func (l *load) run(addr string, reconnect bool) {
	defer l.wg.Done()
	tick := time.NewTicker(callInterval)
	defer tick.Stop()
	for {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			l.record(call{start: time.Now(), err: err})
			return
		}
		c := demopb.NewDemoClient(cc)
		for n := 0; !reconnect || n < reconnectEvery; n++ {
			select {
			case <-l.halt:
				cc.Close()
				return
			case <-tick.C:
			}
			start := time.Now()
			err := echo(c, "load")
			l.record(call{start: start, took: time.Since(start), err: err})
		}
		cc.Close()
	}
}

func (l *load) record(c call) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.calls = append(l.calls, c)
	close(l.changed)
	l.changed = make(chan struct{})
}

// stop stops the callers and waits for them.
func (l *load) stop() {
	select {
	case <-l.halt:
	default:
		close(l.halt)
	}
	l.wg.Wait()
}

// waitSuccesses waits until n calls started at or after from have
// succeeded, and returns the time.
func (l *load) waitSuccesses(n int, from time.Time) time.Time {
	l.t.Helper()
	timer := time.NewTimer(startTimeout)
	defer timer.Stop()
	for {
		l.mu.Lock()
		ok := 0
		for _, c := range l.calls {
			if c.err == nil && !c.start.Before(from) {
				ok++
			}
		}
		changed := l.changed
		l.mu.Unlock()
		if ok >= n {
			return time.Now()
		}
		select {
		case <-changed:
		case <-timer.C:
			l.t.Fatalf("%d of %d successful calls after %v", ok, n, startTimeout)
		}
	}
}

// loadStats sums up the calls of a window of time.
type loadStats struct {
	calls, failed, refused int
	slowest                time.Duration // of the successful calls
	sample                 error         // one of the failures
}

// window returns the stats of the calls started in [from, to).
func (l *load) window(from, to time.Time) loadStats {
	l.mu.Lock()
	defer l.mu.Unlock()
	var s loadStats
	for _, c := range l.calls {
		if c.start.Before(from) || !c.start.Before(to) {
			continue
		}
		s.calls++
		switch {
		case c.err == nil:
			s.slowest = max(s.slowest, c.took)
		case strings.Contains(status.Convert(c.err).Message(), "connection refused"):
			s.refused++
			s.failed++
			s.sample = c.err
		default:
			s.failed++
			s.sample = c.err
		}
	}
	return s
}

// fakeSystemd is the receiving end of NOTIFY_SOCKET, as systemd holds it.
type fakeSystemd struct {
	path     string
	conn     *net.UnixConn
	messages chan map[string]string
}

// newFakeSystemd listens on a unixgram socket; env() names it.
func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeSystemd{path: path, conn: conn, messages: make(chan map[string]string, 1000)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				return // closed
			}
			m := map[string]string{}
			for a := range strings.SplitSeq(string(buf[:n]), "\n") {
				k, v, _ := strings.Cut(a, "=")
				m[k] = v
			}
			s.messages <- m
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-done
	})
	return s
}

func (s *fakeSystemd) env() string { return "NOTIFY_SOCKET=" + s.path }

// next returns the next datagram.
func (s *fakeSystemd) next(t *testing.T) map[string]string {
	t.Helper()
	select {
	case m := <-s.messages:
		return m
	case <-time.After(defaultTestTimeout):
		t.Fatalf("no datagram on NOTIFY_SOCKET after %v", defaultTestTimeout)
		return nil
	}
}

// pending returns the datagrams received and not yet read.
func (s *fakeSystemd) pending() []map[string]string {
	var ms []map[string]string
	for {
		select {
		case m := <-s.messages:
			ms = append(ms, m)
		default:
			return ms
		}
	}
}

// waitPID waits for the process pid, a child of the test since it became a
// subreaper, to exit, and returns its exit status.
func waitPID(t *testing.T, pid int, timeout time.Duration) int {
	t.Helper()
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatalf("FindProcess(%d): %v", pid, err)
	}
	done := make(chan *os.ProcessState, 1)
	go func() {
		st, err := p.Wait()
		if err != nil {
			t.Errorf("waiting for process %d: %v", pid, err)
		}
		done <- st
	}()
	select {
	case st := <-done:
		if st == nil {
			return -1
		}
		return st.ExitCode()
	case <-time.After(timeout):
		p.Kill()
		<-done
		t.Fatalf("process %d still runs %v later", pid, timeout)
		return -1
	}
}

// pidString formats a process ID as sd_notify does.
func pidString(pid int) string { return strconv.Itoa(pid) }
