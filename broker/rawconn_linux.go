//go:build linux && !386

package broker

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// rawConn is an accepted TCP socket that the broker reads and writes with
// system calls of its own, for plain TCP listeners served with the poller.
//
// A *net.TCPConn registers its socket with the runtime's network poller
// (a pollDesc, about 540 bytes of runtime memory per socket counted in
// OtherSys) and keeps a netFD and two resolved addresses (about 290 bytes
// of heap). A polled connection needs none of them while it is idle: the
// broker's own epoll set tells when to read. rawConn keeps the descriptor,
// the peer's address and its deadlines (64 bytes). Reads and writes are
// non-blocking system calls; only when one would block (a packet that
// arrived in pieces, a client that reads too slowly) does the connection
// hand its descriptor to an *os.File, registered with the runtime's poller,
// through which it waits from then on (promote). Idle IoT connections and
// the reads of whole packets never get there.
//
// A descriptor number is reused by the kernel as soon as it is closed, so a
// system call must never run on a closed number: each takes a reference
// (acquire), and Close closes the descriptor only once none is in flight
// (the last release does it otherwise). Once promoted, the *os.File guards
// its own calls the same way.
type rawConn struct {
	fd    int32
	state atomic.Uint32 // rawClosing | the number of raw system calls in flight
	mu    sync.Mutex    // serialises promote, Close and the deadline setters
	file  atomic.Pointer[os.File]
	// Read and write deadlines, nanoseconds after rawBase on the monotonic
	// clock; 0 means none. Applied to file when it is created.
	rdl, wdl atomic.Int64
	remote   string // the peer's address, as net.TCPAddr.String writes it; shared with ClientInfo.Remote
}

const rawClosing = 1 << 31

// rawBase is the origin of rawConn's deadlines.
var rawBase = time.Now()

// rawListener accepts connections as rawConns. It wraps the listener the
// broker was given; Addr is its.
//
// A listener's own RawConn cannot wait (its Read is not supported), so the
// listener waits on a duplicate of the listening socket registered with the
// runtime's poller (file) and accepts there. Closing the wrapper closes
// both. A caller that closes the listener it passed to Serve stops it too:
// the wait wakes every second to look (closedBehind).
type rawListener struct {
	*net.TCPListener
	rc   syscall.RawConn // the original's: Control tells whether it was closed
	file *os.File        // the duplicate accept waits on
	frc  syscall.RawConn
	// The last accept's result, written by acceptFD (a method value made
	// once, so that an accept allocates no closure).
	nfd      int
	peer     netip.AddrPort
	zone     uint32 // the peer's IPv6 zone (an interface index), 0: none
	aerr     error
	acceptFn func(fd uintptr) bool
}

// rawListenerCheck is how often a waiting Accept looks whether the wrapped
// listener was closed behind its back.
const rawListenerCheck = time.Second

// newRawListener wraps l, or returns nil when its socket cannot be reached.
func newRawListener(l *net.TCPListener) *rawListener {
	rc, err := l.SyscallConn()
	if err != nil {
		return nil
	}
	dup := -1
	rc.Control(func(fd uintptr) {
		// TCP keep-alive as Go sets it on each connection it accepts, when
		// the listening socket does not carry it already (the listener
		// package sets it there): Linux copies it into every accepted
		// connection.
		if on, err := syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE); err == nil && on == 0 {
			syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1)
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15)
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15)
			syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9)
		}
		if d, _, errno := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_DUPFD_CLOEXEC, 0); errno == 0 {
			dup = int(d)
		}
	})
	if dup < 0 {
		return nil
	}
	f := os.NewFile(uintptr(dup), "tcp-listener") // non-blocking (shared with the original): polled
	frc, err := f.SyscallConn()
	if err != nil || f.SetReadDeadline(time.Now().Add(rawListenerCheck)) != nil {
		f.Close()
		return nil
	}
	rl := &rawListener{TCPListener: l, rc: rc, file: f, frc: frc}
	rl.acceptFn = rl.acceptFD
	return rl
}

