package keepalive

import (
	"fmt"
	"time"

	grpckeepalive "google.golang.org/grpc/keepalive"

	"github.com/drainkit/drainkit/interceptors"
)

// An Option changes one of the keepalive settings. Options are evaluated
// once, by ServerOptions or Parameters; a later option overrides an earlier
// one.
//
// Durations are refused with a panic naming the option when they are below
// a second: no keepalive setting means nanoseconds, and a bare number such
// as WithMaxConnectionAge(5), meant as minutes, is 5ns, on which grpc's
// jitter panics at the first connection. WithMaxConnectionAge and
// WithMaxConnectionIdle take 0 for off; the others refuse it, since grpc
// reads a zero there as its own default (no grace limit, a 2-hour ping, a
// 20-second timeout, a 5-minute minimum), which is not what a zero says.
type Option interface {
	apply(*options)
}

type optionFunc func(*options)

func (f optionFunc) apply(o *options) { f(o) }

type options struct {
	sp grpckeepalive.ServerParameters
	ep grpckeepalive.EnforcementPolicy
}

// WithMaxConnectionAge sets how long a connection lives before the server
// sends it GOAWAY (ServerParameters.MaxConnectionAge); grpc adds a random
// jitter of ±10% to it for each connection. The default is 5 minutes. A d of
// 0 turns it off: connections live until the client or a drain ends them.
// Infinity turns it off too. It panics if d is negative or below a second,
// or if it is not Infinity but above MaxConnectionAge (about 265 years),
// past which grpc's jitter overflows and sends about half the connections
// GOAWAY as soon as they open.
func WithMaxConnectionAge(d time.Duration) Option {
	mustBeOffOrSeconds("WithMaxConnectionAge", d)
	if d > MaxConnectionAge && d != Infinity {
		panic(fmt.Sprintf("keepalive: WithMaxConnectionAge(%v): above %v, past which grpc's jitter of up to +10%% overflows; use Infinity or 0 for no renewal", d, MaxConnectionAge))
	}
	return optionFunc(func(o *options) { o.sp.MaxConnectionAge = d })
}

// WithGracePeriod sets how long the RPCs in flight on a connection that
// reached its age may run before the connection is closed
// (ServerParameters.MaxConnectionAgeGrace). A call that runs longer than
// d is cut with codes.Unavailable with a probability that the package
// documentation gives; prefer WithTracker, which sets d so that no call the
// Tracker bounds is cut. It is not the drain's grace period, and need not
// be equal to it. The default is Infinity: renewal cuts no call. It panics
// if d is below a second.
func WithGracePeriod(d time.Duration) Option {
	mustBeSeconds("WithGracePeriod", d)
	return optionFunc(func(o *options) { o.sp.MaxConnectionAgeGrace = d })
}

// WithTracker sets the grace period (see WithGracePeriod) from t, the
// Tracker installed on the server: to the longest a call that is not
// long-lived may run under t's deadlines (Tracker.LongestCall), plus a
// second, so that a renewal never cuts a call that the Tracker lets finish.
// If t lets some such call run with no bound (no WithMaxTimeout, no
// WithStreamTimeout, or a method exempted by WithMethodTimeout(m, 0)), the
// grace is Infinity. Long-lived streams, which never end by themselves, are
// cut at the end of a finite grace with codes.Unavailable, as a drain cuts
// them, and their clients open them again on the new connection. The
// grace is read from t when the options are evaluated. It panics if t is
// nil.
func WithTracker(t *interceptors.Tracker) Option {
	if t == nil {
		panic("keepalive: WithTracker: nil *interceptors.Tracker")
	}
	return optionFunc(func(o *options) {
		o.sp.MaxConnectionAgeGrace = Infinity
		if longest, ok := t.LongestCall(); ok && longest < Infinity-trackerMargin {
			o.sp.MaxConnectionAgeGrace = longest + trackerMargin
		}
	})
}

// WithMaxConnectionIdle sets how long a connection may carry no RPC before
// the server sends it GOAWAY (ServerParameters.MaxConnectionIdle). The
// default is 0: off. It panics if d is negative or below a second.
func WithMaxConnectionIdle(d time.Duration) Option {
	mustBeOffOrSeconds("WithMaxConnectionIdle", d)
	return optionFunc(func(o *options) { o.sp.MaxConnectionIdle = d })
}

// WithTime sets how long a connection may carry nothing before the server
// pings the client (ServerParameters.Time). The default is 1 minute. It
// panics if d is below a second (grpc would raise it to a second).
func WithTime(d time.Duration) Option {
	mustBeSeconds("WithTime", d)
	return optionFunc(func(o *options) { o.sp.Time = d })
}

// WithTimeout sets how long the server waits for the answer to its ping
// before it closes the connection (ServerParameters.Timeout). The default is
// 20 seconds. It panics if d is below a second.
func WithTimeout(d time.Duration) Option {
	mustBeSeconds("WithTimeout", d)
	return optionFunc(func(o *options) { o.sp.Timeout = d })
}

// WithMinTime sets the shortest interval between two pings of a client that
// the server tolerates (EnforcementPolicy.MinTime). A client that pings
// faster three times while the server sends it nothing gets GOAWAY with
// "too_many_pings" and its connection is closed. The default is 5 seconds,
// half the 10-second minimum of grpc-go clients. It panics if d is below a
// second.
func WithMinTime(d time.Duration) Option {
	mustBeSeconds("WithMinTime", d)
	return optionFunc(func(o *options) { o.ep.MinTime = d })
}

// WithPermitWithoutStream sets whether clients may ping on a connection
// that carries no RPC (EnforcementPolicy.PermitWithoutStream). If not, such
// pings count as pinging too often when they come less than 2 hours apart,
// and a client is cut for them as WithMinTime says. The default is true.
func WithPermitWithoutStream(permit bool) Option {
	return optionFunc(func(o *options) { o.ep.PermitWithoutStream = permit })
}

func mustNotBeNegative(option string, d time.Duration) {
	if d < 0 {
		panic(fmt.Sprintf("keepalive: %s(%v): negative duration", option, d))
	}
}

// mustBeSeconds panics, naming option, if d is below a second.
func mustBeSeconds(option string, d time.Duration) {
	mustNotBeNegative(option, d)
	if d == 0 {
		panic(fmt.Sprintf("keepalive: %s(0): the duration must be positive; grpc would read 0 as its own default", option))
	}
	if d < time.Second {
		hint := ""
		if d < time.Microsecond {
			hint = fmt.Sprintf("; a time.Duration counts nanoseconds: write %d*time.Second or %d*time.Minute, not %d", int64(d), int64(d), int64(d))
		}
		panic(fmt.Sprintf("keepalive: %s(%v): below a second, which no keepalive setting can mean%s", option, d, hint))
	}
}

// mustBeOffOrSeconds panics, naming option, if d is negative or between 0
// and a second.
func mustBeOffOrSeconds(option string, d time.Duration) {
	if d != 0 {
		mustBeSeconds(option, d)
	}
}
