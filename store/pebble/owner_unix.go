//go:build unix

package pebble

import (
	"io/fs"
	"syscall"
)

// fileOwner is the uid owning a file, or -1 when it is not known.
func fileOwner(info fs.FileInfo) int {
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid)
	}
	return -1
}

// writable reports whether this process may write path (and, for a
// directory, enter it), by the kernel's own check.
func writable(path string, dir bool) error {
	want := uint32(2) // W_OK
	if dir {
		want |= 1 // X_OK
	}
	return syscall.Access(path, want)
}
