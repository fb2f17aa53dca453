package client_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
)

// attemptCounter is a client interceptor put after DialOptions: it sees,
// and counts, every attempt of every call.
type attemptCounter struct{ unary, streams atomic.Int64 }

func (a *attemptCounter) options() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			a.unary.Add(1)
			return invoker(ctx, method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			a.streams.Add(1)
			return streamer(ctx, desc, cc, method, opts...)
		}),
	}
}

// dialRefusing starts a backend that refuses every call and returns a
// client of it made with DialOptions(opts...), then the counter's options,
// then extra, and the counter of its attempts.
func dialRefusing(t *testing.T, opts []client.Option, extra ...grpc.DialOption) (demopb.DemoClient, *attemptCounter) {
	t.Helper()
	b := startBackend(t, "A", false)
	b.tracker.Reject(nil)
	counter := &attemptCounter{}
	dopts := append(client.DialOptions(opts...), counter.options()...)
	return demopb.NewDemoClient(dialBackends(t, []*backend{b}, append(dopts, extra...)...)), counter
}

// TestRetryBudget makes 1,000 concurrent calls to a server that refuses
// everything. Without a budget, each would make DefaultMax attempts; the
// default budget allows 20% of the calls plus a reserve of 10 a second
// over 10 seconds: at most 1,000 + 200 + 100 attempts in all, and more
// than the reserve alone allows.
func TestRetryBudget(t *testing.T) {
	const calls = 1000
	c, counter := dialRefusing(t, nil)

	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	start := make(chan struct{})
	errs := make(chan error, calls)
	var wg sync.WaitGroup
	for range calls {
		wg.Go(func() {
			<-start
			_, err := c.Append(ctx, wrapperspb.String("x"), grpc.WaitForReady(true))
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if !client.IsDraining(err) {
			t.Fatalf("Append() = %v, want the server's refusal", err)
		}
	}
	attempts := counter.unary.Load()
	t.Logf("%d calls made %d attempts", calls, attempts)
	if attempts > 1400 {
		t.Errorf("%d calls to a refusing server made %d attempts, want at most 1,400", calls, attempts)
	}
	if attempts <= calls {
		t.Errorf("%d calls to a refusing server made %d attempts, want some retries", calls, attempts)
	}
	// The reserve alone gives 100 retries; the calls' deposits, 200 more.
	if attempts < 1200 {
		t.Errorf("%d calls to a refusing server made %d attempts, want at least 1,200: the calls' share as well as the reserve", calls, attempts)
	}
}

// TestRetryBudgetZero checks that WithRetryBudget(0, 0) allows no retry,
// of a unary call or of a stream.
func TestRetryBudgetZero(t *testing.T) {
	c, counter := dialRefusing(t, []client.Option{client.WithRetryBudget(0, 0), resumeWatch})
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	if _, err := c.Append(ctx, wrapperspb.String("x"), grpc.WaitForReady(true)); !client.IsDraining(err) {
		t.Fatalf("Append() = %v, want the server's refusal", err)
	}
	watchRefused(t, c, 0)
	if u, s := counter.unary.Load(), counter.streams.Load(); u != 1 || s != 1 {
		t.Errorf("attempts with a budget of 0: %d unary, %d streams, want 1 and 1", u, s)
	}
}

// TestRetryBudgetStreamDeposits checks that a server stream deposits in the
// budget as a unary call does: with WithRetryBudget(100, 0), and no
// reserve, a refused Watch earns itself one retry, and one only.
func TestRetryBudgetStreamDeposits(t *testing.T) {
	c, counter := dialRefusing(t, []client.Option{client.WithRetryBudget(100, 0), client.WithBackoff(noBackoff), resumeWatch})
	watchRefused(t, c, 0)
	if n := counter.streams.Load(); n != 2 {
		t.Errorf("a refused Watch with a budget of 100%% and no reserve made %d attempts, want 2: its own deposit's retry", n)
	}
}

// TestResumeBacksOff opens a resumable Watch on a server that fails it
// with codes.Unavailable after every 3 messages. The stream is resumed
// again and again, WithMax being high, but its attempts are counted across
// resumptions, so the backoff grows: it is reopened at most 12 times in 2
// seconds, less and less often.
func TestResumeBacksOff(t *testing.T) {
	const window = 2 * time.Second
	b := startBackend(t, "A", false)
	b.svc.failAfter = 3
	b.svc.watchStarts = make(chan time.Time, 100)
	c := demopb.NewDemoClient(dialBackends(t, []*backend{b}, client.DialOptions(resumeWatch, client.WithMax(100))...))

	// Cancelled, not a deadline: the client would not begin a wait that
	// outlasts a deadline, and end the stream early.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	time.AfterFunc(window, cancel)
	stream, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	var last *timestamppb.Timestamp
	for {
		ts, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				t.Fatalf("Recv() = %v before the end of the test's window", err)
			}
			break
		}
		if last != nil && !ts.AsTime().After(last.AsTime()) {
			t.Fatalf("Recv() = %v after %v: a tick repeated", ts.AsTime(), last.AsTime())
		}
		last = ts
	}
	close(b.svc.watchStarts)
	var starts []time.Time
	for s := range b.svc.watchStarts {
		starts = append(starts, s)
	}
	reopened := len(starts) - 1
	t.Logf("reopened %d times in %v", reopened, window)
	if reopened > 12 {
		t.Errorf("a stream failing every 3 messages was reopened %d times in %v, want at most 12", reopened, window)
	}
	if reopened < 3 {
		t.Fatalf("the stream was reopened %d times in %v, want at least 3", reopened, window)
	}
	// The gaps grow: the last is longer than the first two together.
	first := starts[2].Sub(starts[0])
	if gap := starts[len(starts)-1].Sub(starts[len(starts)-2]); gap <= first {
		t.Errorf("gaps between reopenings %v, want the last longer than the first two together", gaps(starts))
	}
}

