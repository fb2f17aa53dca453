// Package upgrade replaces a running server with a new process on the same
// host without a gap: the successor inherits the listening socket, and the
// old process drains only once the successor serves. It wraps
// cloudflare/tableflip, which passes the socket and reports readiness
// through pipes between the two processes.
//
// An upgrade, as Upgrader.Upgrade carries it out:
//
//  1. The process starts its successor, the same executable path with the
//     same arguments and environment, which finds the listening socket
//     through Upgrader.Listen and accepts on it beside the old process.
//  2. The successor calls Upgrader.Ready once it serves. The old process
//     waits for that for at most the ready timeout (WithReadyTimeout).
//  3. If the successor reported ready, Upgrade returns nil and the caller
//     drains the old process (drain.Drainer.Drain). Connections keep
//     arriving in the socket's backlog all along; the successor accepts
//     them, and the old process's clients move to it at GOAWAY.
//  4. If the successor exits first, or the timeout passes (the successor is
//     then killed), Upgrade returns an error saying why, and the old
//     process keeps serving as before.
//
// At most one upgrade runs at a time: Upgrade returns ErrNotReady before the
// process has reported ready itself, ErrInProgress while an upgrade runs,
// ErrUpgraded once one has succeeded, and ErrStopped after Stop. A successor
// cannot itself be upgraded before the old process has exited.
//
// Stop ends the Upgrader when the process drains for good (on SIGTERM): an
// upgrade in progress is abandoned and its successor killed, and the
// Upgrader's own copy of the socket is closed, so that once the drain has
// closed the listener the socket stops taking connections (unless systemd
// holds it). A successor that has not reported ready has accepted nothing:
// it reports ready before its first Accept. In the instant a successor
// reports ready, Stop and the readiness race (tableflip takes whichever
// comes first): either the successor is killed, or the upgrade completes
// and the successor serves on while this process drains. Under systemd with
// KillMode=control-group, the stop reaches the successor too.
//
// # Under systemd
//
// The successor is a child of the old process, which exits after its
// drain; systemd must then follow the service to the successor. With
// Type=notify, NotifyAccess=all and ExecReload=/bin/kill -HUP $MAINPID, the
// successor's READY=1 carries MAINPID= with its own process ID (see
// systemd.Notifier.Ready), and the old process's notifications fall silent
// once it has handed over (systemd.Notifier.HandOver), so that its drain's
// STOPPING=1 does not stop the unit. NotifyAccess=all is needed: the
// successor notifies before systemd knows it as the main process. With
// WithPIDFile the old process also reads the successor's process ID from
// the file (SuccessorPID) and sends MAINPID= itself, and a PIDFile= setting
// with the same file serves supervisors that follow PID files.
// KillMode=control-group lets a stop reach every process of the service,
// the old one still draining after an upgrade included: with
// KillMode=mixed, systemd would kill it as soon as the successor, now the
// main process, exits.
//
// # Under Kubernetes
//
// An upgrade is not needed there: a rollout starts new pods beside the old
// ones, and the drain's readiness delay moves traffic between them. Nor is
// it to be used: the server is usually the first process of its container,
// whose exit ends the container, the successor with it. The Upgrader does
// nothing unless Upgrade is called.
//
// The package never installs signal handlers and logs nothing.
package upgrade
