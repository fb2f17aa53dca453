// Package interceptors provides Tracker, a pair of gRPC server interceptors
// that know every RPC whose handler is running, give handlers deadlines,
// cancel them with a cause and refuse new work once the server drains.
//
// Install both interceptors, first in the chain:
//
//	t := interceptors.NewTracker(interceptors.WithDefaultTimeout(30 * time.Second))
//	srv := grpc.NewServer(
//		grpc.StatsHandler(otelgrpc.NewServerHandler()),
//		grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor(), logging.UnaryServerInterceptor(l), recovery.UnaryServerInterceptor()),
//		grpc.ChainStreamInterceptor(t.StreamServerInterceptor(), logging.StreamServerInterceptor(l), recovery.StreamServerInterceptor()),
//	)
//
// The first interceptor of a chain is the outermost. The Tracker comes first
// so that it refuses calls before any other work, counts a call for as long
// as anything of it runs, and maps the error that a cancelled handler returns
// to the status the client receives. Recovery comes last, next to the
// handler, so that a panic becomes an error the others see; the Tracker's
// bookkeeping survives a panic wherever recovery is. Stats handlers such as
// otelgrpc's are not interceptors and see every call. Compose only through
// grpc.ChainUnaryInterceptor and grpc.ChainStreamInterceptor: the single-slot
// grpc.UnaryInterceptor panics if one is already set. To keep health checks
// and reflection out of logging or authentication, wrap those interceptors
// with go-grpc-middleware's selector, not the Tracker: a drain must see and
// cancel health Watch streams too.
//
// # Status codes
//
// A handler whose context was cancelled by CancelAll or CancelLongLived and
// that returns an error, whatever the error, sends its client
// codes.Unavailable with a message saying the server is shutting down, so
// that retry policies and balancers move the call elsewhere; one that
// returns a result keeps it. A handler that returns an error after a
// deadline set or capped by the Tracker has passed sends
// codes.DeadlineExceeded. Calls refused by Reject or RejectLongLived get
// codes.Unavailable before their handler runs. A nil cause stands for
// ErrShuttingDown everywhere, so the shutdown path never panics.
//
// # Status details
//
// The statuses of a server shutting down carry, besides their code and
// message, details in the manner of Google's API design guides (AIP-193
// errors, AIP-194 retries), so that a client can tell what the server did.
// Each has a google.rpc.ErrorInfo:
//
//	reason:   "SHUTTING_DOWN"                  (ReasonShuttingDown)
//	domain:   "github.com/drainkit/drainkit"   (ErrorInfoDomain)
//	metadata: {"handler": "not_run"}           (refused by Reject or RejectLongLived)
//	          {"handler": "cancelled"}         (cancelled by CancelAll or CancelLongLived)
//
// A refusal, whose handler never ran, also carries a google.rpc.RetryInfo
// with a retry_delay of 0: the call may be sent again at once, whatever the
// method does, to another server or on a new connection. A cancelled call
// carries no RetryInfo: its handler ran, and only the client knows whether
// the method may run twice. Package client reads these details; other
// clients find them with status.FromError(err).Details().
//
// # Deadlines
//
// WithDefaultTimeout gives unary calls that arrive without a deadline one;
// WithMaxTimeout caps every unary deadline, the client's included;
// WithMethodTimeout overrides both for one method; WithStreamTimeout does the
// same for streams that are not long-lived. Deadlines count from the moment
// the handler starts.
//
// A handler's context is a context.WithCancelCause of the one gRPC gives it,
// so cancellation and its cause reach every context derived from it as the
// standard library defines. To keep a call within a few allocations of an
// untracked one, a deadline set by the Tracker is not a second
// context.WithDeadline: the handler's context reports it from Deadline, and
// a timer, recycled across calls, cancels the handler's context with cause
// ErrServerDeadline (which wraps context.DeadlineExceeded) when it passes.
// The handler's context then reports context.DeadlineExceeded from Err.
// Contexts derived from it report the deadline too, but context.Canceled
// from Err, with ErrServerDeadline as their context.Cause; test
// errors.Is(context.Cause(ctx), context.DeadlineExceeded) to cover both.
//
// # Cost
//
// Tracking one call allocates a cancellable context and its cancel function,
// one small value more when the Tracker sets its deadline, and one for the
// stream wrapper of a stream; the registry of running calls is sharded,
// recycles its records and takes no global lock. BENCHMARKS.md gives the
// figures.
package interceptors
