//go:build linux

package process_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// A fakeUnit plays systemd for one service of Type=notify started by its
// .socket unit, by the rules of systemd's src/core/service.c and manager.c
// that decide whether a service survives its reloads and stops:
//
//   - It holds the listening socket, and passes it to the process it starts
//     as descriptor 3 (LISTEN_PID, LISTEN_FDS=1), and holds the notify
//     socket (NOTIFY_SOCKET), from which it reads each message with its
//     sender's credentials (SO_PASSCRED, SCM_CREDENTIALS).
//   - NotifyAccess=all takes every message; NotifyAccess=main drops those
//     whose sender is not the main process.
//   - MAINPID= makes another live process the main process; READY=1 ends
//     the start and a reload; RELOADING=1 begins a reload; STOPPING=1
//     outside a stop stops the unit.
//   - A reload (systemctl reload) runs ExecReload=kill -HUP $MAINPID; when
//     that command has exited, the reload ends unless the last message was
//     RELOADING=1, which waits for READY=1, for at most the reload timeout.
//   - It watches the main process (pidfd), and reads every queued
//     notification before it handles the main process's exit, as systemd
//     gives its notify socket priority over SIGCHLD. With PIDFile=, it
//     first reads the file for a new main process. Otherwise, when the main
//     process exits outside a stop, the unit stops: every process left gets
//     SIGTERM. (systemd waits for a reload command that still runs before
//     it stops the unit; the fake does not, which is stricter.)
//   - A stop (systemctl stop, KillMode=control-group) sends SIGTERM to every
//     process of the unit; when the main process has exited, it sends a
//     final SIGTERM to every process left, and the unit is inactive once
//     none is left.
//   - It is a subreaper, as systemd is for the processes of its units, and
//     reaps the processes of the unit that become its children.
//
// The processes of the unit are the descendants of the test process: the
// tests that use a fakeUnit start no other process while it runs.
type fakeUnit struct {
	t      *testing.T
	cfg    unitConfig
	addr   string   // the listening socket's address
	socket *os.File // the listening socket
	log    *serverLog

	notifyPath string
	notifyFD   int
	epfd       int
	wakeR      int // a non-blocking pipe, readable when cmds holds a command
	wakeW      int
	cmds       chan func()
	pending    []func() // run by the loop's next round, after the messages queued by then
	quit       chan struct{}
	loopDone   chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced at each change; guarded by mu
	state   string        // activating, active, reloading, deactivating, final-sigterm, inactive
	// reloadJob is set while the reload command runs; reloadSince while a
	// reload waits for READY=1.
	reloadJob   bool
	reloadSince time.Time
	mainPID     int
	notifyState string // the last of READY, RELOADING, STOPPING
	status      string // the last STATUS=
	watched     map[int]int
	exits       map[int]int       // the exit status of each process the unit reaped
	journal     []string          // what happened, for failure messages
	stops       []string          // unit stops the test did not ask for
	dropped     []string          // messages NotifyAccess=main dropped
	failures    []string          // reloads that failed
	mainChanges int               // changes of the main process by MAINPID=
	handedAt    map[int]time.Time // when MAINPID= replaced each former main process
	leads       []time.Duration   // from each MAINPID= to the exit of the main process it replaced
	adoptions   int               // changes of the main process by the PID file
	stopAsked   bool
}

// A unitConfig is the part of the unit file that the fake reads.
type unitConfig struct {
	access        string   // NotifyAccess=: "all" or "main"
	args          []string // ExecStart's flags
	pidFile       string   // PIDFile=, also given as -pid-file; "" for none
	reloadTimeout time.Duration
}

const (
	// sysPidfdOpen is pidfd_open(2), the same number on every architecture.
	sysPidfdOpen = 434
	// unitPollInterval bounds how long the unit's loop waits before it
	// checks its time-outs and whether to quit.
	unitPollInterval = 50 * time.Millisecond
)

