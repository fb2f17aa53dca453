//go:build unix

package process_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// The servers the tests start must not talk to a service manager the
	// tests themselves may run under, nor take its sockets: the tests that
	// play systemd set these variables for their servers alone.
	for _, v := range []string{"NOTIFY_SOCKET", "LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(v)
	}
	// The binaries built for the tests are removed after the leak check.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBinaries()
		os.Exit(code)
	}))
}
