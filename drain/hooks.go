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
// error, to context.DeadlineExceeded when the hook outlived its timeout, or
// to a *PanicError when the hook panicked.
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
	hooks   []stophook.Hook // in registration order
	timeout time.Duration
	cutoff  time.Time // no call for an event before Stopped lasts past it
	events  chan queued
	done    chan struct{}
	errs    []error // owned by the runner's goroutine until done is closed
}

func (d *Drainer) startHooks(base context.Context, started time.Time) *hookRunner {
	h := &hookRunner{
		base:    base,
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
	if p == stophook.Stopped {
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

// call calls hook i with e, and gives up on it when its timeout passes, or
// for an event before Stopped, at the cutoff: the call is then left to
// return on its own.
func (h *hookRunner) call(i int, e stophook.Event) (err error) {
	hook := h.hooks[i]
	deadline := time.Now().Add(h.timeout)
	if e.Phase != stophook.Stopped && h.cutoff.Before(deadline) {
		deadline = h.cutoff
	}
	ctx, cancel := context.WithDeadline(h.base, deadline)
	defer cancel()
	result := make(chan error, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				result <- &PanicError{Value: v, Stack: debug.Stack()}
			}
		}()
		result <- hook.OnStop(ctx, e)
	}()
	select {
	case err = <-result:
	case <-ctx.Done():
		err = fmt.Errorf("did not return in time (hook timeout %v): %w", h.timeout, ctx.Err())
	}
	if err == nil {
		return nil
	}
	return &HookError{Hook: hookName(i, hook), Phase: e.Phase, Err: err}
}

func hookName(i int, h stophook.Hook) string {
	if s, ok := h.(fmt.Stringer); ok {
		return fmt.Sprintf("hook %d (%s)", i, s)
	}
	return fmt.Sprintf("hook %d (%T)", i, h)
}