// newFakeUnit creates the unit, its sockets and its loop; start starts the
// service.
func newFakeUnit(t *testing.T, cfg unitConfig) *fakeUnit {
	t.Helper()
	if probe, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(os.Getpid()), 0, 0); errno == syscall.ENOSYS {
		t.Skip("no pidfd_open(2) (Linux before 5.3): the fake unit cannot watch its processes")
	} else if errno == 0 {
		syscall.Close(int(probe))
	}
	becomeSubreaper(t)
	binaries(t) // built before the unit reaps anything
	if cfg.reloadTimeout == 0 {
		cfg.reloadTimeout = startTimeout
	}
	u := &fakeUnit{
		t: t, cfg: cfg, log: newServerLog(),
		cmds: make(chan func(), 16), quit: make(chan struct{}), loopDone: make(chan struct{}),
		changed: make(chan struct{}), state: "inactive",
		watched: map[int]int{}, exits: map[int]int{}, handedAt: map[int]time.Time{},
	}
	u.addr, u.socket = heldSocket(t)

	u.notifyPath = filepath.Join(t.TempDir(), "notify")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	u.notifyFD = fd
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: u.notifyPath}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_PASSCRED, 1); err != nil {
		t.Fatal(err)
	}
	if u.epfd, err = syscall.EpollCreate1(syscall.EPOLL_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(u.epfd) })
	var wake [2]int
	if err := syscall.Pipe2(wake[:], syscall.O_NONBLOCK|syscall.O_CLOEXEC); err != nil {
		t.Fatal(err)
	}
	u.wakeR, u.wakeW = wake[0], wake[1]
	t.Cleanup(func() { syscall.Close(u.wakeR); syscall.Close(u.wakeW) })
	for _, fd := range []int{u.notifyFD, u.wakeR} {
		if err := syscall.EpollCtl(u.epfd, syscall.EPOLL_CTL_ADD, fd, &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
			t.Fatal(err)
		}
	}
	go u.loop()
	t.Cleanup(u.cleanup)
	return u
}

// cleanup kills what is left of the unit, and ends the loop.
func (u *fakeUnit) cleanup() {
	for _, pid := range unitProcesses() {
		syscall.Kill(pid, syscall.SIGKILL)
	}
	// Reap them: they are the test's children or its children's.
	for _, pid := range unitProcesses() {
		var ws syscall.WaitStatus
		syscall.Wait4(pid, &ws, 0, nil)
	}
	close(u.quit)
	<-u.loopDone
	u.mu.Lock()
	for fd := range u.watched {
		syscall.Close(fd)
	}
	u.mu.Unlock()
	if err := u.log.waitEnd(defaultTestTimeout); err != nil {
		u.t.Errorf("the unit's processes: %v", err)
	}
	if u.t.Failed() {
		u.t.Logf("journal of the unit:\n%s\nlog of its processes:\n%s", strings.Join(u.journalCopy(), "\n"), u.log)
	}
}

// start starts the service as systemd starts a socket-activated one, and
// returns once it has sent READY=1.
func (u *fakeUnit) start() {
	u.t.Helper()
	bin, _ := binaries(u.t)
	args := append([]string{"-log", "json"}, u.cfg.args...)
	if u.cfg.pidFile != "" {
		args = append(args, "-pid-file", u.cfg.pidFile)
	}
	// sh exports its own process ID, which exec keeps.
	cmd := exec.Command("sh", append([]string{"-c", `LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@"`, bin}, args...)...)
	cmd.ExtraFiles = []*os.File{u.socket}
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+u.notifyPath)
	r, w, err := os.Pipe()
	if err != nil {
		u.t.Fatal(err)
	}
	cmd.Stderr = w
	err = cmd.Start()
	w.Close()
	if err != nil {
		r.Close()
		u.t.Fatal(err)
	}
	go u.log.collect(r)
	pid := cmd.Process.Pid
	cmd.Process.Release() // the unit reaps it
	u.do(func() {
		u.setMain(pid, "started")
		u.state = "activating"
	})
	u.waitFor("the unit to be active", func() bool { return u.state == "active" })
}

