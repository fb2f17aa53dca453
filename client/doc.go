// Package client is the client half of drainkit: interceptors with which a
// gRPC client rides through the drains of its servers without its callers
// noticing, within a retry budget, and a registry of ClientConns that finds
// those left open and those stuck connecting.
//
// Give DialOptions to grpc.NewClient (or to NewClient):
//
//	opts := append([]grpc.DialOption{
//		grpc.WithTransportCredentials(creds),
//		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"round_robin": {}}]}`),
//	}, client.DialOptions(
//		client.WithIdempotent(pb.Store_Get_FullMethodName),
//		client.WithResume(pb.Store_Watch_FullMethodName, func(req *pb.WatchRequest, last *pb.Event) *pb.WatchRequest {
//			return &pb.WatchRequest{Since: last.GetRevision()}
//		}),
//	)...)
//	cc, err := client.NewClient(target, opts...)
//
// # What is retried
//
// A drainkit server (package interceptors, driven by package drain) tells
// its clients what it did, in the details of its codes.Unavailable statuses
// (see "Status details" in package interceptors): a google.rpc.ErrorInfo
// with reason "SHUTTING_DOWN", domain "github.com/drainkit/drainkit" and
// metadata "handler" set to "not_run" or "cancelled", and, on refusals, a
// google.rpc.RetryInfo. The client reads them so:
//
//   - Refused: the call was refused before its handler ran. It is retried,
//     whatever the method: nothing ran, so nothing can run twice. The new
//     attempt goes wherever the balancer sends it, another server or a new
//     connection.
//   - Cancelled: the handler ran and the drain cancelled it. The call is
//     retried only if its method is idempotent (WithIdempotent); otherwise
//     the caller gets the codes.Unavailable status, and IsDraining(err)
//     tells it why.
//
// codes.Unavailable without that mark, such as a connection that failed
// halfway through a call, or with the ErrorInfo "HANDLER_RAN" that the
// Tracker puts on the codes.Unavailable its handlers return, is treated as
// a cancellation: retried for idempotent methods only. Calls that no
// server saw, such as those sent on a connection as its server's GOAWAY
// arrived, are retried by grpc itself ("transparent retry"), whatever the
// method. Other codes are never retried.
//
// # What is guaranteed, and where it stops
//
// A call of a method marked neither idempotent nor resumable is sent again
// only when the server that answered says its handler did not run. With servers that run
// the Tracker, that holds whatever their handlers return or relay: a
// handler that passes on the refusal of a server it called, in its status
// or in the grpc-status-details-bin of a relayed trailer, has run, and the
// Tracker says so (see "Status details" in package interceptors). It
// stops there:
//
//   - a server without the Tracker that relays another's status or
//     trailer passes its marks through, and a refusal it relays reads as
//     its own: put the Tracker on every server that relays;
//   - grpc itself re-sends, whatever the method, calls that no server saw
//     (transparent retry), and applies a service config's retry policy
//     below these interceptors (see below);
//   - a call cut by a failed connection is not known to have run or not,
//     and is treated as one that ran.
//
// # The retry budget
//
// Every retry the package makes, of a refused call, of an idempotent one,
// of a stream's creation or a stream's resumption (but see below), is
// taken from a budget (WithRetryBudget, on by default with 20% of the
// calls plus 10 retries a second, over 10 seconds, as Finagle's
// RetryBudget): when servers fail everything, retries add at most that
// share to the load, rather than multiplying it by WithMax. A retry the budget refuses is not made, and
// the caller gets the error of the last attempt. The budget belongs to one
// call of DialOptions, shared by the ClientConns made with its options.
//
// A stream's deposit, made when it was created, is gone from the window
// ten seconds later, so a budget could never resume the streams of a
// client that holds more of them than its reserve through one drain. The
// resumption of a stream whose attempt had stayed open for ResumeReset
// (see "Streams") is therefore not a retry but the stream's next call: it
// deposits, as a new stream does, and takes nothing from the budget; the
// retries that follow it, if that attempt fails sooner, do.
//
// # Attempts and backoff
//
// Attempts are bounded (WithMax, DefaultMax by default), the first
// included. Before each retry the client waits for the backoff (WithBackoff:
// exponential with jitter by default) or the delay of the server's
// google.rpc.RetryInfo, whichever is longer; it gives up, with the error of
// the last attempt, when the wait would outlast the call's deadline, and
// with the context's status when the call's context ends meanwhile.
//
// # Streams
//
// A server stream is retried as a unary call is, as long as the caller has
// received none of its messages. One of a resumable method (WithResumable,
// WithResume) goes further: when it ends with the drain's codes.Unavailable
// or its connection fails, it is opened again and goes on delivering
// messages on the same grpc.ClientStream, so the caller sees one stream.
// WithResume rewrites the request of the new stream from the last message
// received, a cursor or a "since", so that with a server that supports it
// nothing is lost or repeated; without it the same request is sent again.
// Header and Trailer are those of the current attempt.
//
// WithMax bounds every attempt of a stream together, its creation's and its
// resumptions', and the backoff grows with them across resumptions: a
// server that fails a stream after every few messages sees it reopened
// less and less often, not at once each time. The count, and with it the
// backoff, restarts when an attempt that had stayed open for ResumeReset
// (1s) or more fails, whether it delivered messages or was quiet, unless a
// server refused it (a refusal read late did no work): that stream worked,
// its next failure, such as the next drain, is met with a short wait
// again, and its resumption is not a retry (see "The retry budget"). So a
// stream drained every few seconds, as in a rolling restart, rides through
// any number of drains, while one that a server fails sooner than
// ResumeReset after each resumption ends after WithMax attempts, or sooner
// if the retry budget runs out, with the error of its last attempt. The
// time is that of the caller's RecvMsg that finds the failure: a stream
// that a server fails at once, with anything but a refusal, and that its
// caller reads a second later, counts as one that worked.
//
// A stream that its server retired for its age or its connection's
// (interceptors.WithMaxStreamAge, interceptors.Tracker.Credentials: the
// ErrorInfo's metadata "retired") after it had been open for
// interceptors.MinStreamAge (100ms) worked, however young otherwise, and
// its server asked it to move: its count restarts at once, and its
// resumption draws nothing from the retry budget, since the server retires
// each stream at most once per age. A stream retired sooner, as every
// stream is on a server whose MaxConnectionAge is a few milliseconds, is
// counted and paid for as any failed attempt: it ends after WithMax
// attempts, instead of being reopened without end.
//
// Client and bidi streams are never retried or resumed: what they sent is
// gone. Their callers test IsDraining and open them again.
//
// # Why not go-grpc-middleware's retry
//
// go-grpc-middleware's retry package retries by status code: with
// codes.Unavailable among its codes, it retries a non-idempotent call that a
// drain cut after its handler ran, which may then run twice; without it, it
// does not retry the calls a draining server refused, which are always safe.
// grpc's own retry policy, in the service config, has the same limit, and is
// set per service, often not at all. This package reads what the server
// did from the status details, so it can retry every refused call and no
// cut one of a method not known to be idempotent. Its options and backoff
// follow the retry package's names (WithMax, WithBackoff,
// WithOnRetryCallback), and its backoff functions can be given to
// WithBackoff as they are.
//
// DialOptions keeps a service config's retry policy in force, and grpc
// applies it below these interceptors, on each of their attempts: a policy
// whose retryableStatusCodes include UNAVAILABLE retries, on its own, a
// non-idempotent call that a drain cut after its handler ran. Leave
// UNAVAILABLE out of such a policy; attempts otherwise multiply, up to the
// policy's maxAttempts times WithMax. grpc's transparent retry of streams
// the server never saw (before GOAWAY's last stream id, or REFUSED_STREAM)
// is unaffected and stays welcome.
//
// Per-call options apply to every attempt: grpc.Header, grpc.Trailer and
// grpc.Peer hold the last attempt's values, and grpc.OnFinish runs once per
// attempt.
//
// # Order with other client interceptors
//
// grpc.WithChainUnaryInterceptor and grpc.WithChainStreamInterceptor chain
// in the order of the dial options, the first outermost. Put:
//
//  1. interceptors that should see a call once, with its final outcome,
//     such as go-grpc-middleware's logging, before DialOptions;
//  2. DialOptions;
//  3. interceptors that should see every attempt after it, such as a
//     go-grpc-middleware retry for other codes (give it retry.WithCodes
//     without codes.Unavailable, or it undoes what this package keeps from
//     running twice).
//
// otelgrpc's client stats handler (grpc.WithStatsHandler) is not an
// interceptor: grpc calls it for each attempt, so each retry is a span of its
// own, a sibling of the first attempt's under the caller's span.
//
//	opts := []grpc.DialOption{
//		grpc.WithStatsHandler(otelgrpc.NewClientHandler()),
//		grpc.WithChainUnaryInterceptor(logging.UnaryClientInterceptor(logger)),
//		grpc.WithChainStreamInterceptor(logging.StreamClientInterceptor(logger)),
//	}
//	opts = append(opts, client.DialOptions(client.WithIdempotent(pb.Store_Get_FullMethodName))...)
//	opts = append(opts,
//		grpc.WithChainUnaryInterceptor(retry.UnaryClientInterceptor(retry.WithMax(3), retry.WithCodes(codes.ResourceExhausted))),
//	)
//	cc, err := grpc.NewClient(target, opts...)
//
// TestComposition in this package runs that chain.
//
// # Leaks and stuck connections
//
// A ClientConn that is never closed keeps its connections and goroutines.
// NewClient is grpc.NewClient plus a registry: Open lists the ClientConns it
// made that are still open, with where each was made; VerifyNone fails a
// test that leaves one open, in the manner of goleak; StopHook, a
// stophook.Hook, closes those still open when a server has drained, and
// reports them.
//
// A ClientConn can also stay open and never work: a target that does not
// resolve, a server that accepts and never speaks HTTP/2, credentials that
// never match. Stuck lists the conns that have been neither Ready nor Idle
// for a while, and a Watchdog logs each, once per episode, from one
// goroutine however many conns there are:
//
//	ctx, stop := context.WithCancel(context.Background())
//	defer stop()
//	go client.Watchdog{Logger: logger}.Run(ctx) // every 5s, conns stuck 15s or more
//
// The registry learns a conn's state by looking at it (GetState), without
// reaching into grpc: a conn is stuck since the first look that found it
// Connecting or in TransientFailure, with none since that found it Ready or
// Idle. The Watchdog's looks every Interval are what make Stuck precise to
// within that interval. A conn never used (Idle) is never stuck.
//
// The registry holds its conns strongly, until they are found closed, so
// that a leak is always there to be found. A report when the garbage
// collector frees a conn left open (runtime.AddCleanup) would be unreliable
// both ways: an open ClientConn is reachable from its own goroutines while it
// is connected or waits out its idle timeout (30 minutes by default), so it
// is not collected then; one never used, or gone idle, may be collected, but
// grpc tells nobody whether it was closed first, so such a report could not
// tell a leak from a conn closed and dropped. A conn left open therefore
// stays listed by Open, is reported by VerifyNone and by StopHook, and costs
// its memory until then. Closed conns are dropped from the registry when
// found closed: by Open, Stuck and the Watchdog, which look at every conn,
// and by NewClient, which looks at two in turn, so that NewClient and
// closing cost O(1) per conn made, whatever the number open.
//
// # Cost
//
// On a call that succeeds, the unary interceptor allocates nothing and the
// stream interceptor allocates the wrapper of a server stream; client and
// bidi streams pass through. Each unary call and server stream deposits in
// the retry budget with one atomic add, and reads the clock once to find
// its second; only retries take the budget's lock. A server stream reads
// the clock once more when it is open, so that a failure can tell whether
// it worked for ResumeReset. BENCHMARKS.md gives the figures.
package client
