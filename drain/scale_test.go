package drain_test

import (
	"context"
	"fmt"
	"os"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/drainkit/drainkit/drain"
)

// BenchmarkDrainLongLivedOneConn drains a server holding n idle health
// Watch streams on one connection, as the demo drains (WithHealth, no
// readiness delay), with a grace period far longer than the drain: the
// drain must end them by cancelling them. Only Drain is timed; the cost
// must grow linearly with n. With DRAINKIT_DRAIN_CPUPROFILE set to a file
// name, the CPU profile of the drains alone is written to that name
// followed by "." and n, one file for each n.
func BenchmarkDrainLongLivedOneConn(b *testing.B) {
	for _, n := range []int{10000, 100000} {
		b.Run(fmt.Sprintf("streams=%d", n), func(b *testing.B) {
			b.StopTimer()
			for range b.N {
				s := benchStartServer(b, nil, 1)
				ends := s.benchOpenWatches(b, n)
				// As the demo drains: with its health service, and no
				// readiness delay.
				d := drain.New(s.srv, s.tr, drain.WithGracePeriod(time.Minute), drain.WithHealth(s.hs))
				stop := startProfile(b, fmt.Sprintf("%d", n))
				b.StartTimer()
				r, err := d.Drain(context.Background())
				b.StopTimer()
				stop()
				if os.Getenv("DRAINKIT_DRAIN_PHASES") != "" {
					b.Logf("%d streams: %+v", n, r.Phases)
				}
				if err != nil || r.Cancelled != n {
					b.Fatalf("Drain() cancelled %d, %v; want %d, nil", r.Cancelled, err, n)
				}
				for range n {
					receive(b, ends, "the streams to end")
				}
				s.close()
			}
		})
	}
}

func startProfile(tb testing.TB, suffix string) func() {
	path := os.Getenv("DRAINKIT_DRAIN_CPUPROFILE")
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path + "." + suffix)
	if err != nil {
		tb.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		tb.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
