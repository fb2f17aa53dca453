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
// every connection every few minutes.
func keepaliveOptions(grace time.Duration) []grpc.ServerOption {
	if grace <= 0 {
		return keepalive.ServerOptions()
	}
	return keepalive.ServerOptions(keepalive.WithGracePeriod(grace))
}
