package interceptors

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"

	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// ErrStreamAge is the context.Cause of a long-lived stream ended because it
// reached its maximum age (WithMaxStreamAge).
var ErrStreamAge = errors.New("drainkit: stream retired: it reached its maximum age")

// ErrConnectionAge is the context.Cause of a long-lived stream ended because
// grpc sent GOAWAY on its connection for the connection's age
// (keepalive.ServerParameters.MaxConnectionAge); see Tracker.Credentials.
var ErrConnectionAge = errors.New("drainkit: stream retired: its connection reached its maximum age")

// MetadataRetired is the ErrorInfo metadata key that says why a long-lived
// stream was retired: RetiredStreamAge or RetiredConnectionAge. The
// statuses of a drain do not carry it.
const MetadataRetired = "retired"

// The values of MetadataRetired.
const (
	RetiredStreamAge     = "stream_age"
	RetiredConnectionAge = "connection_age"
)

// MinStreamAge is the shortest maximum age WithMaxStreamAge accepts. A
// retired stream's resumption restarts its client's count of attempts and
// draws nothing from its retry budget (package client), so a shorter age,
// such as WithMaxStreamAge(5) written for five seconds, would have every
// long-lived stream reopened without end, every few tens of milliseconds,
// by each of its clients; rebalancing needs ages of seconds to minutes.
const MinStreamAge = 100 * time.Millisecond

// maxRetireNotice bounds the time between the closing of Retiring's channel
// and the end of a stream that reached its own age.
const maxRetireNotice = time.Second

// WithMaxStreamAge ends every long-lived stream (WithLongLived) once it has
// lived d, plus or minus a random jitter of up to 10%, so that streams
// opened together are not ended together. The stream ends as a drain ends
// it, with codes.Unavailable and the ErrorInfo of a cancelled call, whose
// MetadataRetired says RetiredStreamAge, whatever its handler returns:
// package client resumes such a stream (WithResumable, WithResume) on
// whichever server its balancer picks, so that long-lived streams follow the
// servers added since they were opened. The handler's context is cancelled
// with ErrStreamAge; Retiring tells it beforehand. The default is 0: streams
// never end for their age. It panics if d is negative, or above 0 and below
// MinStreamAge.
func WithMaxStreamAge(d time.Duration) Option {
	mustNotBeNegative("WithMaxStreamAge", d)
	if d > 0 && d < MinStreamAge {
		panic(fmt.Sprintf("interceptors: WithMaxStreamAge(%v): below MinStreamAge (%v)", d, MinStreamAge))
	}
	return optionFunc(func(o *options) { o.maxStreamAge = d })
}

// Retiring returns a channel that is closed when the Tracker is about to end
// the long-lived stream whose handler's context is ctx for its age or its
// connection's: when the stream reaches its maximum age, a tenth of
// WithMaxStreamAge (at most one second) before the Tracker ends it, so that
// its handler can send a last message and return on its own; when grpc has
// sent GOAWAY on its connection for the connection's age, at the moment the
// Tracker ends it (the stream should leave the aged connection at once).
// A handler that returns after the channel is closed, with any error or
// nil, ends its stream with the retirement status, which package client
// resumes.
//
// Retiring returns nil, a channel that is never ready, for a context that
// is not a long-lived stream's handler's, or when the Tracker retires no
// stream (no WithMaxStreamAge and no Tracker.Credentials).
func Retiring(ctx context.Context) <-chan struct{} {
	if r, _ := ctx.Value(retireKey{}).(*retirement); r != nil {
		return r.notice
	}
	return nil
}

type retireKey struct{}

// retirementStatus returns the status of a stream retired for cause,
// ErrStreamAge or ErrConnectionAge, whose MetadataRetired is why.
func retirementStatus(cause error, why string) *status.Status {
	info := errorInfo(ReasonShuttingDown, HandlerCancelled)
	info.Metadata[MetadataRetired] = why
	return status.FromProto(&spb.Status{Code: int32(codes.Unavailable), Message: cause.Error(), Details: mustDetails(info)})
}

