package client

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	"github.com/drainkit/drainkit/interceptors"
)

// stream is the stream client interceptor. Server streams get a
// serverStream, which opens them again when the options allow; client and
// bidi streams pass through untouched: what they sent is gone.
func (o *options) stream(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, fullMethod string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	if desc.ClientStreams || !desc.ServerStreams {
		return streamer(ctx, desc, cc, fullMethod, opts...)
	}
	o.budget.deposit()
	cs, err := streamer(ctx, desc, cc, fullMethod, opts...)
	attempts := uint(1)
	for ; err != nil; attempts++ {
		// The stream could not be created. Its error is judged as any
		// other: grpc reports failed connections as codes.Unavailable
		// without drainkit's mark, retried for idempotent and resumable
		// methods only.
		if attempts >= o.max {
			return nil, err
		}
		out, delay := classify(err)
		if !o.methods[fullMethod].retryable(out, false) {
			return nil, err
		}
		if stop, ctxErr := o.retry(ctx, attempts, delay, err, false, false); stop {
			if ctxErr != nil {
				return nil, ctxErr
			}
			return nil, err
		}
		cs, err = streamer(ctx, desc, cc, fullMethod, opts...)
	}
	return &serverStream{o: o, ctx: ctx, desc: desc, cc: cc, method: fullMethod, streamer: streamer, opts: opts, cs: cs, attempts: attempts, opened: time.Now()}, nil
}

// A serverStream is the client side of a server stream that is opened
// again, on a new attempt, when it fails in a way the options allow to
// retry: refused by a draining server before any message, cut by a drain or
// a failed connection. The caller sees one stream.
//
// grpc.ClientStream allows RecvMsg on one goroutine while SendMsg,
// CloseSend, Header, Trailer and Context run on others. Only RecvMsg
// replaces cs, under mu; the others read it under mu.
type serverStream struct {
	o        *options
	ctx      context.Context // the caller's
	desc     *grpc.StreamDesc
	cc       *grpc.ClientConn
	method   string
	streamer grpc.Streamer
	opts     []grpc.CallOption

	mu     sync.Mutex
	cs     grpc.ClientStream // the current attempt; written under mu, by RecvMsg only
	req    any               // the request of the current attempt; guarded by mu
	sent   bool              // SendMsg was called; guarded by mu
	closed bool              // CloseSend was called; guarded by mu

	last any   // the last message received, nil before the first; RecvMsg's alone
	end  error // the error RecvMsg returned after its retries, returned again; RecvMsg's alone

	// attempts counts the attempts of the stream since it was created, or
	// since the count last restarted: its creation's and its
	// resumptions'. opened is when the current attempt was open: its
	// stream created, and its request sent for a resumption's. RecvMsg's
	// alone.
	attempts uint
	opened   time.Time

	// sctx is the stream's context, made by the first call of Context and
	// cancelled, with done set, when RecvMsg returns its last error or
	// io.EOF; guarded by mu.
	sctx   context.Context
	cancel context.CancelFunc
	done   bool
}

func (s *serverStream) current() grpc.ClientStream {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cs
}

// Header and Trailer are those of the current attempt: after a resume,
// the new stream's.
func (s *serverStream) Header() (metadata.MD, error) { return s.current().Header() }
func (s *serverStream) Trailer() metadata.MD         { return s.current().Trailer() }

// Context returns the context of the whole stream, across its attempts: it
// carries the caller's values and ends when the caller's does or the stream
// has ended (RecvMsg returned an error or io.EOF). Unlike an attempt's, it
// does not carry the transport's values, such as the peer: use the
// grpc.Peer call option for those.
func (s *serverStream) Context() context.Context {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sctx == nil {
		s.sctx, s.cancel = context.WithCancel(s.ctx)
		if s.done {
			s.cancel()
		}
	}
	return s.sctx
}

// finish records that RecvMsg has returned its last result, err, and
// returns it.
func (s *serverStream) finish(err error) error {
	s.mu.Lock()
	s.done = true
	if s.cancel != nil {
		s.cancel()
	}
	s.mu.Unlock()
	return err
}

func (s *serverStream) SendMsg(m any) error {
	s.mu.Lock()
	s.req, s.sent = m, true
	cs := s.cs
	s.mu.Unlock()
	return cs.SendMsg(m)
}

