//go:build unix

package upgrade_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainkit/drainkit/upgrade"
)

const (
	// childEnv, set in the environment of the test binary, makes it run
	// as a server that upgrades, in the mode given, instead of the tests.
	childEnv = "DRAINKIT_UPGRADE_CHILD"
	// childTimeout bounds a run of the child and its successors.
	childTimeout = 30 * time.Second
	// readyTimeout is the children's ready timeout in the modes where the
	// successor never reports ready.
	readyTimeout = 500 * time.Millisecond
)

// An event is a line that a generation of the child prints.
type event struct {
	PID    int    `json:"pid"`
	Parent bool   `json:"parent"` // the process is a successor
	What   string `json:"what"`
	Source string `json:"source,omitempty"`
	Addr   string `json:"addr,omitempty"`
	Err    string `json:"err,omitempty"`
}

var stdoutMu sync.Mutex

func emit(u *upgrade.Upgrader, what string, e event) {
	e.PID, e.What, e.Parent = os.Getpid(), what, u != nil && u.HasParent()
	stdoutMu.Lock()
	defer stdoutMu.Unlock()
	json.NewEncoder(os.Stdout).Encode(e)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// upgradeChild is a server that upgrades once. In mode "ok" the successor
// reports ready; in "crash" it exits at once; in "hang" it never reports
// ready, and the parent tries two upgrades at once, then stops; in "badpid"
// the successor cannot write the PID file, and the first generation also
// asks for a Unix socket.
func upgradeChild(mode string) int {
	timeout := readyTimeout
	if mode == "stop" {
		timeout = childTimeout // Stop ends the upgrade, not the time-out
	}
	pidFile := os.Getenv("DRAINKIT_PID_FILE")
	u, err := upgrade.New(upgrade.WithReadyTimeout(timeout), upgrade.WithPIDFile(pidFile))
	if err != nil {
		emit(nil, "new", event{Err: err.Error()})
		return 1
	}
	if u.HasParent() && (mode == "crash" || mode == "readyrace") {
		return 3
	}
	if mode == "readyrace" {
		// Ready, then Upgrade at once, before tableflip's goroutine has
		// run (GOMAXPROCS=1): it then takes the readiness and the request
		// in either order, and refuses the request as too early if it
		// takes it first.
		if err := u.Ready(); err != nil {
			emit(u, "ready", event{Err: err.Error()})
			return 1
		}
		emit(u, "upgrade", event{Err: errString(u.Upgrade())})
		u.Stop()
		return 0
	}
	if u.HasParent() && mode == "stop" {
		// Tell the parent that the upgrade runs, and never be ready.
		syscall.Kill(os.Getppid(), syscall.SIGUSR1)
		time.Sleep(childTimeout) // killed by the parent before
		return 4
	}
	if u.HasParent() && mode == "hang" {
		time.Sleep(childTimeout) // killed by the parent before
		return 4
	}
	if mode == "badpid" && !u.HasParent() {
		_, _, err := u.Listen("unix", filepath.Join(os.TempDir(), "drainkit-upgrade-test.sock"))
		emit(u, "listen unix", event{Err: errString(err)})
	}
	lis, src, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		emit(u, "listen", event{Err: err.Error()})
		return 1
	}
	defer lis.Close()
	emit(u, "listen", event{Source: string(src), Addr: lis.Addr().String()})
	if !u.HasParent() {
		emit(u, "before ready", event{Err: errString(u.Upgrade())})
		emit(u, "upgradable before ready", event{Err: errString(u.Upgradable())})
	}
	if err := u.Ready(); err != nil {
		emit(u, "ready", event{Err: err.Error()})
		return 1
	}
	if u.HasParent() {
		// The parent waits for this signal before it exits.
		emit(u, "parent learns the PID", event{Err: strconv.FormatBool(u.ParentLearnsPID())})
		emit(u, "upgradable while the parent runs", event{Err: errString(u.Upgradable())})
		syscall.Kill(os.Getppid(), syscall.SIGUSR1)
		ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
		emit(u, "wait for parent", event{Err: errString(u.WaitForParent(ctx))})
		cancel()
		emit(u, "upgradable once the parent exited", event{Err: errString(u.Upgradable())})
		// The successor serves one connection, and stops.
		c, err := lis.Accept()
		if err == nil {
			fmt.Fprintf(c, "%d\n", os.Getpid())
			c.Close()
		}
		u.Stop()
		return 0
	}
	if mode == "hang" {
		// Two upgrades at once: one runs, the other is refused.
		errs := make(chan error, 2)
		for range 2 {
			go func() { errs <- u.Upgrade() }()
		}
		a, b := <-errs, <-errs
		if errors.Is(a, upgrade.ErrInProgress) {
			a, b = b, a
		}
		emit(u, "second upgrade", event{Err: errString(b)})
		emit(u, "first upgrade", event{Err: errString(a)})
		u.Stop()
		emit(u, "after stop", event{Err: errString(u.Upgrade())})
		return 0
	}
	if mode == "stop" {
		started := make(chan os.Signal, 1)
		signal.Notify(started, syscall.SIGUSR1)
		upgraded := make(chan error, 1)
		go func() { upgraded <- u.Upgrade() }()
		<-started
		u.Stop()
		emit(u, "upgrade", event{Err: errString(<-upgraded)})
		return 0
	}
	if mode == "badpid" {
		// The PID file's directory becomes a file: the successor cannot
		// write the PID file there.
		dir := filepath.Dir(pidFile)
		os.Rename(dir, dir+".moved")
		os.WriteFile(dir, nil, 0o600)
		emit(u, "upgrade", event{Err: errString(u.Upgrade())})
		os.Remove(dir)
		os.Rename(dir+".moved", dir)
		emit(u, "upgradable", event{Err: errString(u.Upgradable())})
		u.Stop()
		return 0
	}
	emit(u, "upgradable", event{Err: errString(u.Upgradable())})
	successorChecked := make(chan os.Signal, 1)
	signal.Notify(successorChecked, syscall.SIGUSR1)
	err = u.Upgrade()
	emit(u, "upgrade", event{Err: errString(err)})
	if err == nil {
		select {
		case <-successorChecked:
		case <-time.After(childTimeout):
		}
	}
	if err == nil {
		u.Stop() // as a drain that follows does
		emit(u, "again", event{Err: errString(u.Upgrade())})
		pid, err := u.SuccessorPID()
		emit(u, "successor", event{Addr: strconv.Itoa(pid), Err: errString(err)})
	}
	u.Stop()
	return 0
}

