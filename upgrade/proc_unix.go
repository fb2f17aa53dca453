//go:build unix

package upgrade

import (
	"bytes"
	"errors"
	"os"
	"strconv"
	"syscall"
)

// readNow reads what r holds, without waiting: r is a pipe in
// non-blocking mode, as os.Pipe makes it.
func readNow(r *os.File, buf []byte) (int, error) {
	rc, err := r.SyscallConn()
	if err != nil {
		return 0, err
	}
	n := 0
	if cerr := rc.Read(func(fd uintptr) bool {
		n, err = syscall.Read(int(fd), buf)
		return true // never wait for the poller
	}); cerr != nil {
		return 0, cerr
	}
	return n, err
}

// processGone reports whether no process pid exists.
func processGone(pid int) bool {
	return errors.Is(syscall.Kill(pid, 0), syscall.ESRCH)
}

// childOf reports whether process pid, alive or a zombie, is a child of
// process parent, as /proc says (false where there is none).
func childOf(pid, parent int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) state ppid ...: comm may hold spaces and parentheses.
	fields := bytes.Fields(b[bytes.LastIndexByte(b, ')')+1:])
	if len(fields) < 2 {
		return false
	}
	ppid, err := strconv.Atoi(string(fields[1]))
	return err == nil && ppid == parent
}

// containerMain reports whether the process is the main process of a
// container without being its PID 1: its parent lies outside its PID
// namespace (getppid returns 0), or its parent is PID 1 of a PID namespace
// of its own (a nested one, as /proc/self/status's NSpid says) and no
// service manager watches it (NOTIFY_SOCKET unset: systemd in a container
// outlives its services, a minimal init does not).
func containerMain() bool {
	switch os.Getppid() {
	case 0:
		return true
	case 1:
		return os.Getenv("NOTIFY_SOCKET") == "" && nestedPIDNamespace()
	}
	return false
}

// nestedPIDNamespace reports whether the process's PID namespace is not
// the first one: it has a process ID in more than one namespace.
func nestedPIDNamespace() bool {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return false
	}
	for line := range bytes.SplitSeq(b, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(line, []byte("NSpid:")); ok {
			return len(bytes.Fields(rest)) > 1
		}
	}
	return false
}
