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
