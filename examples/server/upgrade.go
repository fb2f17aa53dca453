package main

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/systemd"
	"github.com/drainkit/drainkit/upgrade"
)

// handleUpgrades upgrades the server in place on SIGHUP, until the function
// it returns is called:
//
//   - SIGHUP starts the successor (the same binary path and arguments, so a
//     new binary installed there) and waits up to -upgrade-timeout for it to
//     serve. Once it does, this process hands the service over (systemd
//     learns the successor's process ID) and drains; Serve returns the
//     drain's result. If the successor exits or does not serve in time, it
//     is killed, the failure is logged, and this process serves on.
//   - SIGHUP during an upgrade is ignored, with a record that says so; one
//     after a successful upgrade or once the server drains is refused.
//   - SIGTERM or SIGINT during an upgrade abandons it: the successor, which
//     has accepted nothing yet, is killed, and this process drains (Serve
//     handles the signal). If the successor had already reported ready, the
//     upgrade is complete: the successor serves, and this process drains.
//
// SIGTERM and SIGINT also stop the Upgrader, which closes its copy of the
// socket, so that once the drain has closed the listener, connections are
// refused (or, under socket activation, wait for the next process).
func handleUpgrades(u *upgrade.Upgrader, d *drain.Drainer, n *systemd.Notifier, logger *slog.Logger) (stop func()) {
	signals := make(chan os.Signal, 4)
	signal.Notify(signals, syscall.SIGHUP, syscall.SIGTERM, os.Interrupt)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		results := make(chan error, 1)
		upgrading := false
		for {
			select {
			case <-done:
				if upgrading {
					// Stop has ended the upgrade: say so.
					upgraded(<-results, u, n, logger)
				}
				return
			case sig := <-signals:
				if sig != syscall.SIGHUP {
					if upgrading {
						logger.Warn("signal during an upgrade: abandoning it, the successor is killed unless it already serves", "signal", sig.String())
					}
					u.Stop()
					continue
				}
				if upgrading {
					logger.Warn("signal during an upgrade, ignored", "signal", sig.String())
					continue
				}
				upgrading = true
				logger.Info("upgrade: starting the successor", "signal", sig.String())
				if err := n.Reloading("upgrading: starting the successor"); err != nil {
					logger.Warn("telling systemd of the upgrade", "err", err)
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					results <- u.Upgrade()
				}()
			case err := <-results:
				upgrading = false
				if upgraded(err, u, n, logger) {
					wg.Add(1)
					go func() {
						defer wg.Done()
						// Serve returns the result of this drain.
						d.Drain(context.Background())
					}()
				}
			}
		}
	}()
	return func() {
		signal.Stop(signals)
		u.Stop() // ends an upgrade in progress
		close(done)
		wg.Wait()
	}
}

// upgraded logs the result of an upgrade, tells systemd, and reports
// whether the upgrade succeeded: this process must then drain.
func upgraded(err error, u *upgrade.Upgrader, n *systemd.Notifier, logger *slog.Logger) bool {
	switch {
	case errors.Is(err, upgrade.ErrStopped):
		logger.Info("upgrade abandoned: the server drains", "err", err)
	case errors.Is(err, upgrade.ErrUpgraded):
		logger.Warn("upgrade refused: the server was upgraded and drains", "err", err)
	case err != nil:
		logger.Warn("upgrade failed: the server serves on", "err", err)
		if err := n.Ready("serving; the last upgrade failed: " + err.Error()); err != nil {
			logger.Warn("telling systemd that the server serves", "err", err)
		}
	default:
		handOver(u, n, logger)
		return true
	}
	return false
}

// handOver logs that the successor serves, and tells systemd that it
// serves the service from now on: with -pid-file, this process sends the
// successor's process ID itself (for NotifyAccess=main); without, the
// successor's READY=1 carries it (NotifyAccess=all).
func handOver(u *upgrade.Upgrader, n *systemd.Notifier, logger *slog.Logger) {
	pid, err := u.SuccessorPID()
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
