package broker

import (
	"net"
	"syscall"
	"unsafe"
)

// waitReadable blocks until nc has bytes (or EOF, or an error) to read,
// without reading them, so that an idle connection holds no read buffer. It
// honours nc's read deadline. Connections that do not expose their socket
// (TLS, WebSocket) return at once and the caller's read blocks instead.
func waitReadable(nc net.Conn) error {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	var one [1]byte
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&one[0])), 1,
			syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
		switch errno {
		case syscall.EAGAIN:
			return false // nothing yet: park in the poller
		case 0, syscall.EINTR:
			return true // data or EOF: the real read sees which
		}
		rerr = errno
		return true
	})
	if err != nil {
		return err
	}
	return rerr
}
