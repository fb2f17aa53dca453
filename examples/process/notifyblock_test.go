//go:build linux

package process_test

import (
	"errors"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// stalledSystemd is a NOTIFY_SOCKET that nobody reads, as that of a
// service manager busy elsewhere: once its queue is full, a sender that
// waits for room waits for ever.
type stalledSystemd struct {
	path string
	fd   int // the receiving socket, never read
}

func newStalledSystemd(t *testing.T) *stalledSystemd {
	t.Helper()
	s := &stalledSystemd{path: filepath.Join(t.TempDir(), "notify")}
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	s.fd = fd
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: s.path}); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *stalledSystemd) env() string { return "NOTIFY_SOCKET=" + s.path }

// fill queues datagrams until the socket takes no more: from then on,
// every sd_notify to it waits for room.
func (s *stalledSystemd) fill(t *testing.T) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	for i := 0; ; i++ {
		err := syscall.Sendto(fd, []byte("STATUS=filler"), 0, &syscall.SockaddrUnix{Name: s.path})
		if errors.Is(err, syscall.EAGAIN) {
			t.Logf("the notify socket's queue is full after %d more datagrams", i)
			return
		}
		if err != nil {
			t.Fatalf("filling the notify socket: %v", err)
		}
		if i > 1<<16 {
			t.Fatalf("the notify socket still takes datagrams after %d", i)
		}
	}
}

// A NOTIFY_SOCKET that stops reading (its queue full) changes neither the
// drain's result nor the exit status, and never holds the server past its
// budget: not in a drain, and not after a reload that began while it was
// full.
func TestNotifySocketStalls(t *testing.T) {
	for _, tt := range []struct {
		name   string
		reload bool // SIGHUP before the SIGTERM
	}{
		{name: "stop"},
		{name: "reload then stop", reload: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			sd := newStalledSystemd(t)
			bin := installDemo(t)
			_, socket := heldSocket(t)
			s := startDemo(t, "A", demoStart{
				bin:    bin.path,
				args:   append([]string{"-db", dbPath(t)}, drainFlags...),
				socket: socket,
				env:    []string{sd.env()},
			})
			budget, err := time.ParseDuration(s.waitLog("the serving record", isMsg("serving")).str("drain_budget"))
			if err != nil {
				t.Fatalf("drain_budget of the serving record: %v", err)
			}
			sd.fill(t)
			if tt.reload {
				// A successor that never serves: the server stays the
				// only one.
				bin.replace(started + "\nexec sleep 3600")
				s.signal(syscall.SIGHUP)
				s.waitLog("the upgrade's start", isMsg("upgrade: starting the successor"))
			}
			sent := s.signal(syscall.SIGTERM)
			checkExit(t, s, sent, 0, budget+exitMargin, exitOK)
			if got := s.log.find(isMsg("telling systemd of the drain")); len(got) == 0 {
				t.Errorf("no record of the notifications of the drain that could not be sent")
			}
		})
	}
}
