//go:build !linux

package listener

import "fmt"

// bindToDevice is only available on Linux.
func bindToDevice(uintptr, string) error {
	return fmt.Errorf("%w: bind_interface is only supported on Linux", ErrConfig)
}
