// Package systemd is drainkit's side of systemd on one host: the listening
// socket that systemd passes to a socket-activated service, and the
// notifications (sd_notify) through which the service tells systemd that it
// serves, that it drains, where the drain stands and how long it may take.
//
// # Socket activation
//
// With a .socket unit, systemd opens the listening socket itself and keeps
// it open across restarts of the service: between the exit of one process
// and the start of the next, new connections wait in the socket's backlog
// instead of being refused. Listen returns that socket when systemd passed
// one (LISTEN_PID and LISTEN_FDS, read through go-systemd's activation
// package), and listens on the given address otherwise.
//
// A drain never closes systemd's copy of the socket, whatever it closes. A
// file descriptor is a reference to the socket; the socket is closed when
// its last reference is. systemd keeps its reference in its own descriptor
// table, which nothing in the service can reach, and Listen keeps none of
// the passed descriptor (net.FileListener duplicates it, and Listen closes
// the original). So when the drain's GracefulStop closes the listener, it
// closes the process's reference alone, and the socket goes on listening.
// The one call that would act on the socket for every holder, shutdown(2),
// is not made by net.Listener.Close, by grpc.Server or by the drain.
//
// Listen refuses, with an error that says what was wrong, a passed
// descriptor that is not open, not a socket, not a stream socket, not
// listening, or of another address family than the network asked for; more
// or fewer than one descriptor; and LISTEN_PID naming another process. It
// checks the descriptor before it takes it over, and closes nothing it
// refuses: a descriptor that systemd did not pass may be one of the
// process's own. On all of these
// sd_listen_fds(3) would return 0 or a socket the caller cannot serve, and a
// server that listened on its own address instead would either fail (systemd
// holds the address) or serve where nobody connects. The caller is expected
// to exit with the error, so that systemd reports the misconfiguration.
//
// # Notifications
//
// A Notifier sends sd_notify messages, as go-systemd's daemon package does:
// READY=1 once serving (Ready), RELOADING=1 while an upgrade starts a
// successor (Reloading), and, as a stophook.Hook given to the drain,
// STOPPING=1 when the drain starts, STATUS= with the phase at each event (so
// that systemctl status shows it), and EXTEND_TIMEOUT_USEC= with what remains
// of the drain's budget, so that systemd's stop timeout follows the drain
// rather than cutting it short. Outside systemd, with NOTIFY_SOCKET unset,
// every method does nothing and returns nil.
//
// An upgrade hands the service over to its successor by systemd's rules
// (src/core/service.c): when the main process exits outside a stop and no
// other main process was announced, systemd stops the unit, every process in
// it included; it reads queued notifications before it handles the exit; and
// under NotifyAccess=main it drops the messages of every other process. So
// the old process, still the main one, sends HandOver's MAINPID= of the
// successor with READY=1 before it begins to drain: systemd follows the
// successor under NotifyAccess=main as under NotifyAccess=all, whatever the
// timing of the old process's exit. The successor sends nothing before
// (examples/server calls Ready only in a process that replaced none, or
// whose parent, of an older version, cannot hand over:
// upgrade.Upgrader.ParentLearnsPID is false). After HandOver the Notifier of
// the old process falls silent: its STOPPING=1 would otherwise stop the unit
// that the successor now serves.
//
// A message waits for room on NOTIFY_SOCKET for at most a second (that of
// HandOver for ten), and a message of the drain (OnStop) for at most half of
// what remains of its call's time: a datagram socket whose reader has
// stopped reading (a service manager busy elsewhere) takes a few datagrams
// and then makes every sender wait, which go-systemd's SdNotify does without
// a bound, so that a reload, a drain or the exit behind them would wait for
// ever.
//
// A message that cannot be sent during a drain (OnStop) goes to the
// function given by WithErrorHandler and never changes the drain's result:
// the result tells what happened to the RPCs, and a program that exits
// with a failure after a clean drain would be marked failed by systemd, or
// restarted. Check tells at start-up whether NOTIFY_SOCKET can be used.
//
// The hint of Listen for a descriptor 3 that is not a socket names what the
// descriptor is: the Go runtime may hold descriptor 3 itself (a cgroup
// file) when systemd passed nothing there.
//
// The package never installs signal handlers, and logs nothing.
package systemd
