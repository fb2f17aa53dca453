package systemd_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		// The test binary started as the process that systemd would
		// start: see runListen.
		os.Exit(listenChild())
	}
	// The tests never speak to the service manager that may run them.
	os.Unsetenv("NOTIFY_SOCKET")
	goleak.VerifyTestMain(m)
}
