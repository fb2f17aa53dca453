//go:build unix

package process_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	_ "modernc.org/sqlite" // registers the "sqlite" driver

	"github.com/drainkit/drainkit/client"
	"github.com/drainkit/drainkit/examples/demopb"
)

const (
	// watchTick is the interval of the demo's Watch.
	watchTick = 100 * time.Millisecond
	// maxWatchGap is the longest a Watch may go without a message.
	maxWatchGap = time.Second
)

// TestRollingRestartClients restarts two demo servers behind a balancer,
// in turn, several times, while two kinds of callers use them at once:
// callers built with client.DialOptions, and plain grpc-go callers that
// reopen their Watch by hand. The first must see no error, no Watch gap
// over maxWatchGap, no tick lost or repeated, and every acknowledged Append
// stored exactly once.
func TestRollingRestartClients(t *testing.T) {
	const (
		restarts         = 6
		propagationDelay = 300 * time.Millisecond
		readinessDelay   = time.Second // well above the propagation delay, for a loaded machine
		unaryCallers     = 3           // of each kind
		watchers         = 2           // of each kind
	)
	db := filepath.Join(t.TempDir(), "demo.db")
	flags := []string{"-readiness-delay", readinessDelay.String()}
	// Every server uses the same database, as replicas of one store.
	servers := []*server{startServer(t, "A0", db, flags...), startServer(t, "B0", db, flags...)}
	lb := newBalancer(t, propagationDelay, servers[0].addr, servers[1].addr)

	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	resume := client.WithResume(demopb.Demo_Watch_FullMethodName, func(_ *demopb.WatchRequest, last *timestamppb.Timestamp) *demopb.WatchRequest {
		return &demopb.WatchRequest{After: last}
	})
	kinds := []*callerKind{
		{name: "client.DialOptions", opts: client.DialOptions(client.WithIdempotent(demopb.Demo_Echo_FullMethodName), resume)},
		{name: "plain grpc-go"},
	}
	var wg sync.WaitGroup
	for _, k := range kinds {
		for i := range unaryCallers {
			_, c := dial(t, lb.addr(), k.opts...)
			wg.Go(func() { k.unaryLoop(ctx, c, fmt.Sprintf("%s/%d", k.name, i)) })
		}
		for range watchers {
			_, c := dial(t, lb.addr(), k.opts...)
			w := &watch{}
			k.watches = append(k.watches, w)
			wg.Go(func() { w.run(ctx, c) })
		}
	}
	// Let every caller start on the first servers.
	for _, k := range kinds {
		k.waitCalls(t, unaryCallers)
		for _, w := range k.watches {
			w.waitTicks(t, 3)
		}
	}

	start := time.Now()
	for i := range restarts {
		slot := i % 2
		old := servers[slot]
		sent := old.signal(syscall.SIGTERM)
		lb.terminating(old.addr)
		next := startServer(t, fmt.Sprintf("%c%d", 'A'+slot, i/2+1), db, flags...)
		lb.add(next.addr)
		if _, code := old.wait(readinessDelay + defaultTestTimeout); code != exitOK {
			t.Errorf("server %s exit status = %d, want %d", old.name, code, exitOK)
		}
		t.Logf("restart %d: server %s exited %v after SIGTERM, replaced by %s", i+1, old.name, time.Since(sent).Round(time.Millisecond), next.name)
		servers[slot] = next
	}
	// Every caller must go on after the last restart.
	for _, k := range kinds {
		k.waitCallsAfter(t, time.Now())
		for _, w := range k.watches {
			w.waitTicks(t, w.ticksNow()+3)
		}
	}
	elapsed := time.Since(start)
	stop()
	wg.Wait()

	rows := readEntries(t, db)
	for _, k := range kinds {
		k.report(t, rows, restarts, elapsed)
	}
	dk, plain := kinds[0], kinds[1]
	if errs := dk.errorCount(); errs != 0 {
		t.Errorf("%s: %d errors surfaced to callers (e.g. %v), want 0", dk.name, errs, dk.sampleError())
	}
	for i, w := range dk.watches {
		if w.maxGap > maxWatchGap {
			t.Errorf("%s: Watch %d went %v without a message, want at most %v", dk.name, i, w.maxGap, maxWatchGap)
		}
		if w.misses != 0 {
			t.Errorf("%s: Watch %d had %d ticks lost or repeated", dk.name, i, w.misses)
		}
	}
	if missing, twice := appendsStored(dk, rows); missing+twice != 0 {
		t.Errorf("%s: of %d acknowledged Appends, %d missing and %d stored more than once", dk.name, len(dk.acked), missing, twice)
	}
	if missing, twice := appendsStored(plain, rows); missing+twice != 0 {
		t.Errorf("%s: of %d acknowledged Appends, %d missing and %d stored more than once", plain.name, len(plain.acked), missing, twice)
	}
	// The comparison holds only if plain callers see what drainkit hides.
	if plain.watchErrors() == 0 {
		t.Errorf("%s: no Watch ended with an error: the restarts did not reach the Watch streams", plain.name)
	}
}

