//go:build unix

package upgrade

import (
	"errors"
	"os"
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
