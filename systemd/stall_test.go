//go:build linux

package systemd_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/drainkit/drainkit/drain"
	"github.com/drainkit/drainkit/stophook"
	"github.com/drainkit/drainkit/systemd"
)

// stalledSystemd points NOTIFY_SOCKET at a Unix datagram socket that nobody
// reads, its queue full: every sender that waits for room waits for ever.
func stalledSystemd(t *testing.T) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	fd, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	w, err := syscall.Socket(syscall.AF_UNIX, syscall.SOCK_DGRAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(w)
	for i := 0; ; i++ {
		err := syscall.Sendto(w, []byte("STATUS=filler"), 0, &syscall.SockaddrUnix{Name: path})
		if errors.Is(err, syscall.EAGAIN) {
			break
		}
		if err != nil || i > 1<<16 {
			t.Fatalf("filling the notify socket: %d datagrams, %v", i, err)
		}
	}
	t.Setenv("NOTIFY_SOCKET", path)
}

// A NOTIFY_SOCKET that stops reading: each message is given up, with an
// error, instead of holding its caller; the drain's messages are given up
// before the drain gives up on the hook, so that its result stays clean.
func TestNotifierSocketStalls(t *testing.T) {
	stalledSystemd(t)
	var mu sync.Mutex
	var failures []error
	n := systemd.NewNotifier(systemd.WithErrorHandler(func(err error) {
		mu.Lock()
		failures = append(failures, err)
		mu.Unlock()
	}))
	for name, send := range map[string]func() error{
		"Ready":     func() error { return n.Ready("serving") },
		"Reloading": func() error { return n.Reloading("upgrading") },
		"Status":    func() error { return n.Status("serving") },
	} {
		done := make(chan error, 1)
		go func() { done <- send() }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "timeout") {
				t.Errorf("%s() to a stalled NOTIFY_SOCKET = %v, want a time-out", name, err)
			}
		case <-time.After(defaultTestTimeout):
			t.Fatalf("%s() to a stalled NOTIFY_SOCKET still waits after %v", name, defaultTestTimeout)
		}
	}

	tr, srv, _, _ := newServer(t)
	d := drain.New(srv, tr, drain.WithHooks(n), drain.WithHookTimeout(200*time.Millisecond))
	rep, err := d.Drain(context.Background())
	if err != nil {
		t.Errorf("Drain() = %v, want nil: a notification that cannot be sent is not the drain's failure", err)
	}
	if rep.Duration > d.Budget() {
		t.Errorf("Drain() took %v, more than its budget %v", rep.Duration, d.Budget())
	}
	mu.Lock()
	defer mu.Unlock()
	if len(failures) == 0 || !strings.Contains(failures[0].Error(), "timeout") {
		t.Errorf("the error handler got %v, want the notifications given up", failures)
	}
}

// An abstract NOTIFY_SOCKET ("@..."), as systemd --user and containers'
// managers may pass: Check accepts it and the messages reach it.
func TestNotifierAbstractSocket(t *testing.T) {
	name := "@drainkit-test-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", name)
	n := systemd.NewNotifier()
	if err := n.Check(); err != nil {
		t.Errorf("Check() with NOTIFY_SOCKET=%s = %v, want nil", name, err)
	}
	if err := n.Ready("serving"); err != nil {
		t.Fatalf("Ready() with NOTIFY_SOCKET=%s = %v, want nil", name, err)
	}
	conn.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	buf := make([]byte, 4096)
	k, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("reading the abstract socket: %v", err)
	}
	if got := string(buf[:k]); !strings.HasPrefix(got, "READY=1\n") {
		t.Errorf("the abstract socket got %q, want READY=1 first", got)
	}
}

// A drain event whose call has no time left is still sent to a socket with
// room.
func TestNotifierOnStopWithoutTime(t *testing.T) {
	sd := newFakeSystemd(t)
	n := systemd.NewNotifier()
	ctx, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	if err := n.OnStop(ctx, stophook.Event{Phase: stophook.NotReady, Started: time.Now()}); err != nil {
		t.Fatalf("OnStop() = %v, want nil", err)
	}
	if m := sd.next(t); m["STOPPING"] != "1" {
		t.Errorf("OnStop(NotReady) with its context ended sent %v, want STOPPING=1", m)
	}
}

// HandOver's message, whose loss would stop the unit, waits for room longer
// than the others, and is given up all the same.
func TestNotifierHandOverStalls(t *testing.T) {
	stalledSystemd(t)
	n := systemd.NewNotifier()
	start := time.Now()
	err := n.HandOver(1, "serving")
	took := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "timeout") {
		t.Errorf("HandOver() to a stalled NOTIFY_SOCKET = %v, want a time-out", err)
	}
	if took < 5*time.Second || took > 5*time.Second+defaultTestTimeout {
		t.Errorf("HandOver() to a stalled NOTIFY_SOCKET gave up after %v, want 10s", took)
	}
}
