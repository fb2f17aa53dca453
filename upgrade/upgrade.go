package upgrade

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudflare/tableflip"

	"github.com/drainkit/drainkit/systemd"
)

// SourceUpgrade is the Source of a listener inherited from the process that
// started this one in an upgrade.
const SourceUpgrade systemd.Source = "upgrade"

var (
	// ErrInProgress is returned by Upgrade while another upgrade runs.
	ErrInProgress = errors.New("upgrade: an upgrade is already in progress")
	// ErrUpgraded is returned by Upgrade once an upgrade has succeeded:
	// the process is being replaced.
	ErrUpgraded = errors.New("upgrade: already upgraded")
	// ErrStopped is returned by Upgrade after Stop (unless an upgrade
	// succeeded before: ErrUpgraded), and wrapped by the error of an
	// upgrade that Stop ended.
	ErrStopped = errors.New("upgrade: stopped")
	// ErrNotReady is returned by Upgrade before Ready: a process that
	// does not serve yet is not replaced.
	ErrNotReady = errors.New("upgrade: the process has not reported ready")
	// ErrParentDraining is returned by Upgrade while the process that
	// this one replaced still runs: tableflip starts no successor before
	// its parent has exited.
	ErrParentDraining = errors.New("upgrade: the process this one replaced still drains")
	// ErrPID1 is returned by Upgrade in a process that is PID 1 of its PID
	// namespace (a container's first process): when it exits after the
	// upgrade, the kernel kills every other process of the namespace, the
	// successor included.
	ErrPID1 = errors.New("upgrade: the process is PID 1, and its successor would be killed when it exits")
	// ErrContainerInit is returned by Upgrade in the one process that a
	// container's minimal init runs (docker run --init, tini, dumb-init:
	// its parent is PID 1 of a PID namespace of its own, and no service
	// manager watches it, NOTIFY_SOCKET being unset), and in a process
	// whose parent lies outside its PID namespace (the first process of a
	// container that shares its pod's): when it exits, the init exits, or
	// the container runtime ends the container, and the successor is
	// killed.
	ErrContainerInit = errors.New("upgrade: the process is the main process of a container, whose end would kill its successor")
	// ErrNoSuccessorPID is returned by SuccessorPID when no successor has
	// reported its process ID.
	ErrNoSuccessorPID = errors.New("upgrade: no successor reported its process ID")
)

const (
	// tableflipNotReady is the message of tableflip's refusal of an
	// upgrade before its goroutine has taken the readiness in (errNotReady
	// in tableflip v1.2.3).
	tableflipNotReady = "process is not ready yet"
	// tableflipParentRunning is the message of its refusal before its
	// goroutine has taken the parent's exit in.
	tableflipParentRunning = "parent hasn't exited"
	// maxNotReady bounds the requests Upgrade repeats after either
	// refusal: each is taken first with even odds once tableflip's
	// goroutine can see the event.
	maxNotReady = 64
	// notReadyPause is the pause between the last half of those requests,
	// for a goroutine of tableflip's that has not run yet: at most 32ms in
	// all.
	notReadyPause = time.Millisecond
	// reportName is the name under which the parent passes the successor
	// the write end of a pipe, on which the successor reports its process
	// ID and whether it is ready, before it tells tableflip.
	reportName = "drainkit-upgrade-report"
	// maxReport bounds a report, which one write of less than PIPE_BUF
	// keeps whole.
	maxReport = 1024
)

// An Upgrader starts the successor of the process and hands it the
// listening sockets; see the package documentation. Create it with New; a
// process has at most one. Its methods are safe for concurrent use.
type Upgrader struct {
	tf *tableflip.Upgrader
	o  options

	report       *os.File      // the successor's end of its parent's report pipe, or nil
	parentExited chan struct{} // closed when the parent has exited (at once without one)

	mu        sync.Mutex
	ready     bool // Ready was called; guarded by mu
	running   bool // an upgrade runs; guarded by mu
	upgraded  bool // guarded by mu
	stopped   bool // guarded by mu
	successor int  // the process ID the successor reported; guarded by mu
	reported  bool // this process wrote its report; guarded by mu
	// upgradeDone is closed when the upgrade that runs has its result;
	// guarded by mu.
	upgradeDone chan struct{}
}

