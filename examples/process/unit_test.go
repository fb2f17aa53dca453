//go:build linux

package process_test

import (
	"context"
	"errors"
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
	// unitReloads is the number of reloads of each half of
	// TestUnitReloads: idle, then under load.
	unitReloads = 20
	// unitLoadCallers is the number of callers during the reloads under
	// load.
	unitLoadCallers = 4
)

// reloadAndWait reloads the unit and waits until the successor is its main
// process and the old server has exited, and returns the old server's exit
// status and the successor.
func reloadAndWait(t *testing.T, u *fakeUnit) (code, successor int) {
	t.Helper()
	old := u.main()
	u.reload()
	u.waitFor("a new main process, active, and the old one's exit", func() bool {
		_, exited := u.exits[old]
		return len(u.stops) > 0 || u.mainPID != old && u.mainPID != 0 && u.state == "active" && exited
	})
	u.mu.Lock()
	code, successor, stops := u.exits[old], u.mainPID, u.stops
	u.mu.Unlock()
	if len(stops) > 0 {
		t.Fatalf("the unit stopped by itself during the reload of %d: %q", old, stops)
	}
	// The successor refuses to be upgraded until it has seen its parent
	// exit, which it says.
	if _, err := u.log.waitFor(defaultTestTimeout, "the successor's record of its parent's exit", func(r record) bool {
		pid, _ := r["pid"].(float64)
		return r.str("msg") == "the server this one replaced has exited: it may be upgraded again" && int(pid) == successor
	}); err != nil {
		t.Fatal(err)
	}
	return code, successor
}

// checkUnitClean checks what the unit recorded: no stop the test did not
// ask for, no message dropped, no reload failed, and every change of the
// main process made by MAINPID=.
func checkUnitClean(t *testing.T, u *fakeUnit, wantChanges int) {
	t.Helper()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.stops) != 0 {
		t.Errorf("the unit stopped by itself %d times: %q", len(u.stops), u.stops)
	}
	if len(u.dropped) != 0 {
		t.Errorf("NotifyAccess=main dropped %d messages: %q", len(u.dropped), u.dropped)
	}
	if len(u.failures) != 0 {
		t.Errorf("failed reloads: %q", u.failures)
	}
	if u.adoptions != 0 || u.mainChanges != wantChanges {
		t.Errorf("main process changed %d times by MAINPID= and %d by the PID file, want %d and 0", u.mainChanges, u.adoptions, wantChanges)
	}
}

