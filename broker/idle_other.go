//go:build !linux

package broker

import "net"

// waitReadable is a no-op off Linux: the read loop's own read blocks.
func waitReadable(nc net.Conn) error { return nil }
