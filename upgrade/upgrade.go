package upgrade

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"

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
	// ErrNoPIDFile is returned by SuccessorPID without WithPIDFile.
	ErrNoPIDFile = errors.New("upgrade: no PID file (WithPIDFile)")
)

const (
	// tableflipNotReady is the message of tableflip's refusal of an
	// upgrade before its goroutine has taken the readiness in (errNotReady
	// in tableflip v1.2.3).
	tableflipNotReady = "process is not ready yet"
	// maxNotReady bounds the requests Upgrade repeats after that refusal:
	// each is taken first with even odds.
	maxNotReady = 64
)

// An Upgrader starts the successor of the process and hands it the
// listening sockets; see the package documentation. Create it with New; a
// process has at most one. Its methods are safe for concurrent use.
type Upgrader struct {
	tf *tableflip.Upgrader
	o  options

	mu       sync.Mutex
	ready    bool // Ready was called; guarded by mu
	running  bool // an upgrade runs; guarded by mu
	upgraded bool // guarded by mu
	stopped  bool // guarded by mu
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
	// The PID file is the Upgrader's to write, not tableflip's: tableflip
	// writes it before it reports ready, and does not report ready when
	// the write fails, so that the parent would kill a successor that
	// already serves.
	tf, err := tableflip.New(tableflip.Options{UpgradeTimeout: o.readyTimeout})
	if err != nil {
		return nil, fmt.Errorf("upgrade: %w", err)
	}
	return &Upgrader{tf: tf, o: o}, nil
}

// HasParent reports whether the process is the successor in an upgrade.
func (u *Upgrader) HasParent() bool { return u.tf.HasParent() }

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
// by WithPIDFile, so that the parent finds the successor's process ID there;
// a failure to write it is returned, joined with any other, but does not
// keep Ready from telling the parent: the process serves all the same. Call
// it once the server accepts connections, before its first Accept.
func (u *Upgrader) Ready() error {
	var pidErr error
	if u.o.pidFile != "" {
		pidErr = writePIDFile(u.o.pidFile)
	}
	if err := u.tf.Ready(); err != nil {
		return errors.Join(pidErr, fmt.Errorf("upgrade: %w", err))
	}
	// Only now: Upgradable must not say yes before tableflip has taken the
	// readiness in.
	u.mu.Lock()
	u.ready = true
	u.mu.Unlock()
	return pidErr
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
		return fmt.Errorf("upgrade: writing the PID file: %w", err)
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
// runs, ErrUpgraded after a successful one and ErrStopped after Stop, at
// once.
func (u *Upgrader) Upgrade() error {
	u.mu.Lock()
	if err := u.refusal(); err != nil {
		u.mu.Unlock()
		return err
	}
	u.running = true
	u.mu.Unlock()

	err := u.tf.Upgrade()
	// tableflip's goroutine takes the readiness that Ready reported and
	// an upgrade request in either order when both are pending, and then
	// refuses the request as too early. The process is ready: ask again.
	for range maxNotReady {
		if err == nil || err.Error() != tableflipNotReady {
			break
		}
		runtime.Gosched()
		err = u.tf.Upgrade()
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	u.running = false
	if err != nil {
		if u.stopped {
			return fmt.Errorf("%w: successor killed: %v", ErrStopped, err)
		}
		return fmt.Errorf("upgrade: %w", err)
	}
	u.upgraded = true
	return nil
}

// Upgradable returns nil if Upgrade, called now, would start a successor,
// and otherwise the error with which it would refuse: ErrNotReady,
// ErrInProgress, ErrUpgraded or ErrStopped. It tells a caller what to
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
	}
	return nil
}

// SuccessorPID returns the process ID of the successor after a successful
// upgrade, read from the PID file given by WithPIDFile, which the successor
// wrote when it reported ready. It returns ErrNoPIDFile without a PID file.
func (u *Upgrader) SuccessorPID() (int, error) {
	if u.o.pidFile == "" {
		return 0, ErrNoPIDFile
	}
	b, err := os.ReadFile(u.o.pidFile)
	if err != nil {
		return 0, fmt.Errorf("upgrade: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("upgrade: PID file %s holds %q, not a process ID", u.o.pidFile, b)
	}
	return pid, nil
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
}
