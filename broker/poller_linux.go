package broker

import (
	"net"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// poller keeps idle TCP connections in an epoll set instead of parking a
// goroutine on each: an idle connection then costs no goroutine stack at all
// (a parked goroutine cannot shrink below 4 KB). When a socket becomes
// readable, the poller starts a goroutine that reads the burst of packets
// and re-arms the socket (EPOLLONESHOT) once it has drained it.
type poller struct {
	epfd     int
	wakeFD   int        // eventfd that stops run
	mu       sync.Mutex // guards conns, closed; held across every epoll_ctl
	conns    []*conn    // by descriptor number: 8 bytes a connection, where a map takes 30 or more
	timers   idleTimers // keep-alive and connect deadlines of the idle connections (conn_poll.go)
	closed   bool       // stop ran: epfd is closed (its number may belong to another file)
	stopping bool       // stop was called
	done     chan struct{}
}

func newPoller() *poller {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	r, _, errno := syscall.Syscall(syscall.SYS_EVENTFD2, 0, syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if errno != 0 {
		syscall.Close(epfd)
		return nil
	}
	wake := int(r)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN, Fd: int32(wake)}
	if err := syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, wake, &ev); err != nil {
		syscall.Close(epfd)
		syscall.Close(wake)
		return nil
	}
	p := &poller{epfd: epfd, wakeFD: wake, done: make(chan struct{}), timers: idleTimers{base: time.Now()}}
	go p.run()
	return p
}

// run dispatches readiness events until stop.
func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		for i := range n {
			fd := events[i].Fd
			if int(fd) == p.wakeFD {
				return
			}
			p.mu.Lock()
			c := p.connLocked(fd)
			p.mu.Unlock()
			if c != nil {
				c.pollReady()
			}
		}
	}
}

// stop ends run and releases the epoll set. The sockets still in it (a
// shutdown past its deadline) are dropped from it first; later calls on
// the poller do nothing.
func (p *poller) stop() {
	p.mu.Lock()
	stopping := p.stopping
	p.stopping = true
	p.mu.Unlock()
	if stopping {
		return // a second Shutdown
	}
	one := uint64(1)
	syscall.Write(p.wakeFD, (*[8]byte)(unsafe.Pointer(&one))[:])
	<-p.done // not under p.mu: run takes it
	p.timers.stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for fd, c := range p.conns {
		if c != nil {
			syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
		}
	}
	p.conns = nil
	p.closed = true
	syscall.Close(p.epfd)
	syscall.Close(p.wakeFD)
}

const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// add registers c's socket; false means c must be served by a goroutine.
func (p *poller) add(c *conn) bool {
	tc, ok := c.nc.(*net.TCPConn)
	if !ok {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	var fd int32 = -1
	rc.Control(func(f uintptr) { fd = int32(f) })
	if fd < 0 {
		return false
	}
	c.fd = fd
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	ev := syscall.EpollEvent{Events: pollEvents, Fd: fd}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev); err != nil {
		return false
	}
	if int(fd) >= len(p.conns) {
		p.conns = append(p.conns, make([]*conn, int(fd)+1-len(p.conns))...)
	}
	p.conns[fd] = c
	return true
}

// connLocked returns the connection registered with descriptor fd, or nil.
// p.mu is held.
func (p *poller) connLocked(fd int32) *conn {
	if fd < 0 || int(fd) >= len(p.conns) {
		return nil
	}
	return p.conns[fd]
}

// rearm asks for the next readiness event of c. If bytes are already
// waiting, epoll reports them at once. c.pollMu is held.
func (p *poller) rearmLocked(c *conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.connLocked(c.fd) != c {
		return // removed, or the poller stopped
	}
	ev := syscall.EpollEvent{Events: pollEvents, Fd: c.fd}
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, int(c.fd), &ev)
}

// removeLocked takes c out of the set before its socket is closed (so a
// reused descriptor number never reaches the wrong connection). c.pollMu is
// held.
//
// The socket may already be closed (closeNC while a burst reads) and its
// descriptor number taken by a newly accepted connection: then the kernel
// has dropped c's registration and a DEL would remove the new one's, leaving
// it deaf. So DEL only while the number still maps to c (under p.mu, which
// add holds while it claims the number, before its ADD).
func (p *poller) removeLocked(c *conn) {
	p.mu.Lock()
	if p.connLocked(c.fd) == c {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, int(c.fd), nil)
		p.conns[c.fd] = nil
	}
	p.mu.Unlock()
}

// moreToRead reports, without blocking, whether c's socket has bytes (or
// EOF) waiting.
//
// It peeks at c.fd directly, without RawConn.Control (which would hold a
// RawConn in every connection and allocate a closure on every burst). If
// the socket was closed meanwhile and its number reused, the peek reads
// nothing and tells "more": the burst's next read then fails on the closed
// connection, which is how it ends anyway.
func (c *conn) moreToRead() bool {
	var b [1]byte
	n, _, errno := syscall.Syscall6(syscall.SYS_RECVFROM, uintptr(c.fd), uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno != syscall.EAGAIN && (errno != 0 || int(n) >= 0)
}
