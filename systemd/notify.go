package systemd

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/drainkit/drainkit/stophook"
)

// A Notifier tells systemd what the service does, through the socket named
// by NOTIFY_SOCKET (sd_notify(3)). It is a stophook.Hook: given to the drain
// with drain.WithHooks, it reports each phase of the drain. Register it last,
// so that it is called first: hooks run in reverse order of registration.
//
// Outside systemd (NOTIFY_SOCKET unset) every method does nothing and
// returns nil. The variable is read at each message and left set, so that a
// successor started by an upgrade can notify too. Its methods are safe for
// concurrent use.
type Notifier struct {
	o options

	mu         sync.Mutex
	handedOver bool // guarded by mu
}

// NewNotifier returns a Notifier with the given options. It panics if an
// option is nil, naming it.
func NewNotifier(opts ...Option) *Notifier {
	o := defaultOptions()
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("systemd: NewNotifier: option %d is nil", i))
		}
		opt.apply(&o)
	}
	return &Notifier{o: o}
}

// Ready tells systemd that the service is ready: READY=1, with MAINPID= set
// to this process, and STATUS= set to status. It also ends a reload that
// Reloading started, when the reload failed. A successor started by an
// upgrade does not call it: its parent hands the service over to it
// (HandOver), since under NotifyAccess=main systemd would drop the
// successor's message, and under NotifyAccess=all it could come after the
// parent's exit. Only the successor of a parent that cannot hand over
// calls it, before it tells its parent that it serves, under
// NotifyAccess=all.
func (n *Notifier) Ready(status string) error {
	return n.send("READY=1", "MAINPID="+strconv.Itoa(os.Getpid()), "STATUS="+status)
}

// Reloading tells systemd that the service is reloading: RELOADING=1 with
// MONOTONIC_USEC=, as Type=notify-reload asks, and STATUS= set to status. It
// is to be followed by Ready, from this process when the reload failed and
// from the successor when it succeeded.
func (n *Notifier) Reloading(status string) error {
	return n.send("RELOADING=1", strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"), "STATUS="+status)
}

// Status sets the service's status line, shown by systemctl status.
func (n *Notifier) Status(status string) error {
	return n.send("STATUS=" + status)
}

// HandOver tells systemd that the successor started by an upgrade, process
// pid, serves the service from now on, and makes this Notifier fall silent.
// When pid is positive it sends, in one message, MAINPID=pid, READY=1 and
// STATUS=status. The message comes from this process, the main process of
// the unit until then, so that systemd takes it under NotifyAccess=main as
// under NotifyAccess=all; it must be sent before this process begins to
// drain: once queued, systemd reads it before it learns of this process's
// exit, and follows the successor instead of stopping the unit. READY=1
// ends the reload that Reloading began.
//
// Every later message is dropped, and the drain that follows tells systemd
// nothing: its STOPPING=1 would stop the unit that the successor now serves.
// With pid zero or negative (the successor's process ID is unknown), it
// sends nothing and falls silent all the same. On a NOTIFY_SOCKET whose
// queue is full, the message waits for room for up to ten seconds rather
// than one: lost, it would make systemd stop the unit, the successor with
// it, when this process exits.
func (n *Notifier) HandOver(pid int, status string) error {
	var err error
	if pid > 0 {
		err = n.sendBy(time.Now().Add(handOverTimeout), "MAINPID="+strconv.Itoa(pid), "READY=1", "STATUS="+status)
	}
	n.mu.Lock()
	n.handedOver = true
	n.mu.Unlock()
	return err
}

// OnStop reports an event of the drain: at NotReady STOPPING=1, at every
// event STATUS= with the phase and EXTEND_TIMEOUT_USEC= with what remains of
// the budget given by WithStopBudget, plus the margin. It returns nil: a
// message that cannot be sent goes to the function given by
// WithErrorHandler, and never changes the drain's result, which says what
// happened to the RPCs (an error there would make the program exit with a
// failure, which systemd records, after a clean drain).
func (n *Notifier) OnStop(ctx context.Context, e stophook.Event) error {
	var state []string
	if e.Phase == stophook.NotReady {
		state = append(state, "STOPPING=1")
	}
	state = append(state, "STATUS="+phaseStatus(e))
	if n.o.budget != nil {
		remaining := n.o.budget() - time.Since(e.Started)
		if remaining < 0 {
			remaining = 0
		}
		state = append(state, "EXTEND_TIMEOUT_USEC="+strconv.FormatInt((remaining+n.o.margin).Microseconds(), 10))
	}
	// Half of what remains of the call's time: a message that systemd
	// does not take by then is given up, before the drain gives up on
	// the hook and counts it as an error. But never a deadline already
	// past, with which even a socket with room would take nothing.
	deadline := time.Now().Add(sendTimeout)
	if d, ok := ctx.Deadline(); ok {
		if half := time.Now().Add(time.Until(d) / 2); half.Before(deadline) {
			deadline = half
		}
	}
	if least := time.Now().Add(minSendTime); deadline.Before(least) {
		deadline = least
	}
	if err := n.sendBy(deadline, state...); err != nil && n.o.onError != nil {
		n.o.onError(fmt.Errorf("%w (drain event %v)", err, e.Phase))
	}
	return nil
}

// Check tells whether the Notifier can send to NOTIFY_SOCKET, so that a
// program can say so when it starts rather than at its first message. It
// returns nil when the variable is unset (outside systemd) or names a Unix
// datagram socket that accepts a connection, and otherwise an error that
// names the variable and says what is wrong: a path that does not exist or
// is not a socket, an address that is neither a path nor abstract ("@..."),
// or an AF_VSOCK address ("vsock:..."), which the Notifier, as go-systemd's
// daemon package, does not support. It sends nothing.
func (n *Notifier) Check() error {
	addr := os.Getenv("NOTIFY_SOCKET")
	switch {
	case addr == "":
		return nil
	case strings.HasPrefix(addr, "vsock"):
		return fmt.Errorf("systemd: NOTIFY_SOCKET=%s: an AF_VSOCK address, which the Notifier cannot send to, as go-systemd's daemon package cannot: systemd will not hear from the service", addr)
	case strings.HasPrefix(addr, "@"):
	case !strings.HasPrefix(addr, "/"):
		return fmt.Errorf("systemd: NOTIFY_SOCKET=%s: neither an absolute path nor an abstract address (@...): systemd will not hear from the service", addr)
	default:
		fi, err := os.Stat(addr)
		if err != nil {
			return fmt.Errorf("systemd: NOTIFY_SOCKET=%s: %w: systemd will not hear from the service", addr, err)
		}
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("systemd: NOTIFY_SOCKET=%s: not a socket (mode %v): systemd will not hear from the service", addr, fi.Mode())
		}
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("systemd: NOTIFY_SOCKET=%s: %w: systemd will not hear from the service", addr, err)
	}
	c.Close()
	return nil
}

