package drain_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/stophook"
)

// orderHook records the phases it is called for, and the calls that
// overlap or come out of phase order. It blocks, at block, until its
// context ends.
type orderHook struct {
	block  stophook.Phase // 0: never blocks
	work   time.Duration  // each call takes this long, as an exporter may
	active atomic.Int32

	mu      sync.Mutex
	seen    []stophook.Phase
	overlap int      // calls that began while another call ran
	errs    []string // broken promises
}

func (h *orderHook) OnStop(ctx context.Context, e stophook.Event) error {
	if h.active.Add(1) != 1 {
		h.mu.Lock()
		h.overlap++
		h.mu.Unlock()
	}
	defer h.active.Add(-1)
	h.mu.Lock()
	if n := len(h.seen); n > 0 && h.seen[n-1] >= e.Phase {
		h.errs = append(h.errs, fmt.Sprintf("%v after %v", e.Phase, h.seen))
	}
	h.seen = append(h.seen, e.Phase)
	h.mu.Unlock()
	if e.Phase == h.block {
		<-ctx.Done()
	}
	time.Sleep(h.work) // work, not synchronisation

	return nil
}

// notCalled returns the phases for which the report says the hook named
// name was not called, and fails t if Drain's error says so too.
func notCalled(t *testing.T, r drain.Report, err error, name string) []stophook.Phase {
	t.Helper()
	if errors.Is(err, drain.ErrHookNotCalled) {
		t.Errorf("Drain() = %v, want the calls not made in the report only", err)
	}
	var ps []stophook.Phase
	for _, e := range r.NotCalled {
		var he *drain.HookError
		if errors.As(e, &he) && he.Hook == name && errors.Is(he, drain.ErrHookNotCalled) {
			ps = append(ps, he.Phase)
		}
	}
	return ps
}

// TestHooksSeePhasesInOrder runs 100 drains of each kind, with a hook that
// blocks until its context ends and one that returns at once, registered in
// either order: a hook is never called for an event while it handles
// another, nor out of phase order; every phase the drain went through
// reaches each hook, or the report says the hook was not called for it
// (and Drain's error does not); and Cleanup always reaches every hook.
func TestHooksSeePhasesInOrder(t *testing.T) {
	const drains = 100
	short := 10 * time.Millisecond
	tests := []struct {
		name       string
		opts       []drain.Option
		skip       bool // end the context of Drain once the handler runs
		blockFirst bool // the blocking hook is called first
	}{
		{name: "a hook blocks at NotReady, called first",
			opts:       []drain.Option{drain.WithGracePeriod(short), drain.WithCancelGrace(short), drain.WithForceWait(short)},
			blockFirst: true},
		{name: "a hook blocks at NotReady, called last",
			opts: []drain.Option{drain.WithGracePeriod(short), drain.WithCancelGrace(short), drain.WithForceWait(short)}},
		{name: "skipped drain",
			// Calls made after the skip get their whole hook timeout.
			opts: []drain.Option{drain.WithGracePeriod(time.Hour), drain.WithCancelGrace(time.Hour), drain.WithForceWait(short), drain.WithHookTimeout(short)},
			skip: true, blockFirst: true},
		{name: "every wait zero",
			opts: []drain.Option{drain.WithGracePeriod(0), drain.WithCancelGrace(0), drain.WithForceWait(0)}},
		{name: "every wait zero, blocking hook first",
			opts:       []drain.Option{drain.WithGracePeriod(0), drain.WithCancelGrace(0), drain.WithForceWait(0)},
			blockFirst: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i := range drains {
				blocker := &orderHook{block: stophook.NotReady}
				fast := &orderHook{work: time.Millisecond}
				hooks := []stophook.Hook{blocker, fast} // fast is called first
				names := []string{"hook 0 (*drain_test.orderHook)", "hook 1 (*drain_test.orderHook)"}
				bName, fName := names[0], names[1]
				if tt.blockFirst {
					hooks = []stophook.Hook{fast, blocker}
					bName, fName = names[1], names[0]
				}
				svc := newService(true) // its handler leaks: every phase runs
				ts := newTestServer(t, svc)
				startCall(t, ts.dial(t), svc)
				d := drain.New(ts.srv, ts.tracker, append([]drain.Option{drain.WithHookTimeout(time.Hour), drain.WithHooks(hooks...)},
					tt.opts...)...)
				ctx, cancel := context.WithCancel(context.Background())
				if tt.skip {
					cancel()
				}
				res := receive(t, startDrain(ctx, d), fmt.Sprintf("drain %d", i))
				r, err := res.report, res.err
				cancel()
				close(svc.release)
				phases := phaseNames(r)
				for _, h := range []struct {
					name string
					hook *orderHook
				}{{bName, blocker}, {fName, fast}} {
					h.hook.mu.Lock()
					seen, overlap, errs := slices.Clone(h.hook.seen), h.hook.overlap, h.hook.errs
					h.hook.mu.Unlock()
					if overlap > 0 || len(errs) > 0 {
						t.Fatalf("drain %d: %s: %d overlapping calls, broken order: %v", i, h.name, overlap, errs)
					}
					missed := notCalled(t, r, err, h.name)
					got := slices.Concat(seen, missed)
					slices.Sort(got)
					if !slices.Equal(got, phases) {
						t.Fatalf("drain %d: %s saw %v and was not called for %v, want together the drain's phases %v (Drain() = %v)",
							i, h.name, seen, missed, phases, err)
					}
					if len(seen) == 0 || seen[len(seen)-1] != stophook.Cleanup {
						t.Fatalf("drain %d: %s saw %v, want Cleanup last (Drain() = %v)", i, h.name, seen, err)
					}
				}
			}
		})
	}
}
