// Command server is the drainkit demo server: it serves
// drainkit.demo.v1.Demo (examples/demo.proto), the standard health service
// and server reflection, keeps its data in a SQLite file, and drains on
// SIGTERM or SIGINT; a second signal forces the drain.
//
// Usage:
//
//	go build -o demo ./examples/server && ./demo [flags]
//
// The flags:
//
//	-addr                 TCP address to listen on (default 127.0.0.1:50051; port 0 picks a free port)
//	-db                   SQLite database file (default demo.db, in the working directory)
//	-readiness-delay      how long to keep serving once health reports NOT_SERVING (default 0s)
//	-grace                how long to wait for in-flight RPCs after GOAWAY (default 15s)
//	-cancel-grace         how long to wait for cancelled handlers to return (default 3s)
//	-force-wait           how long to wait for handlers after the forced stop (default 1s)
//	-stubborn             make Sleep ignore its context, so that only a forced stop ends it
//	-otel                 "none" (default), or "stdout": spans, then metrics at the end of a drain, as JSON on standard output
//	-log                  "text" (default), key=value lines for a terminal, or "json", one object per line
//	-upgrade-timeout      on SIGHUP, how long to wait for the successor to serve (default 30s)
//	-pid-file             file to write the process ID to once serving, removed at the exit (default none)
//	-max-connection-age   after how long grpc renews a connection with GOAWAY, ±10% (default 5m; 0 is never)
//	-max-stream-age       after how long a long-lived stream (Watch, Chat) ends, resumable, ±10% (default 0, never; else at least 100ms)
//	-retire-aged-streams  end the long-lived streams of a connection renewed for its age at once, resumable (default true; false leaves grpc to cut them at the end of -grace)
//
// Under systemd with a .socket unit (examples/systemd), it serves the socket
// systemd passes, and -addr is not used; it notifies systemd (sd_notify)
// that it serves, that it drains, and of each phase, and says at start-up
// if NOTIFY_SOCKET cannot be used (a failure to notify never changes the
// drain's result or the exit status). The drain's hook that notifies
// systemd is registered only where NOTIFY_SOCKET is set, so that elsewhere
// its timeout does not count in the drain's budget. On SIGHUP it upgrades
// in place: it starts its successor (the binary at the same path, with the
// same flags) with the listening socket, waits up to -upgrade-timeout for
// it to serve, tells systemd that the successor is the main process and
// serves (MAINPID=, READY=1), then drains; if the successor fails (it
// cannot write the PID file, it exits, it is not ready in time), it serves
// on and says why. SIGHUP is refused, with a record and a status line that
// say why, before the server serves, while the server it replaced still
// drains, as PID 1 (a container's first process, whose exit would kill
// the successor), and as the one child of a container's init (docker run
// --init, tini, dumb-init), whose exit ends the container too. A
// successor stopped while the server it replaced still drains exits only
// after it. See upgrade.go for a second SIGHUP, and SIGTERM, during an
// upgrade.
//
// Durations need a unit (10s, not 10) and are at most 1h. -h prints the
// usage on standard output.
//
// It logs to standard error: "serving", with the address actually listened
// on in "addr", where the listener came from in "listener" ("systemd",
// "listen" or "upgrade") and the process ID in "pid", once it accepts
// connections and handles signals (a signal sent before may kill it
// outright); then, on a signal, one "drain phase" record per phase and a
// "drain finished" record with the report; and last an "exit" record with
// the exit status.
//
// Before it serves, it listens, then opens its database and writes to it:
// a port in use, a missing directory or a database it cannot write is an
// error at start-up, and nothing is created when the port is taken.
//
// With DRAINKIT_DEMO_DRAIN_CPUPROFILE set to a file's path, it writes there
// a CPU profile of the drain, from the first SIGTERM or SIGINT to its exit,
// for go tool pprof (BENCHMARKS.md). It creates the file once it listens,
// before its database: a file it cannot create is an error at start-up, and
// a port in use leaves an earlier profile there whole. It removes the
// variable from its environment, so that a successor started by an upgrade
// does not profile into the same file.
//
// It exits 0 after a clean drain, 1 after a forced drain or any error, and
// 2 when its flags, or DRAINKIT_DEMO_DRAIN_CPUPROFILE, are wrong.
//
// The Demo service: Echo returns its input; Sleep waits for the duration it
// is given; Watch sends the time every 100 ms until the stream ends, or,
// given WatchRequest.after, the ticks that follow it, so that a client
// resumes it on another server with no tick lost or repeated; it is
// long-lived, so a drain cancels it first; Append stores a value and returns
// its id once the value is on disk; Get returns a stored value, or
// NOT_FOUND. A write that fails is INTERNAL and a bad argument
// INVALID_ARGUMENT; UNAVAILABLE comes only from the drain.
package main
