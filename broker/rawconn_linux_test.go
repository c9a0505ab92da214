//go:build linux && !386

package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// rawConnOf returns the server's connection from remote address local (the
// client's side), as a *rawConn; nil until it is accepted.
func rawConnOf(t *testing.T, srv *Server, local net.Addr) *rawConn {
	t.Helper()
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for c := range srv.conns {
		if c.info.Remote == local.String() {
			rc, ok := c.nc.(*rawConn)
			if !ok {
				t.Fatalf("the server's connection is a %T, want a *rawConn (plain TCP, polled)", c.nc)
			}
			return rc
		}
	}
	return nil
}

func encode(t *testing.T, p packet.Packet, v packet.Version) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := packet.Write(&b, p, v); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// A packet that arrives in pieces makes the broker's read wait for the rest:
// the connection then waits in the runtime's poller (promote) and goes on
// where it stopped. Then a 256 KiB message published to the client's own
// filter comes back whole (more than the socket takes at once, so the
// write waits too), and the PINGREQ after it is answered [MQTT-3.12.4-1].
func TestRawConn_PacketInPieces_MQTT_3_12_4_1(t *testing.T) {
	srv, addr := startPolled(t)
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(nc)
	connect := encode(t, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "pieces",
		CleanStart: true, KeepAlive: 60}, packet.V311)
	if _, err := nc.Write(connect[:5]); err != nil {
		t.Fatal(err)
	}
	var rc *rawConn
	wbEventually(t, 5*time.Second, func() bool {
		rc = rawConnOf(t, srv, nc.LocalAddr())
		return rc != nil && rc.file.Load() != nil
	}, "the connection's read never waited for the rest of CONNECT")
	if _, err := nc.Write(connect[5:]); err != nil {
		t.Fatal(err)
	}
	if p, err := packet.Read(r, packet.V311, 0); err != nil {
		t.Fatal(err)
	} else if ack, ok := p.(*packet.Connack); !ok || ack.ReasonCode != 0 {
		t.Fatalf("got %v, want a successful CONNACK", p)
	}
	sub := encode(t, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "pieces/t"}}}, packet.V311)
	if _, err := nc.Write(sub); err != nil {
		t.Fatal(err)
	}
	if p, err := packet.Read(r, packet.V311, 0); err != nil {
		t.Fatal(err)
	} else if _, ok := p.(*packet.Suback); !ok {
		t.Fatalf("got %v, want SUBACK", p)
	}
	payload := bytes.Repeat([]byte("0123456789abcdef"), 16<<10)
	pub := encode(t, &packet.Publish{Topic: "pieces/t", Payload: payload}, packet.V311)
	go nc.Write(append(pub, encode(t, &packet.Pingreq{}, packet.V311)...))
	p, err := packet.Read(r, packet.V311, 0)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := p.(*packet.Publish); !ok || got.Topic != "pieces/t" || !bytes.Equal(got.Payload, payload) {
		t.Fatalf("got %v, want the 256 KiB message back", p)
	}
	if p, err := packet.Read(r, packet.V311, 0); err != nil {
		t.Fatal(err)
	} else if _, ok := p.(*packet.Pingresp); !ok {
		t.Fatalf("got %v, want PINGRESP", p)
	}
}

// A connection whose CONNECT stops half way is closed at the connect
// timeout, by the read deadline of the waiting (promoted) read; and one
// waiting like that when the server shuts down is closed at once.
func TestRawConn_WaitingReadEnds(t *testing.T) {
	serve := func(connectTimeout time.Duration) (*Server, string) {
		srv := New(Options{AllowAnonymous: true, SysInterval: -1, ConnectTimeout: connectTimeout,
			Logger: slog.New(slog.DiscardHandler)})
		if srv.poller == nil {
			t.Skip("no poller")
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go srv.Serve(l)
		t.Cleanup(func() { srv.Shutdown(context.Background()) })
		return srv, l.Addr().String()
	}
	half := func(srv *Server, addr string) net.Conn {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		connect := encode(t, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "half",
			CleanStart: true}, packet.V311)
		if _, err := nc.Write(connect[:4]); err != nil {
			t.Fatal(err)
		}
		wbEventually(t, 5*time.Second, func() bool {
			rc := rawConnOf(t, srv, nc.LocalAddr())
			return rc != nil && rc.file.Load() != nil
		}, "the read never waited for the rest of CONNECT")
		return nc
	}
	closed := func(nc net.Conn, within time.Duration) {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(within))
		if n, err := nc.Read(make([]byte, 16)); !errors.Is(err, io.EOF) {
			t.Fatalf("read %d bytes, %v; want the connection closed within %v", n, err, within)
		}
	}
	srv, addr := serve(300 * time.Millisecond)
	closed(half(srv, addr), 5*time.Second) // the connect timeout

	srv, addr = serve(time.Hour)
	nc := half(srv, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v (a waiting read was not woken)", err)
	}
	closed(nc, time.Second)
}

