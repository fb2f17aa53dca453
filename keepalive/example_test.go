package keepalive_test

import (
	"fmt"
	"time"

	"google.golang.org/grpc"

	"github.com/drainkit/drainkit/interceptors"
	"github.com/drainkit/drainkit/keepalive"
)

func ExampleServerOptions() {
	// Unary calls last 30s at the most, finite streams 2 minutes.
	tracker := interceptors.NewTracker(
		interceptors.WithMaxTimeout(30*time.Second),
		interceptors.WithStreamTimeout(2*time.Minute))
	// The renewal's grace comes from the Tracker: no call it bounds is cut
	// by a renewal. The drain's grace period is the drain's alone.
	opts := keepalive.ServerOptions(keepalive.WithTracker(tracker))
	srv := grpc.NewServer(append(opts, tracker.ServerOptions()...)...)
	defer srv.Stop()
	// Then: drain.New(srv, tracker, drain.WithGracePeriod(...)).

	sp, _ := keepalive.Parameters(keepalive.WithTracker(tracker))
	fmt.Println("connections renewed every", sp.MaxConnectionAge, "with a grace of", sp.MaxConnectionAgeGrace)
	// Output:
	// connections renewed every 5m0s with a grace of 2m1s
}

func ExampleParameters() {
	sp, ep := keepalive.Parameters()
	fmt.Println("MaxConnectionAge:", sp.MaxConnectionAge)
	fmt.Println("MaxConnectionAgeGrace is Infinity:", sp.MaxConnectionAgeGrace == keepalive.Infinity)
	fmt.Println("MaxConnectionIdle:", sp.MaxConnectionIdle)
	fmt.Println("Time:", sp.Time)
	fmt.Println("Timeout:", sp.Timeout)
	fmt.Println("MinTime:", ep.MinTime)
	fmt.Println("PermitWithoutStream:", ep.PermitWithoutStream)
	// Output:
	// MaxConnectionAge: 5m0s
	// MaxConnectionAgeGrace is Infinity: true
	// MaxConnectionIdle: 0s
	// Time: 1m0s
	// Timeout: 20s
	// MinTime: 5s
	// PermitWithoutStream: true
}
