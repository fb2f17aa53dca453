// Package stophook is the small interface through which a drain calls back
// at each of its phases: to stop a server that runs beside gRPC, to record
// the drain, or to close a database once no handler uses it.
//
// A Hook receives every Event of a drain, in phase order: NotReady, Graceful,
// Cancel, Force and Cleanup, less the phases the drain skips. A hook
// ignores the events it has no use for.
//
// The rules a drain keeps, which a hook may rely on:
//   - Each hook sees the events of a drain in phase order, one call at a
//     time: it is never called for an event while its call for another
//     runs, nor for an event after a later one, whatever the timeouts, the
//     skips and the other hooks do.
//   - Hooks run one at a time, in reverse order of registration: the last
//     resource opened is closed first.
//   - Each call gets its own context, which ends after the drain's hook
//     timeout and, for the events before Cleanup, once the longest the
//     drain's waits can take has passed since its start; it also ends when
//     the drain skips its waits while the call runs (a second signal, or
//     the end of the context given to Drain): calls made after the skip get
//     their whole time. A call for an event before Cleanup that would
//     start with no time left is not made: a hook may miss events before
//     Cleanup, when the drain's waits are over (every wait zero, say) or
//     when an earlier call of the hook still runs, and the drain's report
//     then names the hook and the phase (drain.Report.NotCalled,
//     drain.ErrHookNotCalled).
//   - A hook that blocks past its context is abandoned: the drain goes on,
//     and the call is reported as an error naming the hook. It costs its
//     time and nothing more. The hook is not called again until that call
//     returns; its next call waits for it within its own time, and, for an
//     event before Cleanup, not past the drain's skip of its waits.
//   - Cleanup reaches every hook, within the hook timeout, unless the
//     hook's call for an earlier event is still running a hook timeout
//     after its call for Cleanup was due (hooks are called one at a time);
//     a hook free for it gets it even when its context has ended already
//     (a hook timeout of a nanosecond).
//   - A hook that panics does not stop the drain: the panic becomes an error
//     naming the hook and carrying the panic value.
//   - Errors do not stop the drain either: every hook is called for every
//     event it can still handle, and the drain returns all their errors
//     joined.
//
// So a hook must not wait for RPCs to finish (the drain does that, bounded)
// and should start long work, such as an HTTP server's Shutdown, in the
// background at one event and collect it at a later one, as HTTPServer does.
//
// The helpers cover the common resources, so that no adapter is needed:
// Closer for an io.Closer (a *sql.DB, a client, a file), HTTPServer,
// HTTPTransport and ClientConn.
package stophook
