//go:build !unix

package pebble

import (
	"fmt"
	"io/fs"
	"os"
)

// fileOwner is not known off unix.
func fileOwner(fs.FileInfo) int { return -1 }

// writable reports a file marked read-only; off unix there is no cheaper
// check of the access rules than trying the write itself.
func writable(path string, _ bool) error {
	info, err := os.Stat(path)
	if err != nil {
		return err
	}
	if info.Mode().Perm()&0o200 == 0 {
		return fmt.Errorf("%s is read-only", path)
	}
	return nil
}
