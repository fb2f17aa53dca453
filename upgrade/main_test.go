package upgrade_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		// The test binary started as a server that upgrades: see
		// runUpgrade.
		os.Exit(upgradeChild(mode))
	}
	goleak.VerifyTestMain(m)
}