// reload is systemctl reload: it returns once the reload job has ended.
func (u *fakeUnit) reload() {
	u.t.Helper()
	u.do(func() {
		if u.state != "active" {
			u.note("reload refused by the unit: it is %s", u.state)
			return
		}
		u.state, u.reloadJob = "reloading", true
		u.note("reload: kill -HUP %d", u.mainPID)
		syscall.Kill(u.mainPID, syscall.SIGHUP)
		// The command exits; the loop takes its exit after the messages
		// queued by then, as systemd does.
		u.pending = append(u.pending, u.reloadCommandExited)
		u.wake()
	})
	u.waitFor("the reload job to end", func() bool { return !u.reloadJob })
}

// reloadCommandExited ends the reload, unless the service said it reloads.
func (u *fakeUnit) reloadCommandExited() {
	u.reloadJob = false
	if u.state != "reloading" {
		return
	}
	if u.notifyState == "RELOADING" {
		u.reloadSince = time.Now()
		u.note("reload: the command exited, waiting for READY=1")
		return
	}
	u.state = "active"
	u.note("reload: the command exited, reload done")
}

// stop is systemctl stop: it returns once the unit is inactive.
func (u *fakeUnit) stop(timeout time.Duration) {
	u.t.Helper()
	u.do(func() {
		u.stopAsked = true
		u.enterStop("systemctl stop")
	})
	u.waitForWithin(timeout, "the unit to be inactive", func() bool { return u.state == "inactive" })
}

// enterStop sends SIGTERM to every process of the unit.
func (u *fakeUnit) enterStop(why string) {
	switch u.state {
	case "deactivating", "final-sigterm", "inactive":
		return
	}
	u.state = "deactivating"
	pids := u.kill(syscall.SIGTERM)
	u.note("stop (%s): SIGTERM to %v", why, pids)
	if u.mainPID == 0 {
		// No main process to wait for: wait for the rest to exit.
		u.state = "final-sigterm"
		u.watchAll()
	}
}

// enterFinal sends the final SIGTERM to every process left, and watches
// them until none is.
func (u *fakeUnit) enterFinal() {
	u.state = "final-sigterm"
	u.note("final SIGTERM to %v", u.kill(syscall.SIGTERM))
	u.watchAll()
}

func (u *fakeUnit) watchAll() {
	for _, pid := range unitProcesses() {
		u.watch(pid)
	}
	u.checkEmpty()
}

// checkEmpty makes the unit inactive once no process is left.
func (u *fakeUnit) checkEmpty() {
	if u.state == "final-sigterm" && len(u.watched) == 0 && len(unitProcesses()) == 0 {
		u.state = "inactive"
		u.note("inactive")
	}
}

// kill sends sig to every process of the unit, and returns them.
func (u *fakeUnit) kill(sig syscall.Signal) []int {
	pids := unitProcesses()
	for _, pid := range pids {
		syscall.Kill(pid, sig)
	}
	return pids
}

// loop reads the notify socket and the exits of the processes watched, in
// systemd's order, and runs the commands of the test.
func (u *fakeUnit) loop() {
	defer close(u.loopDone)
	events := make([]syscall.EpollEvent, 16)
	for {
		select {
		case <-u.quit:
			return
		default:
		}
		n, err := syscall.EpollWait(u.epfd, events, int(unitPollInterval/time.Millisecond))
		if err != nil && err != syscall.EINTR {
			u.t.Errorf("epoll_wait: %v", err)
			return
		}
		var exited []int
		for _, ev := range events[:max(n, 0)] {
			if int(ev.Fd) != u.notifyFD && int(ev.Fd) != u.wakeR {
				exited = append(exited, int(ev.Fd))
			}
		}
		u.mu.Lock()
		// The notifications first, then the exits, then the commands.
		u.readNotifications()
		for _, fd := range exited {
			u.exited(fd)
		}
		pending := u.pending
		u.pending = nil
		for _, f := range pending {
			f()
		}
		u.runCommands()
		if u.state == "reloading" && !u.reloadJob && !u.reloadSince.IsZero() && time.Since(u.reloadSince) > u.cfg.reloadTimeout {
			u.failures = append(u.failures, fmt.Sprintf("reload timed out after %v waiting for READY=1", u.cfg.reloadTimeout))
			u.note("reload timed out")
			u.state, u.reloadSince = "active", time.Time{}
		}
		u.checkEmpty()
		u.notifyChange()
		u.mu.Unlock()
	}
}

