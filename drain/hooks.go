package drain

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/drainkit/drainkit/stophook"
)

// ErrHookNotCalled is wrapped by the HookError of a call the drain did not
// make, listed in Report.NotCalled (not returned by Drain), because the
// hook could no longer handle its event in time: the event came after the
// time the drain gives the events before Cleanup (the longest its waits
// can take, from its start), or the hook's call for an earlier event had
// still not returned when this call's time ran out. A hook never gets an
// event late, or while it handles another: it misses it, and the drain
// says so.
var ErrHookNotCalled = errors.New("not called")

// A HookError is the error of one hook call. It unwraps to the hook's own
// error, to context.DeadlineExceeded when the hook outlived its timeout or
// the drain's waits, to context.Canceled when it was still running as the
// drain skipped its waits (a second signal, or the end of the context of
// Drain), to a *PanicError when the hook panicked, or to ErrHookNotCalled
// when the drain could not call it for its event.
type HookError struct {
	Hook  string // the hook's position in registration order and its type, or its String
	Phase stophook.Phase
	Err   error
}

func (e *HookError) Error() string {
	return fmt.Sprintf("drain: %s at %v: %v", e.Hook, e.Phase, e.Err)
}

func (e *HookError) Unwrap() error { return e.Err }

// A PanicError carries the value with which a hook panicked.
type PanicError struct {
	Value any
	Stack []byte
}

func (e *PanicError) Error() string { return fmt.Sprintf("panic: %v", e.Value) }

// hookRunner calls the hooks of one drain, one at a time, on a goroutine of
// its own, so that hooks run beside the waits of the drain instead of adding
// to them.
//
// A call has the hook timeout from the moment it is due, and for an event
// before Cleanup no time past the cutoff, the longest the drain's waits can
// take: the events before Cleanup are handled within the waits, and a call
// for one of them left with no time is not made. Each hook handles one
// event at a time, in phase order: a call abandoned at its deadline keeps
// the hook busy until it returns, and the hook's next call waits for that
// within its own time (for an event before Cleanup, not past the drain's
// skip), or is not made.
type hookRunner struct {
	base    context.Context // the parent of each call's context
	skipCtx context.Context // ends when the drain skips its waits
	hooks   []stophook.Hook // in registration order
	timeout time.Duration
	waits   time.Duration // the longest the drain's waits can take
	cutoff  time.Time     // the drain's start plus waits

	events chan queued
	done   chan struct{}
	busy   []chan struct{} // per hook: closed when its last call returned; owned by the runner's goroutine
	errs   []error         // owned by the runner's goroutine until done is closed
	missed []error         // calls not made; owned as errs is
}

func (d *Drainer) startHooks(base context.Context, started time.Time) *hookRunner {
	h := &hookRunner{
		base:    base,
		skipCtx: d.skipCtx,
		hooks:   d.o.hooks,
		timeout: d.o.hookTimeout,
		waits:   d.waits(),
		cutoff:  started.Add(d.waits()),
		events:  make(chan queued, numEvents),
		done:    make(chan struct{}),
		busy:    make([]chan struct{}, len(d.o.hooks)),
	}
	go h.run()
	return h
}

// numEvents is the number of events a drain sends at the most, one per
// phase, so that sending one never blocks.
const numEvents = 5

// queued is an event waiting for the hooks, with the channel closed once
// every hook has handled it, or was found unable to.
type queued struct {
	event   stophook.Event
	handled chan struct{}
}

// send queues the event of phase p for the hooks, and returns a channel
// closed once every hook has handled it.
func (h *hookRunner) send(p stophook.Phase, r *Report, inFlight int) <-chan struct{} {
	e := stophook.Event{Phase: p, Started: r.Started, InFlight: inFlight, Cancelled: r.Cancelled, Forced: r.Forced}
	if p == stophook.Cleanup {
		e.Leaked = slices.Clone(r.Leaked)
	}
	q := queued{event: e, handled: make(chan struct{})}
	h.events <- q
	return q.handled
}

// finish waits for the hooks to handle every event sent and returns their
// errors, and the calls it did not make. Every call, and every wait for a
// hook still busy, is bounded by the hook timeout, and those for events
// before Cleanup by the cutoff too, so finish is bounded as Budget says.
func (h *hookRunner) finish() (errs, missed []error) {
	close(h.events)
	<-h.done
	return h.errs, h.missed
}

func (h *hookRunner) run() {
	defer close(h.done)
	for q := range h.events {
		for i := len(h.hooks) - 1; i >= 0; i-- {
			switch err := h.call(i, q.event); {
			case errors.Is(err, ErrHookNotCalled):
				h.missed = append(h.missed, err)
			case err != nil:
				h.errs = append(h.errs, err)
			}
		}
		close(q.handled)
	}
}

