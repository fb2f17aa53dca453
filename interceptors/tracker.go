package interceptors

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ErrShuttingDown is the cause used by CancelAll, CancelLongLived, Reject and
// RejectLongLived when they are given a nil cause.
var ErrShuttingDown = errors.New("drainkit: server is shutting down")

// ErrServerDeadline is the context.Cause of a handler whose deadline, set or
// capped by the Tracker, has passed. It wraps context.DeadlineExceeded.
var ErrServerDeadline = fmt.Errorf("drainkit: deadline set by the server exceeded: %w", context.DeadlineExceeded)

// A Call describes one RPC whose handler is running.
type Call struct {
	Method    string    // the full method, "/package.Service/Method"
	Started   time.Time // when its handler was entered
	Stream    bool      // a streaming RPC
	LongLived bool      // a stream marked by WithLongLived
	Deadline  time.Time // the deadline its handler sees; zero if none
	Injected  bool      // Deadline was set or capped by the Tracker
	Cancelled bool      // the Tracker cancelled it: CancelAll, CancelLongLived, or its stream's retirement (WithMaxStreamAge, Credentials)
	ServeHTTP bool      // it arrived through grpc.Server.ServeHTTP, not a listener of the server's own
}

// Tracker knows every RPC whose handler is running on the servers it
// intercepts, and can cancel them and refuse new ones. Create it with
// NewTracker; its methods are safe for concurrent use.
type Tracker struct {
	o *options

	inFlight atomic.Int64
	waiters  atomic.Int64
	mu       sync.Mutex    // guards idle
	idle     chan struct{} // closed when inFlight reaches 0 with waiters

	// Rejections, read under a shard lock by new calls. Each holds the
	// status error sent to refused clients.
	rejectAll  atomic.Pointer[error]
	rejectLong atomic.Pointer[error]

	servedHTTP atomic.Bool // a call has arrived through ServeHTTP

	watch ageWatch // the connections wrapped by Credentials

	shards [numShards]shard
}

// NewTracker returns a Tracker configured by opts. It panics, naming the
// option, when an option is given a negative duration or a malformed method
// name, or when WithDefaultTimeout is above WithMaxTimeout.
func NewTracker(opts ...Option) *Tracker {
	return &Tracker{o: evaluateOptions(opts)}
}

// InFlight returns the number of RPCs whose handler is running now. A call
// that arrived through grpc.Server.ServeHTTP counts until grpc has written
// its status, a moment after its handler returns.
func (t *Tracker) InFlight() int { return int(t.inFlight.Load()) }

// ServedHTTP reports whether a call has arrived through grpc.Server.ServeHTTP
// rather than a listener of the server's own.
func (t *Tracker) ServedHTTP() bool { return t.servedHTTP.Load() }

// Calls returns a snapshot of the RPCs whose handler is running now, oldest
// first.
func (t *Tracker) Calls() []Call {
	calls := make([]Call, 0, t.InFlight())
	t.each(func(c *call) {
		calls = append(calls, c.Call)
	})
	slices.SortFunc(calls, func(a, b Call) int { return a.Started.Compare(b.Started) })
	return calls
}

