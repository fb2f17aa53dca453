package main

import (
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/keepalive"
)

// keepaliveOptions returns the keepalive settings of package keepalive.
// maxAge is the connection's MaxConnectionAge (-max-connection-age); 0 is
// never. The grace period of aged connections is taken from the Tracker,
// which bounds no call of the demo (a Sleep lasts what its client asks): a
// renewal then lets every call finish. A -grace of a second or more is
// given to the renewal too, as the demo's rebalancing test does, so that a
// renewal cuts what a drain would; below a second, which keepalive refuses,
// it is the drain's alone.
func keepaliveOptions(t *interceptors.Tracker, grace, maxAge time.Duration) []grpc.ServerOption {
	return keepalive.ServerOptions(keepaliveSettings(t, grace, maxAge)...)
}

// keepaliveSettings returns the options of package keepalive that
// keepaliveOptions gives it.
func keepaliveSettings(t *interceptors.Tracker, grace, maxAge time.Duration) []keepalive.Option {
	opts := []keepalive.Option{keepalive.WithMaxConnectionAge(maxAge), keepalive.WithTracker(t)}
	if grace >= time.Second {
		opts = append(opts, keepalive.WithGracePeriod(grace))
	}
	return opts
}
