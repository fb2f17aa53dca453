package drain_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/stophook"
)

// TestCleanupReachesHooksWithTinyTimeout drains an idle server whose hook
// timeout is a nanosecond, the smallest WithHookTimeout accepts: Cleanup
// must still reach the hook, as stophook promises, or a tracing hook leaves
// its drain span open for ever.
func TestCleanupReachesHooksWithTinyTimeout(t *testing.T) {
	for i := range 20 {
		rec := newRecorder()
		ts := newTestServer(t, newService(false))
		d := drain.New(ts.srv, ts.tracker, drain.WithHookTimeout(time.Nanosecond), drain.WithHooks(rec))
		r, _ := d.Drain(context.Background())
		if slices.ContainsFunc(r.NotCalled, func(err error) bool {
			var he *drain.HookError
			return errors.As(err, &he) && he.Phase == stophook.Cleanup
		}) {
			t.Fatalf("drain %d: Report.NotCalled = %v, want Cleanup called", i, r.NotCalled)
		}
		// The call may be abandoned at once: wait for it to be made.
		rec.waitPhase(t, stophook.Cleanup)
	}
}

// errHookFailed is the error of panickyStringer.
var errHookFailed = errors.New("hook failed")

// panickyStringer is a hook that fails, and whose String method, used to
// name it in the error, panics.
type panickyStringer struct{}

func (panickyStringer) OnStop(context.Context, stophook.Event) error { return errHookFailed }
func (panickyStringer) String() string                               { panic("String broke") }

// TestDrainHookStringPanics checks that a hook whose String panics is
// reported with its own error, not as a hook that panicked.
func TestDrainHookStringPanics(t *testing.T) {
	ts := newTestServer(t, newService(false))
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(panickyStringer{}), drain.WithGracePeriod(defaultTestTimeout))
	_, err := d.Drain(context.Background())
	var pe *drain.PanicError
	if !errors.Is(err, errHookFailed) || errors.As(err, &pe) {
		t.Errorf("Drain() = %v, want the hook's own error, and no panic", err)
	}
	var he *drain.HookError
	if !errors.As(err, &he) || !strings.Contains(he.Hook, "panickyStringer") || !strings.Contains(he.Hook, "String broke") {
		t.Errorf("Drain() = %v, want a HookError naming the hook by its type and the panic of its String", err)
	}
}

// TestDrainSkipDoesNotWaitForStuckHook ends the context of Drain while a
// hook that ignores its context is busy with Graceful: the Force event, due
// within the drain's waits, which are skipped, must not wait for that hook
// too; only Cleanup waits for it, one hook timeout.
func TestDrainSkipDoesNotWaitForStuckHook(t *testing.T) {
	const hookTimeout = 2 * time.Second
	svc := newService(false)
	ts := newTestServer(t, svc)
	startCall(t, ts.dial(t), svc) // keeps the Graceful phase waiting
	busy, release := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(svc.release) })
	hook := stophook.Func(func(_ context.Context, e stophook.Event) error {
		if e.Phase == stophook.Graceful {
			close(busy)
			<-release // ignores its context
		}
		return nil
	})
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(hook), drain.WithHookTimeout(hookTimeout),
		drain.WithGracePeriod(time.Hour), drain.WithCancelGrace(time.Hour), drain.WithForceWait(defaultTestShortTimeout))
	ctx, cancel := context.WithCancel(context.Background())
	done := startDrain(ctx, d)
	receive(t, busy, "the hook to be busy with Graceful")
	cancel()
	start := time.Now()
	res := receive(t, done, "Drain after its context ended")
	took := time.Since(start)
	close(release)
	var force *drain.HookError
	for _, err := range res.report.NotCalled {
		if he := (*drain.HookError)(nil); errors.As(err, &he) && he.Phase == stophook.Force {
			force = he
		}
	}
	if force == nil || !strings.Contains(force.Error(), "skipped its waits") {
		t.Errorf("Report.NotCalled = %v, want Force not called because the drain skipped its waits", res.report.NotCalled)
	}
	// Cleanup waits one hook timeout for the stuck hook; had Force waited
	// for it too, the drain would take two.
	if took >= hookTimeout*3/2 {
		t.Errorf("Drain returned %v after its context ended, want about one hook timeout (%v)", took, hookTimeout)
	}
}

// TestDrainHookStringBlocks checks that a hook whose OnStop fails, and
// whose String, called to name it, blocks, is reported with its own error,
// not as a hook that did not return.
func TestDrainHookStringBlocks(t *testing.T) {
	ts := newTestServer(t, newService(false))
	h := &blockingStringer{release: make(chan struct{})}
	t.Cleanup(func() { close(h.release) })
	d := drain.New(ts.srv, ts.tracker, drain.WithHooks(h), drain.WithHookTimeout(50*time.Millisecond),
		drain.WithGracePeriod(50*time.Millisecond), drain.WithCancelGrace(0), drain.WithForceWait(0))
	res := receive(t, startDrain(context.Background(), d), "Drain with a hook whose String blocks")
	if res.err == nil || !strings.Contains(res.err.Error(), "hook failed") || strings.Contains(res.err.Error(), "abandoned") {
		t.Errorf("Drain() = %v, want the hook's own error, not an abandoned call", res.err)
	}
}
