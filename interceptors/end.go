package interceptors

import (
	"context"
	"io"
	"sync"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// serverStream gives a stream handler the Tracker's context, and ends the
// stream when the handler waits in RecvMsg or SendMsg after the Tracker
// cancelled it (see "How streams end" in the package documentation).
//
// Only two things write on a stream: the handler's goroutines, through
// this wrapper, and the Tracker, to free a handler that waits in RecvMsg or
// SendMsg, which nothing else can wake. mu orders the two. The Tracker
// writes the status under mu, and only while the handler runs. On grpc's
// own transport, the Tracker leaves the status to the handler's first
// SendMsg while that runs, which writes it once its message and the
// headers before it are queued, so that the status never overtakes
// headers that a message then follows; later messages are sent outside
// mu, where flow control may hold them until the status frees them. The
// first SendMsg sends the headers itself, as grpc does, so that a wrapper
// outside the Tracker may still set headers in it. Through ServeHTTP, where
// grpc marks the headers sent and writes them in two steps, a SendMsg
// holds mu throughout: it returns as soon as the HTTP handler's goroutine
// has taken its message, which the status would have to wait for anyway.
type serverStream struct {
	grpc.ServerStream
	ctx       context.Context
	serveHTTP bool // the call arrived through grpc.Server.ServeHTTP

	// ending is the status the stream ends with once the Tracker has
	// cancelled it; inside counts the handler's goroutines in RecvMsg or
	// SendMsg. The Tracker sets ending, then ends the stream if inside is
	// above 0; RecvMsg and SendMsg count themselves in, then refuse to run
	// if ending is set. Whichever comes second sees the other, so a
	// handler never waits in either once the stream is cancelled.
	ending atomic.Pointer[status.Status]
	inside atomic.Int32
	// refused is set once RecvMsg or SendMsg has returned ending's error
	// instead of running.
	refused atomic.Bool
	// headerSent is set once a SendMsg or SendHeader has sent the headers,
	// on grpc's own transport.
	headerSent atomic.Bool

	// sending is set while the first SendMsg runs, on grpc's own
	// transport; deferred, set by the Tracker meanwhile, is what that
	// SendMsg ends the stream with once it has returned. Guarded by mu.
	sending  bool
	deferred statusWriter

	mu        sync.Mutex
	ended     bool // the Tracker wrote ending as the stream's status; guarded by mu
	grpcEnded bool // a RecvMsg or SendMsg failed, and grpc wrote its status; guarded by mu
	returned  bool // the handler has returned: the Tracker writes no more; guarded by mu
}

func (s *serverStream) Context() context.Context { return s.ctx }

func (s *serverStream) RecvMsg(m any) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inside.Add(-1)
	err := s.ServerStream.RecvMsg(m)
	if err != nil && err != io.EOF {
		s.failed()
	}
	return err
}

func (s *serverStream) SendMsg(m any) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inside.Add(-1)
	if s.serveHTTP {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.ended {
			return s.ending.Load().Err()
		}
		err := s.ServerStream.SendMsg(m)
		if err != nil {
			s.grpcEnded = true
		}
		return err
	}
	if !s.headerSent.Load() {
		return s.sendFirst(m)
	}
	err := s.ServerStream.SendMsg(m)
	if err != nil {
		s.failed()
	}
	return err
}

// sendFirst sends the first message, and with it the headers, as grpc
// does, unless the Tracker has ended the stream. The Tracker writes no
// status meanwhile: grpc marks the headers sent before it queues them, so
// a status written then could go out with no headers ahead of the
// message. It leaves the status to sendFirst, which writes it once the
// message is queued.
func (s *serverStream) sendFirst(m any) error {
	s.mu.Lock()
	if s.ended {
		s.mu.Unlock()
		return s.ending.Load().Err()
	}
	s.sending = true
	s.mu.Unlock()
	err := s.ServerStream.SendMsg(m)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sending = false
	s.headerSent.Store(true)
	if err != nil {
		s.grpcEnded = true
	}
	if w := s.deferred; w != nil {
		s.deferred = nil
		s.endLocked(w)
	}
	return err
}

// failed records that grpc has written the status of a RecvMsg or
// SendMsg that failed, or found the stream ended: the Tracker then writes
// none.
func (s *serverStream) failed() {
	s.mu.Lock()
	s.grpcEnded = true
	s.mu.Unlock()
}

// SendHeader sends the headers, unless the Tracker has ended the stream:
// it is ordered with the Tracker's write of the status as SendMsg is.
func (s *serverStream) SendHeader(md metadata.MD) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended {
		return s.ending.Load().Err()
	}
	err := s.ServerStream.SendHeader(md)
	if err == nil && !s.serveHTTP {
		s.headerSent.Store(true)
	}
	return err
}

// enter counts a RecvMsg or SendMsg in, unless the stream is cancelled:
// then it returns the status the stream ends with, and leaves the status
// to be written when the handler returns, on the handler's goroutine,
// with the trailers the handler sets meanwhile.
func (s *serverStream) enter() error {
	s.inside.Add(1)
	if st := s.ending.Load(); st != nil {
		s.inside.Add(-1)
		s.refused.Store(true)
		return st.Err()
	}
	return nil
}

