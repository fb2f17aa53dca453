//go:build !unix

package systemd

import (
	"errors"
	"os"
)

func check(*os.File, string) error {
	return errors.New("socket activation is supported on unix systems only")
}
