package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/stophook"
)

var (
	// ErrDraining is the cause with which the drain cancels handlers and
	// refuses RPCs; clients receive codes.Unavailable with its text.
	ErrDraining = fmt.Errorf("%w: draining", interceptors.ErrShuttingDown)

	// ErrForced is wrapped by the error of a drain that had to stop the
	// server by force.
	ErrForced = errors.New("drain: forced stop")

	// ErrDrained is returned by Serve when the drain has already begun.
	ErrDrained = errors.New("drain: Serve called after the drain began")
)

// A Drainer shuts a gRPC server down in bounded phases; see the package
// documentation. Create it with New. Its methods are safe for concurrent
// use.
type Drainer struct {
	srv *grpc.Server
	t   *interceptors.Tracker
	o   options

	// skipCtx ends when the remaining waits are to be skipped: when the
	// context of a Drain call ends, or a second signal reaches Serve. Its
	// cause says which.
	skipCtx context.Context
	skip    context.CancelCauseFunc

	mu        sync.Mutex
	started   bool             // guarded by mu
	listeners []*drainListener // the listeners Serve serves; guarded by mu
	done      chan struct{}    // closed when the drain has finished

	serverStopped chan struct{} // closed when GracefulStop or Stop has returned
	stopOnce      sync.Once
	report        Report // set before done is closed
	err           error  // set before done is closed
}

// New returns a Drainer for srv, whose RPCs t tracks: t's interceptors must
// be installed on srv, and on no other server, since the drain refuses and
// cancels every call t tracks. It panics if srv or t is nil, naming it, and
// if the same hook, a pointer, is registered twice: it would see each event
// twice, and could handle two at once.
func New(srv *grpc.Server, t *interceptors.Tracker, opts ...Option) *Drainer {
	if srv == nil {
		panic("drain: New: nil *grpc.Server")
	}
	if t == nil {
		panic("drain: New: nil *interceptors.Tracker")
	}
	o := defaultOptions()
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("drain: New: option %d is nil", i))
		}
		opt.apply(&o)
	}
	mustBeDistinct(o.hooks)
	d := &Drainer{srv: srv, t: t, o: o, done: make(chan struct{}), serverStopped: make(chan struct{})}
	d.skipCtx, d.skip = context.WithCancelCause(context.Background())
	return d
}

// Drain runs the drain once and returns its report. A second or concurrent
// call waits for the same drain and returns the same result.
//
// When ctx ends, the drain skips what remains of its waits and goes straight
// to the forced stop; it still runs every hook, and the contexts of hook
// calls running then end too. Drain returns within Budget whatever handlers
// and hooks do.
//
// The error is nil after a clean drain. It wraps ErrForced when the forced
// stop cut RPCs or left handlers running, and joins the errors of the
// hooks.
func (d *Drainer) Drain(ctx context.Context) (Report, error) {
	skip := func() { d.skip(skipCause(ctx)) }
	if ctx.Err() != nil {
		skip() // at once: AfterFunc would skip only a moment later
	}
	stop := context.AfterFunc(ctx, skip)
	defer stop()
	d.mu.Lock()
	first := !d.started
	d.started = true
	d.mu.Unlock()
	if first {
		d.report, d.err = d.run(context.WithoutCancel(ctx))
		close(d.done)
	}
	<-d.done
	r := d.report
	r.Leaked = slices.Clone(r.Leaked)
	r.Phases = slices.Clone(r.Phases)
	return r, d.err
}

// skipCause returns why the drain skips its waits once ctx has ended.
func skipCause(ctx context.Context) error {
	cause := context.Cause(ctx)
	if errors.Is(cause, errSecondSignal) {
		return cause
	}
	return fmt.Errorf("the context of Drain ended: %w", cause)
}