// String names the hook in the drain's errors.
func (n *Notifier) String() string { return "systemd.Notifier" }

// phaseStatus returns the status line of a drain's event.
func phaseStatus(e stophook.Event) string {
	switch e.Phase {
	case stophook.NotReady:
		return fmt.Sprintf("draining: NotReady, health NOT_SERVING, %d RPCs in flight", e.InFlight)
	case stophook.Graceful:
		return fmt.Sprintf("draining: Graceful, GOAWAY sent, %d RPCs in flight", e.InFlight)
	case stophook.Cancel:
		return fmt.Sprintf("draining: Cancel, %d RPCs in flight, %d handlers cancelled", e.InFlight, e.Cancelled)
	case stophook.Force:
		return fmt.Sprintf("draining: Force, stopping with %d RPCs in flight", e.InFlight)
	case stophook.Cleanup:
		if len(e.Leaked) > 0 {
			return fmt.Sprintf("drained: %d handlers leaked", len(e.Leaked))
		}
		return "drained"
	}
	return "draining: " + e.Phase.String()
}

// sendTimeout bounds the wait of a message for room on NOTIFY_SOCKET. A
// Unix datagram socket whose reader has stopped reading (a service manager
// busy elsewhere) takes a bounded number of datagrams, and then makes every
// sender wait for room: without a bound, a message would hold its caller,
// and the drain or the exit behind it, for ever.
const sendTimeout = time.Second

// handOverTimeout bounds the wait of HandOver's message, whose loss would
// stop the unit.
const handOverTimeout = 10 * time.Second

// minSendTime is the least time given to a message of the drain, whose
// call may have no time left: enough to write to a socket with room.
const minSendTime = 10 * time.Millisecond

// send sends the assignments in one datagram, unless the process has handed
// the service over, waiting for room for at most sendTimeout.
func (n *Notifier) send(state ...string) error {
	return n.sendBy(time.Now().Add(sendTimeout), state...)
}

// sendBy is send, waiting for room until deadline.
func (n *Notifier) sendBy(deadline time.Time, state ...string) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.handedOver {
		return nil
	}
	// A newline in a value would start another assignment.
	for i, s := range state {
		state[i] = strings.ReplaceAll(s, "\n", " ")
	}
	if err := notify(strings.Join(state, "\n"), deadline); err != nil {
		return fmt.Errorf("systemd: notifying %q: %w", os.Getenv("NOTIFY_SOCKET"), err)
	}
	return nil
}

// notify sends state to NOTIFY_SOCKET, if set, as go-systemd's
// daemon.SdNotify does, but gives up at deadline: SdNotify's write has no
// bound.
func notify(state string, deadline time.Time) error {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetWriteDeadline(deadline); err != nil {
		return err
	}
	_, err = c.Write([]byte(state))
	return err
}