// runUpgrade runs the child in mode and returns its events, those of its
// successor included, once every generation has exited. onListen, if not
// nil, is called with the address of the first generation's listener.
func runUpgrade(t *testing.T, mode string, onListen func(addr string)) []event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), childTimeout)
	defer cancel()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, exe, "-test.run=^$")
	pidFile := filepath.Join(t.TempDir(), "run", "pid")
	if err := os.Mkdir(filepath.Dir(pidFile), 0o700); err != nil {
		t.Fatal(err)
	}
	cmd.Env = append(os.Environ(), childEnv+"="+mode, "GORACE=atexit_sleep_ms=0", "DRAINKIT_PID_FILE="+pidFile)
	if mode == "readyrace" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS=1")
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Standard output ends when every generation has exited.
	var events []event
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Errorf("child output %q: %v", sc.Text(), err)
			continue
		}
		events = append(events, e)
		if e.What == "listen" && !e.Parent && onListen != nil {
			go onListen(e.Addr)
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Errorf("child: %v", err)
	}
	// Every generation has exited: none left its PID file behind.
	if b, err := os.ReadFile(pidFile); err == nil {
		t.Errorf("PID file %s holds %q after every process exited, want it removed", pidFile, b)
	}
	return events
}

func find(events []event, what string, successor bool) (event, bool) {
	for _, e := range events {
		if e.What == what && e.Parent == successor {
			return e, true
		}
	}
	return event{}, false
}