// call calls hook i with e, unless it can no longer. The call's time is the
// hook timeout from now, and, for an event before Cleanup, ends at the
// cutoff at the latest. If the hook's previous call is still running, the
// call waits for it within that time, and for an event before Cleanup not
// past the drain's skip. A call left with no time is not made, but for
// Cleanup, which is made whenever the hook is free.
// The call's context ends with its time, and, for a call running when the
// drain skips its waits, then: calls made after the skip get their whole
// time. A call whose context ends is left to return on its own.
//
// No code of the hook but OnStop runs on the runner: its String, for the
// error, is called on the call's goroutine, within the same bounds.
func (h *hookRunner) call(i int, e stophook.Event) error {
	hook := h.hooks[i]
	deadline := time.Now().Add(h.timeout)
	why := fmt.Sprintf("the hook timeout (%v) ran out", h.timeout)
	if e.Phase != stophook.Cleanup && h.cutoff.Before(deadline) {
		deadline = h.cutoff
		why = fmt.Sprintf("the drain's waits were over (they take %v at the most)", h.waits)
	}
	ctx, cancel := context.WithDeadline(h.base, deadline)
	defer cancel()
	notCalled := func(reason string) error {
		return &HookError{Hook: typeName(i, hook), Phase: e.Phase, Err: fmt.Errorf("%w: %s", ErrHookNotCalled, reason)}
	}
	// Cleanup is made whenever the hook is free, even with a hook timeout
	// so small that it has run out already: the hook then gets an ended
	// context, but it gets the event.
	cleanup := e.Phase == stophook.Cleanup
	if ctx.Err() != nil && !cleanup {
		return notCalled(why)
	}
	if busy := h.busy[i]; busy != nil {
		// For an event before Cleanup, the wait ends with the drain's
		// waits, skipped ones included: a hook that ignored the skip
		// would otherwise hold the drain for its whole timeout again.
		var skipped <-chan struct{}
		if !cleanup {
			skipped = h.skipCtx.Done()
		}
		select {
		case <-busy:
		default:
			select {
			case <-busy:
			case <-ctx.Done():
				return notCalled("its call for an earlier event had not returned when " + why)
			case <-skipped:
				return notCalled(fmt.Sprintf("its call for an earlier event had not returned when the drain skipped its waits (%v)", context.Cause(h.skipCtx)))
			}
		}
		if ctx.Err() != nil && !cleanup {
			return notCalled(why)
		}
	}
	if h.skipCtx.Err() == nil {
		// Hooks that honour their context return as soon as the drain
		// skips its waits, so that the forced stop and the exit follow at
		// once.
		stop := context.AfterFunc(h.skipCtx, cancel)
		defer stop()
	}
	type outcome struct {
		err  error
		name string
	}
	result := make(chan outcome, 1)
	failed := make(chan error, 1) // OnStop's error, before String names the hook
	returned := make(chan struct{})
	h.busy[i] = returned
	go func() {
		defer close(returned)
		defer func() {
			if v := recover(); v != nil {
				result <- outcome{err: &PanicError{Value: v, Stack: debug.Stack()}, name: typeName(i, hook)}
			}
		}()
		err := hook.OnStop(ctx, e)
		name := ""
		if err != nil {
			failed <- err
			name = hookName(i, hook)
		}
		result <- outcome{err: err, name: name}
	}()
	var o outcome
	select {
	case o = <-result:
	case <-ctx.Done():
		select {
		case o = <-result: // returned as its context ended: not late
		default:
			select {
			case err := <-failed:
				return &HookError{Hook: typeName(i, hook), Phase: e.Phase,
					Err: fmt.Errorf("%w (its String, called to name it, had not returned when %s)", err, h.why(ctx, why))}
			default:
			}
			return &HookError{Hook: typeName(i, hook), Phase: e.Phase,
				Err: fmt.Errorf("abandoned: did not return when %s: %w", h.why(ctx, why), ctx.Err())}
		}
	}
	// The call has returned, and the hook is free, though its goroutine
	// may not have closed returned yet: the next call must not wait for
	// it, nor, as the drain skips its waits, take the hook for busy.
	h.busy[i] = nil
	if o.err == nil {
		return nil
	}
	if ctx.Err() != nil {
		o.err = fmt.Errorf("%w (returned as its context ended: %s)", o.err, h.why(ctx, why))
	}
	return &HookError{Hook: o.name, Phase: e.Phase, Err: o.err}
}

// why says why the context ctx of a call has ended, given why its time
// runs out.
func (h *hookRunner) why(ctx context.Context, timeUp string) string {
	if ctx.Err() == context.Canceled && h.skipCtx.Err() != nil {
		return fmt.Sprintf("the drain skipped its waits (%v)", context.Cause(h.skipCtx))
	}
	return timeUp
}

// hookName names hook i by its String method if it has one, and by its
// type otherwise, or when String panics: the error is the hook's all the
// same. It runs the hook's code: never call it on the runner.
func hookName(i int, h stophook.Hook) (name string) {
	s, ok := h.(fmt.Stringer)
	if !ok {
		return typeName(i, h)
	}
	defer func() {
		if v := recover(); v != nil {
			name = fmt.Sprintf("hook %d (%T, whose String panicked: %v)", i, h, v)
		}
	}()
	return fmt.Sprintf("hook %d (%s)", i, s.String())
}

// typeName names hook i by its type, without running any of its code.
func typeName(i int, h stophook.Hook) string {
	return fmt.Sprintf("hook %d (%T)", i, h)
}
