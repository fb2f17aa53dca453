// Package interceptors provides Tracker, a pair of gRPC server interceptors
// that know every RPC whose handler is running, give handlers deadlines,
// cancel them with a cause and refuse new work once the server drains.
//
// Install it with ServerOptions, before the server's other interceptors:
//
//	t := interceptors.NewTracker(interceptors.WithDefaultTimeout(30 * time.Second))
//	srv := grpc.NewServer(append(t.ServerOptions(),
//		grpc.StatsHandler(otelgrpc.NewServerHandler()),
//		grpc.ChainUnaryInterceptor(logging.UnaryServerInterceptor(l), recovery.UnaryServerInterceptor()),
//		grpc.ChainStreamInterceptor(logging.StreamServerInterceptor(l), recovery.StreamServerInterceptor()),
//	)...)
//
// or, to order the Tracker among other interceptors by hand, its two
// interceptors, first in their chains:
//
//	grpc.ChainUnaryInterceptor(t.UnaryServerInterceptor(), logging.UnaryServerInterceptor(l), recovery.UnaryServerInterceptor()),
//	grpc.ChainStreamInterceptor(t.StreamServerInterceptor(), logging.StreamServerInterceptor(l), recovery.StreamServerInterceptor()),
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
// that retry policies and balancers move the call elsewhere. A unary call
// whose handler returns a result despite the cancellation keeps it. A
// long-lived stream ends with codes.Unavailable whatever its handler
// returns, nil included: "told to stop, so stop" must not read as a
// subscription that completed. A handler that returns an error after a
// deadline set or capped by the Tracker has passed sends
// codes.DeadlineExceeded. Calls refused by Reject or RejectLongLived get
// codes.Unavailable before their handler runs. A nil cause stands for
// ErrShuttingDown everywhere, so the shutdown path never panics.
//
// # How streams end
//
// grpc-go's RecvMsg and SendMsg wait on the context of the transport stream,
// not on the context a handler is given: cancelling the handler's context
// alone does not wake a handler blocked in Recv (a bidi loop, an upload
// whose client went quiet) or in Send (a client that does not read, holding
// the stream on flow control). So when CancelAll, CancelLongLived or a
// stream deadline set by the Tracker cancels a stream, the stream's
// RecvMsg and SendMsg stop running, and the stream ends in one of two
// ways:
//
//   - A handler busy elsewhere, which then calls RecvMsg or SendMsg, gets
//     at once the status the stream ends with (codes.Unavailable with the
//     shutting-down message and its details, or codes.DeadlineExceeded)
//     as their error, and nothing is sent. When it returns, grpc writes
//     that status, on the handler's own goroutine, with every trailer the
//     handler set, those it set after the failed call included.
//   - A handler waiting in RecvMsg or SendMsg when it is cancelled can be
//     freed only by ending the RPC itself: the Tracker writes the status
//     as grpc does when a handler returns, through the
//     ServerTransportStream that grpc puts in every call's context (its
//     WriteStatus method). The client receives it at once, with the
//     trailers the handler set before; the handler's pending and later
//     RecvMsg and SendMsg fail; trailers it sets from then on are dropped,
//     as grpc drops them once a status is written (through ServeHTTP, one
//     set with grpc.SetTrailer at once may still arrive).
//
// Either way, whatever the handler then returns, the interceptor returns
// that status, so that stats handlers (otelgrpc) and binary logs report
// what the client got. A handler busy elsewhere when it is cancelled,
// which returns without touching its stream again, sets the status itself,
// as a unary handler does: a finite stream that returns nil keeps
// codes.OK, a long-lived one ends with codes.Unavailable.
//
// The Tracker writes only while the handler runs, and never at the same
// time as the handler's own writes, so that no response is malformed and
// grpc's maps of the stream are never written while grpc reads them: the
// stream wrapper orders its SendMsg and SendHeader with the Tracker's
// write by a lock of its own, and the interceptor takes that lock before
// it returns, so that a write in progress completes first and none
// follows. What differs between grpc-go's two transports:
//
//   - On the server's own listeners, grpc writes the status under the
//     stream's header lock and queues its frames before WriteStatus
//     returns. grpc marks a stream's headers sent before it queues them,
//     so a first message sent at that moment could overtake them; while
//     the handler's first SendMsg runs, which sends the headers with the
//     message as grpc does (a stream wrapper outside the Tracker may still
//     set headers in it), the Tracker therefore leaves the status to that
//     SendMsg, which writes it as it returns. grpc-go never holds a first
//     message on flow control; a wrapper outside the Tracker whose SendMsg
//     blocks holds the status back with it. Later messages are sent
//     outside the lock, where flow control may hold them until the status
//     frees them. A handler blocked in SendMsg on a client that does not
//     read is ended at once.
//   - Through ServeHTTP, grpc-go writes every frame on the HTTP handler's
//     goroutine, marking headers sent and writing them in two steps, so
//     the wrapper holds its lock for the whole of SendMsg (which returns
//     once that goroutine has taken its message) and the Tracker writes
//     from a goroutine of its own, which ends when the write does or the
//     connection closes. That goroutine finishes writing after
//     WriteStatus returns, so the status is written without details, and
//     its details travel as the grpc-status-details-bin trailer: clients
//     rebuild the same status from it. A handler blocked in SendMsg on a
//     client that does not read is freed only when the HTTP server closes
//     the connection (stophook.HTTPServer does at the forced stop).
//
// What the lock cannot cover, as it goes around the stream wrapper:
// through ServeHTTP, a handler that sends its headers with
// grpc.SendHeader(ctx, md) from one goroutine while another waits in
// RecvMsg, at the moment the stream is ended, may have its headers and
// the status written out of order, as it may with grpc's own status of a
// failed RecvMsg; and on either transport, a status that grpc writes
// itself (a RecvMsg that fails on a malformed message, a client deadline)
// in the same instant as the Tracker's may reach the client while stats
// handlers see the Tracker's. Through ServeHTTP, a stream whose handler
// set a grpc-status-details-bin trailer of its own (a gateway relaying its
// downstream trailer) and that the Tracker ends while it waits reaches its
// client with the Tracker's code and message but without details, as two
// such trailers cancel each other out. A handler that calls
// grpc.SetSendCompressor while its stream is being cancelled races with
// grpc's reading of the compressor, as it would with any write.
//
// WriteStatus is exported by grpc-go's transport but is not part of its
// stable API. The Tracker finds it with a type assertion, and EndsStreams
// reports whether it did. Where it is absent (a future grpc-go, or a test
// that calls the interceptor with a stream of its own), cancellation falls
// back to the handler's context alone, as before: handlers that select on
// their context still end, those blocked in RecvMsg or SendMsg wait for the
// drain's forced stop. drainkit's tests fail loudly if a grpc-go upgrade
// removes it.
//
// # Retiring long-lived streams
//
// Servers renew their connections at MaxConnectionAge (package keepalive)
// so that clients spread over the servers added since they connected. A
// long-lived stream defeats that: it keeps its aged connection open
// through GOAWAY until MaxConnectionAgeGrace, and is then cut with a
// transport error ("error reading from server: EOF"). The Tracker can
// retire such streams instead, in two ways, each off by default:
//
//   - WithMaxStreamAge(d) ends every long-lived stream once it has lived d,
//     give or take a random 10%.
//   - Tracker.Credentials, given to the server as
//     grpc.Creds(t.Credentials(creds)), ends the long-lived streams of a
//     connection as soon as grpc has sent it GOAWAY for its age. Their
//     clients have the GOAWAY by then and open them again on a new
//     connection, which an L4 balancer may send to any server; the aged
//     connection closes once its other RPCs are done. Its documentation
//     says how the Tracker learns of the GOAWAY through grpc's public API,
//     and the limits of that.
//
// A retired stream ends as a drain ends it, whatever its handler returns:
// codes.Unavailable, with its own message (ErrStreamAge or
// ErrConnectionAge) and the ErrorInfo of a cancelled call, whose metadata
// also holds MetadataRetired: RetiredStreamAge or RetiredConnectionAge.
// The reason stays ReasonShuttingDown, so that clients that know a drain's
// status resume a retired stream the same way: package client resumes it
// (WithResumable, WithResume) on whichever server its balancer picks, and
// its caller sees one stream. The handler's context is cancelled with the
// retirement's error as its cause, and a handler waiting in RecvMsg or
// SendMsg is freed as in a drain. A drain that starts meanwhile finds the
// stream cancelled already and does not count it again.
//
// Retiring(ctx) gives a handler the news: its channel is closed a tenth of
// WithMaxStreamAge (at most one second) before the stream reaches its age,
// so that the handler can send a last message and return on its own, and
// at once for a connection's age, which the stream should leave without
// delay. grpc/grpc#26703 asks for the remaining age of the connection to be
// visible to handlers; grpc draws it at random and does not tell, so
// Retiring says when, not how long before.
//
// The Tracker needs no stats handler for this, and ServerOptions does not
// include Credentials: grpc.Creds holds one value, the server's own TLS
// credentials, which Credentials wraps. Users of the bare interceptors
// therefore keep both ways. Calls that are not long-lived streams pay
// nothing for either; a long-lived stream pays for its retirement record
// when one of them is on.
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
// Only the Tracker's own refusals and cancellations carry those marks. A
// handler that returns codes.Unavailable has run, whatever it returns or
// relays: its client must neither send a non-idempotent call again on a
// relayed "not_run" nor take a relayed "cancelled" for this server's drain.
// So the Tracker drops every drainkit ErrorInfo from such a status, with
// the RetryInfo of a relayed refusal, keeps its code, message and other
// details, and adds an ErrorInfo of its own:
//
//	reason:   "HANDLER_RAN"                    (ReasonHandlerRan)
//	domain:   "github.com/drainkit/drainkit"   (ErrorInfoDomain)
//	metadata: {"handler": "ran"}               (HandlerRan)
//
// The added detail matters as much as the dropped ones: grpc-go sends a
// status with no details together with any grpc-status-details-bin the
// handler set as trailer metadata, which a client reads as the status's
// details, and a gateway that relays its downstream trailer
// (grpc.SetTrailer, or ServerStream.SetTrailer of the downstream stream's
// Trailer) relays the refusal in it. A status that has details is sent in
// place of the handler's grpc-status-details-bin, on grpc's own transport
// and through ServeHTTP alike. Every codes.Unavailable that a handler
// returns gets the detail, relayed or not: about 100 bytes, on the error path
// only. Statuses of other codes are left as they are: package client
// retries no other code, and a grpc-go client that receives a
// grpc-status-details-bin whose code is not the status's reports
// codes.Internal. Package client sends a call whose status says
// HANDLER_RAN again only if its method is idempotent, or resumes it if it
// is a resumable stream.
//
// What this cannot cover: a relaying server without the Tracker passes the
// marks it relays through unchanged, and a client of it reads them as that
// server's own.
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
// recycles its records and takes no global lock. The calls of one
// connection share a shard, and its lock, as they share grpc's locks of
// the connection, and a shard lists them oldest first: a cancellation then
// visits them in the order they began, through memory allocated in that
// order, and ends them in that order on the connection, where visiting them
// at random would meet a cache miss at each step. CancelAll and
// CancelLongLived mark the calls under a shard's lock and cancel them once it
// is released, so that the handlers they wake do not wait for it; each
// cancellation builds its status once, shared by the calls it ends. With
// 100,000 streams on one connection, CancelLongLived takes about 0.08s of
// CPU; with the calls spread over the shards at random and cancelled under
// their locks, it took 0.38s. BENCHMARKS.md gives the figures.
package interceptors
