// Package stophook is the small interface through which a drain calls back
// at each of its phases: to stop a server that runs beside gRPC, to record
// the drain, or to close a database once no handler uses it.
//
// A Hook receives every Event of a drain, in phase order: NotReady, Graceful,
// Cancel, Force and Cleanup, less the phases the drain skips. A hook
// ignores the events it has no use for.
//
// The rules a drain keeps, which a hook may rely on:
//   - Hooks run one at a time, in reverse order of registration: the last
//     resource opened is closed first.
//   - Each call gets its own context, which ends after the drain's hook
//     timeout, and also when the drain skips its waits while the call runs
//     (a second signal, or the end of the context given to Drain): calls
//     made after the skip get their whole timeout. A hook that blocks past
//     its context is abandoned: the drain goes on, and the call is reported
//     as an error naming the hook. It costs its timeout and nothing more. An abandoned call may still be running when
//     the hook is called for the next event, so a hook that can block must
//     be safe for concurrent use, as the helpers here are.
//   - A hook that panics does not stop the drain: the panic becomes an error
//     naming the hook and carrying the panic value.
//   - Errors do not stop the drain either: every hook sees every event, and
//     the drain returns all their errors joined.
//
// So a hook must not wait for RPCs to finish (the drain does that, bounded)
// and should start long work, such as an HTTP server's Shutdown, in the
// background at one event and collect it at a later one, as HTTPServer does.
//
// The helpers cover the common resources, so that no adapter is needed:
// Closer for an io.Closer (a *sql.DB, a client, a file), HTTPServer,
// HTTPTransport and ClientConn.
package stophook
