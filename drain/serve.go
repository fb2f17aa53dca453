package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
)

// Serve serves srv on lis until SIGTERM or SIGINT, then drains it; a second
// signal during the drain skips straight to the forced stop. It registers
// for the signals before it starts serving and stops listening for them when
// it returns. It is the one part of drainkit that handles signals; a program
// that handles its own calls srv.Serve and Drain instead.
//
// Serve returns nil after a clean drain, the error of Drain otherwise (it
// wraps ErrForced when the drain had to force). When the drain is started by
// a call of Drain instead of a signal, Serve returns its result all the same.
// It returns an error wrapping ErrDrained at once if the drain has already
// begun, and srv.Serve's error if serving fails.
func (d *Drainer) Serve(lis net.Listener) error {
	if lis == nil {
		return errors.New("drain: Serve: nil net.Listener")
	}
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, os.Interrupt)
	defer signal.Stop(signals)

	d.mu.Lock()
	started := d.started
	d.mu.Unlock()
	if started {
		return fmt.Errorf("%w: not serving %v", ErrDrained, lis.Addr())
	}

	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(lis) }()

	forceAfter := 1 // signals during the drain before it is forced
	select {
	case sig := <-signals:
		d.o.logger.LogAttrs(context.Background(), slog.LevelInfo, "signal received, draining", slog.String("signal", sig.String()))
	case err := <-served:
		served <- err
		d.mu.Lock()
		started := d.started
		d.mu.Unlock()
		if !started {
			// Serving failed, or the server was stopped without a drain.
			return err
		}
		forceAfter = 2 // the drain was started by Drain, not by a signal
	}

	ctx, force := context.WithCancel(context.Background())
	defer force()
	go func() {
		for range forceAfter {
			select {
			case sig := <-signals:
				d.o.logger.LogAttrs(context.Background(), slog.LevelWarn, "signal received during the drain", slog.String("signal", sig.String()))
			case <-ctx.Done():
				return
			}
		}
		force()
	}()
	_, err := d.Drain(ctx)
	select {
	case <-d.serverStopped:
		// srv.Serve returns as soon as the server has stopped.
		<-served
	default:
		// Stop has not returned within the force wait (closing a
		// connection blocked); neither has srv.Serve, which is left to
		// return on its own.
	}
	return err
}
