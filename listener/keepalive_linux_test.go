//go:build linux

package listener

import (
	"net"
	"syscall"
	"testing"
)

// TestAcceptedConnKeepAlive: an accepted TCP connection has keep-alive on,
// with the timings Go gives accepted connections by default (15 s idle,
// 15 s interval, 9 probes), inherited from the listening socket (plain and
// with the Nagle option), and a unix socket listener still opens.
func TestAcceptedConnKeepAlive(t *testing.T) {
	for _, nagle := range []bool{false, true} {
		l, err := Listen(Config{Address: "127.0.0.1:0", Nagle: nagle})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		cl, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		c, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		rc, err := c.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		want := []struct {
			name       string
			level, opt int
			v          int
		}{
			{"SO_KEEPALIVE", syscall.SOL_SOCKET, syscall.SO_KEEPALIVE, 1},
			{"TCP_KEEPIDLE", syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE, 15},
			{"TCP_KEEPINTVL", syscall.IPPROTO_TCP, syscall.TCP_KEEPINTVL, 15},
			{"TCP_KEEPCNT", syscall.IPPROTO_TCP, syscall.TCP_KEEPCNT, 9},
		}
		rc.Control(func(fd uintptr) {
			for _, w := range want {
				got, err := syscall.GetsockoptInt(int(fd), w.level, w.opt)
				if err != nil {
					t.Fatalf("%s: %v", w.name, err)
				}
				if got != w.v {
					t.Errorf("nagle %v: %s = %d, want %d", nagle, w.name, got, w.v)
				}
			}
			nd, err := syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_NODELAY)
			if err != nil {
				t.Fatal(err)
			}
			if wantND := !nagle; (nd != 0) != wantND {
				t.Errorf("nagle %v: TCP_NODELAY = %d", nagle, nd)
			}
		})
	}
	path := t.TempDir() + "/s.sock"
	l, err := Listen(Config{Network: "unix", Address: path})
	if err != nil {
		t.Fatalf("unix listener: %v", err)
	}
	l.Close()
}
