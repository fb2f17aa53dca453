package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/examples/internal/demoflags"
	"github.com/drainkit/drainkit/stophook"
	"github.com/drainkit/drainkit/systemd"
	"github.com/drainkit/drainkit/upgrade"
)

// upgrades upgrades the server in place on SIGHUP:
//
//   - SIGHUP starts the successor (the binary at the same path, with the
//     same arguments, so a new binary installed there) and waits up to
//     -upgrade-timeout for it to serve. Once it does, this process hands
//     the service over (systemd learns the successor's process ID) and
//     drains; Serve returns the drain's result. If the successor exits or
//     does not serve in time, it is killed, the failure is logged, and this
//     process serves on.
//   - SIGHUP before the server serves, after a successful upgrade, or once
//     the server drains, is refused with a record that says so (and
//     systemd hears nothing of it); SIGHUP during an upgrade is ignored,
//     with a record.
//   - A drain that begins during an upgrade (SIGTERM, SIGINT) abandons it:
//     the successor, which has accepted nothing yet, is killed, and this
//     process drains. If the successor had already reported ready, the
//     upgrade is complete: the successor serves, and this process drains.
//
// When the drain begins, the Upgrader is also stopped, which closes its
// copy of the socket, so that once the drain has closed the listener,
// connections are refused (or, under socket activation, wait for the next
// process).
type upgrades struct {
	signals chan os.Signal
	u       *upgrade.Upgrader // set by listen
	done    chan struct{}
	wg      sync.WaitGroup
}

// catchUpgrades starts catching SIGHUP, which from now on asks for an
// upgrade instead of killing the process. The signals are handled once
// start is called.
func catchUpgrades() *upgrades {
	up := &upgrades{signals: make(chan os.Signal, 4), done: make(chan struct{})}
	signal.Notify(up.signals, syscall.SIGHUP)
	return up
}

// listen returns the server's listener, which comes, in order of
// preference, from the process that this one replaces in an upgrade, from
// systemd (socket activation, and -addr is not used), or from listening on
// -addr. The source says which.
func (up *upgrades) listen(cfg demoflags.Config) (net.Listener, systemd.Source, error) {
	opts := []upgrade.Option{upgrade.WithReadyTimeout(cfg.UpgradeTimeout)}
	if cfg.PIDFile != "" {
		opts = append(opts, upgrade.WithPIDFile(cfg.PIDFile))
	}
	u, err := upgrade.New(opts...)
	if err != nil {
		return nil, "", err
	}
	lis, src, err := u.Listen("tcp", cfg.Addr)
	if err != nil {
		u.Stop()
		return nil, "", err
	}
	up.u = u
	return lis, src, nil
}

// ready tells the process's parent, in an upgrade, and systemd that the
// server serves on addr, with a listener from src. A failure is logged: the
// server serves all the same, and the parent gives the upgrade up at its
// timeout.
func (up *upgrades) ready(n *systemd.Notifier, logger *slog.Logger, addr net.Addr, src systemd.Source) {
	if err := up.u.Ready(); err != nil {
		logger.Warn("telling the parent process that the server serves", "err", err)
	}
	if err := n.Ready(fmt.Sprintf("serving on %s (listener: %s)", addr, src)); err != nil {
		logger.Warn("telling systemd that the server serves", "err", err)
	}
}

// hook returns the stop hook that notifies systemd through n and, when the
// drain begins, stops the Upgrader.
func (up *upgrades) hook(n *systemd.Notifier) stophook.Hook {
	return &drainHook{up: up, n: n}
}

// drainHook notifies systemd of each event of the drain, and stops the
// Upgrader when the drain begins.
type drainHook struct {
	up *upgrades
	n  *systemd.Notifier
}

// OnStop stops the Upgrader at NotReady, then notifies systemd.
func (h *drainHook) OnStop(ctx context.Context, e stophook.Event) error {
	if e.Phase == stophook.NotReady && h.up.u != nil {
		h.up.u.Stop()
	}
	return h.n.OnStop(ctx, e)
}

// String names the hook in the drain's errors.
func (h *drainHook) String() string { return h.n.String() }

