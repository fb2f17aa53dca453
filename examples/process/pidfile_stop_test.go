//go:build linux

package process_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SIGTERM during an upgrade whose successor has written the PID file but
// not yet reported ready: the successor is killed, and the server removes
// the PID file, which names a process that no longer serves, as it exits.
func TestUpgradeInterruptedAfterPIDFile(t *testing.T) {
	bin := installDemo(t)
	_, socket := heldSocket(t)
	pidFile := filepath.Join(t.TempDir(), "demo.pid")
	s := startDemo(t, "A", demoStart{
		bin:    bin.path,
		args:   append([]string{"-db", dbPath(t), "-pid-file", pidFile, "-upgrade-timeout=1m"}, drainFlags...),
		socket: socket,
	})
	// The successor writes the PID file as the real one does in Ready,
	// and stops there: the instant before it reports ready.
	bin.replace(`echo $$ > ` + pidFile + "\n" + started + "\nexec sleep 3600")
	s.signal(syscall.SIGHUP)
	s.waitLog("the successor's start", isMsg(successorStarted))
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatalf("the PID file: %v", err)
	}
	successor, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if successor == 0 || successor == s.cmd.Process.Pid {
		t.Fatalf("the PID file names %q, want the successor", b)
	}
	sent := s.signal(syscall.SIGTERM)
	checkExit(t, s, sent, 0, time.Second+exitMargin, exitOK)
	if b, err := os.ReadFile(pidFile); err == nil {
		t.Errorf("the PID file still names %s after the server and its killed successor (%d) exited", strings.TrimSpace(string(b)), successor)
	}
}
