package interceptors

import (
	"context"

	"google.golang.org/grpc"
)

// UnaryServerInterceptor returns the interceptor that tracks unary calls.
// Put it first (outermost) in grpc.ChainUnaryInterceptor, so that it sees the
// status a call really ends with and refuses calls before any other work.
func (t *Tracker) UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
		c, hctx, err := t.begin(ctx, info.FullMethod, false)
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
		c, hctx, err := t.begin(ss.Context(), info.FullMethod, true)
		if err != nil {
			return err
		}
		defer func() { err = t.end(c, err) }()
		return handler(srv, &serverStream{ServerStream: ss, ctx: hctx})
	}
}

// serverStream gives a stream handler the Tracker's context.
type serverStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *serverStream) Context() context.Context { return s.ctx }
