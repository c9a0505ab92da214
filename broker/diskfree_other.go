//go:build !(linux || darwin || freebsd)

package broker

import "errors"

// freeBytes is not known on this system: the disk guard then relies on the
// store's own write errors alone (noteApply).
func freeBytes(string) (int64, error) {
	return 0, errors.ErrUnsupported
}