func gaps(ts []time.Time) []time.Duration {
	var d []time.Duration
	for i := 1; i < len(ts); i++ {
		d = append(d, ts[i].Sub(ts[i-1]).Round(time.Millisecond))
	}
	return d
}

// TestStreamMaxCountsCreation checks that WithMax(3) bounds every attempt
// of a stream: two creations that fail, then one whose first message is
// refused, make 3 attempts, not 3 for the creation and 3 more for the
// resumption.
func TestStreamMaxCountsCreation(t *testing.T) {
	var creations atomic.Int64
	failTwice := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if creations.Add(1) <= 2 {
			return nil, errUnavailable
		}
		return streamer(ctx, desc, cc, method, opts...)
	})
	c, _ := dialRefusing(t, []client.Option{resumeWatch, client.WithMax(3), client.WithBackoff(noBackoff)}, failTwice)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Watch() = %v, want the third creation to succeed", err)
	}
	if _, err := stream.Recv(); !client.IsDraining(err) {
		t.Fatalf("Recv() = %v, want the server's refusal", err)
	}
	if n := creations.Load(); n != 3 {
		t.Errorf("WithMax(3): %d attempts, want 3", n)
	}
}

// TestResumeFailedReopensAreCounted holds a quiet resumable Watch for
// longer than ResumeReset and has a drain cancel it; every reopening then
// fails, as against a server gone. The attempt that worked restarts the
// count once, not at each failed reopening: with WithMax(3) the stream
// makes two more attempts and ends with the last one's error, instead of
// being reopened without end.
func TestResumeFailedReopensAreCounted(t *testing.T) {
	b := startBackend(t, "A", true)
	var creations atomic.Int64
	failReopens := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		if creations.Add(1) > 1 {
			return nil, errUnavailable
		}
		return streamer(ctx, desc, cc, method, opts...)
	})
	opts := append(client.DialOptions(resumeWatch, client.WithMax(3), client.WithBackoff(noBackoff)), failReopens)
	c := demopb.NewDemoClient(dialBackends(t, []*backend{b}, opts...))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	receive(t, b.svc.started, "Watch handler")
	drainWorked(t, b, 1)
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable || client.IsDraining(err) {
		t.Errorf("Recv() = %v, want the failed reopening's %v", err, errUnavailable)
	}
	if n := creations.Load(); n != 3 {
		t.Errorf("WithMax(3): %d stream creations, want 3: the one that worked, then two reopenings that failed", n)
	}
}

