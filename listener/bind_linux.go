//go:build linux

package listener

import "syscall"

// bindToDevice restricts the socket fd to one network interface.
func bindToDevice(fd uintptr, iface string) error {
	return syscall.SetsockoptString(int(fd), syscall.SOL_SOCKET, syscall.SO_BINDTODEVICE, iface)
}
