//go:build linux && !386

package broker

import (
	"net"
	"os"
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
//
// The epoll descriptor is itself registered with Go's network poller
// (epfile): the dispatching goroutine parks there, as a goroutine reading a
// socket does, instead of blocking an OS thread in epoll_wait. A blocked
// thread hands its P back to the runtime only after sysmon notices (20 µs
// and more), and on its return from the kernel it must win a P back before
// it can start the burst goroutine: on one or two cores every burst paid
// for both.
type poller struct {
	epfd     int
	epfile   *os.File   // owns epfd: registered with the runtime's poller, closed only through it
	wakeFD   int        // eventfd that stops run
	mu       sync.Mutex // guards conns, closed; held across every epoll_ctl
	conns    []*conn    // by descriptor number: 8 bytes a connection, where a map takes 30 or more
	timers   idleTimers // keep-alive and connect deadlines of the idle connections (conn_poll.go)
	spin     *spinner   // whether run polls for a while before it parks (spin_linux.go)
	closed   bool       // stop ran: epfd is closed (its number may belong to another file)
	stopping bool       // stop was called
	done     chan struct{}
}

// newPoller starts a poller; spin is Options.PollSpin (0: DefaultPollSpin,
// negative: never spin), load the cores of work from which it spins (0:
// spinHotLoad), syncs the store's count of synced writes (nil: none).
func newPoller(spin time.Duration, load float64, syncs func() uint64) *poller {
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil
	}
	// Non-blocking, so that os.NewFile registers it with the runtime's
	// poller (an epoll descriptor is readable while it has events ready).
	if err := syscall.SetNonblock(epfd, true); err != nil {
		syscall.Close(epfd)
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
	// From here on epfd is closed through epfile only: closing the number
	// behind the runtime's back while it is registered there would leave
	// the runtime watching whatever file is given that number next.
	p := &poller{epfd: epfd, epfile: os.NewFile(uintptr(epfd), "epoll"), wakeFD: wake,
		done: make(chan struct{}), timers: idleTimers{base: time.Now()}}
	if spin == 0 {
		spin = DefaultPollSpin
	}
	p.spin = newSpinner(max(spin, 0))
	if load != 0 {
		p.spin.hotLoad = load
	}
	p.spin.syncs = syncs
	go p.run()
	return p
}

// run dispatches readiness events until stop.
//
// It parks in the runtime's poller (epfile's RawConn.Read) and harvests
// with epoll_wait(0), which never blocks. No readiness is lost between the
// two: the sockets' events wait in the epoll set until harvested, so a
// harvest finds every event that arrived before it; and one that arrives
// after a harvest found nothing marks epfd readable for the runtime, which
// then wakes (or does not park) the Read. Each Read harvests before it
// parks (RawConn.Read calls its function first), so what a full harvest
// left behind is taken at once; a full harvest is also followed by another
// without parking.
func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	var n int
	var werr error
	harvest := func(fd uintptr) bool {
		n, werr = epollWaitNow(int(fd), events)
		return n > 0 || werr != nil
	}
	rc, err := p.epfile.SyscallConn()
	if err != nil {
		p.runBlocking(events)
		return
	}
	for {
		if err := rc.Read(harvest); err != nil {
			// Not pollable after all (the runtime refused the
			// descriptor): block a thread in epoll_wait instead. epfile
			// is closed only after run returns, so this is not a close.
			p.runBlocking(events)
			return
		}
		for {
			if werr != nil {
				return // EBADF, EINVAL: the set is gone
			}
			if p.dispatch(events[:n]) {
				return
			}
			if n < len(events) {
				// Drained: park again, unless the broker is busy
				// enough to keep polling for a while (spinner).
				if n, werr = p.spin.wait(p.epfd, events); n == 0 && werr == nil {
					break
				}
				continue
			}
			n, werr = epollWaitNow(p.epfd, events)
			if n == 0 && werr == nil {
				break
			}
		}
	}
}

// runBlocking is run without the runtime's poller: a thread blocks in
// epoll_wait. epfd stays open until run returns (stop waits for it).
func (p *poller) runBlocking(events []syscall.EpollEvent) {
	for {
		n, err := syscall.EpollWait(p.epfd, events, -1)
		if err != nil {
			if err == syscall.EINTR {
				continue
			}
			return
		}
		if p.dispatch(events[:n]) {
			return
		}
	}
}

// epollWaitNow harvests the events ready in epfd without blocking. An
// interrupted call (EINTR) is made again: returning nothing for it could
// park run while events wait in the set, with no new edge to wake it.
func epollWaitNow(epfd int, events []syscall.EpollEvent) (int, error) {
	for {
		n, err := sysEpollWaitNow(epfd, events)
		if err == syscall.EINTR || err == syscall.EAGAIN {
			continue
		}
		if err != 0 {
			return 0, err
		}
		return n, nil
	}
}

// dispatch starts a burst for each ready connection. It reports true when
// stop's eventfd is among the events: run returns (the sockets' events of
// the same harvest are dropped with the set; their connections are closed
// by the shutdown).
func (p *poller) dispatch(events []syscall.EpollEvent) (stop bool) {
	for i := range events {
		fd := events[i].Fd
		if int(fd) == p.wakeFD {
			return true
		}
		p.mu.Lock()
		c := p.connLocked(fd)
		p.mu.Unlock()
		if c != nil {
			c.pollReady()
		}
	}
	return false
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
	p.epfile.Close() // deregisters epfd from the runtime's poller, then closes it
	syscall.Close(p.wakeFD)
}

const pollEvents = syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT

// add registers c's socket; false means c must be served by a goroutine.
func (p *poller) add(c *conn) bool {
	var fd int32 = -1
	switch nc := c.nc.(type) {
	case *rawConn:
		fd = nc.fd
	case *net.TCPConn:
		rc, err := nc.SyscallConn()
		if err != nil {
			return false
		}
		rc.Control(func(f uintptr) { fd = int32(f) })
	}
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
	sysEpollCtl(p.epfd, syscall.EPOLL_CTL_MOD, c.fd, &ev)
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
	return sysPeek(c.fd)
}
