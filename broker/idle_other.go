//go:build !linux || 386

package broker

// idleWaiter is empty off Linux: the read loop's own read blocks.
type idleWaiter struct{}

// waitReadable returns at once off Linux.
func (c *conn) waitReadable(*(*idleWaiter)) error { return nil }
