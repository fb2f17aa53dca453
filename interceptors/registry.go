package interceptors

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/status"
)

// numShards spreads the registry of running calls over several locks, so
// that concurrent RPCs rarely contend for one.
const numShards = 32

// A shard holds some of the running calls in an intrusive list, oldest
// first: adding and removing a call costs no allocation.
type shard struct {
	mu         sync.Mutex
	head, tail *call
	_          [40]byte // keeps shards on separate cache lines
}

// call is the Tracker's record of one running RPC. Records are recycled
// through callPool, with their timer, so that tracking a call allocates only
// its context; nothing outside the Tracker keeps a pointer to one.
type call struct {
	Call
	ctx        context.Context         // the handler's context, or the one under its deadline
	parent     context.Context         // the context grpc gave the call, kept for ServeHTTP calls only
	cancel     context.CancelCauseFunc // cancels ctx
	by         *cancellation           // set when the Tracker cancels the call, shared by the calls of one cancellation; guarded by shard.mu
	shard      *shard
	prev, next *call

	// ss is the stream handed to the handler of a streaming call, which
	// ends the stream when it is cancelled; nil for unary calls. Unlike
	// the record, it is never recycled.
	ss *serverStream

	// ret retires a long-lived stream for its age or its connection's;
	// nil for other calls, and when the Tracker retires none.
	ret *retirement

	timer  *time.Timer // enforces an injected deadline; kept across reuses
	expire func()      // the timer's function, made once per record
}

var callPool = sync.Pool{New: func() any { return new(call) }}

// A cancellation is one call of CancelAll or CancelLongLived, or the
// retirement of one stream: the cause its calls' contexts are cancelled
// with, and the status they end with.
type cancellation struct {
	cause error
	st    *status.Status
}

// push adds c at the end of the list, so that the list keeps the order in
// which calls began.
func (s *shard) push(c *call) {
	c.prev, c.next = s.tail, nil
	if s.tail != nil {
		s.tail.next = c
	} else {
		s.head = c
	}
	s.tail = c
}

func (s *shard) remove(c *call) {
	if c.prev != nil {
		c.prev.next = c.next
	} else {
		s.head = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	} else {
		s.tail = c.prev
	}
	c.prev, c.next = nil, nil
}

// arm starts the timer that cancels c.ctx with ErrServerDeadline after d
// and, for a stream, ends the stream with codes.DeadlineExceeded.
func (c *call) arm(d time.Duration) {
	if c.timer == nil {
		c.expire = func() { stopCall(c.ss, c.cancel, ErrServerDeadline, deadlineStatus, true) }
		c.timer = time.AfterFunc(d, c.expire)
		return
	}
	c.timer.Reset(d)
}

// release frees the context of c, unless a cancellation of the Tracker has
// marked c (marked, read under the shard's lock): that cancellation cancels
// the context, if it has not yet, with its own cause. release then recycles
// c, unless its timer has fired: then the timer's function may still be
// running, and c is left to the garbage collector.
func (c *call) release(marked bool) {
	if !marked {
		c.cancel(nil)
	}
	if c.Injected && !c.timer.Stop() {
		return
	}
	timer, expire := c.timer, c.expire
	*c = call{timer: timer, expire: expire}
	callPool.Put(c)
}

// deadlineCtx gives a handler the deadline injected by the Tracker. It
// reports context.DeadlineExceeded once the Tracker's timer has cancelled the
// context below it with ErrServerDeadline.
type deadlineCtx struct {
	context.Context
	deadline time.Time
}

func (c *deadlineCtx) Deadline() (time.Time, bool) { return c.deadline, true }

func (c *deadlineCtx) Err() error {
	err := c.Context.Err()
	if err != nil && context.Cause(c.Context) == ErrServerDeadline {
		return context.DeadlineExceeded
	}
	return err
}
