package client

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// The retry budget's window: deposits and withdrawals older than this are
// forgotten. It is counted in budgetSlots slots of one second each.
const (
	budgetWindow = 10 * time.Second
	budgetSlots  = int64(budgetWindow / time.Second)
)

// The defaults of WithRetryBudget.
const (
	// DefaultRetryPercent is the share of calls that may be retried, in
	// percent, when WithRetryBudget is not given.
	DefaultRetryPercent = 20
	// DefaultRetryMinPerSecond is the reserve of retries per second when
	// WithRetryBudget is not given.
	DefaultRetryMinPerSecond = 10
)

// WithRetryBudget bounds the retries of the client, as Finagle's
// RetryBudget does, so that retries cannot multiply the load on servers
// that fail: over a window of 10 seconds, each call deposits percent/100 of
// a retry, a reserve of minPerSecond times 10 retries is always there, and
// each retry (of a refused call, of an idempotent one, of a stream's
// creation, and each resumption of a stream after an attempt that failed
// sooner than ResumeReset) withdraws one. A retry the
// budget refuses is not made: the caller gets the error of the last
// attempt. The calls that deposit are the unary calls and server streams,
// and each resumption of a stream whose attempt had stayed open for
// ResumeReset, which is the stream's next call rather than a retry and
// takes nothing; client and bidi streams, never retried, pass through
// without.
//
// The budget belongs to the DialOptions call that the option is given to,
// and is shared by every ClientConn made with its options. The default is
// WithRetryBudget(DefaultRetryPercent, DefaultRetryMinPerSecond): 20% of the
// calls plus 10 retries a second. It panics if percent is negative, NaN or
// infinite, or minPerSecond is negative. WithRetryBudget(0, 0) allows no
// retry at all; to lift the budget, give a percent as high as WithMax
// allows retries (400 for the default 5 attempts).
func WithRetryBudget(percent float64, minPerSecond int) Option {
	if percent < 0 || math.IsNaN(percent) || math.IsInf(percent, 0) {
		panic(fmt.Sprintf("client: WithRetryBudget(%v, %d): percent must be a finite number, 0 or more", percent, minPerSecond))
	}
	if minPerSecond < 0 {
		panic(fmt.Sprintf("client: WithRetryBudget(%v, %d): minPerSecond must be 0 or more", percent, minPerSecond))
	}
	return optionFunc(func(o *options) {
		o.retryPercent, o.retryMinPerSecond = percent, minPerSecond
	})
}

// A retryBudget is a token bucket whose tokens expire: calls deposit,
// retries withdraw, over a sliding window of budgetSlots seconds. A deposit,
// made by every call, is an atomic add to the slot of the current second;
// withdrawals, made only on failures, take a lock and sum the window.
type retryBudget struct {
	percent float64 // of a retry deposited per call
	reserve float64 // retries always available in the window
	start   time.Time

	mu    sync.Mutex // serialises withdrawals and the reuse of slots
	slots [budgetSlots]budgetSlot
}

// A budgetSlot counts the calls and retries of one second.
type budgetSlot struct {
	second  atomic.Int64 // which second since start the counts are of
	calls   atomic.Int64
	retries atomic.Int64 // written under mu
}

func newRetryBudget(percent float64, minPerSecond int) *retryBudget {
	return &retryBudget{
		percent: percent / 100,
		reserve: float64(minPerSecond) * budgetWindow.Seconds(),
		start:   time.Now(),
	}
}

// now returns the current second since start, and its slot, reset if it
// held an older second's counts.
func (b *retryBudget) now() (int64, *budgetSlot) {
	sec := int64(time.Since(b.start) / time.Second)
	s := &b.slots[sec%budgetSlots]
	if s.second.Load() < sec {
		b.mu.Lock()
		// A caller that read the clock long ago, and finds the slot
		// taken by a later second, counts in it rather than reset it.
		if s.second.Load() < sec {
			s.calls.Store(0)
			s.retries.Store(0)
			s.second.Store(sec)
		}
		b.mu.Unlock()
	}
	return sec, s
}

// deposit records a call.
func (b *retryBudget) deposit() {
	_, s := b.now()
	s.calls.Add(1)
}

// withdraw records a retry and returns true, with the second it is
// recorded in, if the budget allows one; otherwise it returns false and
// records nothing.
func (b *retryBudget) withdraw() (int64, bool) {
	sec, cur := b.now()
	b.mu.Lock()
	defer b.mu.Unlock()
	var calls, retries int64
	for i := range b.slots {
		s := &b.slots[i]
		if d := sec - s.second.Load(); d >= 0 && d < budgetSlots {
			calls += s.calls.Load()
			retries += s.retries.Load()
		}
	}
	if b.reserve+float64(calls)*b.percent-float64(retries) < 1 {
		return sec, false
	}
	cur.retries.Add(1)
	return sec, true
}

// refund gives back a retry that withdraw recorded in the second sec and
// that was not made, unless that second has left the window.
func (b *retryBudget) refund(sec int64) {
	s := &b.slots[sec%budgetSlots]
	b.mu.Lock()
	defer b.mu.Unlock()
	if s.second.Load() == sec {
		s.retries.Add(-1)
	}
}