// New returns the process's Upgrader. When the process is the successor in
// an upgrade, it takes the sockets that its parent passed. It returns an
// error if an Upgrader already exists in the process, or if the sockets
// passed cannot be read. It panics if an option is nil, naming it.
func New(opts ...Option) (*Upgrader, error) {
	o := defaultOptions()
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("upgrade: New: option %d is nil", i))
		}
		opt.apply(&o)
	}
	// The PID file is the Upgrader's to write, not tableflip's: when the
	// write fails, tableflip says nothing to the parent, which then waits
	// for its whole ready timeout; Ready tells it at once, and why.
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: o.readyTimeout})
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	u := &Upgrader{tf: tf, o: o, parentExited: make(chan struct{})}
	if !tf.HasParent() {
		close(u.parentExited)
		return u, nil
	}
	// A parent of an older version passes no report pipe: report is nil.
	if u.report, err = tf.File(reportName); err != nil {
		return nil, fmt.Errorf("upgrade: the parent's report pipe: %w", err)
	}
	go func() {
		// Returns when the parent has exited, whatever the error says.
		tf.WaitForParent(context.Background())
		close(u.parentExited)
	}()
	return u, nil
}

// HasParent reports whether the process is the successor in an upgrade.
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

// ParentLearnsPID reports whether the process is the successor of a parent
// that learns its process ID from Ready, and can therefore hand the service
// over to it (see SuccessorPID). A parent built with an older version of
// this package passes no report pipe: its successor must then tell its
// supervisor itself that it is the main process.
func (u *Upgrader) ParentLearnsPID() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.tf.HasParent() && (u.report != nil || u.reported)
}

// Listen returns the listener for network and addr: the one inherited from
// the parent in an upgrade, with SourceUpgrade, or else the one that
// systemd.Listen returns (systemd's socket or a new one). The Upgrader keeps
// a copy of it, to pass to a successor, until Stop or a successful upgrade.
//
// network and addr name the listener between the generations: a successor
// asks with the same values, since it runs with the same arguments. addr
// is not used when the socket comes from systemd or from the parent.
//
// Only TCP listeners are handed over ("tcp", "tcp4", "tcp6"): tableflip
// removes the path of a Unix socket it passed on when it stops, which would
// cut the socket of systemd, or of the successor, off from its clients.
func (u *Upgrader) Listen(network, addr string) (net.Listener, systemd.Source, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, "", fmt.Errorf("upgrade: Listen(%q, %q): only TCP listeners are handed over to a successor", network, addr)
	}
	lis, err := u.tf.Listener(network, addr)
	if err != nil {
		return nil, "", fmt.Errorf("upgrade: inheriting the listener: %w", err)
	}
	if lis != nil {
		return lis, SourceUpgrade, nil
	}
	lis, src, err := systemd.Listen(network, addr)
	if err != nil {
		return nil, "", err
	}
	sc, ok := lis.(tableflip.Listener)
	if !ok {
		lis.Close()
		return nil, "", fmt.Errorf("upgrade: a %T cannot be passed to another process", lis)
	}
	if err := u.tf.AddListener(network, addr, sc); err != nil {
		lis.Close()
		return nil, "", fmt.Errorf("upgrade: %w", err)
	}
	return lis, src, nil
}

// Ready tells the parent, if any, that this process serves, so that it may
// drain; the parent's Upgrade returns nil. It first writes the PID file given
// by WithPIDFile; if that fails, Ready reports the failure to the parent,
// whose Upgrade returns an error that says why, tells tableflip nothing, and
// returns the error: the process is to exit without serving, since the
// service's supervisor would follow a PID file that does not name it. Then
// it reports its process ID to the parent (see SuccessorPID), and only then
// tells tableflip, whose message ends the parent's wait. Call it once the
// server accepts connections, before its first Accept.
func (u *Upgrader) Ready() error {
	if u.o.pidFile != "" {
		if err := writePIDFile(u.o.pidFile); err != nil {
			u.sendReport("failed " + err.Error())
			return err
		}
	}
	u.sendReport("ready")
	if err := u.tf.Ready(); err != nil {
		return fmt.Errorf("upgrade: %w", err)
	}
	// Only now: Upgradable must not say yes before tableflip has taken the
	// readiness in.
	u.mu.Lock()
	u.ready = true
	u.mu.Unlock()
	return nil
}

