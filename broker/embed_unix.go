//go:build unix

package broker

import (
	"fmt"
	"net"
	"os"
	"syscall"
)

// DialLocal returns an in-process connection to s (a connected pair of unix
// sockets): the broker serves its end as a client connection on listener
// LocalListener, with no listener options and no mount point. Such a
// connection is the server's own: it is not authenticated and its access
// is not checked (bridges use it). The caller speaks MQTT over the
// returned end and closes it when done.
func (s *Server) DialLocal() (net.Conn, error) {
	if s.hookErr != nil {
		return nil, s.hookErr
	}
	if s.isClosing() {
		return nil, ErrServerClosed
	}
	// Not every unix has SOCK_CLOEXEC: the fork lock keeps a concurrent
	// exec from inheriting the pair before it is marked close-on-exec.
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("broker: DialLocal: %w", err)
	}
	mine, err := fileConn(fds[0], "mqttd-local-server")
	if err != nil {
		syscall.Close(fds[1])
		return nil, err
	}
	theirs, err := fileConn(fds[1], "mqttd-local-client")
	if err != nil {
		mine.Close()
		return nil, err
	}
	c := s.trackConn(mine, LocalListener)
	if c == nil {
		theirs.Close()
		return nil, ErrServerClosed
	}
	c.local = true
	if !c.startPolled() {
		go func() {
			c.serve()
			c.finish()
		}()
	}
	return theirs, nil
}

// fileConn makes a net.Conn of a socket descriptor, which it takes.
func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	nc, err := net.FileConn(f) // dups the descriptor
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("broker: DialLocal: %w", err)
	}
	return nc, nil
}