func (s *serverStream) CloseSend() error {
	s.mu.Lock()
	s.closed = true
	cs := s.cs
	s.mu.Unlock()
	return cs.CloseSend()
}

func (s *serverStream) RecvMsg(m any) error {
	if s.end != nil {
		// The retries are spent: a caller that receives again gets the
		// same error, as from a grpc stream, and no new attempts.
		return s.end
	}
	// Only RecvMsg writes s.cs, so it reads it without the lock.
	err := s.cs.RecvMsg(m)
	if err == nil {
		s.last = m
		return nil
	}
	if errors.Is(err, io.EOF) {
		return s.finish(err)
	}
	s.end = s.resume(m, err)
	if s.end != nil {
		return s.finish(s.end)
	}
	return nil
}

// resume opens the stream again after its attempt failed with err, as many
// times as the options and the retry budget allow, and receives m from the
// new attempt.
func (s *serverStream) resume(m any, err error) error {
	// The options of the method are looked up only now: a stream that
	// never fails does not pay for it.
	mo := s.o.methods[s.method]
	// lived: how long the attempt that failed had stayed open; 0 for one
	// that could not be opened.
	lived := time.Since(s.opened)
	for {
		out, delay := classify(err)
		// worked: the attempt had stayed open for ResumeReset or more,
		// with messages or quiet, and was not refused. A refused attempt
		// did no work, however long ago it was opened: its refusal may
		// have waited for a caller busy elsewhere.
		worked := lived >= ResumeReset && out != refused
		// moved: its server retired it after it lived. A younger
		// retirement, from a connection age of milliseconds or a stream
		// that arrived on a connection just aged, is a failure like any
		// other: counted, and paid for from the budget, so that a server
		// that retires every attempt at once cannot have the stream
		// reopened without end.
		moved := isRetirement(err) && lived >= interceptors.MinStreamAge
		if worked || moved {
			// A stream that worked, or that its server retired for its
			// age after it lived (it worked, and its server asked it to
			// move): the count, and with it the backoff, restarts. After
			// one that worked, the next attempt is the stream's next
			// call, not a retry: it deposits in the retry budget, as a
			// new stream does, and takes nothing from it; after a
			// retirement, it draws nothing either (see retry).
			s.attempts = 1
		}
		if s.attempts >= s.o.max {
			return err
		}
		if !mo.retryable(out, s.last != nil) {
			return err
		}
		if stop, ctxErr := s.o.retry(s.ctx, s.attempts, delay, err, worked, moved); stop {
			if ctxErr != nil {
				return ctxErr
			}
			return err
		}
		s.attempts++
		cs, openErr := s.reopen(mo.rewrite)
		if openErr != nil {
			err, lived = openErr, 0
			continue
		}
		s.opened = time.Now()
		s.mu.Lock()
		s.cs = cs
		s.mu.Unlock()
		if err = cs.RecvMsg(m); err == nil {
			s.last = m
			return nil
		}
		if errors.Is(err, io.EOF) {
			return err
		}
		lived = time.Since(s.opened)
	}
}

// reopen opens a new attempt of the stream and sends it what the caller
// sent: the request, rewritten from the last message received when the
// method has a WithResume function, and the end of the client's side.
func (s *serverStream) reopen(rewrite func(req, last any) (any, error)) (grpc.ClientStream, error) {
	s.mu.Lock()
	req, sent, closed := s.req, s.sent, s.closed
	s.mu.Unlock()
	if sent && s.last != nil && rewrite != nil {
		r, err := rewrite(req, s.last)
		if err != nil {
			return nil, err
		}
		req = r
		s.mu.Lock()
		s.req = r
		s.mu.Unlock()
	}
	cs, err := s.streamer(s.ctx, s.desc, s.cc, s.method, s.opts...)
	if err != nil {
		return nil, err
	}
	// io.EOF from SendMsg means the stream has ended already: RecvMsg
	// returns its status.
	if sent {
		if err := cs.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
			return nil, err
		}
	}
	if closed {
		if err := cs.CloseSend(); err != nil {
			return nil, err
		}
	}
	return cs, nil
}
