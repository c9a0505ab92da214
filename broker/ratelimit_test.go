package broker_test

// Rate limits (ratelimit.go) over real sockets: max_connection_rate closes
// the sockets a listener accepts past its rate before reading anything;
// max_publish_rate slows a publisher down by not reading from it, and loses
// nothing.

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// serveListener runs a server on a listener of its own with lo, stopped by
// t.Cleanup, and returns the server and its address.
func serveListener(t *testing.T, lo broker.ListenerOptions) (*broker.Server, string) {
	t.Helper()
	srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.ServeListener(l, lo) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		<-done
	})
	return srv, l.Addr().String()
}

// tryConnect sends a CONNECT on nc and reports whether a CONNACK came back
// (false: the server closed the socket).
func tryConnect(t *testing.T, nc net.Conn, id string) bool {
	t.Helper()
	if err := packet.Write(nc, &packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: id, CleanStart: true},
		packet.V311); err != nil {
		return false // reset by the server already
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	p, err := packet.Read(bufio.NewReader(nc), packet.V311, 0)
	if err != nil {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatalf("%s: neither CONNACK nor close within 5 s", id)
		}
		return false
	}
	if _, ok := p.(*packet.Connack); !ok {
		t.Fatalf("%s: got %v, want CONNACK", id, p)
	}
	return true
}

// With max_connection_rate 5, 50 sockets opened at once get about the burst
// (5) accepted, the rest closed before anything is read; a second later new
// connections are accepted again.
func TestMaxConnectionRate_ClosesSocketsPastRate(t *testing.T) {
	const rate, n = 5, 50
	srv, addr := serveListener(t, broker.ListenerOptions{MaxConnectionRate: rate})
	start := time.Now()
	conns := make([]net.Conn, n)
	for i := range conns {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		conns[i] = nc
	}
	// Every socket has been accepted or refused.
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return srv.Stats().SocketsAccepted+srv.ListenerRateRefusals() == n
	}, "accepted %d + refused %d != %d", srv.Stats().SocketsAccepted, srv.ListenerRateRefusals(), n)
	burstTime := time.Since(start)
	accepted := 0
	for i, nc := range conns {
		if tryConnect(t, nc, fmt.Sprintf("c%d", i)) {
			accepted++
		}
	}
	// The burst, plus what the bucket refilled while the sockets were being
	// dialled and accepted.
	maxOK := rate + int(burstTime.Seconds()*rate) + 1
	t.Logf("%d of %d accepted in %v (at most %d allowed)", accepted, n, burstTime, maxOK)
	if accepted < rate || accepted > maxOK {
		t.Fatalf("%d of %d sockets accepted in %v, want %d..%d", accepted, n, burstTime, rate, maxOK)
	}
	if got := srv.ListenerRateRefusals(); got != int64(n-accepted) {
		t.Fatalf("ListenerRateRefusals = %d, want %d", got, n-accepted)
	}
	if got := srv.Stats().RefusedConnRate; got != int64(n-accepted) {
		t.Fatalf("Stats().RefusedConnRate = %d, want %d (the metrics read it)", got, n-accepted)
	}

	// The bucket refills: a new connection is accepted again.
	i := 0
	brokertest.Eventually(t, 3*time.Second, func() bool {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		defer nc.Close()
		i++
		return tryConnect(t, nc, fmt.Sprintf("later%d", i))
	}, "no connection accepted after the burst")
}

// max_connection_rate 0 (the default) limits nothing.
func TestMaxConnectionRate_ZeroIsUnlimited(t *testing.T) {
	srv, addr := serveListener(t, broker.ListenerOptions{})
	for i := range 30 {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		if !tryConnect(t, nc, fmt.Sprintf("c%d", i)) {
			t.Fatalf("connection %d refused without a rate", i)
		}
	}
	if got := srv.ListenerRateRefusals(); got != 0 {
		t.Fatalf("ListenerRateRefusals = %d", got)
	}
}

