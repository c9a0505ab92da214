//go:build linux && !386

package broker

import (
	"net/netip"
	"syscall"
	"unsafe"
)

// The system calls of the polled connections' hot path, on non-blocking
// descriptors: none of them ever waits. Outside race builds they are made
// with RawSyscall, without telling the scheduler (entersyscall): a call
// that takes longer than sysmon's 20 µs tick (a loopback write runs the
// receiver's TCP stack inline) would otherwise have its P taken and handed
// to another thread, which on one core only adds two context switches; and
// sysmon, finding Ps to retake, keeps waking every 20 µs instead of backing
// off to 10 ms. Race builds use the annotated wrappers (raceBuild) so
// that the race detector still sees a write to a socket happen before the
// read of its bytes, as it does for the net package.

// sysRead is read(2).
func sysRead(fd int32, p []byte) (int, syscall.Errno) {
	if raceBuild {
		n, err := syscall.Read(int(fd), p)
		return n, errnoOf(err)
	}
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// sysWrite is write(2).
func sysWrite(fd int32, p []byte) (int, syscall.Errno) {
	if raceBuild {
		n, err := syscall.Write(int(fd), p)
		return n, errnoOf(err)
	}
	var ptr unsafe.Pointer
	if len(p) > 0 {
		ptr = unsafe.Pointer(&p[0])
	}
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, uintptr(fd), uintptr(ptr), uintptr(len(p)))
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// sysWritev is writev(2) of iov[:n].
func sysWritev(fd int, iov *syscall.Iovec, n int) (int, syscall.Errno) {
	if raceBuild {
		// What syscall.Write tells the race detector (one empty write).
		syscall.Write(fd, nil)
	}
	w, _, e := syscall.RawSyscall(syscall.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(iov)), uintptr(n))
	if e != 0 {
		return 0, e
	}
	return int(w), 0
}

// sysPeek reports whether fd has a byte (or EOF, or an error) to read.
func sysPeek(fd int32) bool {
	var b [1]byte
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return e != syscall.EAGAIN && (e != 0 || int(n) >= 0)
}

// sysEpollCtl is epoll_ctl(2).
func sysEpollCtl(epfd, op int, fd int32, ev *syscall.EpollEvent) syscall.Errno {
	_, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd),
		uintptr(unsafe.Pointer(ev)), 0, 0)
	return e
}

// sysEpollWaitNow is epoll_pwait(2) with a zero timeout: it never waits.
func sysEpollWaitNow(epfd int, events []syscall.EpollEvent) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&events[0])),
		uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), 0
}

// sysClose is close(2) of a socket this package accepted: with no
// SO_LINGER set it never waits, but it sends the FIN (and on loopback runs
// the peer's TCP stack inline), long enough for sysmon to retake the P.
func sysClose(fd int32) syscall.Errno {
	_, _, e := syscall.RawSyscall(syscall.SYS_CLOSE, uintptr(fd), 0, 0)
	return e
}

// sysNoDelay sets TCP_NODELAY on fd.
func sysNoDelay(fd int) syscall.Errno {
	one := int32(1)
	_, _, e := syscall.RawSyscall6(syscall.SYS_SETSOCKOPT, uintptr(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY,
		uintptr(unsafe.Pointer(&one)), 4, 0)
	return e
}

// sysAccept4 is accept4(2) on a non-blocking listening socket. It returns
// the new descriptor, the peer's address and, for IPv6, its zone's
// interface index (0: none).
func sysAccept4(fd, flags int) (int, netip.AddrPort, uint32, syscall.Errno) {
	var rsa syscall.RawSockaddrAny
	size := uint32(syscall.SizeofSockaddrAny)
	nfd, _, e := syscall.RawSyscall6(syscall.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)),
		uintptr(unsafe.Pointer(&size)), uintptr(flags), 0, 0)
	if e != 0 {
		return -1, netip.AddrPort{}, 0, e
	}
	switch rsa.Addr.Family {
	case syscall.AF_INET:
		a := (*syscall.RawSockaddrInet4)(unsafe.Pointer(&rsa))
		return int(nfd), netip.AddrPortFrom(netip.AddrFrom4(a.Addr), netPort(&a.Port)), 0, 0
	case syscall.AF_INET6:
		a := (*syscall.RawSockaddrInet6)(unsafe.Pointer(&rsa))
		return int(nfd), netip.AddrPortFrom(netip.AddrFrom16(a.Addr), netPort(&a.Port)), a.Scope_id, 0
	}
	return int(nfd), netip.AddrPort{}, 0, 0
}

// netPort reads a port stored in network byte order.
func netPort(p *uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func errnoOf(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	if e, ok := err.(syscall.Errno); ok {
		return e
	}
	return syscall.EINVAL
}
