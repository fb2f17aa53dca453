// Package drain shuts a gRPC server down in bounded phases, so that a
// rollout neither hangs until SIGKILL nor cuts calls that could have
// finished.
//
// grpc.Server.GracefulStop waits for every handler with no deadline and never
// cancels one; Stop cancels them all and closes the listener at once. A
// Drainer runs between the two. Drain carries out these phases, in order,
// each bounded; Cancel and Force run only when something is left to wait
// for:
//
//  1. NotReady: every health service given by WithHealth reports
//     NOT_SERVING, while the server keeps serving everything, new
//     connections included, for the readiness delay, so that load balancers
//     and Kubernetes endpoints (which learn of a terminating pod at the same
//     time as the pod itself) stop sending it work before it stops listening.
//     With no readiness delay and a health service, the long-lived streams,
//     health watchers among them, are ended first (as Graceful would end them
//     a moment later) and new ones refused: a watcher reads the end of its
//     stream, which grpc-go's client health checking takes as not serving,
//     rather than a NOT_SERVING followed at once by that end. With 100,000
//     watchers, that message was a third to a half of the drain's CPU (see
//     BENCHMARKS.md). Health then turns NOT_SERVING once the streams are
//     cancelled: with many watchers, a moment later, as grpc's health service
//     takes its lock after the watchers that leave it (with 100,000, up to
//     about a second, during which a health Check reads SERVING and the server
//     serves everything but new long-lived streams).
//  2. Graceful: long-lived streams (see interceptors.WithLongLived) are
//     cancelled and end with codes.Unavailable, as they would never end by
//     themselves, and new ones are refused; the listeners that Serve serves
//     stop accepting, and the drain lets grpc take up, for 100ms at the
//     most, the connections they accepted last (grpc resets, unread, a
//     connection whose handshake has not begun when it begins to stop;
//     under socket activation, connections that arrive from then on wait
//     in the backlog for the next process); GracefulStop sends GOAWAY and
//     closes the listeners; the drain waits up to the grace period for the
//     other RPCs to finish.
//  3. Cancel: new RPCs are refused with codes.Unavailable, and every running
//     handler's context is cancelled with cause ErrDraining; the drain waits
//     up to the cancel grace. A handler that then returns an error sends its
//     client codes.Unavailable, which clients and balancers retry elsewhere.
//  4. Force: Stop closes every connection; the drain waits up to the force
//     wait for handlers, then reports those still running as leaked, with
//     method and age, and goes on without them. The drain is forced
//     (Report.Forced, ErrForced) only if Stop cut handlers or left them
//     running: when every handler has returned but GracefulStop still
//     waits on a connection whose client never acknowledged GOAWAY, or
//     stopped reading a stream the drain ended (grpc writes its status
//     after the messages queued for it, which wait for the client to
//     read), or when the waits were skipped on an idle server, Stop cuts
//     no handler and the drain is clean. (A status that grpc is still
//     writing for a call whose handler returned a moment before may be cut
//     with its connection; its client sees codes.Unavailable.)
//  5. Cleanup: the hooks receive the Cleanup event, now that no handler
//     uses what they close.
//
// No wait depends on a handler or a hook returning: Drain returns within
// Budget whatever they do. When the context given to Drain ends, the waits
// that remain are skipped and the drain goes straight to Force, as it does
// on a second signal to Serve; hook calls running then see their context
// end, and Report.Skipped says why.
//
// Hooks (package stophook) receive an event at the start of each phase that
// runs: NotReady, Graceful, Cancel, Force and Cleanup. They run one at
// a time, in reverse order of registration, on a goroutine of the drain's
// own, beside its waits rather than inside them, so that a slow hook delays
// later hooks, not the server's shutdown. Each hook sees the events in phase
// order, one call at a time. Each call has its own context, which ends
// after the hook timeout, and for the events before Cleanup no later than
// the longest the waits can take; a call that outlives its context is
// abandoned and reported, and the hook is not called again before that call
// returns; a call for an event before Cleanup that would start with no
// time left is not made (Cleanup is made whenever the hook is free for it,
// even past its timeout), and listed in Report.NotCalled, and in the
// report's log record, with ErrHookNotCalled (with every wait zero, hooks
// see Cleanup alone), but not returned by Drain: the drain did nothing
// wrong; a panic is recovered and reported, and every error is joined into
// the error of Drain. So hooks add to the worst case only their handling
// of Cleanup: one hook timeout per hook.
//
// A server mounted with grpc.Server.ServeHTTP (behind an HTTP/2 server,
// to share its port) gets no GOAWAY from GracefulStop, which closes those
// transports at once instead, cutting their calls (grpc-go v1.82 and
// later). There GOAWAY comes from the HTTP server's own shutdown, which a
// hook such as stophook.HTTPServer starts at Graceful. So once the Tracker
// has seen a call through ServeHTTP, the drain calls GracefulStop only
// when no tracked call is left, status written: in the Graceful phase,
// once the hooks have handled Graceful and the calls have ended, within
// the grace period; otherwise in the Cancel phase, once the calls that
// outlived the grace period have ended as their handlers decide, with
// the drain's codes.Unavailable or with their own result. Calls that
// outlive the cancel grace too are cut by Stop at the forced stop, and the
// drain is forced. At the forced stop, which a second signal or the end of
// the context of Drain brings early, the drain waits, before it calls
// Stop, up to half the force wait for the handlers it has just cancelled
// to return, so that their clients get the status grpc writes then, not a
// malformed response. A server that serves both its own listeners and
// ServeHTTP therefore sends GOAWAY on its own listeners later than it
// could: at the end of the calls, not at the start of the grace period.
// Its own listeners stop accepting at the start of the grace period all
// the same.
//
// The drain learns that the server is mounted with ServeHTTP from the calls
// the Tracker has seen: a server that has served none through it when the
// drain begins gets GracefulStop at once, and grpc answers a ServeHTTP
// call that arrives after it, before the HTTP server has shut down (after
// the Graceful hooks ahead of stophook.HTTPServer, or sent before its
// client read the HTTP server's GOAWAY), with a malformed response, which
// grpc-go clients report as codes.Unknown.
//
// The listeners that Serve serves may wrap others, and their Accept may do
// I/O of its own, as a listener of the PROXY protocol reads a preamble
// from each connection: a client that connects and sends nothing holds
// such an Accept for as long as it stays, and closing the listener does
// not end it. grpc's GracefulStop and Stop wait for Serve's Accept to
// return before they touch any connection, so Serve runs the wrapped
// Accept on a goroutine of its own, and grpc's Accept returns as soon as
// grpc closes the listener: the drain's waits stay within Budget, and end
// at once with the context of Drain, whatever the wrapped listener does.
// A connection the wrapped Accept returns while its listener closes is
// still served and drained (under socket activation no other process
// would take it up): the drain waits up to 100ms for the wrapped Accept to
// end. One that does not is left to return on its own, and a connection
// it returns once grpc has closed the listener is closed. The wrapped
// Close, which may wait on such an Accept too, runs on a goroutine of its
// own.
//
// # Defaults and the budget
//
// The defaults are no readiness delay, a 15s grace period, a 3s cancel
// grace, a 1s force wait and 2s per hook call: a budget of 19s, plus 2s per
// hook. They are chosen for the common deployment, Kubernetes' default
// terminationGracePeriodSeconds of 30 with the readiness delay of a few
// seconds that a pod needs (WithReadinessDelay): with a 5s delay and one
// hook (a database to close) the budget is 26s, with two hooks 28s, each
// leaving a margin for the signal to arrive and the process to exit. A
// grace period of 15s is long for a unary call and short enough for the
// sum; a server with longer calls raises it and the pod's grace with it.
// CheckBudget tells which setting overflows a limit, keeping BudgetMargin (a
// second) for the few milliseconds a drain takes past its Budget and for
// the process's exit: 26s and 28s pass CheckBudget(30s).
//
// # Signals
//
// Serve drains on SIGTERM or SIGINT, and a second signal forces the drain.
// A signal within SignalRepeatWindow (300ms) of the last one counted is taken as
// the same signal delivered twice, as coreutils' timeout and some
// supervisors deliver it (to the process, then to its group). To catch the
// signals from the first line of main, before a slow start-up, call
// CatchSignals and give the result to New with WithSignals: start-up work
// can honour Signals.Context, and Serve drains at once if a signal came
// first. The package never catches signals unless CatchSignals or Serve is
// called.
//
// # Logging
//
// The drain logs only through the logger given by WithLogger: a record as
// each phase begins, saying how long it may last ("max"), or why it is
// skipped; while a phase waits, a progress record about once a second with
// the time left and the RPCs in flight by method; and the report. A Force
// phase that cuts RPCs, and the report of a forced drain, are at WARN.
//
// So is a Force phase that cuts no tracked RPC but closes connections that
// stayed open a second or more after GOAWAY and the last tracked RPC: grpc
// closes a connection whose RPCs have all ended as soon as its client
// acknowledges GOAWAY, so such connections most likely hold RPCs that the
// Tracker does not see, typically streams on a server given the Tracker's
// UnaryServerInterceptor without its StreamServerInterceptor. The record's
// likely_cause says so and names Tracker.ServerOptions, which installs
// both. (So does a client that never acknowledges GOAWAY, for the 5s that
// grpc waits for its acknowledgement.) The drain is not counted as forced,
// since it cut nothing it knew of.
package drain
