package interceptors

import (
	"context"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// ServerOptions returns everything a grpc.Server needs for t to track it,
// for grpc.NewServer(t.ServerOptions()...): today the Tracker's unary and
// stream interceptors, each through its Chain option, and whatever else the
// Tracker comes to need in later versions. Put these options before the
// server's other Chain options, so that the Tracker is the outermost
// interceptor; grpc.ChainUnaryInterceptor and grpc.ChainStreamInterceptor
// may be given more than once and keep the order of the options.
//
// Use the two interceptors by themselves only to order them among others
// in a chain built elsewhere; forgetting one of them leaves its kind of RPC
// untracked, which a drain can only guess at.
func (t *Tracker) ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(t.StreamServerInterceptor()),
	}
}

// UnaryServerInterceptor returns the interceptor that tracks unary calls.
// Put it first (outermost) in grpc.ChainUnaryInterceptor, so that it sees the
// status a call really ends with and refuses calls before any other work.
func (t *Tracker) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		c, hctx, err := t.begin(ctx, info.FullMethod, nil)
		if err != nil {
			return nil, err
		}
		defer func() { err = t.end(c, err) }()
		return handler(hctx, req)
	}
}

// StreamServerInterceptor returns the interceptor that tracks streams, the
// twin of UnaryServerInterceptor.
func (t *Tracker) StreamServerInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
		w := &serverStream{ServerStream: ss}
		c, _, err := t.begin(ss.Context(), info.FullMethod, w)
		if err != nil {
			return err
		}
		defer func() {
			err = t.end(c, err)
			if w.ended.Load() {
				// The client has this status, or will: grpc writes the
				// handler's only if it comes first, and it is the same.
				// Stats handlers and binary logs see it too.
				err = w.ending.Load().Err()
			}
		}()
		return handler(srv, w)
	}
}

// serverStream gives a stream handler the Tracker's context, and ends the
// stream when the handler waits in RecvMsg or SendMsg after the Tracker
// cancelled it (see "How streams end" in the package documentation).
type serverStream struct {
	grpc.ServerStream
	ctx       context.Context
	serveHTTP bool // the call arrived through grpc.Server.ServeHTTP

	// ending is the status the stream ends with once the Tracker has
	// cancelled it; inside counts the handler's goroutines in RecvMsg or
	// SendMsg. The Tracker sets ending, then ends the stream if inside is
	// above 0; RecvMsg and SendMsg count themselves in, then end the
	// stream if ending is set. Whichever comes second sees the other, so a
	// handler never waits in either once the stream is cancelled.
	ending atomic.Pointer[status.Status]
	inside atomic.Int32
	ended  atomic.Bool // the status has been written
}

func (s *serverStream) Context() context.Context { return s.ctx }

func (s *serverStream) RecvMsg(m any) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inside.Add(-1)
	return s.ServerStream.RecvMsg(m)
}

func (s *serverStream) SendMsg(m any) error {
	if err := s.enter(); err != nil {
		return err
	}
	defer s.inside.Add(-1)
	return s.ServerStream.SendMsg(m)
}

// enter counts a RecvMsg or SendMsg in, unless the stream is cancelled:
// then it ends the stream and returns its status.
func (s *serverStream) enter() error {
	s.inside.Add(1)
	if st := s.ending.Load(); st != nil {
		s.inside.Add(-1)
		s.end(st)
		return st.Err()
	}
	return nil
}

// cancel sets the status the stream ends with, unless one is set already:
// from now on RecvMsg and SendMsg end the stream instead of waiting. It is
// called before the handler's context is cancelled, so that a handler
// woken by its context cannot send a message after its cancellation.
func (s *serverStream) cancel(st *status.Status) {
	s.ending.CompareAndSwap(nil, st)
}

// endIfWaiting ends the stream, once cancel has been called, if the
// handler waits in RecvMsg or SendMsg.
func (s *serverStream) endIfWaiting() {
	if s.inside.Load() > 0 {
		s.end(s.ending.Load())
	}
}

// end writes st as the status of the stream, as grpc does when a handler
// returns, once: later calls do nothing. A stream served through ServeHTTP
// is written by the HTTP handler's goroutine, which may be busy with the
// client: its status is written from a goroutine of its own, which ends
// when the write does or the connection closes.
func (s *serverStream) end(st *status.Status) {
	if s.ended.Swap(true) {
		return
	}
	// Looked up here, not when the call begins: the happy path never
	// needs it.
	w := streamEnder(s.ServerStream.Context())
	switch {
	case w == nil:
		// Context-only cancellation: the handler sees its context end.
	case s.serveHTTP:
		go writeStatus(w, st)
	default:
		// On grpc's own transport, this queues frames for the
		// connection's writer and does not block.
		writeStatus(w, st)
	}
}

// writeStatus ends a stream with st. The headers go first, unless they
// have gone already: grpc-go's WriteStatus marks them sent before it queues
// its frame, so a first SendMsg running at that moment on the handler's
// goroutine could queue its message ahead of any headers. SendHeader takes
// the stream's header lock, and such a SendMsg then fails or follows it.
func writeStatus(w statusWriter, st *status.Status) {
	w.SendHeader(nil) // an error means the headers were sent, or the stream is done
	w.WriteStatus(st)
}
