//go:build linux && !386

package broker

import (
	"syscall"
	"unsafe"
)

// idleWaiter waits for a socket to become readable without reading from it,
// so that an idle connection holds no read buffer. Built on first use, by
// connections that have a read goroutine (polled ones need none).
type idleWaiter struct {
	rc   syscall.RawConn
	peek func(fd uintptr) bool // allocated once per connection
	one  [1]byte
	err  error
	none bool // the conn exposes no socket (TLS, WebSocket)
}

// waitReadable blocks until the connection has bytes (or EOF, or an error)
// to read, honouring its read deadline. Connections that do not expose their
// socket return at once and the caller's read blocks instead. *wp is the
// read loop's waiter, built on the first call.
func (c *conn) waitReadable(wp **idleWaiter) error {
	w := *wp
	if w == nil {
		w = new(idleWaiter)
		*wp = w
		sc, ok := c.nc.(syscall.Conn)
		if !ok {
			w.none = true
			return nil
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			w.none = true
			return nil
		}
		w.rc = rc
		w.peek = w.peekFD
	}
	if w.none {
		return nil
	}
	w.err = nil
	if err := w.rc.Read(w.peek); err != nil {
		return err
	}
	return w.err
}

// peekFD reports whether fd has something to read: false parks the caller
// in the runtime's poller until it does.
func (w *idleWaiter) peekFD(fd uintptr) bool {
	_, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&w.one[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	switch errno {
	case syscall.EAGAIN:
		return false
	case 0, syscall.EINTR:
		return true // data or EOF: the real read sees which
	}
	w.err = errno
	return true
}