// acceptFD takes one connection off listening socket fd; false parks the
// caller in the runtime's poller until one arrives.
func (l *rawListener) acceptFD(fd uintptr) bool {
	for {
		var e syscall.Errno
		l.nfd, l.peer, l.zone, e = sysAccept4(int(fd), syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)
		l.aerr = nil
		if e != 0 {
			l.aerr = e
		}
		switch l.aerr {
		case syscall.EAGAIN:
			return false
		case syscall.EINTR, syscall.ECONNABORTED:
			continue // interrupted, or a connection reset while queued: take the next
		}
		return true
	}
}

// closedBehind reports whether the wrapped listener was closed directly.
func (l *rawListener) closedBehind() bool {
	return l.rc.Control(func(uintptr) {}) != nil
}

// Close closes the listener and the duplicate an Accept may wait on.
func (l *rawListener) Close() error {
	l.file.Close()
	return l.TCPListener.Close()
}

// Accept waits for and returns the next connection. Only Server.Serve calls
// it, from one goroutine.
func (l *rawListener) Accept() (net.Conn, error) {
	for {
		if err := l.frc.Read(l.acceptFn); err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && !l.closedBehind() {
				l.file.SetReadDeadline(time.Now().Add(rawListenerCheck))
				continue
			}
			l.file.Close()
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: net.ErrClosed}
		}
		if l.aerr != nil {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: l.Addr(), Err: os.NewSyscallError("accept4", l.aerr)}
		}
		fd, peer := l.nfd, l.peer
		// What net.TCPConn does for each accepted connection: small packets
		// go at once (listener option nagle wraps the listener, which then
		// keeps the runtime's connections).
		if sysNoDelay(fd) != 0 {
			sysClose(int32(fd)) // already reset by its peer
			continue
		}
		// An IPv4 client of a dual-stack listener is written as net writes
		// it, 192.0.2.1:port, not [::ffff:192.0.2.1]:port.
		ip := peer.Addr().Unmap()
		if l.zone != 0 {
			if ifi, err := net.InterfaceByIndex(int(l.zone)); err == nil {
				ip = ip.WithZone(ifi.Name)
			}
		}
		return &rawConn{fd: int32(fd), remote: netip.AddrPortFrom(ip, peer.Port()).String()}, nil
	}
}

