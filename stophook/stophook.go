package stophook

import (
	"context"
	"fmt"
	"time"

	"github.com/drainkit/drainkit/interceptors"
)

// A Hook is called at each phase of a drain.
type Hook interface {
	// OnStop handles one event. It must return when ctx ends; the drain
	// stops waiting for it then in any case.
	OnStop(ctx context.Context, e Event) error
}

// Func adapts an ordinary function to a Hook.
type Func func(ctx context.Context, e Event) error

// OnStop calls f(ctx, e).
func (f Func) OnStop(ctx context.Context, e Event) error { return f(ctx, e) }

// A Phase names a phase of a drain: the drain's log records, its Report and
// its hooks use the same names. A hook is called as each phase begins.
// Phases come in the order they are declared; a drain skips those it does not
// need, and the hooks then see no event for them.
type Phase int

const (
	// NotReady: the drain has begun. Health reports NOT_SERVING, and the
	// server still serves everything, new connections included, for the
	// readiness delay. With no readiness delay and a health service, the
	// long-lived streams have been cancelled already, and new ones are
	// refused (see package drain).
	NotReady Phase = iota + 1
	// Graceful: the readiness delay is over. The server has cancelled its
	// long-lived streams and is sending GOAWAY and closing its listeners
	// (once these hooks have run, for a server mounted with ServeHTTP); it
	// waits for the other RPCs for the grace period. Servers beside it
	// should stop accepting work now.
	Graceful
	// Cancel: the grace period ran out with RPCs still in flight. New
	// RPCs are refused and every running handler is being cancelled.
	Cancel
	// Force: GracefulStop did not finish in time, or the drain's context
	// ended; the server is being stopped, every connection closed. The
	// event's InFlight is the number of RPCs the stop cuts: 0 when no
	// handler is left and the stop only closes connections whose clients
	// never acknowledged GOAWAY, and the drain is then not forced.
	Force
	// Cleanup: no handler runs any more, or those left are leaked. Close
	// the resources that handlers used: databases, clients, files.
	Cleanup
)

var phaseNames = [...]string{
	NotReady: "NotReady",
	Graceful: "Graceful",
	Cancel:   "Cancel",
	Force:    "Force",
	Cleanup:  "Cleanup",
}

// String returns the name of the phase, such as "NotReady".
func (p Phase) String() string {
	if p > 0 && int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// An Event tells a hook where the drain stands.
type Event struct {
	Phase     Phase
	Started   time.Time // when the drain began
	InFlight  int       // RPCs whose handler was running when the event was sent
	Cancelled int       // handlers whose context the drain has cancelled so far

	// Forced tells, at Force, whether the forced stop cuts RPCs, and at
	// Cleanup whether the drain was forced: its stop cut RPCs or left
	// handlers running (drain.Report.Forced). It is false before Force.
	Forced bool

	// Leaked lists the handlers still running after the forced stop, at
	// Cleanup; it is empty otherwise. Hooks must not modify it.
	Leaked []interceptors.Call
}
