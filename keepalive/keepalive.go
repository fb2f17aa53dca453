package keepalive

import (
	"fmt"
	"math"
	"time"

	"google.golang.org/grpc"
	grpckeepalive "google.golang.org/grpc/keepalive"
)

// Infinity is the grace period of a renewal that lets the calls in flight
// on an aged connection run as long as they do, grpc's own default: the
// largest time.Duration.
const Infinity = time.Duration(math.MaxInt64)

// MaxConnectionAge is the largest finite age WithMaxConnectionAge accepts:
// grpc adds to each connection's age a jitter of up to +10%, and the sum
// must remain a time.Duration.
const MaxConnectionAge = Infinity / 11 * 10

// trackerMargin is added to the longest call a Tracker allows, for the
// grace of WithTracker: a call's deadline counts from its handler's start,
// a little after the call arrived, and its status still has to be written.
const trackerMargin = time.Second

// The defaults; the package documentation says why.
const (
	defaultMaxConnectionAge    = 5 * time.Minute
	defaultGracePeriod         = Infinity // a renewal never cuts a call
	defaultMaxConnectionIdle   = 0        // off
	defaultTime                = time.Minute
	defaultTimeout             = 20 * time.Second
	defaultMinTime             = 5 * time.Second
	defaultPermitWithoutStream = true
)

// ServerOptions returns the options that give a gRPC server the keepalive
// settings of Parameters, to pass to grpc.NewServer. It panics if an option
// is nil.
func ServerOptions(opts ...Option) []grpc.ServerOption {
	sp, ep := parameters("ServerOptions", opts)
	return []grpc.ServerOption{
		grpc.KeepaliveParams(sp),
		grpc.KeepaliveEnforcementPolicy(ep),
	}
}

// Parameters returns the keepalive settings that ServerOptions gives a
// server: the defaults, changed by opts. A zero MaxConnectionAge or
// MaxConnectionIdle means off, as in grpc; a MaxConnectionAgeGrace of
// Infinity means none; every other duration is the one grpc uses. It panics
// if an option is nil.
func Parameters(opts ...Option) (grpckeepalive.ServerParameters, grpckeepalive.EnforcementPolicy) {
	return parameters("Parameters", opts)
}

func parameters(caller string, opts []Option) (grpckeepalive.ServerParameters, grpckeepalive.EnforcementPolicy) {
	o := options{
		sp: grpckeepalive.ServerParameters{
			MaxConnectionIdle:     defaultMaxConnectionIdle,
			MaxConnectionAge:      defaultMaxConnectionAge,
			MaxConnectionAgeGrace: defaultGracePeriod,
			Time:                  defaultTime,
			Timeout:               defaultTimeout,
		},
		ep: grpckeepalive.EnforcementPolicy{
			MinTime:             defaultMinTime,
			PermitWithoutStream: defaultPermitWithoutStream,
		},
	}
	for i, opt := range opts {
		if opt == nil {
			panic(fmt.Sprintf("keepalive: %s: option %d is nil", caller, i))
		}
		opt.apply(&o)
	}
	return o.sp, o.ep
}
