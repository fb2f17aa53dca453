package drain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
)

// Serve serves srv on lis until SIGTERM or SIGINT, then drains it; a second
// signal during the drain skips straight to the forced stop. A drain that
// began without a signal (a call of Drain, as after an in-place upgrade)
// counts the first signal that comes during it as the first: only a second
// one forces it. A signal within
// SignalRepeatWindow of the last one counted counts as the same signal. Serve
// catches the signals from the moment it is called, or uses the Signals
// given by WithSignals, which may have caught one already: Serve then drains
// at once. It stops catching signals it caught itself when it returns. It
// is the one part of drainkit that handles signals; a program that handles
// its own calls srv.Serve and Drain instead.
//
// Serve returns nil after a clean drain, the error of Drain otherwise (it
// wraps ErrForced when the forced stop cut RPCs). When the drain is started
// by a call of Drain instead of a signal, Serve returns its result all the
// same. If the drain has already begun, Serve closes lis, as grpc's Serve
// does after Stop, and returns an error wrapping ErrDrained at once; it
// returns srv.Serve's error if serving fails.
func (d *Drainer) Serve(lis net.Listener) error {
	if lis == nil {
		return errors.New("drain: Serve: nil net.Listener")
	}
	sigs := d.o.signals
	if sigs == nil {
		sigs = CatchSignals()
		defer sigs.Stop()
	}

	wl := newDrainListener(lis)
	d.mu.Lock()
	started := d.started
	if !started {
		d.listeners = append(d.listeners, wl)
	}
	d.mu.Unlock()
	if started {
		addr := lis.Addr()
		lis.Close()
		return fmt.Errorf("%w: not serving %v", ErrDrained, addr)
	}

	served := make(chan error, 1)
	go func() { served <- d.srv.Serve(wl) }()

	log := d.o.logger
	forceAfter := 1 // signals during the drain before it is forced
	select {
	case ev := <-sigs.events:
		d.mu.Lock()
		began := d.started
		d.mu.Unlock()
		msg := "signal received, draining"
		if began {
			// The drain began without a signal (Drain was called, as an
			// upgrade does): this is the first signal, not a second.
			msg = "signal received during a drain that began without one: the drain goes on, a second signal forces it"
		}
		log.LogAttrs(context.Background(), slog.LevelInfo, msg, slog.String("signal", ev.sig.String()))
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

	ctx, force := context.WithCancelCause(context.Background())
	defer force(nil)
	go func() {
		for n := 0; n < forceAfter; {
			select {
			case ev := <-sigs.events:
				if ev.repeat {
					log.LogAttrs(context.Background(), slog.LevelInfo, "signal repeated within the repeat window, taken as the same signal",
						slog.String("signal", ev.sig.String()), slog.String("window", SignalRepeatWindow.String()))
					continue
				}
				n++
				log.LogAttrs(context.Background(), slog.LevelWarn, "signal received during the drain", slog.String("signal", ev.sig.String()))
			case <-ctx.Done():
				return
			}
		}
		force(errSecondSignal)
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
