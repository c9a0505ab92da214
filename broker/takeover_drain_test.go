package broker

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// White-box: a takeover that drains the old connection's pending packets
// (drainPending) and finds its end there (the old client's DISCONNECT) does
// not tear it down on the new connection's goroutine: that teardown waits
// for the old writer, stuck for up to WriteTimeout on a client that does
// not read, and the new connection would answer nothing meanwhile
// [MQTT-3.1.4-3].
func TestTakeover_DrainDoesNotWaitForOldWriter_MQTT_3_1_4_3(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, WriteTimeout: 30 * time.Second,
		MaxBacklogBytes: 256 << 10, Logger: slog.New(slog.DiscardHandler)})
	if srv.poller == nil {
		t.Skip("no poller on this platform")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	addr := l.Addr().String()
	dial := func(rcvbuf int) (net.Conn, *bufio.Reader) {
		d := net.Dialer{Timeout: 5 * time.Second}
		if rcvbuf > 0 {
			d.Control = func(_, _ string, rc syscall.RawConn) error {
				return rc.Control(func(fd uintptr) {
					syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, rcvbuf)
				})
			}
		}
		nc, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		return nc, bufio.NewReader(nc)
	}
	send := func(nc net.Conn, p packet.Packet) {
		t.Helper()
		if err := packet.Write(nc, p, packet.V311); err != nil {
			t.Fatal(err)
		}
	}
	recv := func(nc net.Conn, r *bufio.Reader, want packet.Type) {
		t.Helper()
		nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		p, err := packet.Read(r, packet.V311, 0)
		if err != nil {
			t.Fatalf("waiting for %s: %v", want, err)
		}
		if p.Type() != want {
			t.Fatalf("got %s, want %s", p.Type(), want)
		}
	}

	old, oldR := dial(4096)
	send(old, &packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: "drain", CleanStart: true})
	recv(old, oldR, packet.CONNACK)
	send(old, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "d/x"}}})
	recv(old, oldR, packet.SUBACK)
	// The old client reads no more: 12.8 MB fill its socket buffers and
	// its writer is stuck.
	pub, pubR := dial(0)
	send(pub, &packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: "drain-pub", CleanStart: true})
	recv(pub, pubR, packet.CONNACK)
	payload := []byte(strings.Repeat("d", 32<<10))
	for range 400 {
		send(pub, &packet.Publish{Topic: "d/x", Payload: payload})
	}
	send(pub, &packet.Pingreq{})
	recv(pub, pubR, packet.PINGRESP)

	// Keep the old connection's next bytes unread until the takeover: out
	// of the epoll set, idle.
	srv.sessMu.Lock()
	s := srv.sessions["drain"]
	srv.sessMu.Unlock()
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		c.pollMu.Lock()
		idle := c.pollState == pollIdle
		if idle {
			srv.poller.removeLocked(c)
		}
		c.pollMu.Unlock()
		if idle {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the old connection never went idle")
		}
	}
	send(old, &packet.Disconnect{})

	nu, nuR := dial(0)
	start := time.Now()
	send(nu, &packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: "drain", CleanStart: true})
	recv(nu, nuR, packet.CONNACK)
	send(nu, &packet.Pingreq{})
	recv(nu, nuR, packet.PINGRESP)
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("the new connection waited %v", d)
	}
	if cs := c.closed.Load(); cs == nil || cs.cause != CauseDisconnect {
		t.Fatalf("old connection's close reason %+v, want the client's DISCONNECT", cs)
	}
}
