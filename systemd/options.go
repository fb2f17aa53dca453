package systemd

import (
	"fmt"
	"time"
)

// An Option configures a Notifier.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	budget  func() time.Duration
	margin  time.Duration
	onError func(error)
}

// DefaultTimeoutMargin is the margin added to the drain's remaining budget
// in EXTEND_TIMEOUT_USEC=.
const DefaultTimeoutMargin = 5 * time.Second

func defaultOptions() options {
	return options{margin: DefaultTimeoutMargin}
}

// WithStopBudget makes the Notifier send, at each event of the drain,
// EXTEND_TIMEOUT_USEC= with what remains of budget() since the drain began,
// plus the margin, so that systemd's stop timeout (TimeoutStopSec) never
// ends the drain before its own bounds do. budget is called at each event;
// pass the drain's Budget method through a closure, since the Drainer is
// created after its hooks:
//
//	n := systemd.NewNotifier(systemd.WithStopBudget(func() time.Duration { return d.Budget() }))
//	d = drain.New(srv, t, drain.WithHooks(n))
//
// By default no EXTEND_TIMEOUT_USEC= is sent. It panics if budget is nil.
func WithStopBudget(budget func() time.Duration) Option {
	if budget == nil {
		panic("systemd: WithStopBudget: nil function")
	}
	return optionFunc(func(o *options) { o.budget = budget })
}

// WithTimeoutMargin sets what EXTEND_TIMEOUT_USEC= allows beyond the
// remaining budget: for the process to exit and systemd to notice. The
// default is DefaultTimeoutMargin. It panics if d is negative.
func WithTimeoutMargin(d time.Duration) Option {
	if d < 0 {
		panic(fmt.Sprintf("systemd: WithTimeoutMargin(%v): negative duration", d))
	}
	return optionFunc(func(o *options) { o.margin = d })
}

// WithErrorHandler gives the Notifier a function to call with each message
// of a drain's event (OnStop) that cannot be sent. OnStop itself returns
// nil, so that a failure to notify never changes the drain's result; the
// function is where the program logs it. It is called from OnStop, in the
// drain's goroutine for hooks. By default such failures are dropped: call
// Check at start-up to hear of an unusable NOTIFY_SOCKET once, before the
// drain. It panics if f is nil.
func WithErrorHandler(f func(error)) Option {
	if f == nil {
		panic("systemd: WithErrorHandler: nil function")
	}
	return optionFunc(func(o *options) { o.onError = f })
}