func TestUpgrade(t *testing.T) {
	answered := make(chan string, 1)
	events := runUpgrade(t, "ok", func(addr string) {
		// Served by the successor, on the socket the first generation
		// opened: the connection waits in the backlog until it accepts.
		c, err := net.DialTimeout("tcp", addr, childTimeout)
		if err != nil {
			answered <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(childTimeout))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			answered <- err.Error()
			return
		}
		answered <- strings.TrimSpace(line)
	})
	first, ok1 := find(events, "listen", false)
	second, ok2 := find(events, "listen", true)
	if !ok1 || !ok2 {
		t.Fatalf("events %+v: want a listener in each generation", events)
	}
	if first.Source != "listen" || second.Source != string(upgrade.SourceUpgrade) {
		t.Errorf("listener sources: %q then %q, want %q then %q", first.Source, second.Source, "listen", upgrade.SourceUpgrade)
	}
	if first.Addr != second.Addr {
		t.Errorf("the successor listens on %s, want the inherited %s", second.Addr, first.Addr)
	}
	if e, _ := find(events, "before ready", false); e.Err != upgrade.ErrNotReady.Error() {
		t.Errorf("Upgrade() before Ready() = %q, want %v", e.Err, upgrade.ErrNotReady)
	}
	if e, _ := find(events, "upgradable before ready", false); e.Err != upgrade.ErrNotReady.Error() {
		t.Errorf("Upgradable() before Ready() = %q, want %v", e.Err, upgrade.ErrNotReady)
	}
	if e, _ := find(events, "upgradable", false); e.Err != "" {
		t.Errorf("Upgradable() after Ready() = %q, want nil", e.Err)
	}
	if e, _ := find(events, "upgrade", false); e.Err != "" {
		t.Errorf("Upgrade() = %s, want nil", e.Err)
	}
	if e, _ := find(events, "again", false); !strings.Contains(e.Err, upgrade.ErrUpgraded.Error()) {
		t.Errorf("Upgrade() after an upgrade and Stop() = %q, want %v", e.Err, upgrade.ErrUpgraded)
	}
	if e, _ := find(events, "successor", false); e.Err != "" || e.Addr != strconv.Itoa(second.PID) {
		t.Errorf("SuccessorPID() = %s, %q; want %d, nil", e.Addr, e.Err, second.PID)
	}
	if got := <-answered; got != strconv.Itoa(second.PID) {
		t.Errorf("the connection was answered by %q, want the successor %d", got, second.PID)
	}
	if e, _ := find(events, "upgradable while the parent runs", true); e.Err != upgrade.ErrParentDraining.Error() {
		t.Errorf("the successor's Upgradable() while its parent runs = %q, want %v", e.Err, upgrade.ErrParentDraining)
	}
	if e, _ := find(events, "parent learns the PID", true); e.Err != "true" {
		t.Errorf("the successor's ParentLearnsPID() = %s, want true", e.Err)
	}
	if e, _ := find(events, "wait for parent", true); e.Err != "" {
		t.Errorf("the successor's WaitForParent() = %q, want nil", e.Err)
	}
	if e, _ := find(events, "upgradable once the parent exited", true); e.Err != "" {
		t.Errorf("the successor's Upgradable() once its parent exited = %q, want nil", e.Err)
	}
}

func TestUpgradeSuccessorCrashes(t *testing.T) {
	events := runUpgrade(t, "crash", nil)
	e, ok := find(events, "upgrade", false)
	if !ok || !strings.Contains(e.Err, "exited") || !strings.Contains(e.Err, "exit status 3") {
		t.Errorf("Upgrade() with a successor that exits 3 = %q, want an error saying it exited with status 3", e.Err)
	}
}