// With max_publish_rate 50, 200 QoS 0 messages sent at once reach the
// subscriber over at least (200-50)/50 = 3 s, all of them (the broker stops
// reading, it does not drop).
func TestMaxPublishRate_QoS0BackPressure(t *testing.T) {
	const rate, n = 50, 200
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxPublishRate = rate })
	sub := client(t, srv, packet.V311, "sub")
	subscribe(t, sub, 1, 0, "r/t")
	p := client(t, srv, packet.V311, "pub")
	start := time.Now()
	var buf []byte
	for i := range n {
		var err error
		if buf, err = (&packet.Publish{Topic: "r/t", Payload: fmt.Appendf(nil, "%d", i)}).Encode(buf, packet.V311); err != nil {
			t.Fatal(err)
		}
	}
	go func() { p.NC.Write(buf) }() // may block while the broker does not read
	for i := range n {
		pp, err := sub.RecvTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := string(pp.(*packet.Publish).Payload); got != fmt.Sprint(i) {
			t.Fatalf("message %d is %q", i, got)
		}
	}
	el := time.Since(start)
	t.Logf("%d QoS 0 messages at max_publish_rate %d: %v, %d pauses", n, rate, el, srv.PublishRateWaits())
	if floor := time.Duration(n-rate) * time.Second / rate * 95 / 100; el < floor {
		t.Fatalf("%d messages delivered in %v, want at least %v", n, el, floor)
	}
	if srv.PublishRateWaits() == 0 {
		t.Fatal("no pause counted")
	}
	if got := srv.Stats().PublishRateWaits; got != srv.PublishRateWaits() {
		t.Fatalf("Stats().PublishRateWaits = %d, want %d (the metrics read it)", got, srv.PublishRateWaits())
	}
	if d := srv.Stats().PublishDropped; d != 0 {
		t.Fatalf("%d messages dropped", d)
	}
}

// QoS 1 under max_publish_rate: every message is acknowledged to the
// publisher and delivered once, in order [MQTT-4.6.0-2]; the publisher, paused
// for longer than 1.5 x its keep-alive in all, is still connected.
func TestMaxPublishRate_QoS1NothingLost_MQTT_4_6_0_2(t *testing.T) {
	const rate, n = 20, 60 // 2 s of pauses, past the publisher's 1.5 s keep-alive deadline
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxPublishRate = rate })
	sub := client(t, srv, packet.V311, "sub")
	subscribe(t, sub, 1, 1, "r/t")
	p := brokertest.Dial(t, srv.Addr, packet.V311)
	p.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 1})
	start := time.Now()
	var buf []byte
	for i := range n {
		var err error
		if buf, err = (&packet.Publish{Topic: "r/t", QoS: 1, PacketID: uint16(i + 1), Payload: fmt.Appendf(nil, "%d", i)}).
			Encode(buf, packet.V311); err != nil {
			t.Fatal(err)
		}
	}
	go func() { p.NC.Write(buf) }()
	acks := make(chan error, 1)
	go func() { // the publisher's PUBACKs, in order
		for i := range n {
			p.NC.SetReadDeadline(time.Now().Add(10 * time.Second))
			pk, err := packet.Read(p.R, packet.V311, 0)
			if err != nil {
				acks <- fmt.Errorf("PUBACK %d: %w", i+1, err)
				return
			}
			if a, ok := pk.(*packet.Puback); !ok || a.PacketID != uint16(i+1) {
				acks <- fmt.Errorf("got %v, want PUBACK %d", pk, i+1)
				return
			}
		}
		acks <- nil
	}()
	for i := range n {
		pp, err := sub.RecvTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		m := pp.(*packet.Publish)
		if got := string(m.Payload); got != fmt.Sprint(i) || m.QoS != 1 {
			t.Fatalf("message %d is %q QoS %d", i, got, m.QoS)
		}
		sub.Send(&packet.Puback{PacketID: m.PacketID})
	}
	if err := <-acks; err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	t.Logf("%d QoS 1 messages at max_publish_rate %d: %v", n, rate, el)
	if floor := time.Duration(n-rate) * time.Second / rate * 95 / 100; el < floor {
		t.Fatalf("%d messages delivered in %v, want at least %v", n, el, floor)
	}
	// The publisher is still connected: a PINGREQ is answered.
	p.Send(&packet.Pingreq{})
	if pk, err := p.RecvTimeout(5 * time.Second); err != nil {
		t.Fatalf("publisher closed: %v", err)
	} else if _, ok := pk.(*packet.Pingresp); !ok {
		t.Fatalf("got %v, want PINGRESP", pk)
	}
	sub.ExpectNothing(100 * time.Millisecond) // no duplicate
}
