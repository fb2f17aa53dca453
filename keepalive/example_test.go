package keepalive_test

import (
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/keepalive"
)

func ExampleServerOptions() {
	// The grace period of the drain, given to both.
	const grace = 30 * time.Second
	tracker := interceptors.NewTracker()
	srv := grpc.NewServer(append(keepalive.ServerOptions(keepalive.WithGracePeriod(grace)), tracker.ServerOptions()...)...)
	defer srv.Stop()
	// Then: drain.New(srv, tracker, drain.WithGracePeriod(grace)).

	sp, _ := keepalive.Parameters(keepalive.WithGracePeriod(grace))
	fmt.Println("connections renewed every", sp.MaxConnectionAge, "with a grace of", sp.MaxConnectionAgeGrace)
	// Output:
	// connections renewed every 5m0s with a grace of 30s
}

func ExampleParameters() {
	sp, ep := keepalive.Parameters()
	fmt.Println("MaxConnectionAge:", sp.MaxConnectionAge)
	fmt.Println("MaxConnectionAgeGrace:", sp.MaxConnectionAgeGrace)
	fmt.Println("MaxConnectionIdle:", sp.MaxConnectionIdle)
	fmt.Println("Time:", sp.Time)
	fmt.Println("Timeout:", sp.Timeout)
	fmt.Println("MinTime:", ep.MinTime)
	fmt.Println("PermitWithoutStream:", ep.PermitWithoutStream)
	// Output:
	// MaxConnectionAge: 5m0s
	// MaxConnectionAgeGrace: 15s
	// MaxConnectionIdle: 0s
	// Time: 1m0s
	// Timeout: 20s
	// MinTime: 5s
	// PermitWithoutStream: true
}
