package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

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
//   - SIGHUP before the server serves, after a successful upgrade, once
//     the server drains, or in a container (PID 1, or the child of a
//     minimal init), is refused with a record that says so (and
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
	signals  chan os.Signal
	u        *upgrade.Upgrader // set by listen
	done     chan struct{}
	wg       sync.WaitGroup
	stopOnce sync.Once

	mu      sync.Mutex
	status  string        // the server's status line, once it serves; guarded by mu
	budget  time.Duration // the drain's budget, once start is called; guarded by mu
	logger  *slog.Logger  // set by start; guarded by mu
	servedC chan struct{} // closed once Ready has succeeded: the server served
}

// catchUpgrades starts catching SIGHUP, which from now on asks for an
// upgrade instead of killing the process. The signals are handled once
// start is called.
func catchUpgrades() *upgrades {
	up := &upgrades{signals: make(chan os.Signal, 4), done: make(chan struct{}), servedC: make(chan struct{})}
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

// ready tells the process's parent, in an upgrade, and otherwise systemd,
// that the server serves on addr, with a listener from src. A successor
// tells systemd nothing: its parent, still the main process of the unit,
// hands the service over to it (see handOver), which systemd takes under
// NotifyAccess=main as under NotifyAccess=all. An error (the PID file
// cannot be written) is returned: the server must not serve, and its
// parent, in an upgrade, serves on and says why.
func (up *upgrades) ready(n *systemd.Notifier, logger *slog.Logger, addr net.Addr, src systemd.Source) error {
	status := fmt.Sprintf("serving on %s (listener: %s, pid %d)", addr, src, os.Getpid())
	up.mu.Lock()
	up.status = status
	up.mu.Unlock()
	if up.u.HasParent() && !up.u.ParentLearnsPID() {
		// A parent of an older version, which cannot hand the service
		// over: this process tells systemd itself, before its parent
		// learns that it serves (NotifyAccess=all).
		if err := n.Ready(status); err != nil {
			logger.Warn("telling systemd that the server serves", "err", err)
		}
	}
	if err := up.u.Ready(); err != nil {
		return err
	}
	close(up.servedC)
	if up.u.HasParent() {
		return nil
	}
	if err := n.Ready(status); err != nil {
		logger.Warn("telling systemd that the server serves", "err", err)
	}
	return nil
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
	up.mu.Lock()
	up.budget, up.logger = d.Budget(), logger
	up.mu.Unlock()
	if up.u.HasParent() {
		// Until the parent exits, SIGHUP is refused: say when it may come,
		// and put the status line of the hand-over back, which a refused
		// reload may have replaced.
		parent := os.Getppid()
		up.wg.Add(1)
		go func() {
			defer up.wg.Done()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				<-up.done
				cancel()
			}()
			if up.u.WaitForParent(ctx) != nil {
				return
			}
			select {
			case <-up.servedC:
				logger.Info("the server this one replaced has exited: it may be upgraded again", "pid", os.Getpid())
				if err := n.Status(handOverStatus(os.Getpid(), parent)); err != nil {
					logger.Warn("telling systemd that the server serves", "err", err)
				}
			case <-up.done:
			}
		}()
	}
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
					refused(err, sig, n, logger)
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
//
// A successor whose parent still drains then waits for the parent's exit,
// for at most its own drain's budget (the parent's drain, with the same
// flags, began earlier): under systemd the successor is the main process,
// and its exit makes systemd send SIGTERM to what is left of the service,
// which the parent would take as a second signal, forcing its drain.
// It may be called more than once.
func (up *upgrades) stop() {
	up.stopOnce.Do(func() {
		signal.Ignore(syscall.SIGHUP)
		signal.Stop(up.signals)
		if up.u != nil {
			up.u.Stop()
		}
		close(up.done)
		up.wg.Wait()
		up.waitParent()
	})
}

// waitParent waits for the process that this one replaced to exit, for at
// most the drain's budget, if this one served: a successor that did not
// serve never was the main process, and its parent waits for its exit.
func (up *upgrades) waitParent() {
	up.mu.Lock()
	budget, logger := up.budget, up.logger
	up.mu.Unlock()
	if up.u == nil || logger == nil || !up.served() || up.u.WaitForParent(expired) == nil {
		return
	}
	logger.Info("waiting for the server this one replaced to finish its drain", "parent_pid", os.Getppid(), "at_most", budget.String())
	ctx, cancel := context.WithTimeout(context.Background(), budget)
	defer cancel()
	if err := up.u.WaitForParent(ctx); err != nil {
		logger.Warn("the server this one replaced still runs", "err", err)
	}
}

// served reports whether the server has served: Ready has succeeded.
func (up *upgrades) served() bool {
	select {
	case <-up.servedC:
		return true
	default:
		return false
	}
}

// expired is a context that has ended.
var expired = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// upgraded logs the result of an upgrade, tells systemd, and reports
// whether the upgrade succeeded: this process must then drain.
func (up *upgrades) upgraded(err error, n *systemd.Notifier, logger *slog.Logger) bool {
	switch {
	case errors.Is(err, upgrade.ErrStopped):
		logger.Info("upgrade abandoned: the server drains", "err", err)
	case errors.Is(err, upgrade.ErrUpgraded), errors.Is(err, upgrade.ErrNotReady), errors.Is(err, upgrade.ErrInProgress),
		errors.Is(err, upgrade.ErrPID1), errors.Is(err, upgrade.ErrContainerInit), errors.Is(err, upgrade.ErrParentDraining):
		refused(err, syscall.SIGHUP, n, logger)
	case err != nil:
		logger.Warn("upgrade failed: the server serves on", "err", err)
		up.mu.Lock()
		status := up.status
		up.mu.Unlock()
		if err := n.Ready(status + "; the last upgrade failed: " + err.Error()); err != nil {
			logger.Warn("telling systemd that the server serves", "err", err)
		}
	default:
		up.handOver(n, logger)
		return true
	}
	return false
}

// refused logs why the upgrade that sig asked for does not start, and puts
// it in systemd's status line: systemctl reload reports success all the
// same, since the reload's command (kill -HUP) succeeded.
func refused(err error, sig os.Signal, n *systemd.Notifier, logger *slog.Logger) {
	msg := "upgrade refused"
	switch {
	case errors.Is(err, upgrade.ErrNotReady):
		msg = "upgrade refused: the server does not serve yet"
	case errors.Is(err, upgrade.ErrUpgraded):
		msg = "upgrade refused: the server was upgraded and drains"
	case errors.Is(err, upgrade.ErrStopped):
		msg = "upgrade refused: the server drains"
	case errors.Is(err, upgrade.ErrPID1):
		msg = "upgrade refused: the server is PID 1, and its successor would be killed when it exits; restart it instead"
	case errors.Is(err, upgrade.ErrContainerInit):
		msg = "upgrade refused: the server is the main process of a container (under an init such as docker run --init), and its successor would be killed when it exits; restart it instead"
	case errors.Is(err, upgrade.ErrParentDraining):
		msg = "upgrade refused: the server this one replaced still drains; reload once it has exited"
	case errors.Is(err, upgrade.ErrInProgress):
		msg = "signal during an upgrade, ignored"
	}
	logger.Warn(msg, "signal", sig.String(), "err", err)
	if err := n.Status("reload " + strings.TrimPrefix(msg, "upgrade ")); err != nil {
		logger.Warn("telling systemd that the upgrade was refused", "err", err)
	}
}

// handOver logs that the successor serves, and tells systemd, from this
// process, still the unit's main process, that the successor is the main
// process from now on and serves (MAINPID=, READY=1): before this process
// drains, so that systemd has read it when it learns of this process's
// exit.
func (up *upgrades) handOver(n *systemd.Notifier, logger *slog.Logger) {
	pid, err := up.u.SuccessorPID()
	if err != nil {
		logger.Warn("upgrade: the successor serves, draining; its process ID is unknown, and systemd will not follow it", "err", err)
	} else {
		logger.Info("upgrade: the successor serves, draining", "successor_pid", pid)
	}
	if err := n.HandOver(pid, handOverStatus(pid, os.Getpid())); err != nil {
		logger.Warn("telling systemd of the successor", "err", err)
	}
}

// handOverStatus is the status line of a server, pid, that replaced
// another, parent, in an upgrade.
func handOverStatus(pid, parent int) string {
	return fmt.Sprintf("serving (pid %d, upgraded from pid %d)", pid, parent)
}
