package drain_test

import (
	"context"
	"errors"
	"slices"
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