// sendReport writes "<pid> <what>" on the parent's report pipe, once, and
// closes it. A parent that passed none hears nothing.
func (u *Upgrader) sendReport(what string) {
	u.mu.Lock()
	f := u.report
	u.report = nil
	u.reported = u.reported || f != nil
	u.mu.Unlock()
	if f == nil {
		return
	}
	msg := strconv.Itoa(os.Getpid()) + " " + strings.ReplaceAll(what, "\n", " ")
	if len(msg) > maxReport-1 {
		msg = msg[:maxReport-1]
	}
	f.Write([]byte(msg + "\n"))
	f.Close()
}

// readReport reads, without waiting, what the successor wrote on r: its
// process ID, and "" when it reported ready or the reason it gave for not
// serving. ok is false when nothing was written. The successor writes
// before it tells tableflip, and tableflip's answer comes after that or
// after its exit, so whatever it wrote is there to read.
func readReport(r *os.File) (pid int, failure string, ok bool) {
	buf := make([]byte, maxReport)
	n, err := readNow(r, buf)
	if err != nil || n <= 0 {
		return 0, "", false
	}
	line := strings.TrimSuffix(string(buf[:n]), "\n")
	pidText, what, _ := strings.Cut(line, " ")
	pid, err = strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return 0, "", false
	}
	if what == "ready" {
		return pid, "", true
	}
	return pid, strings.TrimPrefix(what, "failed "), true
}

// writePIDFile writes the process ID to path atomically: to a temporary
// file in the same directory, renamed over path.
func writePIDFile(path string) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, name+".*")
	if err != nil {
		return fmt.Errorf("upgrade: writing the PID file %s: %w", path, err)
	}
	_, err = fmt.Fprintf(f, "%d\n", os.Getpid())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("upgrade: writing the PID file %s: %w", path, err)
	}
	return nil
}

// Upgrade starts the successor and waits until it reports ready, for at most
// the ready timeout. It returns nil once the successor is ready: the caller
// must then drain this process and exit. Otherwise it returns an error that
// says why (the successor exited, or did not report ready in time and was
// killed, or Stop was called), and the process goes on serving; another
// upgrade may be tried.
//
// It returns ErrNotReady before Ready, ErrInProgress while another upgrade
// runs, ErrUpgraded after a successful one, ErrStopped after Stop,
// ErrPID1 in the first process of a PID namespace, ErrContainerInit in the
// main process of a container under a minimal init, and ErrParentDraining
// while the process that this one replaced still runs, at once. When the
// successor reported why it could not serve (its PID file), the error says
// so.
func (u *Upgrader) Upgrade() error {
	u.mu.Lock()
	if err := u.refusal(); err != nil {
		u.mu.Unlock()
		return err
	}
	u.running = true
	done := make(chan struct{})
	u.upgradeDone = done
	u.mu.Unlock()
	defer close(done) // after the deferred Unlock below: the result is set

	// The successor reports on this pipe before it tells tableflip.
	r, w, err := os.Pipe()
	if err == nil {
		err = u.tf.AddFile(reportName, w) // tableflip passes a copy
		w.Close()
	}
	if err != nil {
		if r != nil {
			r.Close()
		}
		u.mu.Lock()
		u.running = false
		u.mu.Unlock()
		return fmt.Errorf("upgrade: the successor's report pipe: %w", err)
	}
	defer r.Close()

	err = u.tf.Upgrade()
	// tableflip's goroutine takes the readiness that Ready reported, or
	// the parent's exit that WaitForParent saw, and an upgrade request in
	// either order when both are pending, and then refuses the request as
	// too early. The process is ready and its parent gone: ask again.
	for i := range maxNotReady {
		if err == nil || err.Error() != tableflipNotReady && err.Error() != tableflipParentRunning {
			break
		}
		if i < maxNotReady/2 {
			runtime.Gosched()
		} else {
			time.Sleep(notReadyPause)
		}
		err = u.tf.Upgrade()
	}

	pid, failure, reported := readReport(r)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.running = false
	if err != nil {
		if u.stopped {
			return fmt.Errorf("%w: successor killed: %v", ErrStopped, err)
		}
		if reported && failure != "" {
			return fmt.Errorf("upgrade: the successor (pid %d) did not serve: %s (%v)", pid, failure, err)
		}
		return fmt.Errorf("upgrade: %w", err)
	}
	u.upgraded = true
	if reported {
		u.successor = pid
	}
	return nil
}