// A callerKind is a set of callers built the same way, and what they saw.
type callerKind struct {
	name string
	opts []grpc.DialOption

	mu       sync.Mutex
	calls    int            // guarded by mu
	lastCall time.Time      // of a successful call; guarded by mu
	errs     map[string]int // by method and code; guarded by mu
	sample   error          // guarded by mu
	acked    []string       // values of acknowledged Appends; guarded by mu
	changed  chan struct{}  // closed and replaced at each call; guarded by mu

	watches []*watch
}

func (k *callerKind) record(method string, err error, acked string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.changed == nil {
		k.changed = make(chan struct{})
	}
	k.calls++
	switch {
	case err != nil:
		if k.errs == nil {
			k.errs = map[string]int{}
		}
		k.errs[method+" "+status.Code(err).String()]++
		if k.sample == nil {
			k.sample = err
		}
	case acked != "":
		k.acked = append(k.acked, acked)
		fallthrough
	default:
		k.lastCall = time.Now()
	}
	close(k.changed)
	k.changed = make(chan struct{})
}

// unaryLoop calls Echo and Append in turn until ctx ends.
func (k *callerKind) unaryLoop(ctx context.Context, c demopb.DemoClient, id string) {
	for n := 0; ctx.Err() == nil; n++ {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		var err error
		var acked string
		method := "Echo"
		if n%2 == 0 {
			_, err = c.Echo(cctx, wrapperspb.String(id))
		} else {
			method = "Append"
			v := fmt.Sprintf("%s/%d", id, n)
			if _, err = c.Append(cctx, wrapperspb.String(v)); err == nil {
				acked = v
			}
		}
		cancel()
		if ctx.Err() != nil {
			return // the end of the test, not an error
		}
		k.record(method, err, acked)
		select {
		case <-ctx.Done():
		case <-time.After(callInterval):
		}
	}
}

// waitCalls waits for n successful calls.
func (k *callerKind) waitCalls(t *testing.T, n int) {
	t.Helper()
	k.waitFor(t, fmt.Sprintf("%d successful calls", n), func() bool { return k.successes() >= n })
}

// waitCallsAfter waits for a successful call after when.
func (k *callerKind) waitCallsAfter(t *testing.T, when time.Time) {
	t.Helper()
	k.waitFor(t, "a successful call after the last restart", func() bool { return k.lastCall.After(when) })
}

func (k *callerKind) waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	timeout := time.After(defaultTestTimeout)
	for {
		k.mu.Lock()
		if k.changed == nil {
			k.changed = make(chan struct{})
		}
		ok, changed := done(), k.changed
		k.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("%s: no %s after %v", k.name, what, defaultTestTimeout)
		}
	}
}

func (k *callerKind) errorCount() int {
	n := k.watchErrors()
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.errs {
		n += c
	}
	return n
}

func (k *callerKind) watchErrors() int {
	n := 0
	for _, w := range k.watches {
		n += w.errors
	}
	return n
}

func (k *callerKind) sampleError() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.sample != nil {
		return k.sample
	}
	for _, w := range k.watches {
		if w.sample != nil {
			return w.sample
		}
	}
	return nil
}