// Reloads under a unit that plays systemd by its rules, with the shipped
// unit's NotifyAccess=all and with NotifyAccess=main and a PID file: each
// successor becomes the main process before the old one exits, no message
// is dropped, the unit never stops by itself, and no call fails; then a
// stop drains the last server, exit status 0, and removes the PID file.
func TestUnitReloads(t *testing.T) {
	for _, tc := range []struct {
		name    string
		access  string
		pidFile bool
	}{
		{name: "NotifyAccess=all", access: "all"},
		{name: "NotifyAccess=main with a PID file", access: "main", pidFile: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := unitConfig{access: tc.access, args: append([]string{"-db", dbPath(t), "-addr", "127.0.0.1:1", "-upgrade-timeout", "10s"}, drainFlags...)}
			if tc.pidFile {
				cfg.pidFile = filepath.Join(t.TempDir(), "demo.pid")
			}
			u := newFakeUnit(t, cfg)
			u.start()
			start := time.Now()
			for i := range unitReloads {
				if code, _ := reloadAndWait(t, u); code != exitOK {
					t.Fatalf("idle reload %d: the old server's exit status = %d, want %d", i, code, exitOK)
				}
			}
			idle := time.Since(start)

			l := startLoad(t, u.addr, unitLoadCallers)
			from := l.waitSuccesses(unitLoadCallers*reconnectEvery, time.Time{})
			start = time.Now()
			var successor int
			for i := range unitReloads {
				var code int
				if code, successor = reloadAndWait(t, u); code != exitOK {
					t.Fatalf("reload %d under load: the old server's exit status = %d, want %d", i, code, exitOK)
				}
			}
			loaded := time.Since(start)
			r := l.window(from, l.waitSuccesses(unitLoadCallers*reconnectEvery, time.Now()))
			l.stop()
			t.Logf("%d reloads idle in %v, %d under load in %v: %d calls, %d failed (e.g. %v), slowest %v",
				unitReloads, idle.Round(time.Millisecond), unitReloads, loaded.Round(time.Millisecond), r.calls, r.failed, r.sample, r.slowest)
			if r.failed != 0 {
				t.Errorf("%d of %d calls failed during the reloads (e.g. %v), want none", r.failed, r.calls, r.sample)
			}
			if tc.pidFile {
				if b, err := os.ReadFile(cfg.pidFile); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(successor) {
					t.Errorf("PID file holds %q (%v), want the main process %d", b, err, successor)
				}
			}
			checkUnitClean(t, u, 2*unitReloads)
			u.mu.Lock()
			leads := slices.Clone(u.leads)
			u.mu.Unlock()
			slices.Sort(leads)
			if len(leads) > 0 {
				t.Logf("from the MAINPID= of a successor to the old server's exit, over %d reloads: min %v, median %v, max %v",
					len(leads), leads[0], leads[len(leads)/2], leads[len(leads)-1])
			}

			u.stop(defaultTestTimeout)
			u.mu.Lock()
			code, ok := u.exits[successor]
			u.mu.Unlock()
			if !ok || code != exitOK {
				t.Errorf("the last server's exit status = %d (reaped %v), want %d", code, ok, exitOK)
			}
			if tc.pidFile {
				if _, err := os.Stat(cfg.pidFile); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("PID file after the stop: %v, want it removed", err)
				}
			}
			checkUnitClean(t, u, 2*unitReloads)
		})
	}
}

