package keepalive

import (
	"fmt"
	"time"

	"google.golang.org/grpc"
	grpckeepalive "google.golang.org/grpc/keepalive"
)

// The defaults; the package documentation says why.
const (
	defaultMaxConnectionAge    = 5 * time.Minute
	defaultGracePeriod         = 15 * time.Second // drain.WithGracePeriod's default
	defaultMaxConnectionIdle   = 0                // off
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
// MaxConnectionIdle means off, as in grpc; every other duration is the one
// grpc uses. It panics if an option is nil.
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
