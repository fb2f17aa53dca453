//go:build linux

package process_test

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// SIGHUP and a stop 1 to 80ms apart, in either order, under a unit that plays
// systemd: the unit ends inactive without stopping by itself, every process
// of it exits 0, and the PID file is gone.
func TestUnitSignalsCrossed(t *testing.T) {
	for _, tc := range []struct {
		name        string
		hupFirst    bool
		access      string
		withPIDFile bool
		gap         time.Duration
	}{
		{name: "SIGHUP then stop", hupFirst: true, access: "all", gap: time.Millisecond},
		{name: "SIGHUP then stop 20ms later", hupFirst: true, access: "all", gap: 20 * time.Millisecond},
		{name: "SIGHUP then stop 40ms later", hupFirst: true, access: "main", withPIDFile: true, gap: 40 * time.Millisecond},
		{name: "SIGHUP then stop 80ms later", hupFirst: true, access: "main", withPIDFile: true, gap: 80 * time.Millisecond},
		{name: "stop then SIGHUP", access: "all"},
		{name: "SIGHUP then stop, NotifyAccess=main", hupFirst: true, access: "main", withPIDFile: true, gap: time.Millisecond},
		{name: "stop then SIGHUP, NotifyAccess=main", access: "main", withPIDFile: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := unitConfig{access: tc.access, args: []string{"-db", dbPath(t), "-addr", "127.0.0.1:1",
				"-readiness-delay=0s", "-grace=2s", "-cancel-grace=200ms", "-force-wait=200ms", "-upgrade-timeout=10s"}}
			if tc.withPIDFile {
				cfg.pidFile = filepath.Join(t.TempDir(), "demo.pid")
			}
			u := newFakeUnit(t, cfg)
			u.start()
			main := u.main()
			if tc.hupFirst {
				syscall.Kill(main, syscall.SIGHUP)
				time.Sleep(tc.gap) // the gap under test, not a synchronisation
				u.stop(defaultTestTimeout)
			} else {
				done := make(chan struct{})
				go func() {
					defer close(done)
					u.stop(defaultTestTimeout)
				}()
				u.waitFor("the stop", func() bool { return u.stopAsked })
				time.Sleep(time.Millisecond) // the gap under test, not a synchronisation
				syscall.Kill(main, syscall.SIGHUP)
				<-done
			}
			u.mu.Lock()
			defer u.mu.Unlock()
			t.Logf("main process changes: %d; exits: %v", u.mainChanges, u.exits)
			if len(u.stops) != 0 {
				t.Errorf("the unit stopped by itself: %q", u.stops)
			}
			for pid, code := range u.exits {
				if code != exitOK {
					t.Errorf("process %d exited %d, want %d", pid, code, exitOK)
				}
			}
			if n := len(unitProcesses()); n != 0 {
				t.Errorf("%d processes left", n)
			}
			if tc.withPIDFile {
				if b, err := os.ReadFile(cfg.pidFile); err == nil {
					t.Errorf("the PID file names %q after the stop, want it removed", b)
				}
			}
		})
	}
}