// run carries out the phases. Hooks and the log get the values of ctx, such
// as the caller's trace, but not its cancellation.
func (d *Drainer) run(ctx context.Context) (Report, error) {
	r := Report{Started: time.Now()}
	hooks := d.startHooks(ctx, r.Started)
	ph := &phases{d: d, ctx: ctx, r: &r}
	defer ph.leave()

	ph.enter(stophook.NotReady, d.o.readinessDelay)
	if d.o.readinessDelay == 0 && len(d.o.health) > 0 {
		// The Graceful phase follows at once and ends the long-lived
		// streams, health watchers among them: ended first, a watcher
		// is not sent NOT_SERVING a moment before its end, which grpc's
		// client health checking reads the same way. With 100,000
		// watchers, that message was a third to a half of the drain's
		// CPU (BENCHMARKS.md).
		d.t.RejectLongLived(ErrDraining)
		r.Cancelled += d.t.CancelLongLived(ErrDraining)
	}
	for _, h := range d.o.health {
		h.Shutdown()
	}
	hooks.send(stophook.NotReady, &r, d.t.InFlight())
	d.sleep(d.o.readinessDelay)

	clean := false
	var graceful chan struct{} // closed when GracefulStop returns; nil until it is called
	var idleSince time.Time    // when the Graceful phase saw no handler running
	if d.skipped() {
		ph.skip(stophook.Graceful, d.skipReason())
	} else {
		ph.enter(stophook.Graceful, d.o.gracePeriod)
		deadline := time.Now().Add(d.o.gracePeriod)
		d.t.RejectLongLived(ErrDraining)
		r.Cancelled += d.t.CancelLongLived(ErrDraining)
		goAway := hooks.send(stophook.Graceful, &r, d.t.InFlight())
		// The listeners stop accepting now, whatever GracefulStop waits
		// for: new clients go to other servers.
		d.quiesce(deadline)
		calm := true // GracefulStop cuts no call
		if d.t.ServedHTTP() {
			// GracefulStop closes the transports of ServeHTTP at once,
			// cutting their calls. There, GOAWAY comes from the HTTP
			// server's own shutdown, started by a hook: wait for the
			// hooks, then for the calls, before GracefulStop, which
			// waits for the Cancel phase if calls outlive the grace
			// period.
			calm = d.wait(time.Until(deadline), goAway)
		}
		if calm {
			graceful = d.gracefulStop()
			clean, idleSince = d.waitUnder(d.skipCtx, time.Until(deadline), graceful)
		}
	}

	switch {
	case clean:
		ph.skip(stophook.Cancel, "every RPC finished within the grace period")
	case d.skipped():
		ph.skip(stophook.Cancel, d.skipReason())
	case d.t.InFlight() == 0 && graceful != nil:
		ph.skip(stophook.Cancel, "no RPC left to cancel")
	default:
		ph.enter(stophook.Cancel, d.o.cancelGrace)
		deadline := time.Now().Add(d.o.cancelGrace)
		d.t.Reject(ErrDraining)
		r.Cancelled += d.t.CancelAll(ErrDraining)
		hooks.send(stophook.Cancel, &r, d.t.InFlight())
		if graceful == nil {
			// Served through ServeHTTP, with calls past the grace
			// period: once they have ended, GracefulStop cuts none.
			var idle bool
			if idle, idleSince = d.waitUnder(d.skipCtx, d.o.cancelGrace, nil); idle {
				graceful = d.gracefulStop()
			}
		}
		if graceful != nil {
			clean = d.wait(time.Until(deadline), graceful)
		}
	}

	if clean {
		ph.skip(stophook.Force, "every RPC finished")
	} else {
		// From here no handler starts, so InFlight only falls: with none
		// left, Stop closes connections that did not close after GOAWAY
		// (their clients never acknowledged it) and cuts nothing.
		d.t.Reject(ErrDraining)
		cut := d.t.InFlight()
		r.Forced = cut > 0
		// Connections that outlive every tracked RPC by far hold RPCs
		// the Tracker does not see: say so, as the stop cuts them.
		var untracked time.Duration
		if cut == 0 && !d.skipped() && !idleSince.IsZero() {
			untracked = time.Since(idleSince)
		}
		ph.enterForce(cut, d.skipReason(), untracked)
		r.Cancelled += d.t.CancelAll(ErrDraining)
		hooks.send(stophook.Force, &r, cut)
		// The forced stop is not skipped: it is short, and it lets
		// handlers that honour their context return.
		forceDeadline := time.Now().Add(d.o.forceWait)
		if d.t.ServedHTTP() {
			// Stop closes the transports of ServeHTTP at once, and
			// with them the statuses that grpc has yet to write for
			// the handlers just cancelled, which their clients would
			// get as malformed responses: it waits for the handlers,
			// for half the force wait, leaving the other half to those
			// that only Stop frees.
			d.waitUnskippable(d.o.forceWait/2, nil)
		}
		stopped := make(chan struct{})
		go func() {
			d.srv.Stop()
			d.stopOnce.Do(func() { close(d.serverStopped) })
			close(stopped)
		}()
		d.waitUnskippable(time.Until(forceDeadline), stopped)
		r.Leaked = d.t.Calls()
		if len(r.Leaked) > 0 {
			r.Forced = true
		}
	}

	ph.enter(stophook.Cleanup, 0)
	hooks.send(stophook.Cleanup, &r, d.t.InFlight())
	errs, missed := hooks.finish()
	r.NotCalled = missed
	ph.leave()
	r.Duration = time.Since(r.Started)
	r.Skipped = d.skipReason()

	level := slog.LevelInfo
	if r.Forced {
		level = slog.LevelWarn
		forced := fmt.Errorf("%w: %d handler(s) leaked", ErrForced, len(r.Leaked))
		if len(r.Leaked) == 0 {
			forced = fmt.Errorf("%w: RPCs cut, no handler leaked", ErrForced)
		}
		errs = append([]error{forced}, errs...)
	}
	d.o.logger.LogAttrs(ctx, level, "drain finished", slog.Any("report", r))
	return r, errors.Join(errs...)
}

