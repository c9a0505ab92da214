//go:build linux

package listener

import "syscall"

// Go's TCP keep-alive for accepted connections when net.ListenConfig leaves
// it at its zero value (net's defaultTCPKeepAlive*): probes after 15 s
// idle, every 15 s, 9 of them.
const (
	keepAliveIdle     = 15 // seconds
	keepAliveInterval = 15 // seconds
	keepAliveCount    = 9
)

// keepAliveInherited says that TCP keep-alive set on a listening socket
// carries over to the connections it accepts: Linux copies the option and
// its timings into each of them, and starts their keep-alive timers.
// Setting it once on the listener spares four setsockopt calls per
// accepted connection (about a tenth of what a connection costs mqttd to
// accept, read CONNECT from and answer).
const keepAliveInherited = true

// setListenKeepAlive turns TCP keep-alive on for listening socket fd, with
// the timings Go would set on each accepted connection.
func setListenKeepAlive(fd uintptr) error {
	for _, o := range [...]struct{ level, opt, v int }{
		{syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, keepAliveIdle},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, keepAliveInterval},
		{syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, keepAliveCount},
	} {
		if err := syscall.SetsockoptInt(int(fd), o.level, o.opt, o.v); err != nil {
			return err
		}
	}
	return nil
}
