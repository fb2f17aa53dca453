package drain

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// SignalRepeatWindow is how close to the signal before it a signal must
// come to count as the same one delivered twice. coreutils' timeout, and
// some supervisors, send SIGTERM to a process and then to its process
// group, a moment apart: that is one request to stop, not the operator's
// second, which would force the drain. A person pressing Ctrl-C twice
// takes longer than this.
const SignalRepeatWindow = 300 * time.Millisecond

// errSecondSignal is why the drain skips its waits on a second signal.
var errSecondSignal = errors.New("a second signal arrived during the drain")

// A SignalError is the context.Cause of Signals.Context once a signal has
// arrived.
type SignalError struct {
	Signal os.Signal
}

func (e *SignalError) Error() string { return fmt.Sprintf("drain: received %v", e.Signal) }

// Signals catches SIGTERM and SIGINT for a Drainer from the moment it is
// created, so that a program can catch them from the first line of main:
// a signal during start-up (opening a database, warming caches) ends
// Context, which the start-up work can honour, and a Drainer given
// WithSignals drains at once when Serve is called. Create it with
// CatchSignals and stop it with Stop.
//
// A signal that comes within SignalRepeatWindow of the last signal counted
// counts as the same signal, and is not counted. A Signals serves one
// Drainer's Serve: Serve reads the signals it caught, and two readers would
// share them out.
type Signals struct {
	c      chan os.Signal
	events chan signalEvent // the signals caught, for Serve
	ctx    context.Context
	cancel context.CancelCauseFunc

	stopOnce sync.Once
	quit     chan struct{}
	done     chan struct{}
}

// signalEvent is one signal caught; repeat is set for one that came within
// SignalRepeatWindow of the last signal counted.
type signalEvent struct {
	sig    os.Signal
	repeat bool
}

// CatchSignals starts catching SIGTERM and SIGINT; the process no longer
// dies of them. Call Stop when the program no longer needs them caught.
func CatchSignals() *Signals {
	s := &Signals{
		c:      make(chan os.Signal, 8),
		events: make(chan signalEvent, 8),
		quit:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	s.ctx, s.cancel = context.WithCancelCause(context.Background())
	signal.Notify(s.c, syscall.SIGTERM, os.Interrupt)
	go s.run()
	return s
}

func (s *Signals) run() {
	defer close(s.done)
	var last time.Time
	for {
		select {
		case sig := <-s.c:
			now := time.Now()
			repeat := !last.IsZero() && now.Sub(last) < SignalRepeatWindow
			if !repeat {
				last = now
			}
			s.cancel(&SignalError{Signal: sig})
			select {
			case s.events <- signalEvent{sig: sig, repeat: repeat}:
			default: // nobody reads them: the first is in Context
			}
		case <-s.quit:
			return
		}
	}
}

// Context returns a context that ends when the first signal arrives, with a
// *SignalError as its cause.
func (s *Signals) Context() context.Context { return s.ctx }

// Stop stops catching the signals: from then on they have their default
// effect again. It may be called more than once.
func (s *Signals) Stop() {
	s.stopOnce.Do(func() {
		signal.Stop(s.c)
		close(s.quit)
		<-s.done
	})
}
