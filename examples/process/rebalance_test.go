//go:build unix

package process_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
)

const (
	// rebalanceConns client connections, each holding one resumable
	// Watch, start on one demo server behind the balancer; two servers
	// are then added. After rebalanceAges connection ages of
	// rebalanceMaxAge, the connections open to each server must differ by
	// at most rebalanceSpread.
	rebalanceConns  = 60
	rebalanceMaxAge = 2 * time.Second
	rebalanceAges   = 6
	rebalanceSpread = 12
	// rebalanceGrace is the servers' -grace, and so the grace of their
	// aged connections: what plain keepalive leaves a stream before it
	// cuts it.
	rebalanceGrace = time.Second
)

// ageOutcomes counts how the Watch attempts of a run ended before they were
// resumed: retired by the server with its status, or cut.
type ageOutcomes struct {
	mu      sync.Mutex
	retired int
	cut     int
	sample  error // a cut
}

func (o *ageOutcomes) record(_ context.Context, _ uint, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if client.IsDraining(err) && strings.Contains(status.Convert(err).Message(), "retired") {
		o.retired++
		return
	}
	o.cut++
	o.sample = err
}

// TestRebalanceAgedConnections runs demo servers with -max-connection-age
// behind a TCP balancer, once as drainkit runs them and once with
// -retire-aged-streams=false, as plain grpc keepalive does: in both, the
// connections spread over the servers added later, but only drainkit moves
// the long-lived streams without cutting them.
func TestRebalanceAgedConnections(t *testing.T) {
	if testing.Short() {
		t.Skip("runs six connection ages twice")
	}
	for _, tt := range []struct {
		name   string
		retire bool
	}{
		{"drainkit", true},
		{"plain keepalive", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			args := []string{"-max-connection-age", rebalanceMaxAge.String(), "-grace", rebalanceGrace.String(), fmt.Sprintf("-retire-aged-streams=%t", tt.retire)}
			a := startServer(t, "a", dbPath(t), args...)
			bal := newBalancer(t, 0, a.addr)

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var outcomes ageOutcomes
			ends := make(chan error, rebalanceConns)
			first := make(chan struct{}, rebalanceConns)
			for range rebalanceConns {
				cc, err := grpc.NewClient(bal.addr(), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())},
					client.DialOptions(
						client.WithResume(demopb.Demo_Watch_FullMethodName, func(_ *demopb.WatchRequest, last *timestamppb.Timestamp) *demopb.WatchRequest {
							return &demopb.WatchRequest{After: last}
						}),
						client.WithOnRetryCallback(outcomes.record),
					)...)...)
				if err != nil {
					t.Fatalf("grpc.NewClient() = %v", err)
				}
				t.Cleanup(func() { cc.Close() })
				stream, err := demopb.NewDemoClient(cc).Watch(ctx, &demopb.WatchRequest{})
				if err != nil {
					t.Fatalf("Watch() = %v", err)
				}
				go func() {
					for n := 0; ; n++ {
						if _, err := stream.Recv(); err != nil {
							ends <- err
							return
						}
						if n == 0 {
							first <- struct{}{}
						}
					}
				}()
			}
			timeout := time.After(defaultTestTimeout)
			for i := range rebalanceConns {
				select {
				case <-first:
				case err := <-ends:
					t.Fatalf("a Watch ended before its first message: %v", err)
				case <-timeout:
					t.Fatalf("%d of %d Watch streams without a first message after %v", rebalanceConns-i, rebalanceConns, defaultTestTimeout)
				}
			}

			b := startServer(t, "b", dbPath(t), args...)
			c := startServer(t, "c", dbPath(t), args...)
			bal.add(b.addr)
			bal.add(c.addr)
			// Not a synchronisation: the connections are counted after the
			// time the requirement gives them, six ages at their longest.
			time.Sleep(rebalanceAges * rebalanceMaxAge * 11 / 10)
			live := bal.live()
			counts := []int{live[a.addr], live[b.addr], live[c.addr]}
			cancel()
			for range rebalanceConns {
				select {
				case err := <-ends:
					if status.Code(err) != codes.Canceled && !errors.Is(err, context.Canceled) {
						t.Errorf("a Watch ended with %v, want only the caller's cancellation", err)
					}
				case <-time.After(defaultTestTimeout):
					t.Fatalf("Watch streams still open %v after their cancellation", defaultTestTimeout)
				}
			}

			outcomes.mu.Lock()
			defer outcomes.mu.Unlock()
			t.Logf("%s: connections open to a, b, c after %d ages: %v; Watch attempts retired %d, cut %d (such as %v)",
				tt.name, rebalanceAges, counts, outcomes.retired, outcomes.cut, outcomes.sample)
			if spread := slices.Max(counts) - slices.Min(counts); spread > rebalanceSpread {
				t.Errorf("connections open to a, b, c = %v: they differ by %d, want at most %d", counts, spread, rebalanceSpread)
			}
			if tt.retire {
				if outcomes.cut > 0 {
					t.Errorf("%d Watch attempts were cut, such as by %v; want every one retired by its server", outcomes.cut, outcomes.sample)
				}
				if outcomes.retired < rebalanceConns {
					t.Errorf("%d Watch attempts retired, want at least one per connection, %d", outcomes.retired, rebalanceConns)
				}
			} else if outcomes.cut < rebalanceConns {
				// The comparison is worth something only if plain
				// keepalive does cut the streams.
				t.Errorf("plain keepalive cut %d Watch attempts, want at least one per connection, %d", outcomes.cut, rebalanceConns)
			}
		})
	}
}