// Serve returns when the listener it was given is closed directly, as it
// does for a listener it serves through the runtime's connections.
func TestRawListener_ClosedBehindServe(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	if srv.poller == nil {
		t.Skip("no poller")
	}
	defer srv.Shutdown(context.Background())
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	nc, err := net.DialTimeout("tcp", l.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
	l.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Serve returned %v, want net.ErrClosed", err)
		}
	case <-time.After(3 * rawListenerCheck):
		t.Fatal("Serve still accepting after its listener was closed")
	}
	if nc, err := net.DialTimeout("tcp", l.Addr().String(), time.Second); err == nil {
		nc.Close()
		t.Fatal("the listening socket is still open")
	}
}

// Reads, writes and closes from several goroutines at once: every call
// returns, none after Close touches the descriptor (the race detector and
// the reference count), and a second Close reports net.ErrClosed.
func TestRawConn_ConcurrentClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rl := newRawListener(ln.(*net.TCPListener))
	if rl == nil {
		t.Skip("no raw listener")
	}
	defer rl.Close()
	for round := 0; round < 50; round++ {
		peer, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c, err := rl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		rc := c.(*rawConn)
		if got, want := rc.RemoteAddr().String(), peer.LocalAddr().String(); got != want {
			t.Fatalf("RemoteAddr %s, want %s", got, want)
		}
		if got, want := rc.LocalAddr().String(), peer.RemoteAddr().String(); got != want {
			t.Fatalf("LocalAddr %s, want %s", got, want)
		}
		rc.SetDeadline(time.Now().Add(10 * time.Second))
		var wg sync.WaitGroup
		wg.Add(3)
		go func() { // reads until the close: the first read waits (promote)
			defer wg.Done()
			b := make([]byte, 64)
			for {
				if _, err := rc.Read(b); err != nil {
					return
				}
			}
		}()
		go func() { // writes more than the peer reads: waits too
			defer wg.Done()
			b := make([]byte, 64<<10)
			for {
				v := net.Buffers{b[:100], b[100:]}
				if _, err := rc.writeBuffers(&v); err != nil {
					return
				}
			}
		}()
		go func() {
			defer wg.Done()
			peer.Write([]byte{1, 2, 3})
			if round%2 == 0 {
				wbEventually(t, 5*time.Second, func() bool { return rc.file.Load() != nil }, "no wait")
			}
			if err := rc.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
			if err := rc.Close(); !errors.Is(err, net.ErrClosed) {
				t.Errorf("second Close: %v, want net.ErrClosed", err)
			}
		}()
		wg.Wait()
		if _, err := rc.Write([]byte{1}); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Write after Close: %v, want net.ErrClosed", err)
		}
		peer.Close()
	}
}

// The peer's address reads as the net package writes it, also for an IPv4
// client of a dual-stack listener (192.0.2.1:port, not [::ffff:...]).
func TestRawListener_RemoteAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "[::]:0")
	if err != nil {
		t.Skipf("no dual-stack listener: %v", err)
	}
	rl := newRawListener(ln.(*net.TCPListener))
	if rl == nil {
		t.Skip("no raw listener")
	}
	defer rl.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, host := range []string{"127.0.0.1", "::1"} {
		peer, err := net.Dial("tcp", net.JoinHostPort(host, fmt.Sprint(port)))
		if err != nil {
			t.Logf("%s: %v", host, err)
			continue
		}
		c, err := rl.Accept()
		if err != nil {
			t.Fatal(err)
		}
		want := peer.LocalAddr().String()
		if got := remoteString(c); got != want {
			t.Errorf("remote %q, want %q", got, want)
		}
		if got := c.RemoteAddr().String(); got != want {
			t.Errorf("RemoteAddr %q, want %q", got, want)
		}
		c.Close()
		peer.Close()
	}
}
