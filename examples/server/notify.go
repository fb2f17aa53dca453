package main

import (
	"time"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/systemd"
)

// newNotifier returns the server's systemd.Notifier, whose
// EXTEND_TIMEOUT_USEC follows the budget of *d, the drain created after it.
// Outside systemd it does nothing.
func newNotifier(d **drain.Drainer) *systemd.Notifier {
	return systemd.NewNotifier(systemd.WithStopBudget(func() time.Duration { return (*d).Budget() }))
}
