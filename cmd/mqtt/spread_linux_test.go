package main

import (
	"context"
	"net"
	"testing"
	"time"
)

// TestSpreadDialer: bench conns' connections to a loopback broker leave
// from 127.0.0.2-251 by their number, to 127.0.0.1 and to localhost alike;
// other destinations are dialled as they are.
func TestSpreadDialer(t *testing.T) {
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, c := range []struct {
		n    int
		addr string
		from string
	}{
		{0, "127.0.0.1:" + port, "127.0.0.2"},
		{249, "127.0.0.1:" + port, "127.0.0.251"},
		{250, "localhost:" + port, "127.0.0.2"},
		{7, "localhost:" + port, "127.0.0.9"},
	} {
		nc, err := spreadDialer(c.n)(ctx, "tcp", c.addr)
		if err != nil {
			t.Fatalf("n %d, %s: %v", c.n, c.addr, err)
		}
		peer, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := peer.RemoteAddr().(*net.TCPAddr).IP.String(); got != c.from {
			t.Errorf("n %d, %s: the listener sees %s, want %s", c.n, c.addr, got, c.from)
		}
		peer.Close()
		nc.Close()
	}
}
