package drain

import (
	"fmt"
	"math"
	"time"
)

// Budget returns the worst-case duration of Drain: no behaviour of handlers
// or hooks makes it take longer, but for the few milliseconds of work
// between the waits. Compare it with Kubernetes' terminationGracePeriodSeconds
// or systemd's TimeoutStopSec, or let CheckBudget do it.
//
// It is the sum of the waits (readiness delay, grace period, cancel grace and
// force wait) and of one hook timeout per hook. Hooks handle the events
// before Cleanup beside the waits, and never past the longest the waits can
// take; the Cleanup event comes after the waits, and each hook may take up
// to its timeout to handle it. A sum beyond the largest time.Duration
// saturates at it, so the budget of absurd settings is absurd, never
// negative.
func (d *Drainer) Budget() time.Duration {
	return addSat(d.waits(), d.stoppedHooks())
}

// waits returns the longest the phases' waits can take together.
func (d *Drainer) waits() time.Duration {
	return addSat(addSat(d.o.readinessDelay, d.o.gracePeriod), addSat(d.o.cancelGrace, d.o.forceWait))
}

// stoppedHooks returns the longest the hooks can take to handle Cleanup.
func (d *Drainer) stoppedHooks() time.Duration {
	n := time.Duration(len(d.o.hooks))
	if n > 0 && d.o.hookTimeout > math.MaxInt64/n {
		return math.MaxInt64
	}
	return n * d.o.hookTimeout
}

// addSat returns a+b for durations that are not negative, or the largest
// time.Duration if the sum is beyond it.
func addSat(a, b time.Duration) time.Duration {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

// BudgetMargin is the time CheckBudget keeps between Budget and the limit
// it is given. A drain takes a few milliseconds more than the sum of its
// waits and hook timeouts (the work between the waits, the scheduling of
// its goroutines, the log records); and after Drain returns, the process
// still has to exit before the limit, when Kubernetes or systemd kill it. A
// second covers both many times over; measured, a forced drain of the
// worst case overshoots its Budget by a few milliseconds (see
// BENCHMARKS.md).
const BudgetMargin = time.Second

// CheckBudget returns nil if Budget, plus BudgetMargin, is within limit,
// and otherwise an error that lists what makes up the budget and names the
// setting that takes it past the limit.
func (d *Drainer) CheckBudget(limit time.Duration) error {
	budget := d.Budget()
	if addSat(budget, BudgetMargin) <= limit {
		return nil
	}
	parts := []struct {
		name string
		d    time.Duration
	}{
		{"the readiness delay (WithReadinessDelay)", d.o.readinessDelay},
		{"the grace period (WithGracePeriod)", d.o.gracePeriod},
		{"the cancel grace (WithCancelGrace)", d.o.cancelGrace},
		{"the force wait (WithForceWait)", d.o.forceWait},
		{fmt.Sprintf("the hook time (%d hooks × WithHookTimeout %v)", len(d.o.hooks), d.o.hookTimeout), d.stoppedHooks()},
	}
	sum := BudgetMargin
	culprit := "the margin (BudgetMargin) alone"
	for _, p := range parts {
		if sum > limit {
			break
		}
		sum = addSat(sum, p.d)
		if sum > limit {
			culprit = p.name
			break
		}
	}
	over := ""
	if budget == math.MaxInt64 {
		over = " (the largest duration: the settings sum past it)"
	}
	return fmt.Errorf("drain: worst case %v%s plus a margin of %v (BudgetMargin) exceeds the limit of %v: readiness delay %v + grace period %v + cancel grace %v + force wait %v + hooks %v; %s takes it past the limit",
		budget, over, BudgetMargin, limit, d.o.readinessDelay, d.o.gracePeriod, d.o.cancelGrace, d.o.forceWait, d.stoppedHooks(), culprit)
}