// Wait blocks until no handler is running, and returns nil then, or until ctx
// ends, and returns ctx.Err() then. It is woken by the last handler that
// returns; it does not poll.
func (t *Tracker) Wait(ctx context.Context) error {
	t.waiters.Add(1)
	defer t.waiters.Add(-1)
	t.mu.Lock()
	if t.inFlight.Load() == 0 {
		t.mu.Unlock()
		return nil
	}
	if t.idle == nil {
		t.idle = make(chan struct{})
	}
	idle := t.idle
	t.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// CancelAll cancels the context of every handler running now, with cause as
// its context.Cause, and returns how many it cancelled; handlers whose context
// has ended already, cancelled before or by their client or deadline, keep
// their cause and are not counted. A handler that then returns an error sends
// its client codes.Unavailable, which clients and balancers retry elsewhere;
// one that returns a result keeps it. A nil cause stands for ErrShuttingDown.
// A handler that another CancelAll or CancelLongLived, or the retirement of
// its stream, running at the same time, has chosen but not cancelled yet, is
// cancelled with that one's cause before CancelAll returns, and counted by
// that one only.
func (t *Tracker) CancelAll(cause error) int {
	return t.cancel(cause, false)
}

// CancelLongLived is CancelAll restricted to long-lived streams.
func (t *Tracker) CancelLongLived(cause error) int {
	return t.cancel(cause, true)
}

// Reject makes every RPC that arrives from now on fail with
// codes.Unavailable and the text of cause before its handler runs; refused
// RPCs are never counted in flight. A nil cause stands for ErrShuttingDown.
// Calls already running are not affected. Only the first cause given is used.
func (t *Tracker) Reject(cause error) {
	t.rejectAll.CompareAndSwap(nil, refusedError(cause))
}

// RejectLongLived is Reject restricted to long-lived streams.
func (t *Tracker) RejectLongLived(cause error) {
	t.rejectLong.CompareAndSwap(nil, refusedError(cause))
}

func (t *Tracker) cancel(cause error, longLivedOnly bool) int {
	if cause == nil {
		cause = ErrShuttingDown
	}
	n := 0
	by := &cancellation{cause: cause, st: cancelledStatus(cause)}
	type marked struct {
		ss     *serverStream
		cancel context.CancelCauseFunc
		by     *cancellation
	}
	var batch []marked
	for i := range t.shards {
		s := &t.shards[i]
		batch = batch[:0]
		s.mu.Lock()
		for c := s.head; c != nil; c = c.next {
			if longLivedOnly && !c.LongLived {
				continue
			}
			if c.Cancelled {
				// Marked by another cancellation, which may not have
				// cancelled its context yet: this one does, with the
				// other's cause, so that every context is cancelled when
				// it returns, and leaves the stream's end and the count
				// to the other.
				if c.ctx.Err() == nil {
					batch = append(batch, marked{c.ss, c.cancel, c.by})
				}
				continue
			}
			// A context that has ended already, by its client or its deadline,
			// keeps its cause and is not counted.
			if c.ctx.Err() != nil {
				continue
			}
			c.Cancelled, c.by = true, by
			batch = append(batch, marked{c.ss, c.cancel, by})
			n++
		}
		s.mu.Unlock()
		// Outside the lock, which the handlers woken take as they return;
		// the records may be recycled by then, their streams and contexts
		// may not.
		for _, b := range batch {
			stopCall(b.ss, b.cancel, b.by.cause, b.by.st, b.by == by)
		}
	}
	return n
}

// cancelOne cancels the running call c with cause, as CancelLongLived
// does, unless its context has ended already. Its caller keeps c from
// being recycled meanwhile (see retirement.endLocked).
func (t *Tracker) cancelOne(c *call, cause error) {
	s := c.shard
	s.mu.Lock()
	if c.Cancelled || c.ctx.Err() != nil {
		s.mu.Unlock()
		return
	}
	by := &cancellation{cause: cause, st: cancelledStatus(cause)}
	c.Cancelled, c.by = true, by
	s.mu.Unlock()
	stopCall(c.ss, c.cancel, by.cause, by.st, true)
}

// stopCall cancels a call's context, cancel, with cause. For a stream, ss
// not nil, it sets st as the status the stream ends with first, so that a
// handler woken by its context cannot send a message after its
// cancellation; then, if end, it ends the stream should the handler wait
// in RecvMsg or SendMsg. The context is cancelled before the stream ends:
// ending it ends grpc's stream context, whose context.Canceled would
// otherwise reach the handler's context first, in place of cause.
func stopCall(ss *serverStream, cancel context.CancelCauseFunc, cause error, st *status.Status, end bool) {
	waiting := ss != nil && ss.cancel(st)
	cancel(cause)
	if waiting && end {
		ss.endIfWaiting()
	}
}

// each calls f on every running call, under the lock of its shard.
func (t *Tracker) each(f func(*call)) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for c := s.head; c != nil; c = c.next {
			f(c)
		}
		s.mu.Unlock()
	}
}

