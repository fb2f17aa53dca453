//go:build linux

package process_test

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	// loadCallers is the number of callers of the loads.
	loadCallers = 8
	// windowCalls is the number of successful calls that a window of
	// measurement takes.
	windowCalls = 500
	// restarts is the number of stops and starts of TestRestarts.
	restarts = 5
)

// drainFlags are short drain settings, as a demo behind systemd may use:
// no readiness delay, since no balancer has to notice.
var drainFlags = []string{"-readiness-delay=0s", "-grace=1s", "-cancel-grace=200ms", "-force-wait=200ms"}

// Restarts, each a stop (SIGTERM, wait for the exit) and a start, under
// load: with socket activation no call fails, since the socket outlives
// the processes and connections wait in its backlog; a server that listens
// itself has every connection refused between two processes.
func TestRestarts(t *testing.T) {
	results := make(map[bool]loadStats)
	for _, tc := range []struct {
		name      string
		activated bool
	}{
		{name: "socket activation", activated: true},
		{name: "listening itself", activated: false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := demoStart{args: append([]string{"-db", dbPath(t)}, drainFlags...)}
			var addr string
			if tc.activated {
				// -addr names another port: a passed socket makes it unused.
				addr, st.socket = heldSocket(t)
				st.args = append(st.args, "-addr", "127.0.0.1:1")
			} else {
				addr = freeAddr(t)
				st.args = append(st.args, "-addr", addr)
			}
			s := startDemo(t, "1", st)
			rec := s.waitLog(`"serving" record`, isMsg("serving"))
			wantSource := map[bool]string{true: "systemd", false: "listen"}[tc.activated]
			if got := rec.str("listener"); got != wantSource || s.addr != addr {
				t.Fatalf("serving record: listener %q on %s, want %q on %s", got, s.addr, wantSource, addr)
			}

			l := startLoad(t, addr, loadCallers)
			from := l.waitSuccesses(loadCallers*reconnectEvery, time.Time{})
			for i := range restarts {
				// Each server is stopped as soon as it serves, the
				// hardest case: it has just accepted the burst of
				// connections that waited in the backlog, and grpc resets
				// a connection whose handshake has not begun when it
				// begins to stop, unless the drain first lets it settle
				// (drain.Serve does).
				s.signal(syscall.SIGTERM)
				if _, code := s.wait(defaultTestTimeout); code != exitOK {
					t.Fatalf("server %s exit status = %d, want %d", s.name, code, exitOK)
				}
				s = startDemo(t, pidString(i+2), st)
			}
			to := l.waitSuccesses(loadCallers*reconnectEvery, time.Now())
			r := l.window(from, to)
			l.stop()
			results[tc.activated] = r
			t.Logf("%d restarts, %s: %d calls, %d failed, %d refused (e.g. %v); slowest successful call %v",
				restarts, tc.name, r.calls, r.failed, r.refused, r.sample, r.slowest)
			if tc.activated && r.failed != 0 {
				t.Errorf("%d of %d calls failed (e.g. %v), want none", r.failed, r.calls, r.sample)
			}
			if !tc.activated && r.refused == 0 {
				t.Errorf("no call refused without socket activation: the test does not reproduce what socket activation prevents")
			}
		})
	}
	a, b := results[true], results[false]
	t.Logf("%d restarts under %d callers:\n  socket activation: %6d calls, %5d failed, %5d refused, slowest %v\n  listening itself:  %6d calls, %5d failed, %5d refused, slowest %v",
		restarts, loadCallers, a.calls, a.failed, a.refused, a.slowest, b.calls, b.failed, b.refused, b.slowest)
}

