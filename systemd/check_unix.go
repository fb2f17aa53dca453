//go:build unix

package systemd

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// noSocketHint is what a descriptor that is not a socket says of the
// service's start.
const noSocketHint = "systemd passes the socket there, and passed none (is the service started by its .socket unit?)"

// checkFD returns an error unless fd is a listening stream socket of the
// family of network.
func checkFD(fd int, network string) error {
	typ, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_TYPE)
	switch {
	case errors.Is(err, syscall.EBADF):
		return errors.New("not open: " + noSocketHint)
	case errors.Is(err, syscall.ENOTSOCK):
		// Not what systemd passes: a file of the process's own, such as
		// one the Go runtime opened (a cgroup file) in the free slot.
		if target, err := os.Readlink(fmt.Sprintf("/proc/self/fd/%d", fd)); err == nil {
			return fmt.Errorf("not a socket but %s, opened by the process itself: %s", target, noSocketHint)
		}
		return errors.New("not a socket: " + noSocketHint)
	case err != nil:
		return fmt.Errorf("reading its socket type: %v", err)
	}
	if typ != syscall.SOCK_STREAM {
		return fmt.Errorf("socket type %d, want a stream socket (%d): a .socket unit serves gRPC with ListenStream=", typ, syscall.SOCK_STREAM)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return fmt.Errorf("reading its address: %v", err)
	}
	family := ""
	switch sa.(type) {
	case *syscall.SockaddrInet4:
		family = "tcp4"
	case *syscall.SockaddrInet6:
		family = "tcp6"
	case *syscall.SockaddrUnix:
		family = "unix"
	default:
		family = fmt.Sprintf("%T", sa)
	}
	switch {
	case network == family:
	case network == "tcp" && (family == "tcp4" || family == "tcp6"):
	default:
		return fmt.Errorf("a %s socket, want %s", family, network)
	}
	listening, err := syscall.GetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_ACCEPTCONN)
	if err != nil {
		return fmt.Errorf("reading whether it listens: %v", err)
	}
	if listening == 0 {
		return fmt.Errorf("a %s socket that is not listening: Accept=no in the .socket unit passes the listening socket, Accept=yes a connection", family)
	}
	return nil
}
