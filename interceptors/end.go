package interceptors

import (
	"context"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// statusWriter is implemented by the ServerTransportStream that grpc-go
// puts in the context of every call it serves, on its own listeners and
// through ServeHTTP alike (grpc-go v1.85.0: *transport.ServerStream).
// SendHeader is part of grpc's ServerTransportStream interface;
// WriteStatus ends the stream as grpc does when a handler returns: the
// client receives the status at once, the stream's transport context ends,
// and the handler's pending RecvMsg and SendMsg return an error. When the
// handler then returns, grpc's own WriteStatus finds the stream done and
// writes nothing. grpc forbids using a stream once its handler has
// returned, so this is the one way to end a stream whose handler is still
// blocked in RecvMsg or SendMsg: those wait on the transport's context, not
// on the context the Tracker gives the handler.
type statusWriter interface {
	SendHeader(metadata.MD) error
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
