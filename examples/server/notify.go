package main

import (
	"log/slog"
	"time"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/systemd"
)

// newNotifier returns the server's systemd.Notifier, whose
// EXTEND_TIMEOUT_USEC follows the budget of *d, the drain created after it,
// and whose failures during the drain are logged: they change neither the
// drain's result nor the exit status. A NOTIFY_SOCKET that cannot be used
// is said at once. Outside systemd it does nothing.
func newNotifier(d **drain.Drainer, logger *slog.Logger) *systemd.Notifier {
	n := systemd.NewNotifier(
		systemd.WithStopBudget(func() time.Duration { return (*d).Budget() }),
		systemd.WithErrorHandler(func(err error) { logger.Warn("telling systemd of the drain", "err", err) }),
	)
	if err := n.Check(); err != nil {
		logger.Warn("NOTIFY_SOCKET cannot be used: systemd will hear nothing from the server", "err", err)
	}
	return n
}