// drainWorked lets the n Watch streams running on b stay open for
// ResumeReset, so that they worked, then cancels them all as a drain does,
// and fails the test unless it cancelled n.
func drainWorked(t *testing.T, b *backend, n int) {
	t.Helper()
	// The streams must have stayed open for ResumeReset: that is the
	// behaviour under test, not a wait for another goroutine.
	time.Sleep(client.ResumeReset + 100*time.Millisecond)
	if got := b.tracker.CancelAll(nil); got != n {
		t.Fatalf("CancelAll() = %d, want %d Watch", got, n)
	}
}

// errUnavailable is a failed connection's error: codes.Unavailable without
// drainkit's mark.
var errUnavailable = status.Error(codes.Unavailable, "connection refused")

func noBackoff(context.Context, uint) time.Duration { return 0 }

// TestResumeCountRestarts holds a resumable Watch on a server that fails it
// after every 150 ticks (1.5s), longer than ResumeReset (by half of it, so
// that a stall of the test's goroutines does not make an attempt look
// short): each failure restarts the count, so that with WithMax(2) the
// stream rides through three failures, and more, without an error.
func TestResumeCountRestarts(t *testing.T) {
	const failures = 3
	b := startBackend(t, "A", false)
	b.svc.failAfter = int(client.ResumeReset/tick) * 3 / 2
	b.svc.watchStarts = make(chan time.Time, 100)
	c := demopb.NewDemoClient(dialBackends(t, []*backend{b}, client.DialOptions(resumeWatch, client.WithMax(2))...))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{})
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	for received := 0; received < (failures+1)*b.svc.failAfter; received++ {
		if _, err := stream.Recv(); err != nil {
			t.Fatalf("Recv() = %v after %d messages and %d attempts, want the stream to go on", err, received, len(b.svc.watchStarts))
		}
	}
	if n := len(b.svc.watchStarts); n != failures+1 {
		t.Errorf("%d attempts, want %d", n, failures+1)
	}
}

// TestQuietResumeCountRestarts holds a resumable Watch that sends nothing
// and cancels it, by a drain's CancelAll, each time it has stayed open for
// longer than ResumeReset. The stream worked each time, quiet as it was:
// with WithMax(2) it must ride through three drains, and more, and not end
// after WithMax drains because the attempt that stayed open was a
// resumption's.
func TestQuietResumeCountRestarts(t *testing.T) {
	const drains = 3
	b := startBackend(t, "A", true)
	c := demopb.NewDemoClient(dialBackends(t, []*backend{b}, client.DialOptions(resumeWatch, client.WithMax(2))...))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	recvd := make(chan error, 1)
	go func() {
		_, err := stream.Recv()
		recvd <- err
	}()
	// started waits for the handler of attempt n, and fails the test if
	// the stream ends instead.
	started := func(n int) {
		t.Helper()
		select {
		case <-b.svc.started:
		case err := <-recvd:
			t.Fatalf("Recv() = %v after %d drains of a stream that stayed open %v each time, want it resumed", err, n-1, client.ResumeReset)
		case <-time.After(defaultTestTimeout):
			t.Fatalf("no Watch handler %d after %v", n, defaultTestTimeout)
		}
	}
	for i := range drains {
		started(i + 1)
		drainWorked(t, b, 1)
	}
	started(drains + 1)
	cancel()
	if err := <-recvd; status.Code(err) != codes.Canceled {
		t.Errorf("Recv() after cancel = %v, want code %v", err, codes.Canceled)
	}
}