// report logs what the callers of k saw.
func (k *callerKind) report(t *testing.T, rows map[string]int, restarts int, elapsed time.Duration) {
	t.Helper()
	var gaps []string
	ticks, misses := 0, 0
	var maxGap time.Duration
	for _, w := range k.watches {
		gaps = append(gaps, w.maxGap.Round(time.Millisecond).String())
		ticks += w.ticks
		misses += w.misses
		maxGap = max(maxGap, w.maxGap)
	}
	missing, twice := appendsStored(k, rows)
	k.mu.Lock()
	defer k.mu.Unlock()
	t.Logf("%-18s %d restarts in %v: %d unary calls, %d failed %v; %d Watch streams, %d ticks, %d ended with an error, %d ticks lost or repeated, longest gap %v (each: %s); %d Appends acknowledged, %d missing, %d twice; e.g. %v",
		k.name+":", restarts, elapsed.Round(time.Millisecond), k.calls, k.calls-k.successes(), k.errs,
		len(k.watches), ticks, k.watchErrors(), misses, maxGap.Round(time.Millisecond), strings.Join(gaps, ", "),
		len(k.acked), missing, twice, k.sampleErrorLocked())
}

func (k *callerKind) successes() int {
	n := k.calls
	for _, c := range k.errs {
		n -= c
	}
	return n
}

func (k *callerKind) sampleErrorLocked() error {
	if k.sample != nil {
		return k.sample
	}
	for _, w := range k.watches {
		if w.sample != nil {
			return w.sample
		}
	}
	return nil
}

// A watch holds a Watch stream, and counts the errors it ends with. It
// reopens it after an error, as a plain caller must, with the last tick
// received as its cursor.
type watch struct {
	mu      sync.Mutex
	ticks   int           // guarded by mu
	changed chan struct{} // closed and replaced at each tick; guarded by mu

	// Read once run has returned.
	errors int           // streams that ended with an error
	sample error         // the first such error
	misses int           // ticks not watchTick after the one before
	maxGap time.Duration // the longest time without a message
}

// run watches until ctx ends. Each stream starts after the last tick
// received, so that a tick is lost or repeated only if the server or the
// client loses or repeats it.
func (w *watch) run(ctx context.Context, c demopb.DemoClient) {
	last := time.Now().Truncate(watchTick)
	lastRecv := time.Now()
	for ctx.Err() == nil {
		stream, err := c.Watch(ctx, &demopb.WatchRequest{After: timestamppb.New(last)})
		for err == nil {
			var ts *timestamppb.Timestamp
			if ts, err = stream.Recv(); err != nil {
				break
			}
			now := time.Now()
			w.maxGap = max(w.maxGap, now.Sub(lastRecv))
			lastRecv = now
			if got := ts.AsTime(); !got.Equal(last.Add(watchTick)) {
				w.misses++
			}
			last = ts.AsTime()
			w.mu.Lock()
			w.ticks++
			if w.changed != nil {
				close(w.changed)
			}
			w.changed = make(chan struct{})
			w.mu.Unlock()
		}
		if ctx.Err() != nil && status.Code(err) == codes.Canceled {
			return // the end of the test
		}
		w.errors++
		if w.sample == nil {
			w.sample = err
		}
	}
}

func (w *watch) ticksNow() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ticks
}

// waitTicks waits until the watch has received n ticks.
func (w *watch) waitTicks(t *testing.T, n int) {
	t.Helper()
	timeout := time.After(defaultTestTimeout)
	for {
		w.mu.Lock()
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		ticks, changed := w.ticks, w.changed
		w.mu.Unlock()
		if ticks >= n {
			return
		}
		select {
		case <-changed:
		case <-timeout:
			t.Fatalf("Watch: %d ticks after %v, want %d", ticks, defaultTestTimeout, n)
		}
	}
}

// readEntries returns how many times each value is stored in db.
func readEntries(t *testing.T, path string) map[string]int {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)")
	if err != nil {
		t.Fatalf("opening %s: %v", path, err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT value, COUNT(*) FROM entries GROUP BY value`)
	if err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	defer rows.Close()
	counts := map[string]int{}
	for rows.Next() {
		var v string
		var n int
		if err := rows.Scan(&v, &n); err != nil {
			t.Fatalf("reading %s: %v", path, err)
		}
		counts[v] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return counts
}

// appendsStored returns how many of k's acknowledged Appends are missing
// from rows, and how many are there more than once.
func appendsStored(k *callerKind, rows map[string]int) (missing, twice int) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, v := range k.acked {
		switch n := rows[v]; {
		case n == 0:
			missing++
		case n > 1:
			twice++
		}
	}
	return missing, twice
}