// acquire takes a reference for a raw system call on fd; false once Close
// was called.
func (c *rawConn) acquire() bool {
	for {
		v := c.state.Load()
		if v&rawClosing != 0 {
			return false
		}
		if c.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release drops a reference; the last one after Close closes the socket.
func (c *rawConn) release() {
	if c.state.Add(^uint32(0)) == rawClosing {
		c.destroy()
	}
}

// destroy closes the socket, once Close was called and no raw call is in
// flight: through the *os.File when promoted (which waits out and wakes
// its own callers), directly otherwise.
func (c *rawConn) destroy() {
	if f := c.file.Load(); f != nil {
		f.Close()
		return
	}
	sysClose(c.fd)
}

// promote hands the descriptor to an *os.File registered with the runtime's
// poller, through which the connection waits from now on. The caller holds
// a reference (so the descriptor is open). nil once Close was called.
func (c *rawConn) promote() *os.File {
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.file.Load(); f != nil {
		return f
	}
	if c.state.Load()&rawClosing != 0 {
		return nil
	}
	f := os.NewFile(uintptr(c.fd), "tcp")
	if d := c.rdl.Load(); d != 0 {
		f.SetReadDeadline(rawBase.Add(time.Duration(d)))
	}
	if d := c.wdl.Load(); d != 0 {
		f.SetWriteDeadline(rawBase.Add(time.Duration(d)))
	}
	c.file.Store(f)
	return f
}

// passed reports whether deadline d (see rdl) has passed.
func passed(d int64) bool { return d != 0 && int64(time.Since(rawBase)) >= d }

// rawDeadline converts t to rdl's form.
func rawDeadline(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(int64(t.Sub(rawBase)), 1) // 1: long passed
}

func (c *rawConn) opError(op string, err error) error {
	switch {
	case err == io.EOF:
		return err
	case errors.Is(err, os.ErrClosed):
		err = net.ErrClosed
	case errors.Is(err, os.ErrDeadlineExceeded):
		err = os.ErrDeadlineExceeded
	default:
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		if errno, ok := err.(syscall.Errno); ok {
			err = os.NewSyscallError(op, errno)
		}
	}
	return &net.OpError{Op: op, Net: "tcp", Addr: c.RemoteAddr(), Err: err}
}

// enter prepares a raw system call for op: it returns the promoted file to
// use instead, or why the call cannot be made (closed, deadline passed), or
// neither, with a reference held for the call (see blocked and release).
func (c *rawConn) enter(op string, deadline *atomic.Int64) (*os.File, error) {
	if f := c.file.Load(); f != nil {
		return f, nil
	}
	if !c.acquire() {
		return nil, c.opError(op, net.ErrClosed)
	}
	if passed(deadline.Load()) {
		c.release()
		return nil, c.opError(op, os.ErrDeadlineExceeded)
	}
	return nil, nil
}

// blocked handles a raw call that would have blocked (EAGAIN): the
// connection waits through the runtime's poller from now on (promote), and
// the call's reference is dropped. The caller then goes through enter again.
func (c *rawConn) blocked(op string) error {
	f := c.promote()
	c.release()
	if f == nil {
		return c.opError(op, net.ErrClosed)
	}
	return nil
}

func (c *rawConn) Read(p []byte) (int, error) {
	for {
		f, err := c.enter("read", &c.rdl)
		if err != nil {
			return 0, err
		}
		if f != nil {
			n, err := f.Read(p)
			if err != nil {
				err = c.opError("read", err)
			}
			return n, err
		}
		n, errno := sysRead(c.fd, p)
		if errno == syscall.EAGAIN {
			if err := c.blocked("read"); err != nil {
				return 0, err
			}
			continue
		}
		c.release()
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return 0, c.opError("read", errno)
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (c *rawConn) Write(p []byte) (int, error) {
	total := 0
	for total < len(p) {
		f, err := c.enter("write", &c.wdl)
		if err != nil {
			return total, err
		}
		if f != nil {
			n, err := f.Write(p[total:])
			if err != nil {
				err = c.opError("write", err)
			}
			return total + n, err
		}
		n, errno := sysWrite(c.fd, p[total:])
		if errno == syscall.EAGAIN {
			if err := c.blocked("write"); err != nil {
				return total, err
			}
			continue
		}
		c.release()
		switch {
		case errno == syscall.EINTR:
			continue
		case errno != 0:
			return total, c.opError("write", errno)
		}
		total += n
	}
	return total, nil
}

// iovPool holds the scratch arrays of writev.
var iovPool = sync.Pool{New: func() any { return new([rawIOVMax]syscall.Iovec) }}

// rawIOVMax is the most buffers one writev takes (the kernel's UIO_MAXIOV).
const rawIOVMax = 1024

// writev writes what it can of v without blocking.
func writev(fd int, v net.Buffers) (int, syscall.Errno) {
	iov := iovPool.Get().(*[rawIOVMax]syscall.Iovec)
	n := 0
	for _, b := range v {
		if len(b) == 0 {
			continue
		}
		if n == rawIOVMax {
			break
		}
		iov[n].Base = &b[0]
		iov[n].SetLen(len(b))
		n++
	}
	var w int
	var errno syscall.Errno
	if n > 0 {
		for {
			w, errno = sysWritev(fd, &iov[0], n)
			if errno != syscall.EINTR {
				break
			}
		}
	}
	clear(iov[:n])
	iovPool.Put(iov)
	return w, errno
}

// consume drops the first n bytes of v.
func consume(v *net.Buffers, n int) {
	for n > 0 && len(*v) > 0 {
		b := (*v)[0]
		if n < len(b) {
			(*v)[0] = b[n:]
			return
		}
		n -= len(b)
		(*v)[0] = nil
		*v = (*v)[1:]
	}
	for len(*v) > 0 && len((*v)[0]) == 0 {
		*v = (*v)[1:]
	}
}

// writeBuffers writes all of v with vectored writes, as net.Buffers.WriteTo
// does for a *net.TCPConn, consuming it.
func (c *rawConn) writeBuffers(v *net.Buffers) (int64, error) {
	consume(v, 0)
	var total int64
	for len(*v) > 0 {
		f, err := c.enter("write", &c.wdl)
		if err != nil {
			return total, err
		}
		if f != nil {
			n, err := c.writeFile(f, v)
			return total + n, err
		}
		n, errno := writev(int(c.fd), *v) // EINTR is retried inside
		if errno == syscall.EAGAIN {
			if err := c.blocked("write"); err != nil {
				return total, err
			}
			continue
		}
		c.release()
		if errno != 0 {
			return total, c.opError("write", errno)
		}
		total += int64(n)
		consume(v, n)
	}
	return total, nil
}

// writeFile writes the rest of v through the promoted file, waiting for the
// socket to take more in the runtime's poller (bounded by the write
// deadline).
func (c *rawConn) writeFile(f *os.File, v *net.Buffers) (int64, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, c.opError("write", err)
	}
	var total int64
	var errno syscall.Errno
	err = rc.Write(func(fd uintptr) bool {
		for len(*v) > 0 {
			var n int
			n, errno = writev(int(fd), *v)
			if errno != 0 {
				return errno != syscall.EAGAIN
			}
			total += int64(n)
			consume(v, n)
		}
		return true
	})
	if err == nil && errno != 0 {
		err = errno
	}
	if err != nil {
		return total, c.opError("write", err)
	}
	return total, nil
}

// Close closes the socket once no system call is running on it; a call
// waiting in the runtime's poller is woken with net.ErrClosed.
func (c *rawConn) Close() error {
	c.mu.Lock()
	v := c.state.Or(rawClosing)
	c.mu.Unlock()
	if v&rawClosing != 0 {
		return c.opError("close", net.ErrClosed)
	}
	if v == 0 {
		c.destroy()
	}
	return nil
}

// RemoteAddr parses the peer's address again: the broker keeps the string
// (remoteString), and calls this once per CONNECT at most.
func (c *rawConn) RemoteAddr() net.Addr {
	ap, err := netip.ParseAddrPort(c.remote)
	if err != nil {
		return &net.TCPAddr{}
	}
	return net.TCPAddrFromAddrPort(ap)
}

func (c *rawConn) remoteString() string { return c.remote }

func (c *rawConn) LocalAddr() net.Addr {
	if !c.acquire() {
		return nil
	}
	sa, err := syscall.Getsockname(int(c.fd))
	c.release()
	if err != nil {
		return nil
	}
	switch a := sa.(type) {
	case *syscall.SockaddrInet4:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	case *syscall.SockaddrInet6:
		return &net.TCPAddr{IP: a.Addr[:], Port: a.Port}
	}
	return nil
}

func (c *rawConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

func (c *rawConn) SetReadDeadline(t time.Time) error {
	return c.setDeadline(&c.rdl, t, (*os.File).SetReadDeadline)
}
func (c *rawConn) SetWriteDeadline(t time.Time) error {
	return c.setDeadline(&c.wdl, t, (*os.File).SetWriteDeadline)
}

func (c *rawConn) setDeadline(d *atomic.Int64, t time.Time, set func(*os.File, time.Time) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.Store(rawDeadline(t))
	if f := c.file.Load(); f != nil {
		return set(f, t)
	}
	return nil
}

// SetNoDelay is net.TCPConn's.
func (c *rawConn) SetNoDelay(on bool) error {
	if !c.acquire() {
		return c.opError("set", net.ErrClosed)
	}
	defer c.release()
	v := 0
	if on {
		v = 1
	}
	return os.NewSyscallError("setsockopt", syscall.SetsockoptInt(int(c.fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY, v))
}

// wrapListener serves a plain TCP listener with rawConns when the poller
// runs; any other listener (TLS, WebSocket, unix, a wrapper) as it is.
func (s *Server) wrapListener(l net.Listener) net.Listener {
	tl, ok := l.(*net.TCPListener)
	if !ok || s.poller == nil {
		return l
	}
	if rl := newRawListener(tl); rl != nil {
		return rl
	}
	return l
}