// longBackoff marks a context whose calls back off for an hour.
type longBackoff struct{}

// TestRetryBudgetNotSpentWithoutRetry makes calls to a refusing server
// whose backoff outlasts their deadline: the client gives up on each
// without a retry, and must not take one from the budget for it. A call
// that can wait then finds the budget's reserve whole.
func TestRetryBudgetNotSpentWithoutRetry(t *testing.T) {
	const reserve = 10 // WithRetryBudget(0, 1) over 10s
	backoff := func(ctx context.Context, _ uint) time.Duration {
		if ctx.Value(longBackoff{}) != nil {
			return time.Hour
		}
		return 0
	}
	c, counter := dialRefusing(t, []client.Option{client.WithRetryBudget(0, 1), client.WithBackoff(backoff)})

	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	short := context.WithValue(ctx, longBackoff{}, true)
	for range 2 * reserve {
		if _, err := c.Append(short, wrapperspb.String("x"), grpc.WaitForReady(true)); !client.IsDraining(err) {
			t.Fatalf("Append() = %v, want the server's refusal", err)
		}
	}
	if n := counter.unary.Load(); n != 2*reserve {
		t.Fatalf("%d calls whose backoff outlasts their deadline made %d attempts, want no retry", 2*reserve, n)
	}
	wantRetriesLeft(t, c, counter)
}

// watchRefused opens a Watch with c on the refusing server of dialRefusing,
// reads it late after it is open, and fails the test unless its first
// Recv returns the server's refusal.
func watchRefused(t *testing.T, c demopb.DemoClient, late time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	stream, err := c.Watch(ctx, &demopb.WatchRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("Watch() = %v", err)
	}
	// The caller's lateness, when under test, not a wait for another
	// goroutine.
	time.Sleep(late)
	if _, err := stream.Recv(); !client.IsDraining(err) {
		t.Fatalf("Recv() = %v, want the server's refusal", err)
	}
}

// wantRetriesLeft makes, with counter reset, a call that may wait to the
// refusing server of dialRefusing, and fails the test unless it made every
// attempt DefaultMax allows: the budget had not been spent on retries never
// made.
func wantRetriesLeft(t *testing.T, c demopb.DemoClient, counter *attemptCounter) {
	t.Helper()
	counter.unary.Store(0)
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	if _, err := c.Append(ctx, wrapperspb.String("x"), grpc.WaitForReady(true)); !client.IsDraining(err) {
		t.Fatalf("Append() = %v, want the server's refusal", err)
	}
	if n := counter.unary.Load(); n != client.DefaultMax {
		t.Errorf("a call that may wait made %d attempts, want %d: the budget was spent on retries never made", n, client.DefaultMax)
	}
}

