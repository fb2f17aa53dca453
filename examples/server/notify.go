package main

import (
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/systemd"
	"github.com/drainkit/drainkit/upgrade"
)

// newNotifier returns the server's systemd.Notifier, whose EXTEND_TIMEOUT_USEC
// follows the budget of *d, the drain created after it. Outside systemd it
// does nothing.
func newNotifier(d **drain.Drainer) *systemd.Notifier {
	return systemd.NewNotifier(systemd.WithStopBudget(func() time.Duration { return (*d).Budget() }))
}

// ready tells the process's parent, in an upgrade, and systemd that the
// server serves on addr, with a listener from src. A failure is logged: the
// server serves all the same, and the parent gives the upgrade up at its
// timeout.
func ready(u *upgrade.Upgrader, n *systemd.Notifier, logger *slog.Logger, addr net.Addr, src systemd.Source) {
	if err := u.Ready(); err != nil {
		logger.Warn("telling the parent process that the server serves", "err", err)
	}
	if err := n.Ready(fmt.Sprintf("serving on %s (listener: %s)", addr, src)); err != nil {
		logger.Warn("telling systemd that the server serves", "err", err)
	}
}
