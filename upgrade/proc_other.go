//go:build !unix

package upgrade

import (
	"errors"
	"os"
)

// readNow is not supported: tableflip upgrades on unix systems only.
func readNow(*os.File, []byte) (int, error) {
	return 0, errors.New("upgrade: not supported on this system")
}

// processGone is not known: the PID file is left alone.
func processGone(int) bool { return false }

// childOf is not known: the PID file is left alone.
func childOf(int, int) bool { return false }

// containerMain is not known: upgrades are not refused for it.
func containerMain() bool { return false }