// Upgrades on SIGHUP under load, with the socket from systemd: each
// successor serves before the old server drains, no call fails, and the
// slowest call of an upgrade is within twice the slowest of steady state.
// Both are measured in alternation, upgradeRounds times, and compared by
// their medians, so that a hiccup of a loaded machine in one window does
// not decide. systemd, played by the test, hears READY=1 with each
// successor's process ID, and no STOPPING=1 until the last one is stopped.
func TestUpgradeUnderLoad(t *testing.T) {
	const upgradeRounds = 5
	becomeSubreaper(t)
	notify := newFakeSystemd(t)
	addr, socket := heldSocket(t)
	pidFile := filepath.Join(t.TempDir(), "pid")
	st := demoStart{
		args:   append([]string{"-db", dbPath(t), "-addr", "127.0.0.1:1", "-upgrade-timeout", "10s", "-pid-file", pidFile}, drainFlags...),
		socket: socket,
		env:    []string{notify.env()},
	}
	a := startDemo(t, "A", st)
	current := a.cmd.Process.Pid
	if m := notify.next(t); m["READY"] != "1" || m["MAINPID"] != pidString(current) {
		t.Fatalf("first notification %v, want READY=1 and MAINPID=%d", m, current)
	}

	l := startLoad(t, addr, loadCallers)
	l.waitSuccesses(loadCallers*reconnectEvery, time.Time{})
	var steady, upgrades []loadStats
	for round := range upgradeRounds {
		from := time.Now()
		steady = append(steady, l.window(from, l.waitSuccesses(windowCalls, from)))

		sent := time.Now()
		if err := syscall.Kill(current, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		var exitedAt time.Time
		if round == 0 {
			// The first server is the test's child.
			select {
			case <-a.exited:
			case <-time.After(startTimeout + defaultTestTimeout):
				t.Fatalf("server A still runs %v after SIGHUP", startTimeout+defaultTestTimeout)
			}
			exitedAt = a.exitedAt
			if code := a.state.ExitCode(); code != exitOK {
				t.Errorf("server A exit status = %d, want %d", code, exitOK)
			}
		} else {
			// The others were reparented to the test.
			if code := waitPID(t, current, startTimeout+defaultTestTimeout); code != exitOK {
				t.Errorf("server %d exit status = %d, want %d", current, code, exitOK)
			}
			exitedAt = time.Now()
		}
		up := l.window(sent, l.waitSuccesses(windowCalls, exitedAt))
		upgrades = append(upgrades, up)

		pids := a.pids()
		if len(pids) != round+2 || pids[round] != current {
			t.Fatalf("serving records of processes %v, want %d and its successor", pids, current)
		}
		successor := pids[round+1]
		t.Logf("round %d: steady state %d calls, slowest %v; upgrade of %d to %d (%v until the old server exited): %d calls, %d failed (e.g. %v), slowest %v",
			round, steady[round].calls, steady[round].slowest, current, successor, exitedAt.Sub(sent).Round(time.Millisecond), up.calls, up.failed, up.sample, up.slowest)
		current = successor
	}
	l.stop()

	slowest := func(ss []loadStats) []time.Duration {
		var d []time.Duration
		for _, s := range ss {
			d = append(d, s.slowest)
		}
		slices.Sort(d)
		return d
	}
	steadySlowest, upgradeSlowest := slowest(steady), slowest(upgrades)
	steadyMedian, upgradeMedian := steadySlowest[upgradeRounds/2], upgradeSlowest[upgradeRounds/2]
	t.Logf("slowest call, median of %d rounds: steady state %v %v, upgrade %v %v", upgradeRounds, steadyMedian, steadySlowest, upgradeMedian, upgradeSlowest)
	for i := range upgradeRounds {
		if steady[i].failed != 0 || upgrades[i].failed != 0 {
			t.Errorf("round %d: failed calls: %d in steady state, %d during the upgrade (e.g. %v), want none", i, steady[i].failed, upgrades[i].failed, upgrades[i].sample)
		}
	}
	// Twice the steady state's, or upgradeSlack above it: on a loaded
	// machine, a steady state of a few milliseconds doubles from the
	// scheduler alone. Refused or reset connections fail calls, which the
	// check above catches; this one catches calls held up longer than the
	// slack, such as calls waiting in the socket's backlog while no
	// process accepts.
	const upgradeSlack = 50 * time.Millisecond
	if upgradeMedian > 2*steadyMedian && upgradeMedian > steadyMedian+upgradeSlack {
		t.Errorf("slowest call during an upgrade (median of %d rounds) %v, want at most twice the steady state's %v, or %v above it", upgradeRounds, upgradeMedian, steadyMedian, upgradeSlack)
	}

	handed := a.log.find(isMsg("upgrade: the successor serves, draining"))
	pids := a.pids()
	for i, r := range handed {
		if got, _ := r["successor_pid"].(float64); int(got) != pids[i+1] {
			t.Errorf("upgrade %d: the record names successor %v, want %d", i, r["successor_pid"], pids[i+1])
		}
	}
	for _, r := range a.log.find(isMsg("serving"))[1:] {
		if r.str("listener") != "upgrade" {
			t.Errorf("a successor's serving record: listener %q, want %q", r.str("listener"), "upgrade")
		}
	}

	// What systemd heard at each upgrade: the reload, then the successor's
	// process ID with READY=1, which the old server sends before it drains
	// (TestUnitReloads checks the senders), and nothing of the old server's
	// drain; then, once the old server has exited, the successor's status
	// line again.
	var reloading, ready int
	for _, m := range notify.pending() {
		switch {
		case m["STOPPING"] == "1":
			t.Errorf("notification %v before the last successor was stopped: the old server's drain would stop the unit", m)
		case m["RELOADING"] == "1":
			reloading++
		case m["READY"] == "1" && slices.Contains(pids[1:], atoi(m["MAINPID"])):
			ready++
		case len(m) == 1 && strings.HasPrefix(m["STATUS"], "serving (pid "):
		default:
			t.Errorf("unexpected notification %v", m)
		}
	}
	if reloading != upgradeRounds || ready != upgradeRounds {
		t.Errorf("notifications: %d RELOADING=1, %d READY=1 with the MAINPID= of a successor; want %d of each", reloading, ready, upgradeRounds)
	}

	// The last successor, now a child of the test, drains on SIGTERM.
	if err := syscall.Kill(current, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if m := notify.next(t); m["STOPPING"] != "1" || !strings.HasPrefix(m["STATUS"], "draining") || m["EXTEND_TIMEOUT_USEC"] == "" {
		t.Errorf("the successor's first notification of its drain: %v, want STOPPING=1, STATUS=draining... and EXTEND_TIMEOUT_USEC", m)
	}
	if code := waitPID(t, current, defaultTestTimeout); code != exitOK {
		t.Errorf("successor exit status = %d, want %d", code, exitOK)
	}
}

// atoi returns the number s, or -1.
func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

// A socket that cannot be served, or LISTEN_PID naming another process:
// the server refuses to start, exits 1, and its last record says why; it
// does not listen on -addr instead.
func TestSocketActivationRefused(t *testing.T) {
	udp, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	udpFile, err := udp.(*net.UDPConn).File()
	if err != nil {
		t.Fatal(err)
	}
	defer udpFile.Close()
	_, tcpFile := heldSocket(t)
	for _, tt := range []struct {
		name    string
		script  string // the LISTEN_* settings, in sh
		socket  *os.File
		wantErr string
	}{
		{name: "datagram socket", script: `LISTEN_PID=$$ LISTEN_FDS=1`, socket: udpFile, wantErr: "want a stream socket"},
		{name: "LISTEN_PID of another process", script: `LISTEN_PID=1 LISTEN_FDS=1`, socket: tcpFile, wantErr: "LISTEN_PID=1, this process is"},
		{name: "two sockets announced", script: `LISTEN_PID=$$ LISTEN_FDS=2`, socket: tcpFile, wantErr: "LISTEN_FDS=2"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			bin, _ := binaries(t)
			addr := freeAddr(t)
			ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, "sh", "-c", tt.script+` exec "$0" "$@"`, bin, "-log", "json", "-db", dbPath(t), "-addr", addr)
			cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
			cmd.ExtraFiles = []*os.File{tt.socket}
			out, err := cmd.CombinedOutput()
			if code := cmd.ProcessState.ExitCode(); code != 1 {
				t.Fatalf("exit status %d (%v), want 1; output:\n%s", code, err, out)
			}
			lines := strings.Split(strings.TrimSpace(string(out)), "\n")
			var last record
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &last); err != nil {
				t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
			}
			if last.str("msg") != "exit" || !strings.Contains(last.str("err"), tt.wantErr) {
				t.Errorf("last record %v, want an exit record whose err contains %q", last, tt.wantErr)
			}
			if strings.Contains(string(out), `"msg":"serving"`) {
				t.Errorf("the server served; output:\n%s", out)
			}
		})
	}
}
