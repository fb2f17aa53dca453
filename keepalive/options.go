package keepalive

import (
	"fmt"
	"time"

	grpckeepalive "google.golang.org/grpc/keepalive"
)

// An Option changes one of the keepalive settings. Options are evaluated
// once, by ServerOptions or Parameters; a later option overrides an earlier
// one.
//
// Durations are refused with a panic naming the option when they are
// negative, and, except for WithMaxConnectionAge and WithMaxConnectionIdle,
// when they are zero: grpc reads a zero there as its own default (no grace
// limit, a 2-hour ping, a 20-second timeout, a 5-minute minimum), which is
// not what a zero says.
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
// It panics if d is negative.
func WithMaxConnectionAge(d time.Duration) Option {
	mustNotBeNegative("WithMaxConnectionAge", d)
	return optionFunc(func(o *options) { o.sp.MaxConnectionAge = d })
}

// WithGracePeriod sets how long the RPCs in flight on a connection that
// reached its age may run before the connection is closed
// (ServerParameters.MaxConnectionAgeGrace). Set it to the same value you
// give drain.WithGracePeriod. The default is 15 seconds, the drain's
// default. It panics if d is not positive.
func WithGracePeriod(d time.Duration) Option {
	mustBePositive("WithGracePeriod", d)
	return optionFunc(func(o *options) { o.sp.MaxConnectionAgeGrace = d })
}

// WithMaxConnectionIdle sets how long a connection may carry no RPC before
// the server sends it GOAWAY (ServerParameters.MaxConnectionIdle). The
// default is 0: off. It panics if d is negative.
func WithMaxConnectionIdle(d time.Duration) Option {
	mustNotBeNegative("WithMaxConnectionIdle", d)
	return optionFunc(func(o *options) { o.sp.MaxConnectionIdle = d })
}

// WithTime sets how long a connection may carry nothing before the server
// pings the client (ServerParameters.Time); grpc raises a d below 1 second
// to 1 second. The default is 1 minute. It panics if d is not positive.
func WithTime(d time.Duration) Option {
	mustBePositive("WithTime", d)
	return optionFunc(func(o *options) { o.sp.Time = d })
}

// WithTimeout sets how long the server waits for the answer to its ping
// before it closes the connection (ServerParameters.Timeout). The default is
// 20 seconds. It panics if d is not positive.
func WithTimeout(d time.Duration) Option {
	mustBePositive("WithTimeout", d)
	return optionFunc(func(o *options) { o.sp.Timeout = d })
}

// WithMinTime sets the shortest interval between two pings of a client that
// the server tolerates (EnforcementPolicy.MinTime). A client that pings
// faster three times while the server sends it nothing gets GOAWAY with
// "too_many_pings" and its connection is closed. The default is 5 seconds,
// half the 10-second minimum of grpc-go clients. It panics if d is not
// positive.
func WithMinTime(d time.Duration) Option {
	mustBePositive("WithMinTime", d)
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

func mustBePositive(option string, d time.Duration) {
	mustNotBeNegative(option, d)
	if d == 0 {
		panic(fmt.Sprintf("keepalive: %s(0): the duration must be positive; grpc would read 0 as its own default", option))
	}
}
