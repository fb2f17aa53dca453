//go:build linux

package process_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// successorStarted is the record that the stand-in successors write.
const successorStarted = "successor started"

// installedDemo is the demo server's binary at a path of the test's own, as
// an upgrade finds it: replace puts another program there.
type installedDemo struct {
	t    *testing.T
	path string
	real string
}

func installDemo(t *testing.T) *installedDemo {
	t.Helper()
	real, _ := binaries(t)
	d := &installedDemo{t: t, path: filepath.Join(t.TempDir(), "drainkit-demo"), real: real}
	d.restore()
	return d
}

// replace installs a shell script in place of the demo server.
func (d *installedDemo) replace(script string) {
	d.t.Helper()
	tmp := d.path + ".new"
	if err := os.WriteFile(tmp, []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, d.path); err != nil {
		d.t.Fatal(err)
	}
}

// restore installs the demo server again.
func (d *installedDemo) restore() {
	d.t.Helper()
	tmp := d.path + ".new"
	if err := os.Symlink(d.real, tmp); err != nil {
		d.t.Fatal(err)
	}
	if err := os.Rename(tmp, d.path); err != nil {
		d.t.Fatal(err)
	}
}

// started is a script line that writes the successorStarted record to
// standard error, which the successor shares with the server.
const started = `echo '{"msg":"` + successorStarted + `"}' >&2`

// A successor that exits at once: the server says why, serves on, tells
// systemd it is ready again, and a later upgrade succeeds. No call fails.
func TestUpgradeSuccessorCrashes(t *testing.T) {
	bin := installDemo(t)
	notify := newFakeSystemd(t)
	addr, socket := heldSocket(t)
	s := startDemo(t, "A", demoStart{
		bin:    bin.path,
		args:   append([]string{"-db", dbPath(t), "-upgrade-timeout", "10s"}, drainFlags...),
		socket: socket,
		env:    []string{notify.env()},
	})
	notify.next(t) // READY=1
	l := startLoad(t, addr, loadCallers)
	from := l.waitSuccesses(loadCallers, time.Time{})

	bin.replace(started + "\nexit 3")
	s.signal(syscall.SIGHUP)
	rec := s.waitLog("the upgrade's failure", isMsg("upgrade failed: the server serves on"))
	if err := rec.str("err"); !strings.Contains(err, "exit status 3") {
		t.Errorf("the upgrade's failure: err %q, want the successor's exit status 3", err)
	}
	if m := notify.next(t); m["RELOADING"] != "1" {
		t.Errorf("notification %v at SIGHUP, want RELOADING=1", m)
	}
	if m := notify.next(t); m["READY"] != "1" || !strings.Contains(m["STATUS"], "the last upgrade failed") {
		t.Errorf("notification %v after the failure, want READY=1 and a STATUS that says the upgrade failed", m)
	}
	l.waitSuccesses(loadCallers*reconnectEvery, time.Now())

	// The program fixed, the upgrade succeeds.
	bin.restore()
	s.signal(syscall.SIGHUP)
	s.waitLog("the upgrade's success", isMsg("upgrade: the successor serves, draining"))
	select {
	case <-s.exited:
	case <-time.After(startTimeout):
		t.Fatalf("server A still runs %v after the upgrade", startTimeout)
	}
	if code := s.state.ExitCode(); code != exitOK {
		t.Errorf("server A exit status = %d, want %d", code, exitOK)
	}
	r := l.window(from, l.waitSuccesses(loadCallers*reconnectEvery, time.Now()))
	l.stop()
	if r.failed != 0 {
		t.Errorf("%d of %d calls failed (e.g. %v), want none", r.failed, r.calls, r.sample)
	}
}