// mustBeDistinct panics if the same pointer appears twice in hooks. Hooks of
// other kinds are not compared: == could panic on them, and two equal
// values share no state.
func mustBeDistinct(hooks []stophook.Hook) {
	for i, h := range hooks {
		if reflect.TypeOf(h).Kind() != reflect.Pointer {
			continue
		}
		for j := range i {
			if hooks[j] == h {
				panic(fmt.Sprintf("drain: New: hook %d (%T) is hook %d again: a hook registered twice would see each event twice", i, h, j))
			}
		}
	}
}

// gracefulStop calls GracefulStop on a goroutine of its own, and returns
// a channel closed when it returns.
func (d *Drainer) gracefulStop() chan struct{} {
	graceful := make(chan struct{})
	go func() {
		d.srv.GracefulStop()
		d.stopOnce.Do(func() { close(d.serverStopped) })
		close(graceful)
	}()
	return graceful
}

// quiesce stops the listeners that Serve serves from accepting, and waits,
// until deadline at the most, for grpc to take up the connections they
// accepted last (see acceptSettle).
func (d *Drainer) quiesce(deadline time.Time) {
	d.mu.Lock()
	listeners := slices.Clone(d.listeners)
	d.mu.Unlock()
	for _, l := range listeners {
		l.stopAccepting()
	}
	// The wrapped Accepts end together: one acceptSettle for them all.
	until := time.Now().Add(acceptSettle)
	var settled time.Time
	for _, l := range listeners {
		if t := l.settle(until); t.After(settled) {
			settled = t
		}
	}
	if deadline.Before(settled) {
		settled = deadline
	}
	d.sleep(time.Until(settled))
}

// skipReason returns why the waits are skipped, or "" if they are not.
func (d *Drainer) skipReason() string {
	if cause := context.Cause(d.skipCtx); cause != nil {
		return cause.Error()
	}
	return ""
}

// skipped reports whether the remaining waits are to be skipped.
func (d *Drainer) skipped() bool { return d.skipCtx.Err() != nil }

// sleep waits for dur, or until the waits are skipped.
func (d *Drainer) sleep(dur time.Duration) {
	if dur <= 0 || d.skipped() {
		return
	}
	timer := time.NewTimer(dur)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-d.skipCtx.Done():
	}
}

// wait waits up to timeout, or until the waits are skipped, for no handler
// to run and for done, unless nil, to be closed. It reports whether both
// happened. It is woken by the events it waits for; it does not poll.
func (d *Drainer) wait(timeout time.Duration, done <-chan struct{}) bool {
	ok, _ := d.waitUnder(d.skipCtx, timeout, done)
	return ok
}

// waitUnskippable is wait without the skipping, for callers that go on
// whatever it saw.
func (d *Drainer) waitUnskippable(timeout time.Duration, done <-chan struct{}) {
	d.waitUnder(context.Background(), timeout, done)
}

// waitUnder is wait under parent. It also returns when it saw no handler
// running, or the zero time if it never did.
func (d *Drainer) waitUnder(parent context.Context, timeout time.Duration, done <-chan struct{}) (ok bool, idleSince time.Time) {
	ctx, cancel := context.WithTimeout(parent, max(timeout, 0))
	defer cancel()
	if d.t.InFlight() > 0 && d.t.Wait(ctx) != nil {
		return false, time.Time{}
	}
	idleSince = time.Now()
	if done == nil {
		return true, idleSince
	}
	select {
	case <-done:
		return true, idleSince
	default:
	}
	select {
	case <-done:
		return true, idleSince
	case <-ctx.Done():
		return false, idleSince
	}
}
