package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"

	"github.com/coreos/go-systemd/v22/activation"
)

// A Source says where a listener came from. It is the value of the
// "listener" attribute of the demo server's "serving" record.
type Source string

const (
	// SourceSystemd is a socket passed by systemd (socket activation).
	SourceSystemd Source = "systemd"
	// SourceListen is a socket the process opened on its address.
	SourceListen Source = "listen"
)

// The variables of the socket activation protocol (sd_listen_fds(3)).
const (
	envListenPID     = "LISTEN_PID"
	envListenFDs     = "LISTEN_FDS"
	envListenFDNames = "LISTEN_FDNAMES"

	// listenFDsStart is the first descriptor passed (SD_LISTEN_FDS_START).
	listenFDsStart = 3
)

var (
	// ErrOtherProcess is wrapped by the error of Listen when LISTEN_PID
	// names another process than the caller: the sockets were passed to
	// a process that started this one without exec'ing it.
	ErrOtherProcess = errors.New("systemd: the sockets were passed to another process")
	// ErrBadSocket is wrapped by the error of Listen when the passed
	// descriptors are not one listening socket of the network asked for.
	ErrBadSocket = errors.New("systemd: the passed socket cannot be served")
)

// Listen returns the listening socket that systemd passed to the process,
// and SourceSystemd, when LISTEN_PID and LISTEN_FDS name one; otherwise it
// listens on addr with net.Listen(network, addr), and returns SourceListen.
// network is "tcp", "tcp4", "tcp6" or "unix"; a passed socket must be a
// listening stream socket of that family, and addr is then not used.
//
// Listen unsets LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES in every case, so
// that processes the caller starts do not take the socket for theirs. It
// takes exactly one passed socket: a unit whose socket passes several is
// refused. Closing the returned listener never closes systemd's copy of the
// socket (see the package documentation).
//
// It returns an error wrapping ErrOtherProcess when LISTEN_PID names another
// process, and ErrBadSocket when the passed descriptors are not one
// listening socket of the network's family, or the variables are malformed.
// The error names what was wrong.
func Listen(network, addr string) (net.Listener, Source, error) {
	defer unsetEnv()
	switch network {
	case "tcp", "tcp4", "tcp6", "unix":
	default:
		return nil, "", fmt.Errorf("systemd: Listen: network %q: want tcp, tcp4, tcp6 or unix", network)
	}
	n, err := passed()
	if err != nil {
		return nil, "", err
	}
	if n == 0 {
		lis, err := net.Listen(network, addr)
		if err != nil {
			return nil, "", err
		}
		return lis, SourceListen, nil
	}
	if n != 1 {
		// The descriptors are left alone: if the count is wrong, some
		// of them may be the process's own.
		return nil, "", fmt.Errorf("%w: %s=%d: want one socket", ErrBadSocket, envListenFDs, n)
	}
	// The descriptor is checked before anything takes it over: if it is
	// not what systemd passes, it may be one of the process's own, which
	// must not be closed.
	if err := checkFD(listenFDsStart, network); err != nil {
		return nil, "", fmt.Errorf("%w: descriptor %d: %v", ErrBadSocket, listenFDsStart, err)
	}
	files := activation.Files(true)
	if len(files) != 1 {
		closeAll(files)
		return nil, "", fmt.Errorf("%w: %s=%d, but %d descriptors read", ErrBadSocket, envListenFDs, n, len(files))
	}
	f := files[0]
	defer f.Close() // the listener holds a duplicate
	lis, err := net.FileListener(f)
	if err != nil {
		return nil, "", fmt.Errorf("%w: descriptor %d: %v", ErrBadSocket, f.Fd(), err)
	}
	return lis, SourceSystemd, nil
}

// passed returns the number of sockets passed to this process: 0 when
// neither LISTEN_PID nor LISTEN_FDS is set.
func passed() (int, error) {
	pidText, pidSet := os.LookupEnv(envListenPID)
	fdsText, fdsSet := os.LookupEnv(envListenFDs)
	switch {
	case !pidSet && !fdsSet:
		return 0, nil
	case !pidSet:
		return 0, fmt.Errorf("%w: %s=%q without %s", ErrBadSocket, envListenFDs, fdsText, envListenPID)
	case !fdsSet:
		return 0, fmt.Errorf("%w: %s=%q without %s", ErrBadSocket, envListenPID, pidText, envListenFDs)
	}
	pid, err := strconv.Atoi(pidText)
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("%w: %s=%q: not a process ID", ErrBadSocket, envListenPID, pidText)
	}
	if pid != os.Getpid() {
		return 0, fmt.Errorf("%w: %s=%d, this process is %d", ErrOtherProcess, envListenPID, pid, os.Getpid())
	}
	n, err := strconv.Atoi(fdsText)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%w: %s=%q: want a number of descriptors, at least 1", ErrBadSocket, envListenFDs, fdsText)
	}
	return n, nil
}

func unsetEnv() {
	for _, name := range []string{envListenPID, envListenFDs, envListenFDNames} {
		os.Unsetenv(name)
	}
}

func closeAll(files []*os.File) {
	for _, f := range files {
		f.Close()
	}
}