// begin registers a call to method whose handler is about to run with ctx,
// and returns it with the context the handler must see. For a stream, ss is
// the stream the handler will get, and begin sets its context; it is nil
// for a unary call. begin returns a status error instead when the call is
// refused.
func (t *Tracker) begin(ctx context.Context, method string, ss *serverStream) (*call, context.Context, error) {
	stream := ss != nil
	longLived := false
	if stream {
		_, longLived = t.o.longLived[method]
	}
	c := callPool.Get().(*call)
	c.Call = Call{Method: method, Started: time.Now(), Stream: stream, LongLived: longLived}
	c.Deadline, _ = ctx.Deadline()
	if _, c.ServeHTTP = ctx.Value(http.ServerContextKey).(*http.Server); c.ServeHTTP {
		c.parent = ctx
		if !t.servedHTTP.Load() {
			t.servedHTTP.Store(true)
		}
	}
	c.ctx, c.cancel = context.WithCancelCause(ctx)
	hctx := c.ctx
	if def, max := t.o.timeouts(method, stream, longLived); def > 0 || max > 0 {
		switch {
		case c.Deadline.IsZero() && def > 0:
			c.Deadline, c.Injected = c.Started.Add(def), true
		case !c.Deadline.IsZero() && max > 0 && c.Deadline.Sub(c.Started) > max:
			c.Deadline, c.Injected = c.Started.Add(max), true
		}
		if c.Injected {
			hctx = &deadlineCtx{Context: c.ctx, deadline: c.Deadline}
		}
	}
	if longLived && (t.o.maxStreamAge > 0 || t.watch.on.Load()) {
		hctx = t.retire(c, ctx, hctx)
	}
	if stream {
		ss.ctx, ss.serveHTTP = hctx, c.ServeHTTP
		c.ss = ss
	}
	if c.Injected {
		c.arm(c.Deadline.Sub(c.Started))
	}

	s := t.shardOf(ctx)
	c.shard = s
	s.mu.Lock()
	if err := t.refusal(longLived); err != nil {
		s.mu.Unlock()
		c.release(false)
		return nil, nil, err
	}
	t.inFlight.Add(1)
	s.push(c)
	s.mu.Unlock()
	if c.ret != nil {
		c.ret.start()
	}
	return c, hctx, nil
}

// shardOf returns the shard that records a call whose context grpc gave as
// ctx. The calls of one connection share a shard, in the order they began
// (see "Cost" in the package documentation): a cancellation then visits
// them in that order, through memory that grpc and the Tracker allocated in
// that order too. grpc gives every call of a connection the same
// *peer.Peer; a call whose context has none gets a shard at random.
func (t *Tracker) shardOf(ctx context.Context) *shard {
	if p, ok := peer.FromContext(ctx); ok {
		return &t.shards[maphash.Comparable(shardSeed, p)%numShards]
	}
	return &t.shards[rand.Uint32()%numShards]
}

// shardSeed hashes connections to shards.
var shardSeed = maphash.MakeSeed()

// refusal returns the error for a new call, or nil if it may run. It is
// called under a shard lock, so that a call either sees a rejection or is
// seen by the cancellations that follow it.
func (t *Tracker) refusal(longLived bool) error {
	if p := t.rejectAll.Load(); p != nil {
		return *p
	}
	if longLived {
		if p := t.rejectLong.Load(); p != nil {
			return *p
		}
	}
	return nil
}

// end unregisters c, whose handler returned err, and returns the error its
// client must receive. It also runs when the handler panics.
func (t *Tracker) end(c *call, err error) error {
	// The retirement lets go of c first: one that ends c meanwhile has
	// marked it by the time the record is read, and none ends it later,
	// so that a context found ended below was ended by its client or its
	// deadline.
	var why error
	if c.ret != nil {
		why = c.ret.detach()
	}
	s := c.shard
	s.mu.Lock()
	s.remove(c)
	marked, by := c.Cancelled, c.by
	s.mu.Unlock()
	cancelled := marked
	var ending *status.Status // the status of a call the Tracker cancelled
	if cancelled {
		ending = by.st
	}
	if why != nil && !cancelled && c.ctx.Err() == nil {
		// Its handler returned on Retiring's notice, before the Tracker
		// ended the stream: the stream is retired all the same, unless
		// its client or deadline ended it first.
		cancelled, ending = true, cancelledStatus(why)
	}
	// Whether the Tracker cancelled the call is read from its record, not
	// from context.Cause: errors of some types cannot be compared with ==.
	switch {
	case cancelled && c.LongLived:
		// A long-lived stream never ends by itself: whatever its handler
		// returns once cancelled, nil included, its client must hear that
		// the server went away, not that the stream is complete.
		err = ending.Err()
	case err == nil:
	case context.Cause(c.ctx) == ErrServerDeadline:
		err = status.Error(codes.DeadlineExceeded, ErrServerDeadline.Error())
	case cancelled:
		err = ending.Err()
	default:
		err = forwarded(err)
	}
	serveHTTP, parent := c.ServeHTTP, c.parent
	c.release(marked)
	if serveHTTP {
		// grpc writes the status of a ServeHTTP call after the handler
		// returns, and stopping the server before then would cut it: the
		// call counts until grpc ends its stream context, which it does
		// once the status is written.
		context.AfterFunc(parent, t.done)
		return err
	}
	t.done()
	return err
}

// done counts a call out of InFlight, and wakes Wait on the last.
func (t *Tracker) done() {
	if t.inFlight.Add(-1) == 0 && t.waiters.Load() > 0 {
		t.mu.Lock()
		if t.idle != nil && t.inFlight.Load() == 0 {
			close(t.idle)
			t.idle = nil
		}
		t.mu.Unlock()
	}
}