func (u *fakeUnit) runCommands() {
	var b [64]byte
	for {
		select {
		case f := <-u.cmds:
			f()
		default:
			for {
				if n, _ := syscall.Read(u.wakeR, b[:]); n <= 0 {
					return
				}
			}
		}
	}
}

// do runs f in the loop, with mu held, and returns once it has run.
func (u *fakeUnit) do(f func()) {
	done := make(chan struct{})
	u.cmds <- func() { f(); close(done) }
	u.wake()
	select {
	case <-done:
	case <-time.After(defaultTestTimeout):
		u.t.Fatalf("the unit's loop did not run a command within %v", defaultTestTimeout)
	}
}

func (u *fakeUnit) wake() { syscall.Write(u.wakeW, []byte{0}) }

// readNotifications handles every message queued on the notify socket.
func (u *fakeUnit) readNotifications() {
	buf := make([]byte, 4096)
	oob := make([]byte, syscall.CmsgSpace(syscall.SizeofUcred))
	for {
		n, oobn, _, _, err := syscall.Recvmsg(u.notifyFD, buf, oob, 0)
		if err != nil {
			return // EAGAIN: none left
		}
		sender := -1
		if msgs, err := syscall.ParseSocketControlMessage(oob[:oobn]); err == nil {
			for _, m := range msgs {
				if cred, err := syscall.ParseUnixCredentials(&m); err == nil {
					sender = int(cred.Pid)
				}
			}
		}
		u.message(sender, string(buf[:n]))
	}
}

// message handles one message from sender, as service_notify_message does.
func (u *fakeUnit) message(sender int, text string) {
	if u.cfg.access == "main" && sender != u.mainPID {
		u.dropped = append(u.dropped, fmt.Sprintf("%q from pid %d (main %d, state %s)", text, sender, u.mainPID, u.state))
		u.note("dropped %q from pid %d: NotifyAccess=main, main is %d", text, sender, u.mainPID)
		return
	}
	u.note("message from pid %d: %q", sender, text)
	m := map[string]string{}
	for a := range strings.SplitSeq(text, "\n") {
		if k, v, ok := strings.Cut(a, "="); ok {
			m[k] = v
		}
	}
	if v, ok := m["MAINPID"]; ok {
		pid, err := strconv.Atoi(v)
		switch {
		case err != nil || pid <= 0:
			u.note("MAINPID=%s refused: not a process ID", v)
		case pid == u.mainPID:
		case syscall.Kill(pid, 0) != nil:
			u.note("MAINPID=%d refused: no such process", pid)
		default:
			u.handedAt[u.mainPID] = time.Now()
			u.setMain(pid, "MAINPID=")
			u.mainChanges++
		}
	}
	switch {
	case m["READY"] == "1":
		u.notifyState = "READY"
		switch u.state {
		case "activating":
			u.state = "active"
		case "reloading":
			if !u.reloadJob {
				u.state, u.reloadSince = "active", time.Time{}
				u.note("reload done")
			}
		}
	case m["RELOADING"] == "1":
		u.notifyState = "RELOADING"
		if u.state == "active" {
			u.state, u.reloadSince = "reloading", time.Now()
			u.note("reloading, by the service's notification")
		}
	case m["STOPPING"] == "1":
		u.notifyState = "STOPPING"
		if u.state == "active" || u.state == "reloading" || u.state == "activating" {
			u.stops = append(u.stops, fmt.Sprintf("STOPPING=1 from pid %d in state %s", sender, u.state))
			u.enterStop("STOPPING=1")
		}
	}
	if s, ok := m["STATUS"]; ok {
		u.status = s
	}
}

