//go:build !unix

package systemd

import "errors"

func checkFD(int, string) error {
	return errors.New("socket activation is supported on unix systems only")
}
