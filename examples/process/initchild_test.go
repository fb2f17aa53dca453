//go:build linux

package process_test

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// As the one child of a container's minimal init (docker run --init: tini,
// dumb-init, or here a shell that waits for it as PID 1 of a new PID
// namespace), the server is not PID 1, but its exit ends the init, and the
// kernel then kills every process of the namespace, a successor included.
// It refuses SIGHUP with a record that says why, and serves on. Skipped
// where no PID namespace can be created.
func TestUpgradeRefusedUnderContainerInit(t *testing.T) {
	bin, _ := binaries(t)
	cmd := exec.Command("sh", "-c", `"$0" "$@" & wait $!`, bin, "-log", "json", "-db", dbPath(t), "-addr", "127.0.0.1:0", "-readiness-delay=0s")
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET=")
	s := startInPIDNamespace(t, "init child", cmd)
	rec := s.waitLog(`"serving" record`, isMsg("serving"))
	if pid, _ := rec["pid"].(float64); pid == 1 {
		t.Fatalf("serving record %v: pid 1, want the init's child", rec)
	}
	s.addr = rec.str("addr")
	// The server's process ID outside the namespace: the init's one child.
	b, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/task/" + strconv.Itoa(cmd.Process.Pid) + "/children")
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("the children of the init: %q", b)
	}

	syscall.Kill(pid, syscall.SIGHUP)
	s.waitLog("the refused upgrade", isMsg("upgrade refused: the server is the main process of a container (under an init such as docker run --init), and its successor would be killed when it exits; restart it instead"))
	if n := len(s.log.find(isMsg("upgrade: starting the successor"))); n != 0 {
		t.Errorf("%d upgrades started, want none", n)
	}
	_, c := dial(t, s.addr)
	if err := echo(c, "after SIGHUP"); err != nil {
		t.Errorf("Echo() after the refused upgrade = %v, want nil", err)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	if _, code := s.wait(defaultTestTimeout); code != exitOK {
		t.Errorf("exit status of the init = %d, want %d", code, exitOK)
	}
}
