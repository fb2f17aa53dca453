package client_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
	"github.com/drainkit/drainkit/interceptors"
)

const (
	// rebalanceStreams Watch streams are opened on the first of three
	// backends, whose Trackers retire them after rebalanceAge.
	rebalanceStreams = 30
	rebalanceAge     = 300 * time.Millisecond
	// rebalanceAfter is how long after the other backends are added the
	// streams are counted; each backend must then hold rebalanceStreams/3
	// give or take rebalanceSlack.
	rebalanceAfter = 2500 * time.Millisecond
	rebalanceSlack = 5
	// rebalancePoll is how often the streams are counted again when a
	// count does not meet the requirement.
	rebalancePoll = 20 * time.Millisecond
	// maxGap is the longest a stream may go without a message, resumes
	// included: a second, as the requirement says, doubled under the race
	// detector.
	maxGap = time.Second * raceSlowdown
)

// A watcher is the client side of one resumable Watch: the longest time it
// went without a message, and the error that ended it.
type watcher struct {
	mu     sync.Mutex
	maxGap time.Duration
	err    error
}

func TestMaxStreamAgeSpreadsStreamsOverNewBackends(t *testing.T) {
	var backends []*backend
	for i := range 3 {
		backends = append(backends, startAgedBackend(t, fmt.Sprintf("b%d", i)))
	}
	r := manual.NewBuilderWithScheme("rebalance")
	r.InitialState(resolver.State{Addresses: []resolver.Address{{Addr: "b0"}}})
	cc := dialListeners(t, r, backends, client.DialOptions(
		client.WithResume(watchMethod, func(req *demopb.WatchRequest, last *timestamppb.Timestamp) *demopb.WatchRequest {
			return &demopb.WatchRequest{After: last}
		}),
	)...)
	c := demopb.NewDemoClient(cc)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	watchers := make([]*watcher, rebalanceStreams)
	first := make(chan struct{}, rebalanceStreams)
	for i := range watchers {
		w := &watcher{}
		watchers[i] = w
		stream, err := c.Watch(ctx, &demopb.WatchRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("Watch() = %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := time.Now()
			for n := 0; ; n++ {
				_, err := stream.Recv()
				now := time.Now()
				w.mu.Lock()
				if err != nil {
					w.err = err
					w.mu.Unlock()
					return
				}
				w.maxGap = max(w.maxGap, now.Sub(last))
				w.mu.Unlock()
				last = now
				if n == 0 {
					first <- struct{}{}
				}
			}
		}()
	}
	for range rebalanceStreams {
		receive(t, first, "first message of a Watch")
	}
	if n := watching(backends[0]); n != rebalanceStreams {
		t.Fatalf("b0 holds %d Watch streams before the others are added, want %d", n, rebalanceStreams)
	}

	r.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: "b0"}, {Addr: "b1"}, {Addr: "b2"}}})
	// Not a synchronisation: the streams are counted once the time the
	// requirement gives them to spread has passed. A stream being resumed
	// at the moment of counting is on no backend, and a machine loaded by
	// other tests can leave a few in flight at any one moment: the counts
	// are taken again, every rebalancePoll, until a count meets the
	// requirement or rebalanceAfter has passed once more.
	time.Sleep(rebalanceAfter)
	want := rebalanceStreams / len(backends)
	spread := func(counts []int) (total int, ok bool) {
		ok = true
		for _, n := range counts {
			total += n
			ok = ok && n >= want-rebalanceSlack && n <= want+rebalanceSlack
		}
		return total, ok && total >= rebalanceStreams-rebalanceSlack && total <= rebalanceStreams
	}
	counts := make([]int, len(backends))
	var total int
	for deadline := time.Now().Add(rebalanceAfter); ; {
		for i, b := range backends {
			counts[i] = watching(b)
		}
		var ok bool
		if total, ok = spread(counts); ok || time.Now().After(deadline) {
			break
		}
		time.Sleep(rebalancePoll)
	}
	cancel()
	wg.Wait()

	for i, n := range counts {
		if n < want-rebalanceSlack || n > want+rebalanceSlack {
			t.Errorf("backend b%d holds %d Watch streams after %v (all: %v), want %d±%d", i, n, rebalanceAfter, counts, want, rebalanceSlack)
		}
	}
	if total < rebalanceStreams-rebalanceSlack || total > rebalanceStreams {
		t.Errorf("backends hold %d Watch streams in all (%v), want %d", total, counts, rebalanceStreams)
	}
	retired := 0
	for _, b := range backends {
		retired += b.svc.count(watchMethod)
	}
	// Each stream lives about rebalanceAge: with no retirement the
	// handlers would have run rebalanceStreams times in all.
	if minRuns := rebalanceStreams * int(rebalanceAfter/rebalanceAge) / 2; retired < minRuns {
		t.Errorf("Watch handlers ran %d times, want at least %d: streams were not retired", retired, minRuns)
	}
	for i, w := range watchers {
		if status.Code(w.err) != codes.Canceled {
			t.Errorf("Watch %d ended with %v, want only the caller's cancellation", i, w.err)
		}
		if w.maxGap > maxGap {
			t.Errorf("Watch %d went %v without a message, want at most %v", i, w.maxGap, maxGap)
		}
	}
}

// startAgedBackend starts a backend whose Tracker retires Watch streams
// after rebalanceAge, over bufconn.
func startAgedBackend(t *testing.T, name string) *backend {
	t.Helper()
	return serveBackend(t, name, interceptors.NewTracker(interceptors.WithLongLived(watchMethod, chatMethod), interceptors.WithMaxStreamAge(rebalanceAge)), false)
}

// watching returns the number of Watch handlers running on b.
func watching(b *backend) int {
	n := 0
	for _, c := range b.tracker.Calls() {
		if c.Method == watchMethod {
			n++
		}
	}
	return n
}