// A successor that never reports ready is killed at -upgrade-timeout, and
// the server serves on; a second SIGHUP meanwhile is ignored. No call fails.
func TestUpgradeSuccessorNeverReady(t *testing.T) {
	const upgradeTimeout = time.Second
	bin := installDemo(t)
	addr, socket := heldSocket(t)
	s := startDemo(t, "A", demoStart{
		bin:    bin.path,
		args:   append([]string{"-db", dbPath(t), "-upgrade-timeout", upgradeTimeout.String()}, drainFlags...),
		socket: socket,
	})
	l := startLoad(t, addr, loadCallers)
	from := l.waitSuccesses(loadCallers, time.Time{})

	bin.replace(started + "\nexec sleep 3600")
	s.signal(syscall.SIGHUP)
	s.waitLog("the successor's start", isMsg(successorStarted))
	s.signal(syscall.SIGHUP)
	s.waitLog("the second SIGHUP's record", isMsg("signal during an upgrade, ignored"))
	rec := s.waitLog("the upgrade's failure", isMsg("upgrade failed: the server serves on"))
	if err := rec.str("err"); !strings.Contains(err, "timed out") {
		t.Errorf("the upgrade's failure: err %q, want a time-out", err)
	}
	if n := len(s.log.find(isMsg("upgrade: starting the successor"))); n != 1 {
		t.Errorf("%d upgrades started, want 1: the second SIGHUP came during the first", n)
	}
	r := l.window(from, l.waitSuccesses(loadCallers*reconnectEvery, time.Now()))
	l.stop()
	if r.failed != 0 {
		t.Errorf("%d of %d calls failed (e.g. %v), want none", r.failed, r.calls, r.sample)
	}

	// The server drains as usual; the log, which the successor shared,
	// ends: the successor was killed.
	sent := s.signal(syscall.SIGTERM)
	checkExit(t, s, sent, 0, time.Second+exitMargin, exitOK)
}

// SIGTERM during an upgrade abandons it: the successor, not yet ready, is
// killed, and the server drains and exits well before -upgrade-timeout.
func TestUpgradeInterruptedBySIGTERM(t *testing.T) {
	const upgradeTimeout = time.Minute
	bin := installDemo(t)
	_, socket := heldSocket(t)
	s := startDemo(t, "A", demoStart{
		bin:    bin.path,
		args:   append([]string{"-db", dbPath(t), "-upgrade-timeout", upgradeTimeout.String()}, drainFlags...),
		socket: socket,
	})
	bin.replace(started + "\nexec sleep 3600")
	s.signal(syscall.SIGHUP)
	s.waitLog("the successor's start", isMsg(successorStarted))
	sent := s.signal(syscall.SIGTERM)
	// The log, which the successor shared, ends: the successor was killed.
	checkExit(t, s, sent, 0, time.Second+exitMargin, exitOK)
	rec := s.waitLog("the abandoned upgrade's record", isMsg("upgrade abandoned: the server drains"))
	if err := rec.str("err"); !strings.Contains(err, "successor killed") {
		t.Errorf("the abandoned upgrade's record: err %q, want it to say the successor was killed", err)
	}
}

// The calls in flight on the old server when its successor takes over end
// normally during its drain, and a SIGHUP sent to the old server while it
// drains is refused.
func TestUpgradeInFlightCallsFinish(t *testing.T) {
	const sleep = 2 * time.Second
	addr, socket := heldSocket(t)
	s := startDemo(t, "A", demoStart{
		args:   []string{"-db", dbPath(t), "-readiness-delay=0s", "-grace=20s", "-upgrade-timeout=10s"},
		socket: socket,
	})

	// A Sleep that the old server has accepted.
	c, slept := sendSleeps(t, addr, 1, sleep)

	s.signal(syscall.SIGHUP)
	s.waitLog("the upgrade's success", isMsg("upgrade: the successor serves, draining"))
	s.waitLog("the old server's Graceful phase", isPhase("Graceful"))
	s.signal(syscall.SIGHUP)
	rec := s.waitLog("the refused upgrade", isMsg("upgrade refused: the server was upgraded and drains"))
	if !strings.Contains(rec.str("err"), "already upgraded") {
		t.Errorf("the refused upgrade's record: err %q, want %q", rec.str("err"), "already upgraded")
	}
	if n := len(s.log.find(isMsg("upgrade: starting the successor"))); n != 1 {
		t.Errorf("%d records of an upgrade starting, want 1: the second SIGHUP was refused", n)
	}

	select {
	case err := <-slept:
		if err != nil {
			t.Errorf("Sleep(%v) in flight during the upgrade = %v, want nil", sleep, err)
		}
	case <-time.After(sleep + defaultTestTimeout):
		t.Fatalf("Sleep(%v) still running %v later", sleep, sleep+defaultTestTimeout)
	}
	select {
	case <-s.exited:
	case <-time.After(defaultTestTimeout):
		t.Fatalf("server A still runs %v after its last call ended", defaultTestTimeout)
	}
	if code := s.state.ExitCode(); code != exitOK {
		t.Errorf("server A exit status = %d, want %d", code, exitOK)
	}
	// The successor serves on.
	if err := echo(c, "after the upgrade"); err != nil {
		t.Errorf("Echo() after the upgrade = %v, want nil", err)
	}
}