// cancel sets the status the stream ends with, unless one is set already:
// from now on RecvMsg and SendMsg refuse to run. It is called before the
// handler's context is cancelled, so that a handler woken by its context
// cannot send a message after its cancellation. It reports whether the
// handler waits in RecvMsg or SendMsg: only then need endIfWaiting be
// called, as a RecvMsg or SendMsg that comes later sees the status.
func (s *serverStream) cancel(st *status.Status) bool {
	s.ending.CompareAndSwap(nil, st)
	return s.inside.Load() > 0
}

// endIfWaiting ends the stream, once cancel has been called, if the
// handler waits in RecvMsg or SendMsg. On grpc's own transport it writes
// the status at once: that queues frames for the connection's writer and
// does not block. Through ServeHTTP, where the HTTP handler's goroutine
// writes every frame and may be busy with the client, a goroutine of its
// own writes it, and ends when the write does or the connection closes.
func (s *serverStream) endIfWaiting() {
	if s.inside.Load() == 0 {
		return
	}
	// Looked up here, not when the call begins: the happy path never
	// needs it.
	w := streamEnder(s.ServerStream.Context())
	if w == nil {
		return // context-only cancellation: the handler sees its context end
	}
	if s.serveHTTP {
		go s.end(w)
		return
	}
	s.end(w)
}

// end writes ending as the stream's status, as grpc does when a handler
// returns, unless the handler has returned, the Tracker has written it
// already, or grpc has ended the stream itself (its client went away, its
// deadline passed, or grpc wrote the status of a failed RecvMsg or
// SendMsg).
func (s *serverStream) end(w statusWriter) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sending {
		s.deferred = w // written by the first SendMsg as it returns
		return
	}
	s.endLocked(w)
}

// endLocked is end, under mu.
func (s *serverStream) endLocked(w statusWriter) {
	if s.returned || s.ended || s.grpcEnded || s.ServerStream.Context().Err() != nil {
		return
	}
	st := s.ending.Load()
	if !s.serveHTTP {
		// grpc writes the status under the stream's header lock, and
		// queues its frames before WriteStatus returns. An error means
		// the connection is closing.
		s.ended = w.WriteStatus(st) == nil
		return
	}
	// Through ServeHTTP, the HTTP handler's goroutine writes the status
	// and may still be at it when WriteStatus has returned and the
	// handler has been woken; with details, it would delete a key from
	// the stream's trailer map as grpc reads that map for its binary log.
	// So the details travel as the grpc-status-details-bin trailer, set
	// here under the header lock, and the status written has none: grpc
	// sends that trailer with it, and clients rebuild the whole status
	// from it, as its code is the same.
	if b, err := proto.Marshal(st.Proto()); err == nil && len(st.Proto().GetDetails()) > 0 {
		w.SetTrailer(metadata.Pairs(statusDetailsKey, string(b)))
		st = status.New(st.Code(), st.Message())
	}
	// An error means that nothing was written: grpc wrote a status
	// first, or the connection is closed.
	s.ended = w.WriteStatus(st) == nil
}

// statusDetailsKey is the trailer that carries a status's details.
const statusDetailsKey = "grpc-status-details-bin"

// SetTrailer sets trailer metadata, as grpc's does, unless the Tracker
// has written the stream's status: then it is dropped, as grpc drops it
// on its own transport once the status is written.
func (s *serverStream) SetTrailer(md metadata.MD) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.ended {
		s.ServerStream.SetTrailer(md)
	}
}

// finish is called when the handler returns, and reports whether the
// Tracker cut the stream short: whether it wrote the status, or refused
// the handler a RecvMsg or SendMsg. From then on the Tracker writes
// nothing on the stream; a write in progress has completed.
func (s *serverStream) finish() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.returned = true
	return s.ended || s.refused.Load()
}

// statusWriter is implemented by the ServerTransportStream that grpc-go
// puts in the context of every call it serves, on its own listeners and
// through ServeHTTP alike (grpc-go v1.85.0: *transport.ServerStream).
// WriteStatus ends the stream as grpc does when a handler returns: the
// client receives the status at once, the stream's transport context ends,
// and the handler's pending RecvMsg and SendMsg return an error. When the
// handler then returns, grpc's own WriteStatus finds the stream done and
// writes nothing. grpc forbids using a stream once its handler has
// returned, so this is the one way to end a stream whose handler is still
// blocked in RecvMsg or SendMsg: those wait on the transport's context, not
// on the context the Tracker gives the handler.
type statusWriter interface {
	grpc.ServerTransportStream
	WriteStatus(*status.Status) error
}

// deadlineStatus ends a stream whose injected deadline has passed.
var deadlineStatus = status.New(codes.DeadlineExceeded, ErrServerDeadline.Error())

// streamEnder returns what ends the stream of the call whose context grpc
// gave as ctx, or nil when the transport offers no way to.
func streamEnder(ctx context.Context) statusWriter {
	w, _ := grpc.ServerTransportStreamFromContext(ctx).(statusWriter)
	return w
}

// EndsStreams reports whether the Tracker can end the stream of the call
// whose context is ctx (the context grpc gives a stream interceptor, or a
// handler's): whether cancelling the call ends the RPC itself, waking a
// handler blocked in RecvMsg or SendMsg, or only cancels the handler's
// context. It is true for every stream that grpc-go v1.85.0 serves, on the
// server's own listeners and through ServeHTTP; false for a context that
// is not a call's, such as one a test passes to the interceptor directly.
func EndsStreams(ctx context.Context) bool { return streamEnder(ctx) != nil }
