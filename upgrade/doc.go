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
//     It also passes the successor the write end of a pipe of their own.
//  2. The successor calls Upgrader.Ready once it serves: Ready writes the
//     PID file, if any (WithPIDFile), reports its process ID on that pipe,
//     and only then tells tableflip. If the PID file cannot be written, it
//     reports why instead, tells tableflip nothing, and returns the error:
//     the successor is to exit without serving. The old process waits for
//     the readiness for at most the ready timeout (WithReadyTimeout).
//  3. If the successor reported ready, Upgrade returns nil, SuccessorPID
//     returns the successor's process ID, and the caller hands the service
//     over (under systemd, systemd.Notifier.HandOver) and drains the old
//     process (drain.Drainer.Drain). Connections keep arriving in the
//     socket's backlog all along; the successor accepts them, and the old
//     process's clients move to it at GOAWAY.
//  4. If the successor exits first (with the reason it reported, if any),
//     or the timeout passes (the successor is then killed), Upgrade returns
//     an error saying why, and the old process keeps serving as before.
//
// At most one upgrade runs at a time: Upgrade returns ErrNotReady before the
// process has reported ready itself, ErrInProgress while an upgrade runs,
// ErrUpgraded once one has succeeded, ErrStopped after Stop,
// ErrParentDraining while the process that this one replaced still runs
// (tableflip starts no successor before; WaitForParent waits for its exit),
// ErrPID1 in the first process of a PID namespace, whose exit would make
// the kernel kill the successor, and ErrContainerInit in the main process
// of a container that is not its PID 1: the child of a minimal init
// (docker run --init, tini, dumb-init), which exits with it, or a process
// whose parent lies outside its PID namespace (a pod sharing one), whose
// exit ends the container.
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
// KillMode=control-group, the stop reaches the successor too. Stop removes
// the PID file when it names this process (or a successor that Stop
// killed): the service ends with it. After an upgrade the file names the
// successor, and stays.
//
// # Under systemd
//
// The successor is a child of the old process, which exits after its
// drain; systemd must then follow the service to the successor. With
// Type=notify and ExecReload=/bin/kill -HUP $MAINPID, the old process, the
// main process until then, sends MAINPID= with the successor's process ID
// and READY=1 before it drains (systemd.Notifier.HandOver), and falls
// silent: systemd reads that message before it learns of the old process's
// exit, takes it under NotifyAccess=main as under NotifyAccess=all, and no
// message of the successor's is sent before and dropped. The successor
// learns its parent's exit (WaitForParent) and waits for it before its
// own: when the main process exits, systemd sends SIGTERM to every process
// left in the unit, which the old process, still draining, would take for
// a second signal. KillMode=control-group lets a stop reach every process
// of the service, the old one still draining after an upgrade included:
// with KillMode=mixed, systemd would kill it as soon as the successor, now
// the main process, exits. A PIDFile= setting with the file of WithPIDFile
// serves supervisors that follow PID files.
//
// # Under Kubernetes
//
// An upgrade is not needed there: a rollout starts new pods beside the old
// ones, and the drain's readiness delay moves traffic between them. Nor is
// it to be used: the server is usually the first process of its container,
// whose exit ends the container, the successor with it: Upgrade refuses with
// ErrPID1 or ErrContainerInit there. The Upgrader does nothing unless
// Upgrade is called.
//
// The package never installs signal handlers and logs nothing.
package upgrade