// The statuses of retired streams, built once: a status cannot be changed,
// and one serves every stream retired for the same cause, as the status of
// a drain serves all the calls it cancels.
var (
	streamAgeStatus     = retirementStatus(ErrStreamAge, RetiredStreamAge)
	connectionAgeStatus = retirementStatus(ErrConnectionAge, RetiredConnectionAge)
)

// retiredStatus returns the status of a stream retired for cause, or nil
// if cause is not a retirement's.
func retiredStatus(cause error) *status.Status {
	switch cause {
	case ErrStreamAge:
		return streamAgeStatus
	case ErrConnectionAge:
		return connectionAgeStatus
	}
	return nil
}

// A retirement ends one long-lived stream for its age or its connection's.
// Unlike the call record, it is never recycled: its timer and its
// connection may reach it after the call has ended, and find c nil then.
type retirement struct {
	t      *Tracker
	notice chan struct{} // closed by warn

	mu      sync.Mutex
	c       *call       // the call, until it ends
	warned  error       // the cause the stream is retired for, once notice is closed
	retired bool        // the call has been ended, or is being
	timer   *time.Timer // the stream's age, then its notice
	conn    *connRecord // its connection, if Credentials wrapped it; set before start
}

// retire prepares the retirement of the long-lived stream c, whose handler
// will see hctx, and returns the context the handler must see instead.
// grpcCtx is the context grpc gave the call. The retirement starts once c
// is registered (see start).
func (t *Tracker) retire(c *call, grpcCtx, hctx context.Context) context.Context {
	r := &retirement{t: t, notice: make(chan struct{}), c: c}
	c.ret = r
	if t.watch.on.Load() {
		if p, ok := peer.FromContext(grpcCtx); ok && p.Addr != nil && p.LocalAddr != nil {
			r.conn = t.watch.lookup(connKey(p.LocalAddr, p.Addr))
		}
	}
	return context.WithValue(hctx, retireKey{}, r)
}

// start arms the stream's age and registers it with its connection. An
// aged connection retires it at once.
func (r *retirement) start() {
	if d := r.t.o.maxStreamAge; d > 0 {
		age := d
		if j := int64(d / 10); j > 0 {
			off := time.Duration(rand.Int64N(2*j+1) - j)
			if off > 0 && age > math.MaxInt64-off {
				off = -off // no overflow for an age of centuries
			}
			age += off
		}
		notice := min(d/10, maxRetireNotice)
		r.mu.Lock()
		r.timer = time.AfterFunc(age-notice, func() { r.warn(notice, ErrStreamAge) })
		r.mu.Unlock()
	}
	if r.conn != nil && r.conn.aged.Load() {
		r.warn(0, ErrConnectionAge)
	}
}

// warn closes the notice channel and ends the stream, with cause, after
// notice. A later warn with a shorter notice brings the end forward.
func (r *retirement) warn(notice time.Duration, cause error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c == nil || r.retired {
		return
	}
	if r.warned == nil {
		close(r.notice)
	}
	r.warned = cause
	if r.timer != nil {
		r.timer.Stop()
	}
	if notice <= 0 {
		r.endLocked(cause)
		return
	}
	r.timer = time.AfterFunc(notice, func() {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.c != nil && !r.retired {
			r.endLocked(cause)
		}
	})
}

// endLocked ends the stream with the status of cause, as CancelLongLived
// does. r.mu is held, so the call record cannot be recycled meanwhile.
func (r *retirement) endLocked(cause error) {
	r.retired = true
	r.t.cancelOne(r.c, cause)
}

// detach is called when the call ends, before its record is recycled: the
// retirement lets go of it and stops its timer. It returns the cause the
// stream is being retired for once its handler has been told (Retiring),
// or nil: a handler that returns on the notice retires its stream.
func (r *retirement) detach() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.c = nil
	if r.timer != nil {
		r.timer.Stop()
	}
	return r.warned
}
