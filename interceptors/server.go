package interceptors

import (
	"context"

	"google.golang.org/grpc"
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
			// First, so that the Tracker writes nothing on the stream from
			// now on: grpc reads the stream's metadata for binary logs
			// once the interceptor returns, and writes the status itself.
			cut := w.finish()
			err = t.end(c, err)
			if cut {
				// The Tracker wrote this status, or refused the handler a
				// RecvMsg or SendMsg with it: the client gets it, whatever
				// the handler returned, and so do stats handlers and
				// binary logs.
				err = w.ending.Load().Err()
			}
		}()
		return handler(srv, w)
	}
}
