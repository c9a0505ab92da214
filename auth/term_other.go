//go:build !linux

package auth

import (
	"errors"
	"os"
)

// noEcho is only implemented on Linux; elsewhere the password is read with
// the terminal's echo unchanged.
func noEcho(*os.File) (func() error, error) {
	return nil, errors.New("auth: turning off terminal echo is not supported on this system")
}
