package drain

import (
	"context"
	"fmt"
	"runtime/debug"
	"slices"
	"time"

	"github.com/drainkit/drainkit/stophook"
)

// A HookError is the error of one hook call. It unwraps to the hook's own
// error, to context.DeadlineExceeded when the hook outlived its timeout, to
// context.Canceled when it was still running as the drain skipped its waits
// (a second signal, or the end of the context of Drain), or to a
// *PanicError when the hook panicked.
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
type hookRunner struct {
	base    context.Context // the parent of each call's context
	skipCtx context.Context // ends when the drain skips its waits
	hooks   []stophook.Hook // in registration order
	timeout time.Duration
	cutoff  time.Time // no call for an event before Cleanup lasts past it
	events  chan queued
	done    chan struct{}
	errs    []error // owned by the runner's goroutine until done is closed
}

func (d *Drainer) startHooks(base context.Context, started time.Time) *hookRunner {
	h := &hookRunner{
		base:    base,
		skipCtx: d.skipCtx,
		hooks:   d.o.hooks,
		timeout: d.o.hookTimeout,
		cutoff:  started.Add(d.waits()),
		events:  make(chan queued, numEvents),
		done:    make(chan struct{}),
	}
	go h.run()
	return h
}

// numEvents is the number of events a drain sends at the most, one per
// phase, so that sending one never blocks.
const numEvents = 5

// queued is an event waiting for the hooks, with the channel closed once
// every hook has handled it.
type queued struct {
	event   stophook.Event
	handled chan struct{}
}

// send queues the event of phase p for the hooks, and returns a channel
// closed once every hook has handled it.
func (h *hookRunner) send(p stophook.Phase, r *Report, inFlight int) <-chan struct{} {
	e := stophook.Event{Phase: p, Started: r.Started, InFlight: inFlight, Cancelled: r.Cancelled}
	if p == stophook.Cleanup {
		e.Leaked = slices.Clone(r.Leaked)
	}
	q := queued{event: e, handled: make(chan struct{})}
	h.events <- q
	return q.handled
}

// finish waits for the hooks to handle every event sent and returns their
// errors. Every call is bounded by the timeout, so finish is too.
func (h *hookRunner) finish() []error {
	close(h.events)
	<-h.done
	return h.errs
}

func (h *hookRunner) run() {
	defer close(h.done)
	for q := range h.events {
		for i := len(h.hooks) - 1; i >= 0; i-- {
			if err := h.call(i, q.event); err != nil {
				h.errs = append(h.errs, err)
			}
		}
		close(q.handled)
	}
}

// call calls hook i with e, and gives up on it when its timeout passes, for
// an event before Cleanup at the cutoff, and, for a call already running
// when the drain skips its waits, then: the call's context ends, and the
// call is left to return on its own.
//
// No code of the hook but OnStop runs on the runner: its String, for the
// error, is called on the call's goroutine, within the same bounds.
func (h *hookRunner) call(i int, e stophook.Event) error {
	hook := h.hooks[i]
	deadline := time.Now().Add(h.timeout)
	if e.Phase != stophook.Cleanup && h.cutoff.Before(deadline) {
		deadline = h.cutoff
	}
	ctx, cancel := context.WithDeadline(h.base, deadline)
	defer cancel()
	if h.skipCtx.Err() == nil {
		// Hooks that honour their context return as soon as the drain
		// skips its waits, so that the forced stop and the exit follow at
		// once. Calls made after the skip get their whole timeout.
		stop := context.AfterFunc(h.skipCtx, cancel)
		defer stop()
	}
	type outcome struct {
		err  error
		name string
	}
	result := make(chan outcome, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				result <- outcome{err: &PanicError{Value: v, Stack: debug.Stack()}, name: typeName(i, hook)}
			}
		}()
		err := hook.OnStop(ctx, e)
		name := ""
		if err != nil {
			name = hookName(i, hook)
		}
		result <- outcome{err: err, name: name}
	}()
	select {
	case o := <-result:
		if o.err == nil {
			return nil
		}
		return &HookError{Hook: o.name, Phase: e.Phase, Err: o.err}
	case <-ctx.Done():
		err := fmt.Errorf("did not return in time (hook timeout %v): %w", h.timeout, ctx.Err())
		if skip := context.Cause(h.skipCtx); skip != nil && ctx.Err() == context.Canceled {
			err = fmt.Errorf("abandoned when the drain skipped its waits (%v): %w", skip, ctx.Err())
		}
		return &HookError{Hook: typeName(i, hook), Phase: e.Phase, Err: err}
	}
}

// hookName names hook i by its String method if it has one, and by its
// type otherwise. It runs the hook's code: never call it on the runner.
func hookName(i int, h stophook.Hook) string {
	if s, ok := h.(fmt.Stringer); ok {
		return fmt.Sprintf("hook %d (%s)", i, s.String())
	}
	return typeName(i, h)
}

// typeName names hook i by its type, without running any of its code.
func typeName(i int, h stophook.Hook) string {
	return fmt.Sprintf("hook %d (%T)", i, h)
}
