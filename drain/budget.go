package drain

import (
	"fmt"
	"time"
)

// Budget returns the worst-case duration of Drain: no behaviour of handlers
// or hooks makes it take longer (but for a few milliseconds of work between
// the waits). Compare it with Kubernetes' terminationGracePeriodSeconds or
// systemd's TimeoutStopSec, or let CheckBudget do it.
//
// The phases' waits add up: readiness delay, grace period, cancel grace and
// force wait. Hooks run beside them, one call at a time, each call bounded
// by the hook timeout; they add to the total only what they can overrun, at
// most the hook timeout times the number of hooks for each of the five
// events, and never less than that once for the Stopped event, which comes
// last.
func (d *Drainer) Budget() time.Duration {
	perEvent := time.Duration(len(d.o.hooks)) * d.o.hookTimeout
	var end time.Duration // when the hook runner is done at the latest
	for _, sent := range d.eventTimes() {
		end = max(end, sent) + perEvent
	}
	return end
}

// eventTimes returns the latest time, from the start of the drain, at which
// each of the five events can be sent.
func (d *Drainer) eventTimes() [5]time.Duration {
	r, g, c, f := d.o.readinessDelay, d.o.gracePeriod, d.o.cancelGrace, d.o.forceWait
	return [5]time.Duration{0, r, r + g, r + g + c, r + g + c + f}
}

// CheckBudget returns nil if Budget is within limit, and otherwise an error
// that lists what makes up the budget and names the setting that takes it
// past the limit.
func (d *Drainer) CheckBudget(limit time.Duration) error {
	budget := d.Budget()
	if budget <= limit {
		return nil
	}
	hooks := budget - d.eventTimes()[4]
	parts := []struct {
		name string
		d    time.Duration
	}{
		{"the readiness delay (WithReadinessDelay)", d.o.readinessDelay},
		{"the grace period (WithGracePeriod)", d.o.gracePeriod},
		{"the cancel grace (WithCancelGrace)", d.o.cancelGrace},
		{"the force wait (WithForceWait)", d.o.forceWait},
		{fmt.Sprintf("the hooks (%d hooks, WithHookTimeout %v each per event)", len(d.o.hooks), d.o.hookTimeout), hooks},
	}
	var sum time.Duration
	culprit := parts[len(parts)-1].name
	for _, p := range parts {
		sum += p.d
		if sum > limit {
			culprit = p.name
			break
		}
	}
	return fmt.Errorf("drain: worst case %v exceeds the limit of %v: readiness delay %v + grace period %v + cancel grace %v + force wait %v + hooks %v; %s takes it past the limit",
		budget, limit, d.o.readinessDelay, d.o.gracePeriod, d.o.cancelGrace, d.o.forceWait, hooks, culprit)
}