// Upgradable returns nil if Upgrade, called now, would start a successor,
// and otherwise the error with which it would refuse: ErrNotReady,
// ErrInProgress, ErrUpgraded, ErrStopped, ErrPID1, ErrContainerInit or
// ErrParentDraining. It tells a caller what to
// announce; the answer may change before Upgrade is called, if another
// goroutine calls Upgrade, Ready or Stop.
func (u *Upgrader) Upgradable() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.refusal()
}

// refusal returns the error with which Upgrade refuses to start, or nil.
// u.mu must be held.
func (u *Upgrader) refusal() error {
	switch {
	case u.upgraded:
		// Stopped or not, the process is being replaced.
		return ErrUpgraded
	case u.stopped:
		return ErrStopped
	case u.running:
		return ErrInProgress
	case !u.ready:
		return ErrNotReady
	case os.Getpid() == 1:
		return ErrPID1
	case containerMain():
		return ErrContainerInit
	}
	select {
	case <-u.parentExited:
	default:
		return ErrParentDraining
	}
	return nil
}

// WaitForParent waits until the process that this one replaced in an
// upgrade has exited, or ctx ends, and returns ctx's error then. It returns
// nil at once in a process that replaced none. A successor that stops calls
// it before it exits: under systemd, the exit of the main process makes
// systemd send SIGTERM to every process left in the service, which the old
// process, still draining, would take for a second signal.
func (u *Upgrader) WaitForParent(ctx context.Context) error {
	select {
	case <-u.parentExited:
		return nil // even if ctx has ended too
	default:
	}
	select {
	case <-u.parentExited:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// SuccessorPID returns the process ID of the successor after a successful
// upgrade, as the successor reported it to this process on a pipe of their
// own before it reported ready: the caller can hand the service over to it
// (systemd.Notifier.HandOver) before this process drains. It returns
// ErrNoSuccessorPID before a successful upgrade, or when the successor did
// not report (a version of the program older than the report).
func (u *Upgrader) SuccessorPID() (int, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.successor == 0 {
		return 0, ErrNoSuccessorPID
	}
	return u.successor, nil
}

// Stop ends the Upgrader, for a process that drains for good: an upgrade
// in progress is abandoned, its successor killed (Upgrade then returns an
// error wrapping ErrStopped), later upgrades are refused, and the
// Upgrader's copies of the listeners are closed. It returns once they are.
// It is safe to call more than once, and after a successful upgrade, where
// it does nothing.
func (u *Upgrader) Stop() {
	u.mu.Lock()
	u.stopped = true
	u.mu.Unlock()
	u.tf.Stop()
	// The Upgrader's goroutine closes the copies, then the channel.
	<-u.tf.Exit()
	// An upgrade that tableflip completed as Stop came may not have set
	// its result yet: wait for it, so that the PID file of a successor
	// that serves stays.
	u.mu.Lock()
	running, done := u.running, u.upgradeDone
	u.mu.Unlock()
	if running {
		<-done
	}
	u.mu.Lock()
	upgraded := u.upgraded
	u.mu.Unlock()
	if !upgraded {
		u.removePIDFile()
	}
}

// removePIDFile removes the PID file if it names this process, a process
// that no longer runs, or a child of this process: a successor killed by
// Stop after it wrote the file, which may still be dying, or a zombie that
// tableflip has not yet reaped. The service ends with this process. After
// an upgrade it names the successor, and stays.
func (u *Upgrader) removePIDFile() {
	if u.o.pidFile == "" {
		return
	}
	b, err := os.ReadFile(u.o.pidFile)
	if err != nil {
		return
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return
	}
	if pid == os.Getpid() || processGone(pid) || childOf(pid, os.Getpid()) {
		os.Remove(u.o.pidFile)
	}
}