// A stop during the old server's drain after a reload, with a call in flight
// there: the call finishes, and both servers exit 0. The successor, the main
// process, exits only after the old server: systemd's final SIGTERM, sent
// when the main process exits, would be the old server's second signal,
// forcing its drain. The readiness delay keeps the successor's own drain
// longer than drain.SignalRepeatWindow, so that the final SIGTERM could not
// pass for the stop's, delivered twice. A reload while the old server drains
// is refused, with a record and a status line that say why.
func TestUnitStopDuringUpgradeDrain(t *testing.T) {
	const sleep = 3 * time.Second
	u := newFakeUnit(t, unitConfig{access: "all", args: []string{"-db", dbPath(t), "-addr", "127.0.0.1:1",
		"-readiness-delay=500ms", "-grace=10s", "-cancel-grace=1s", "-force-wait=1s", "-upgrade-timeout=10s"}})
	u.start()
	old := u.main()

	// A Sleep that the old server has accepted.
	_, slept := sendSleeps(t, u.addr, 1, sleep)
	sent := time.Now()

	u.reload()
	u.waitFor("the successor as main process", func() bool { return u.mainPID != old && u.state == "active" })
	successor := u.main()
	u.log.waitFor(defaultTestTimeout, "the old server's Graceful phase", isPhase("Graceful"))
	// The successor logs "serving" once Ready has returned: from then on a
	// reload is refused for its parent alone.
	if _, err := u.log.waitFor(defaultTestTimeout, "the successor's serving record", func(r record) bool {
		pid, _ := r["pid"].(float64)
		return r.str("msg") == "serving" && int(pid) == successor
	}); err != nil {
		t.Fatal(err)
	}

	// A reload while the old server drains.
	u.reload()
	rec, err := u.log.waitFor(defaultTestTimeout, "the refused reload", isMsg("upgrade refused: the server this one replaced still drains; reload once it has exited"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(rec.str("err"), "still drains") {
		t.Errorf("the refused reload's record: err %q", rec.str("err"))
	}
	u.waitFor("the status line of the refused reload", func() bool {
		return strings.HasPrefix(u.status, "reload refused: the server this one replaced still drains")
	})

	u.stop(sleep + defaultTestTimeout)
	took := time.Since(sent)
	select {
	case err := <-slept:
		if err != nil {
			t.Errorf("Sleep(%v) on the old server during the stop = %v, want nil", sleep, err)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatalf("Sleep still running %v after the stop", defaultTestTimeout)
	}
	u.mu.Lock()
	oldCode, okOld := u.exits[old]
	newCode, okNew := u.exits[successor]
	u.mu.Unlock()
	t.Logf("stopped %v after the reload, the old server exited %d, the successor %d", took.Round(time.Millisecond), oldCode, newCode)
	if !okOld || oldCode != exitOK || !okNew || newCode != exitOK {
		t.Errorf("exit statuses: old server %d (reaped %v), successor %d (reaped %v); want %d for both", oldCode, okOld, newCode, okNew, exitOK)
	}
	if got := u.log.find(isMsg("signal received during a drain that began without one: the drain goes on, a second signal forces it")); len(got) != 1 {
		t.Errorf("%d records of the old server taking the stop's SIGTERM as its first signal, want 1", len(got))
	}
	if got := u.log.find(isMsg("waiting for the server this one replaced to finish its drain")); len(got) != 1 {
		t.Errorf("%d records of the successor waiting for the old server, want 1", len(got))
	}
	checkUnitClean(t, u, 1)
}

// A successor that cannot write the PID file does not serve: the old server
// says why, serves on, and stays the main process; no message is dropped
// and the unit does not stop. Once the file can be written, a reload
// succeeds.
func TestUnitPIDFileFails(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg := unitConfig{access: "main", pidFile: filepath.Join(dir, "demo.pid"),
		args: append([]string{"-db", dbPath(t), "-addr", "127.0.0.1:1", "-upgrade-timeout", "10s"}, drainFlags...)}
	u := newFakeUnit(t, cfg)
	u.start()
	old := u.main()
	l := startLoad(t, u.addr, unitLoadCallers)
	from := l.waitSuccesses(unitLoadCallers*reconnectEvery, time.Time{})

	// The directory becomes a file: no PID file can be written there.
	if err := os.Rename(dir, dir+".moved"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	u.reload()
	rec, err := u.log.waitFor(defaultTestTimeout, "the upgrade's failure", isMsg("upgrade failed: the server serves on"))
	if err != nil {
		t.Fatal(err)
	}
	if e := rec.str("err"); !strings.Contains(e, "did not serve: upgrade: writing the PID file") {
		t.Errorf("the upgrade's failure: err %q, want the successor's reason", e)
	}
	u.waitFor("the reload's end", func() bool { return u.state == "active" && strings.Contains(u.status, "the last upgrade failed") })
	if got := u.main(); got != old {
		t.Errorf("main process %d after the failed upgrade, want %d", got, old)
	}
	l.waitSuccesses(unitLoadCallers*reconnectEvery, time.Now())

	os.Remove(dir)
	if err := os.Rename(dir+".moved", dir); err != nil {
		t.Fatal(err)
	}
	if code, _ := reloadAndWait(t, u); code != exitOK {
		t.Errorf("the old server's exit status = %d, want %d", code, exitOK)
	}
	r := l.window(from, l.waitSuccesses(unitLoadCallers*reconnectEvery, time.Now()))
	l.stop()
	if r.failed != 0 {
		t.Errorf("%d of %d calls failed (e.g. %v), want none", r.failed, r.calls, r.sample)
	}
	checkUnitClean(t, u, 1)
	u.stop(defaultTestTimeout)
}

// As PID 1 of its PID namespace (a container without an init), the server
// refuses SIGHUP with a record that says why, and serves on; SIGTERM then
// drains it. Skipped where no PID namespace can be created.
func TestUpgradeRefusedAsPID1(t *testing.T) {
	bin, _ := binaries(t)
	notify := newFakeSystemd(t)
	cmd := exec.Command(bin, "-log", "json", "-db", dbPath(t), "-addr", "127.0.0.1:0", "-readiness-delay=0s")
	cmd.Env = append(os.Environ(), notify.env())
	s := startInPIDNamespace(t, "pid1", cmd)
	rec := s.waitLog(`"serving" record`, isMsg("serving"))
	if pid, _ := rec["pid"].(float64); pid != 1 {
		t.Fatalf("serving record %v: pid %v, want 1", rec, rec["pid"])
	}
	s.addr = rec.str("addr")
	if m := notify.next(t); m["READY"] != "1" {
		t.Fatalf("first notification %v, want READY=1", m)
	}

	s.signal(syscall.SIGHUP)
	rec = s.waitLog("the refused upgrade", isMsg("upgrade refused: the server is PID 1, and its successor would be killed when it exits; restart it instead"))
	if !strings.Contains(rec.str("err"), "PID 1") {
		t.Errorf("the refused upgrade's record: err %q", rec.str("err"))
	}
	if m := notify.next(t); !strings.HasPrefix(m["STATUS"], "reload refused: the server is PID 1") || m["RELOADING"] != "" {
		t.Errorf("notification %v after SIGHUP, want a STATUS that says the reload was refused, and no RELOADING=1", m)
	}
	_, c := dial(t, s.addr)
	if err := echo(c, "after SIGHUP"); err != nil {
		t.Errorf("Echo() after the refused upgrade = %v, want nil", err)
	}
	if n := len(s.log.find(isMsg("upgrade: starting the successor"))); n != 0 {
		t.Errorf("%d upgrades started, want none", n)
	}
	sent := s.signal(syscall.SIGTERM)
	checkExit(t, s, sent, 0, time.Second+exitMargin, exitOK)
}

// A NOTIFY_SOCKET that cannot be used is said at start-up, and changes
// neither the drain's result nor the exit status.
func TestBadNotifySocket(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		name, addr, wantErr string
	}{
		{name: "missing", addr: filepath.Join(dir, "missing"), wantErr: "no such file or directory"},
		{name: "directory", addr: dir, wantErr: "not a socket"},
		{name: "vsock", addr: "vsock:2:1234", wantErr: "AF_VSOCK"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := startDemo(t, "A", demoStart{
				args: []string{"-db", dbPath(t), "-addr", "127.0.0.1:0", "-readiness-delay=0s"},
				env:  []string{"NOTIFY_SOCKET=" + tt.addr},
			})
			rec := s.waitLog("the NOTIFY_SOCKET warning", isMsg("NOTIFY_SOCKET cannot be used: systemd will hear nothing from the server"))
			if e := rec.str("err"); !strings.Contains(e, "NOTIFY_SOCKET="+tt.addr) || !strings.Contains(e, tt.wantErr) {
				t.Errorf("the warning's err %q, want it to name NOTIFY_SOCKET=%s and say %q", e, tt.addr, tt.wantErr)
			}
			sent := s.signal(syscall.SIGTERM)
			checkExit(t, s, sent, 0, time.Second+exitMargin, exitOK)
			if got := s.log.find(isMsg("telling systemd of the drain")); len(got) == 0 {
				t.Errorf("no record of the failed notifications of the drain")
			}
		})
	}
}

// A PID file that cannot be written at start-up: the server does not
// serve, and exits 1 saying why.
func TestPIDFileFailsAtStart(t *testing.T) {
	bin, _ := binaries(t)
	pidFile := filepath.Join(t.TempDir(), "missing", "demo.pid")
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "-log", "json", "-db", dbPath(t), "-addr", "127.0.0.1:0", "-pid-file", pidFile)
	out, err := cmd.CombinedOutput()
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Fatalf("exit status %d (%v), want 1; output:\n%s", code, err, out)
	}
	if !strings.Contains(string(out), `"msg":"exit"`) || !strings.Contains(string(out), "writing the PID file "+pidFile) {
		t.Errorf("output:\n%s\nwant an exit record that names the PID file", out)
	}
	if strings.Contains(string(out), `"msg":"serving"`) {
		t.Errorf("the server served; output:\n%s", out)
	}
}
