package main

import (
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/keepalive"
)

// keepaliveOptions returns the keepalive settings of package keepalive, with
// the grace period of aged connections equal to the drain's (-grace), so
// that the renewal of a connection treats RPCs as a drain does. With
// -grace=0 the renewal keeps the package's default grace instead: a drain
// that cuts every RPC at once is a choice for the end of a process, not for
// every connection every few minutes. maxAge is the connection's
// MaxConnectionAge (-max-connection-age); 0 is never.
func keepaliveOptions(grace, maxAge time.Duration) []grpc.ServerOption {
	opts := []keepalive.Option{keepalive.WithMaxConnectionAge(maxAge)}
	if grace > 0 {
		opts = append(opts, keepalive.WithGracePeriod(grace))
	}
	return keepalive.ServerOptions(opts...)
}
