//go:build !unix

package client

import (
	"errors"
	"os"
)

// lockDir creates dir's lock file exclusively; Close removes it. A process
// that dies holding it leaves it behind: remove it by hand after making
// sure no client runs.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, ErrStoreLocked
	}
	return f, err
}

func unlockDir(f *os.File) error {
	err := f.Close()
	if rerr := os.Remove(f.Name()); err == nil {
		err = rerr
	}
	return err
}