// TestUpgradeRightAfterReady calls Upgrade the moment Ready returns, before
// tableflip's goroutine has run, in 16 processes: that goroutine takes the
// readiness and the request in either order, with even odds, and refuses
// the request if it takes it first. The
// Upgrader must ask again, so that every upgrade starts the successor (which
// exits at once). Without that, the test passes with a probability of 2^-16.
func TestUpgradeRightAfterReady(t *testing.T) {
	for i := range 16 {
		events := runUpgrade(t, "readyrace", nil)
		e, ok := find(events, "upgrade", false)
		if !ok || !strings.Contains(e.Err, "exit status 3") {
			t.Fatalf("run %d: Upgrade() right after Ready() = %q, want the successor started (it exits with status 3)", i, e.Err)
		}
	}
}

func TestUpgradeSuccessorNeverReady(t *testing.T) {
	start := time.Now()
	events := runUpgrade(t, "hang", nil)
	if e, _ := find(events, "second upgrade", false); e.Err != upgrade.ErrInProgress.Error() {
		t.Errorf("a second Upgrade() during the first = %q, want %v", e.Err, upgrade.ErrInProgress)
	}
	if e, _ := find(events, "first upgrade", false); !strings.Contains(e.Err, "timed out") {
		t.Errorf("Upgrade() with a successor never ready = %q, want a time-out", e.Err)
	}
	if e, _ := find(events, "after stop", false); e.Err != upgrade.ErrStopped.Error() {
		t.Errorf("Upgrade() after Stop() = %q, want %v", e.Err, upgrade.ErrStopped)
	}
	// The successor, killed at the time-out, held standard output too.
	if took := time.Since(start); took > childTimeout/2 {
		t.Errorf("the run took %v: the successor was not killed at the time-out %v", took, readyTimeout)
	}
}

func TestUpgradeStopped(t *testing.T) {
	start := time.Now()
	events := runUpgrade(t, "stop", nil)
	if e, _ := find(events, "upgrade", false); !strings.HasPrefix(e.Err, upgrade.ErrStopped.Error()) {
		t.Errorf("Upgrade() ended by Stop() = %q, want %v", e.Err, upgrade.ErrStopped)
	}
	// The successor, killed by Stop, held standard output too.
	if took := time.Since(start); took > childTimeout/2 {
		t.Errorf("the run took %v: Stop did not kill the successor", took)
	}
}

func TestOptionsPanic(t *testing.T) {
	for _, tt := range []struct {
		name string
		opt  func()
	}{
		{name: "zero ready timeout", opt: func() { upgrade.WithReadyTimeout(0) }},
		{name: "empty PID file", opt: func() { upgrade.WithPIDFile("") }},
	} {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic, want one", tt.name)
				}
			}()
			tt.opt()
		})
	}
}

// TestUpgradePIDFileFails runs an upgrade whose successor cannot write the
// PID file: the successor does not report ready, the parent's Upgrade says
// why and the parent may upgrade again. It also checks that a Unix socket
// is refused, as tableflip would remove its path.
func TestUpgradePIDFileFails(t *testing.T) {
	events := runUpgrade(t, "badpid", nil)
	if e, _ := find(events, "listen unix", false); !strings.Contains(e.Err, "only TCP listeners") {
		t.Errorf("Listen(\"unix\") = %q, want it refused", e.Err)
	}
	if e, _ := find(events, "ready", true); !strings.Contains(e.Err, "PID file") {
		t.Errorf("the successor's Ready() = %q, want the PID file's error", e.Err)
	}
	if e, ok := find(events, "upgrade", false); !ok || !strings.Contains(e.Err, "did not serve: upgrade: writing the PID file") {
		t.Errorf("Upgrade() = %q, want an error that gives the successor's reason", e.Err)
	}
	if e, _ := find(events, "upgradable", false); e.Err != "" {
		t.Errorf("Upgradable() after the failed upgrade = %q, want nil", e.Err)
	}
}