// setMain makes pid the main process, and watches it.
func (u *fakeUnit) setMain(pid int, how string) {
	u.note("main process %d (was %d), by %s", pid, u.mainPID, how)
	u.mainPID = pid
	u.watch(pid)
}

// watch adds a pidfd of pid to the loop's epoll set.
func (u *fakeUnit) watch(pid int) {
	for _, p := range u.watched {
		if p == pid {
			return
		}
	}
	fd, _, errno := syscall.Syscall(sysPidfdOpen, uintptr(pid), 0, 0)
	if errno != 0 {
		u.note("pidfd_open(%d): %v", pid, errno)
		return
	}
	if err := syscall.EpollCtl(u.epfd, syscall.EPOLL_CTL_ADD, int(fd), &syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(fd)}); err != nil {
		syscall.Close(int(fd))
		u.note("watching %d: %v", pid, err)
		return
	}
	u.watched[int(fd)] = pid
}

// exited handles the exit of the process of pidfd fd, as service_sigchld_event
// does.
func (u *fakeUnit) exited(fd int) {
	pid, ok := u.watched[fd]
	if !ok {
		return
	}
	syscall.EpollCtl(u.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	syscall.Close(fd)
	delete(u.watched, fd)
	code := -2 // reaped by its parent, not by the unit
	var ws syscall.WaitStatus
	if got, err := syscall.Wait4(pid, &ws, syscall.WNOHANG, nil); err == nil && got == pid {
		code = ws.ExitStatus()
		if ws.Signaled() {
			code = -1
		}
		u.exits[pid] = code
	}
	u.note("process %d exited (status %d)", pid, code)
	if at, ok := u.handedAt[pid]; ok {
		u.leads = append(u.leads, time.Since(at))
	}
	if pid != u.mainPID {
		return
	}
	u.mainPID = 0
	switch u.state {
	case "deactivating":
		u.enterFinal()
		return
	case "final-sigterm", "inactive":
		return
	}
	// The main process exited outside a stop: a PID file may name its
	// successor; otherwise the unit stops.
	if u.cfg.pidFile != "" {
		if b, err := os.ReadFile(u.cfg.pidFile); err == nil {
			if next, err := strconv.Atoi(string(bytes.TrimSpace(b))); err == nil && next != pid && syscall.Kill(next, 0) == nil {
				u.adoptions++
				u.setMain(next, "PIDFile=")
				return
			}
		}
	}
	u.stops = append(u.stops, fmt.Sprintf("main process %d exited in state %s, no new main process announced", pid, u.state))
	u.enterStop("the main process exited")
}

// note adds a line to the journal. mu must be held.
func (u *fakeUnit) note(format string, args ...any) {
	u.journal = append(u.journal, time.Now().Format("15:04:05.000000")+" "+fmt.Sprintf(format, args...))
}

func (u *fakeUnit) notifyChange() {
	close(u.changed)
	u.changed = make(chan struct{})
}

func (u *fakeUnit) journalCopy() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.journal)
}

// waitFor waits up to startTimeout for cond, evaluated with mu held.
func (u *fakeUnit) waitFor(what string, cond func() bool) {
	u.t.Helper()
	u.waitForWithin(startTimeout, what, cond)
}

func (u *fakeUnit) waitForWithin(timeout time.Duration, what string, cond func() bool) {
	u.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		u.mu.Lock()
		ok, changed := cond(), u.changed
		u.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timer.C:
			u.t.Fatalf("waiting %v for %s", timeout, what)
		}
	}
}

// main returns the main process.
func (u *fakeUnit) main() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.mainPID
}

// unitProcesses returns the live processes that descend from the test
// process: the processes of the unit.
func unitProcesses() []int {
	entries, _ := os.ReadDir("/proc")
	children := map[int][]int{}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces and parentheses.
		fields := strings.Fields(string(b[bytes.LastIndexByte(b, ')')+1:]))
		if len(fields) < 2 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		children[ppid] = append(children[ppid], pid)
	}
	var pids []int
	queue := []int{os.Getpid()}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range children[p] {
			pids = append(pids, c)
			queue = append(queue, c)
		}
	}
	return pids
}