// TestManyStreamsRideThroughDrain holds 200 quiet resumable Watch streams
// on one client, more than the default retry budget's reserve and share
// allow retries for, and has a drain cancel them all once they have been
// open for ResumeReset. Each worked: its resumption is its next call, not
// a retry, and every stream must ride through the drain.
func TestManyStreamsRideThroughDrain(t *testing.T) {
	const streams = 200
	b := startBackend(t, "A", true)
	c := demopb.NewDemoClient(dialBackends(t, []*backend{b}, client.DialOptions(resumeWatch)...))
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	errs := make(chan error, streams)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range streams {
		stream, err := c.Watch(ctx, &demopb.WatchRequest{}, grpc.WaitForReady(true))
		if err != nil {
			t.Fatalf("Watch() = %v", err)
		}
		wg.Go(func() {
			_, err := stream.Recv()
			errs <- err
		})
	}
	for i := range streams {
		receive(t, b.svc.started, fmt.Sprintf("Watch handler %d", i+1))
	}
	drainWorked(t, b, streams)
	failed := 0
	for resumed := 0; resumed+failed < streams; {
		select {
		case <-b.svc.started:
			resumed++
		case err := <-errs:
			if failed == 0 {
				t.Errorf("Recv() = %v through the drain", err)
			}
			failed++
		case <-time.After(defaultTestTimeout):
			t.Fatalf("%d streams resumed, %d failed, of %d after %v", resumed, failed, streams, defaultTestTimeout)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d streams ended with an error through one drain, want none", failed, streams)
	}
}

// TestSlowCreationIsNoWork opens a resumable Watch, with no retry budget,
// on a server that refuses it, through a stream creation that takes longer
// than ResumeReset, as one waiting for a connection does. The attempt was
// refused at once: it did not work, and its resumption is a retry that the
// budget refuses, not the stream's next call.
func TestSlowCreationIsNoWork(t *testing.T) {
	slow := grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
		// The slowness under test, not a wait for another goroutine.
		time.Sleep(client.ResumeReset + 100*time.Millisecond)
		return streamer(ctx, desc, cc, method, opts...)
	})
	c, counter := dialRefusing(t, []client.Option{client.WithRetryBudget(0, 0), resumeWatch}, slow)
	watchRefused(t, c, 0)
	if n := counter.streams.Load(); n != 1 {
		t.Errorf("a stream refused after a slow creation made %d attempts with no retry budget, want 1", n)
	}
}

// TestRetryBudgetNotSpentOnCancelledWait cancels calls to a refusing
// server while they wait to retry: no retry is made, and none must be
// taken from the budget. A call that can wait then finds the budget's
// reserve whole.
func TestRetryBudgetNotSpentOnCancelledWait(t *testing.T) {
	const reserve = 10 // WithRetryBudget(0, 1) over 10s
	waiting := make(chan struct{}, 1)
	backoff := func(ctx context.Context, _ uint) time.Duration {
		if ctx.Value(longBackoff{}) != nil {
			waiting <- struct{}{}
			return time.Hour
		}
		return 0
	}
	c, counter := dialRefusing(t, []client.Option{client.WithRetryBudget(0, 1), client.WithBackoff(backoff)})

	for i := range 2 * reserve {
		ctx, cancel := context.WithCancel(context.WithValue(context.Background(), longBackoff{}, true))
		errs := make(chan error, 1)
		go func() {
			_, err := c.Append(ctx, wrapperspb.String("x"), grpc.WaitForReady(true))
			errs <- err
		}()
		receive(t, waiting, "backoff")
		cancel()
		if err := receive(t, errs, "Append's end"); status.Code(err) != codes.Canceled {
			t.Fatalf("Append() #%d = %v, want code %v: the budget refused the retry, spent on retries never made", i+1, err, codes.Canceled)
		}
	}
	if n := counter.unary.Load(); n != 2*reserve {
		t.Fatalf("%d calls cancelled while they waited to retry made %d attempts, want no retry", 2*reserve, n)
	}
	wantRetriesLeft(t, c, counter)
}

// TestLateReadRefusalIsNoWork opens a resumable Watch, with no retry
// budget, on a server that refuses it, and reads it only after
// ResumeReset, as a caller busy elsewhere does. The attempt was refused:
// it did no work, however late its refusal was read, and its resumption is
// a retry that the budget refuses, not the stream's next call.
func TestLateReadRefusalIsNoWork(t *testing.T) {
	c, counter := dialRefusing(t, []client.Option{client.WithRetryBudget(0, 0), resumeWatch})
	watchRefused(t, c, client.ResumeReset+100*time.Millisecond)
	if n := counter.streams.Load(); n != 1 {
		t.Errorf("a refused stream read late made %d attempts with no retry budget, want 1", n)
	}
}
