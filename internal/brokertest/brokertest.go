// Package brokertest starts real mqttd servers for tests: on 127.0.0.1:0,
// stopped by t.Cleanup, plus raw-connection helpers and Eventually.
package brokertest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
)

// Server is a running broker.
type Server struct {
	*broker.Server
	Addr string // "127.0.0.1:PORT"

	once sync.Once
	stop func()
}

// URL is the server's address as an mqtt:// URL.
func (s *Server) URL() string { return "mqtt://" + s.Addr }

// Start runs a broker on 127.0.0.1:0 that allows anonymous clients; opts
// adjust its Options. The server stops when the test ends.
func Start(t testing.TB, opts ...func(*broker.Options)) *Server {
	t.Helper()
	o := broker.Options{AllowAnonymous: true, SysInterval: -1, Logger: testLogger()}
	for _, f := range opts {
		f(&o)
	}
	srv := broker.New(o)
	if err := srv.Restore(); err != nil {
		t.Fatalf("brokertest: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("brokertest: listen: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	s := &Server{Server: srv, Addr: l.Addr().String()}
	s.stop = func() {
		s.once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("brokertest: shutdown: %v", err)
			}
			if err := <-done; err != broker.ErrServerClosed {
				t.Errorf("brokertest: Serve returned %v, want ErrServerClosed", err)
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

// Stop shuts the server down now (it is also stopped when the test ends).
func (s *Server) Stop() { s.stop() }

// testLogger logs to stderr at debug level when MQTTD_TEST_LOG is set, and
// discards otherwise.
func testLogger() *slog.Logger {
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// Eventually polls cond every few milliseconds until it is true or timeout
// passes, then fails the test.
func Eventually(t testing.TB, timeout time.Duration, cond func() bool, msgAndArgs ...any) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			msg := "condition not met"
			if len(msgAndArgs) > 0 {
				if f, ok := msgAndArgs[0].(string); ok {
					msg = fmt.Sprintf(f, msgAndArgs[1:]...)
				}
			}
			t.Fatalf("brokertest: after %v: %s", timeout, msg)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Conn is a raw client connection speaking one protocol version.
type Conn struct {
	t       testing.TB
	NC      net.Conn
	R       *bufio.Reader
	Version packet.Version
}

// Dial opens a raw TCP connection to addr.
func Dial(t testing.TB, addr string, v packet.Version) *Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("brokertest: dial %s: %v", addr, err)
	}
	t.Cleanup(func() { nc.Close() })
	return &Conn{t: t, NC: nc, R: bufio.NewReader(nc), Version: v}
}

// Send writes a packet.
func (c *Conn) Send(p packet.Packet) {
	c.t.Helper()
	if err := packet.Write(c.NC, p, c.Version); err != nil {
		c.t.Fatalf("brokertest: send %s: %v", p.Type(), err)
	}
}

// SendRaw writes bytes as they are.
func (c *Conn) SendRaw(b []byte) {
	c.t.Helper()
	if _, err := c.NC.Write(b); err != nil {
		c.t.Fatalf("brokertest: write: %v", err)
	}
}

// Recv reads the next packet, failing the test after 5 seconds.
func (c *Conn) Recv() packet.Packet {
	c.t.Helper()
	p, err := c.RecvTimeout(5 * time.Second)
	if err != nil {
		c.t.Fatalf("brokertest: recv: %v", err)
	}
	return p
}

// RecvTimeout reads the next packet or returns the error.
func (c *Conn) RecvTimeout(d time.Duration) (packet.Packet, error) {
	c.NC.SetReadDeadline(time.Now().Add(d))
	defer c.NC.SetReadDeadline(time.Time{})
	return packet.Read(c.R, c.Version, 0)
}

// RecvRaw reads exactly n bytes.
func (c *Conn) RecvRaw(n int) []byte {
	c.t.Helper()
	c.NC.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer c.NC.SetReadDeadline(time.Time{})
	b := make([]byte, n)
	if _, err := io.ReadFull(c.R, b); err != nil {
		c.t.Fatalf("brokertest: read %d bytes: %v", n, err)
	}
	return b
}

// ExpectClosed asserts the server closes the connection within 5 seconds,
// skipping over any packets it sends first (a v5 DISCONNECT, say); it
// returns those packets.
func (c *Conn) ExpectClosed() []packet.Packet {
	c.t.Helper()
	var got []packet.Packet
	deadline := time.Now().Add(5 * time.Second)
	for {
		p, err := c.RecvTimeout(time.Until(deadline))
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				c.t.Fatalf("brokertest: connection still open after 5s (got %v)", got)
			}
			return got
		}
		got = append(got, p)
	}
}

// ExpectNothing asserts no packet arrives within d.
func (c *Conn) ExpectNothing(d time.Duration) {
	c.t.Helper()
	p, err := c.RecvTimeout(d)
	if err == nil {
		c.t.Fatalf("brokertest: unexpected %v", p)
	}
	if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		c.t.Fatalf("brokertest: connection failed: %v", err)
	}
}

// Connect sends CONNECT and expects a successful CONNACK, which it returns.
func (c *Conn) Connect(cp *packet.Connect) *packet.Connack {
	c.t.Helper()
	if cp.Version == 0 {
		cp.Version = c.Version
	}
	if cp.ProtocolName == "" {
		cp.ProtocolName = "MQTT"
		if cp.Version == packet.V31 {
			cp.ProtocolName = "MQIsdp"
		}
	}
	c.Send(cp)
	ack, ok := c.Recv().(*packet.Connack)
	if !ok {
		c.t.Fatalf("brokertest: expected CONNACK")
	}
	if ack.ReasonCode != packet.Success {
		c.t.Fatalf("brokertest: CONNACK %v", ack.ReasonCode)
	}
	return ack
}

// Subscribe subscribes to filters at qos and returns the SUBACK.
func (c *Conn) Subscribe(id uint16, qos byte, filters ...string) *packet.Suback {
	c.t.Helper()
	sp := &packet.Subscribe{PacketID: id}
	for _, f := range filters {
		sp.Subscriptions = append(sp.Subscriptions, packet.Subscription{Filter: f, QoS: qos})
	}
	c.Send(sp)
	ack, ok := c.Recv().(*packet.Suback)
	if !ok || ack.PacketID != id {
		c.t.Fatalf("brokertest: expected SUBACK %d", id)
	}
	return ack
}

// ExpectPublish reads the next packet and asserts it is a PUBLISH.
func (c *Conn) ExpectPublish() *packet.Publish {
	c.t.Helper()
	p := c.Recv()
	pub, ok := p.(*packet.Publish)
	if !ok {
		c.t.Fatalf("brokertest: expected PUBLISH, got %v", p)
	}
	return pub
}

// TryDial opens a TCP connection to addr or returns the error (for polling
// until a server listens).
func TryDial(addr string) (net.Conn, error) {
	return net.DialTimeout("tcp", addr, time.Second)
}
