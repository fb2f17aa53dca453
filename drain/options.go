package drain

import (
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc/health"

	"github.com/drainkit/drainkit/stophook"
)

// An Option configures a Drainer. Options are evaluated once, by New.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	readinessDelay time.Duration
	gracePeriod    time.Duration
	cancelGrace    time.Duration
	forceWait      time.Duration
	hookTimeout    time.Duration
	health         []*health.Server
	hooks          []stophook.Hook
	logger         *slog.Logger
	signals        *Signals
}

func defaultOptions() options {
	return options{
		gracePeriod: 15 * time.Second,
		cancelGrace: 3 * time.Second,
		forceWait:   time.Second,
		hookTimeout: 2 * time.Second,
		logger:      slog.New(slog.DiscardHandler),
	}
}

// WithReadinessDelay sets how long the server keeps serving everything, new
// connections included, after its health services report NOT_SERVING, so
// that load balancers and Kubernetes endpoints stop sending it work before it
// stops listening. Set it a little above your endpoint propagation time
// (a few seconds in Kubernetes). The default is 0.
func WithReadinessDelay(d time.Duration) Option {
	mustNotBeNegative("WithReadinessDelay", d)
	return optionFunc(func(o *options) { o.readinessDelay = d })
}

// WithGracePeriod sets how long the drain waits, after GOAWAY, for in-flight
// RPCs to finish on their own. The default is 15s: with a readiness delay
// of 5s and one hook, the default budget (26s) fits Kubernetes' default
// terminationGracePeriodSeconds of 30 with a margin (see the package
// documentation).
func WithGracePeriod(d time.Duration) Option {
	mustNotBeNegative("WithGracePeriod", d)
	return optionFunc(func(o *options) { o.gracePeriod = d })
}

// WithCancelGrace sets how long the drain waits for handlers to return after
// cancelling their contexts. The default is 3s.
func WithCancelGrace(d time.Duration) Option {
	mustNotBeNegative("WithCancelGrace", d)
	return optionFunc(func(o *options) { o.cancelGrace = d })
}

// WithForceWait sets how long the drain waits for handlers after the forced
// Stop before it reports the ones still running as leaked. The default is 1s.
func WithForceWait(d time.Duration) Option {
	mustNotBeNegative("WithForceWait", d)
	return optionFunc(func(o *options) { o.forceWait = d })
}

// WithHookTimeout bounds each call of a hook: the call's context ends after
// d, and the drain stops waiting for it then. The default is 2s. It panics if
// d is not positive.
func WithHookTimeout(d time.Duration) Option {
	if d <= 0 {
		panic(fmt.Sprintf("drain: WithHookTimeout(%v): must be positive", d))
	}
	return optionFunc(func(o *options) { o.hookTimeout = d })
}

// WithHealth names a health service whose every status goes NOT_SERVING when
// the drain starts (health.Server.Shutdown). It may be given more than once.
// By default no health service is changed.
func WithHealth(h *health.Server) Option {
	if h == nil {
		panic("drain: WithHealth: nil *health.Server")
	}
	return optionFunc(func(o *options) { o.health = append(o.health, h) })
}

// WithHooks adds hooks called at each phase of the drain, in reverse order
// of registration across all WithHooks options (see package stophook). By
// default there are none. A hook given twice, across all WithHooks options,
// makes New panic.
func WithHooks(hooks ...stophook.Hook) Option {
	for i, h := range hooks {
		if h == nil {
			panic(fmt.Sprintf("drain: WithHooks: hook %d is nil", i))
		}
	}
	return optionFunc(func(o *options) { o.hooks = append(o.hooks, hooks...) })
}

// WithLogger sets the logger that receives one record per phase and the
// final report. By default nothing is logged.
func WithLogger(l *slog.Logger) Option {
	if l == nil {
		panic("drain: WithLogger: nil *slog.Logger")
	}
	return optionFunc(func(o *options) { o.logger = l })
}

// WithSignals makes Serve take its signals from s, created by CatchSignals
// at the start of the program, instead of catching them itself from the
// moment it is called: a signal that arrived during start-up then makes
// Serve drain at once. Serve does not stop s. By default Serve catches the
// signals itself.
func WithSignals(s *Signals) Option {
	if s == nil {
		panic("drain: WithSignals: nil *Signals")
	}
	return optionFunc(func(o *options) { o.signals = s })
}

func mustNotBeNegative(option string, d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("drain: %s(%v): negative duration", option, d))
	}
}