// start handles SIGHUP, those caught before included, until stop is
// called: d is the server's drain, n its Notifier.
func (up *upgrades) start(d *drain.Drainer, n *systemd.Notifier, logger *slog.Logger) {
	up.wg.Add(1)
	go func() {
		defer up.wg.Done()
		results := make(chan error, 1)
		upgrading := false
		for {
			select {
			case <-up.done:
				if upgrading {
					// Stop has ended the upgrade: say so.
					up.upgraded(<-results, n, logger)
				}
				return
			case sig := <-up.signals:
				if upgrading {
					logger.Warn("signal during an upgrade, ignored", "signal", sig.String())
					continue
				}
				if err := up.u.Upgradable(); err != nil {
					refused(err, sig, logger)
					continue
				}
				upgrading = true
				logger.Info("upgrade: starting the successor", "signal", sig.String())
				if err := n.Reloading("upgrading: starting the successor"); err != nil {
					logger.Warn("telling systemd of the upgrade", "err", err)
				}
				up.wg.Add(1)
				go func() {
					defer up.wg.Done()
					results <- up.u.Upgrade()
				}()
			case err := <-results:
				upgrading = false
				if up.upgraded(err, n, logger) {
					up.wg.Add(1)
					go func() {
						defer up.wg.Done()
						// Serve returns the result of this drain.
						d.Drain(context.Background())
					}()
				}
			}
		}
	}()
}

// stop stops handling SIGHUP, ends an upgrade in progress and waits for
// the handling of signals to end. From then on SIGHUP is ignored: one that
// comes while the process exits must not kill it, which systemd would
// report as a failure.
func (up *upgrades) stop() {
	signal.Ignore(syscall.SIGHUP)
	signal.Stop(up.signals)
	if up.u != nil {
		up.u.Stop()
	}
	close(up.done)
	up.wg.Wait()
}

// upgraded logs the result of an upgrade, tells systemd, and reports
// whether the upgrade succeeded: this process must then drain.
func (up *upgrades) upgraded(err error, n *systemd.Notifier, logger *slog.Logger) bool {
	switch {
	case errors.Is(err, upgrade.ErrStopped):
		logger.Info("upgrade abandoned: the server drains", "err", err)
	case errors.Is(err, upgrade.ErrUpgraded), errors.Is(err, upgrade.ErrNotReady), errors.Is(err, upgrade.ErrInProgress):
		refused(err, syscall.SIGHUP, logger)
	case err != nil:
		logger.Warn("upgrade failed: the server serves on", "err", err)
		if err := n.Ready("serving; the last upgrade failed: " + err.Error()); err != nil {
			logger.Warn("telling systemd that the server serves", "err", err)
		}
	default:
		up.handOver(n, logger)
		return true
	}
	return false
}

// refused logs why the upgrade that sig asked for does not start.
func refused(err error, sig os.Signal, logger *slog.Logger) {
	msg := "upgrade refused"
	switch {
	case errors.Is(err, upgrade.ErrNotReady):
		msg = "upgrade refused: the server does not serve yet"
	case errors.Is(err, upgrade.ErrUpgraded):
		msg = "upgrade refused: the server was upgraded and drains"
	case errors.Is(err, upgrade.ErrStopped):
		msg = "upgrade refused: the server drains"
	case errors.Is(err, upgrade.ErrInProgress):
		msg = "signal during an upgrade, ignored"
	}
	logger.Warn(msg, "signal", sig.String(), "err", err)
}

// handOver logs that the successor serves, and tells systemd that it
// serves the service from now on: with -pid-file, this process sends the
// successor's process ID itself (for NotifyAccess=main); without, the
// successor's READY=1 carries it (NotifyAccess=all).
func (up *upgrades) handOver(n *systemd.Notifier, logger *slog.Logger) {
	pid, err := up.u.SuccessorPID()
	switch {
	case errors.Is(err, upgrade.ErrNoPIDFile):
		logger.Info("upgrade: the successor serves, draining")
	case err != nil:
		logger.Warn("upgrade: the successor serves, draining; its process ID is unknown", "err", err)
	default:
		logger.Info("upgrade: the successor serves, draining", "successor_pid", pid)
	}
	if err := n.HandOver(pid); err != nil {
		logger.Warn("telling systemd of the successor", "err", err)
	}
}
