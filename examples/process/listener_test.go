//go:build unix

package process_test

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/drainkit/drainkit/drain"
)

// TestDrainRefusesNewConnections drains a server that listens itself,
// outside systemd (no NOTIFY_SOCKET, so no notifier hook), while a call
// keeps its Graceful phase waiting. Once the drain has closed the listener,
// a new connection must be refused, for its client to try another server at
// once, rather than wait in the backlog of a socket that nobody accepts
// from: the copy of the socket that the server keeps for an upgrade's
// successor must be closed as the drain begins.
func TestDrainRefusesNewConnections(t *testing.T) {
	s := startServer(t, "A", dbPath(t), "-readiness-delay=0s", "-grace=1m", "-cancel-grace=1s", "-force-wait=1s")
	startSleeps(t, s.addr, 1)
	s.signal(syscall.SIGTERM)
	s.waitLog("the Graceful phase", isPhase("Graceful"))
	// The server has read the signal by now: its repeat window began
	// earlier.
	graceful := time.Now()

	// The listener closes within the drain's acceptSettle (100ms) of the
	// Graceful phase; the grace period keeps the process alive a minute.
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		conn, err := net.DialTimeout("tcp", s.addr, defaultTestTimeout)
		if errors.Is(err, syscall.ECONNREFUSED) {
			break
		}
		switch {
		case errors.Is(err, syscall.ECONNRESET):
			// Caught in the listener's backlog as it closed; the next
			// dial finds it closed.
		case err != nil:
			t.Fatalf("dial %s during the drain = %v, want it accepted, refused, or reset as the listener closes", s.addr, err)
		default:
			conn.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("connections to %s still accepted %v into the Graceful phase, want refused once the listener is closed", s.addr, defaultTestTimeout)
		}
		time.Sleep(10 * time.Millisecond) // a bounded poll of the port, not a synchronisation
	}
	select {
	case <-s.exited:
		t.Fatal("the server exited before the connection was refused: the test proves nothing")
	default:
	}
	// A second signal ends the drain at once; one within the repeat window
	// of the first would count as the same.
	time.Sleep(time.Until(graceful.Add(2 * drain.SignalRepeatWindow)))
	s.signal(syscall.SIGTERM)
	s.wait(defaultTestTimeout)
}
