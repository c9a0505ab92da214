package broker

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// White-box tests of the session gauges behind Stats (stats.go), and the
// raw-packet helpers the other white-box tests of this package share
// (shared_prune_test.go, fanout_store_test.go).

// wbServe starts srv on 127.0.0.1 port 0 and returns its address; it is
// shut down by t.Cleanup.
func wbServe(t testing.TB, srv *Server) string {
	t.Helper()
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
	return l.Addr().String()
}

// wbEventually polls cond until it holds or the deadline passes.
func wbEventually(t testing.TB, timeout time.Duration, cond func() bool, what string, args ...any) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: "+what, args...)
		}
	}
}

// wbClient is a raw MQTT connection.
type wbClient struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
	v  packet.Version
	// wait bounds each read; 0: 5 s.
	wait time.Duration
}

func wbDial(t testing.TB, addr string, v packet.Version) *wbClient {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &wbClient{t: t, nc: nc, r: bufio.NewReader(nc), v: v}
}

func (c *wbClient) send(p packet.Packet) {
	c.t.Helper()
	if err := packet.Write(c.nc, p, c.v); err != nil {
		c.t.Fatal(err)
	}
}

func (c *wbClient) recv() packet.Packet {
	c.t.Helper()
	wait := c.wait
	if wait == 0 {
		wait = 5 * time.Second
	}
	c.nc.SetReadDeadline(time.Now().Add(wait))
	p, err := packet.Read(c.r, c.v, 0)
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return p
}

func (c *wbClient) expect(want packet.Type) packet.Packet {
	c.t.Helper()
	p := c.recv()
	if p.Type() != want {
		c.t.Fatalf("got %s, want %s", p.Type(), want)
	}
	return p
}

// connect sends CONNECT (clean start or not; for 5.0 with the session
// expiry interval) and returns the CONNACK.
func (c *wbClient) connect(id string, clean bool, expiry uint32) *packet.Connack {
	c.t.Helper()
	cp := &packet.Connect{Version: c.v, ProtocolName: "MQTT", ClientID: id, CleanStart: clean, KeepAlive: 60}
	if c.v == packet.V5 && expiry > 0 {
		cp.Props = &packet.Properties{SessionExpiry: packet.Ptr(expiry)}
	}
	c.send(cp)
	ack := c.expect(packet.CONNACK).(*packet.Connack)
	if ack.ReasonCode != 0 {
		c.t.Fatalf("CONNACK %v", ack.ReasonCode)
	}
	return ack
}

func (c *wbClient) subscribe(qos byte, filters ...string) {
	c.t.Helper()
	subs := make([]packet.Subscription, len(filters))
	for i, f := range filters {
		subs[i] = packet.Subscription{Filter: f, QoS: qos}
	}
	c.send(&packet.Subscribe{PacketID: 1, Subscriptions: subs})
	ack := c.expect(packet.SUBACK).(*packet.Suback)
	for i, rc := range ack.ReasonCodes {
		if rc != packet.ReasonCode(qos) {
			c.t.Fatalf("SUBACK code %d for %s: %v", i, filters[i], rc)
		}
	}
}

func (c *wbClient) unsubscribe(filters ...string) {
	c.t.Helper()
	c.send(&packet.Unsubscribe{PacketID: 2, Filters: filters})
	c.expect(packet.UNSUBACK)
}

// publish sends a QoS 1 PUBLISH and waits for its PUBACK.
func (c *wbClient) publish1(topic string, payload []byte, props *packet.Properties) {
	c.t.Helper()
	c.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: 7, Payload: payload, Props: props})
	c.expect(packet.PUBACK)
}

// ping waits for a PINGRESP: everything sent before it was handled.
func (c *wbClient) ping() {
	c.t.Helper()
	c.send(&packet.Pingreq{})
	c.expect(packet.PINGRESP)
}

// drain acknowledges every QoS 1 PUBLISH that arrives until a PINGRESP
// comes with none before it, and returns their topics.
func (c *wbClient) drain() []string {
	c.t.Helper()
	var topics []string
	for {
		c.send(&packet.Pingreq{})
		n := 0
		for p := c.recv(); p.Type() != packet.PINGRESP; p = c.recv() {
			pp, ok := p.(*packet.Publish)
			if !ok {
				c.t.Fatalf("got %s while draining", p.Type())
			}
			topics = append(topics, pp.Topic)
			c.send(&packet.Puback{PacketID: pp.PacketID})
			n++
		}
		if n == 0 {
			return topics
		}
	}
}

func (c *wbClient) disconnect() {
	c.t.Helper()
	c.send(&packet.Disconnect{})
	c.nc.Close()
}

// walkStats is what Stats used to compute by locking every session: the
// brute-force reference for the gauges.
func walkStats(srv *Server) (offline, inflight, queued int64) {
	srv.sessMu.Lock()
	defer srv.sessMu.Unlock()
	for _, ss := range srv.sessions {
		ss.mu.Lock()
		if ss.conn == nil {
			offline++
		}
		inflight += int64(len(ss.inflight))
		queued += int64(len(ss.queue) - ss.qhead)
		ss.mu.Unlock()
	}
	return
}

type gauges struct{ offline, inflight, queued int64 }

func (g gauges) String() string {
	return fmt.Sprintf("offline %d inflight %d queued %d", g.offline, g.inflight, g.queued)
}

// checkGauges waits for the walk to show want, then requires Stats to show
// exactly the same (the server is quiescent by then).
func checkGauges(t *testing.T, srv *Server, step string, want gauges) {
	t.Helper()
	var walk gauges
	wbEventually(t, 5*time.Second, func() bool {
		o, i, q := walkStats(srv)
		walk = gauges{o, i, q}
		return walk == want
	}, "%s: walk shows %v, want %v", step, &walk, want)
	st := srv.Stats()
	if got := (gauges{st.ClientsDisconnected, st.Inflight, st.Queued}); got != want {
		t.Fatalf("%s: Stats shows %v, the walk %v", step, got, want)
	}
}

// Stats keeps exact session gauges (offline sessions, messages in flight,
// queued) through connect, subscribe, queueing for offline sessions,
// acknowledgements, message and session expiry, takeover and a clean start
// that discards a session [MQTT-3.1.2-4], [MQTT-3.1.4-3], [MQTT-3.3.2-5].
func TestStats_GaugesMatchWalk_MQTT_3_1_2_4(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, MaxInflight: 2, Store: mem.New(),
		Logger: slog.New(slog.DiscardHandler)})
	addr := wbServe(t, srv)
	checkGauges(t, srv, "empty", gauges{})

	pub := wbDial(t, addr, packet.V5)
	pub.connect("pub", true, 0)

	// Three persistent subscribers go offline.
	for _, id := range []string{"off1", "off2", "off3"} {
		c := wbDial(t, addr, packet.V311)
		c.connect(id, false, 0)
		c.subscribe(1, "w/#")
		c.disconnect()
	}
	checkGauges(t, srv, "offline sessions", gauges{offline: 3})

	// One connected subscriber that does not acknowledge: 2 in flight
	// (MaxInflight), the rest queued.
	on := wbDial(t, addr, packet.V311)
	on.connect("on", false, 0)
	on.subscribe(1, "w/#")
	for range 5 {
		pub.publish1("w/x", []byte("m"), nil)
	}
	// A message that expires while queued.
	pub.publish1("w/exp", []byte("e"), &packet.Properties{MessageExpiry: packet.Ptr(uint32(1))})
	checkGauges(t, srv, "after 6 publishes", gauges{offline: 3, inflight: 2, queued: 3*6 + 4})

	// Acknowledging moves a queued message into the window.
	first := on.expect(packet.PUBLISH).(*packet.Publish)
	on.expect(packet.PUBLISH)
	on.send(&packet.Puback{PacketID: first.PacketID})
	on.expect(packet.PUBLISH)
	checkGauges(t, srv, "after one PUBACK", gauges{offline: 3, inflight: 2, queued: 3*6 + 3})

	// Takeover of the connected session: the new connection resumes it,
	// gets what is in flight again [MQTT-3.1.4-3] and drains the rest.
	on2 := wbDial(t, addr, packet.V311)
	if ack := on2.connect("on", false, 0); !ack.SessionPresent {
		t.Fatal("takeover: no session present")
	}
	checkGauges(t, srv, "after takeover", gauges{offline: 3, inflight: 2, queued: 3*6 + 3})
	if got := on2.drain(); len(got) < 4 {
		t.Fatalf("after takeover got %v", got)
	}
	checkGauges(t, srv, "drained", gauges{offline: 3, queued: 3 * 6})

	// Clean start discards off1's session and its 6 queued messages; the
	// new clean session ends when it disconnects.
	c := wbDial(t, addr, packet.V311)
	if ack := c.connect("off1", true, 0); ack.SessionPresent {
		t.Fatal("clean start: session present")
	}
	c.disconnect()
	wbEventually(t, 5*time.Second, func() bool {
		srv.sessMu.Lock()
		defer srv.sessMu.Unlock()
		return srv.sessions["off1"] == nil
	}, "off1's clean session to end")

	// A 5.0 session with a 1 s expiry goes offline with a queue and expires.
	e := wbDial(t, addr, packet.V5)
	e.connect("exp", false, 1)
	e.subscribe(1, "w/#")
	e.disconnect()
	checkGauges(t, srv, "exp offline", gauges{offline: 3, queued: 2 * 6})
	pub.publish1("w/x", []byte("m"), nil)
	wbEventually(t, 10*time.Second, func() bool { return srv.Stats().ClientsExpired == 1 }, "session exp to expire")

	// off2 resumes after the 1 s message expiry passed: the expired message
	// is dropped on refill, the rest goes out and is acknowledged.
	wbEventually(t, 5*time.Second, func() bool {
		srv.sessMu.Lock()
		s := srv.sessions["off2"]
		srv.sessMu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, om := range s.queue[s.qhead:] {
			if om.msg.Topic == "w/exp" {
				return om.msg.expired(time.Now())
			}
		}
		return false
	}, "the message to expire")
	r := wbDial(t, addr, packet.V311)
	r.connect("off2", false, 0)
	// 5 + the one published after exp went offline; not the expired one.
	if got := r.drain(); len(got) != 6 || slices.Contains(got, "w/exp") {
		t.Fatalf("off2 resumed got %v", got)
	}
	// Left: off3 offline with 7 queued; on connected with the last
	// message in flight.
	checkGauges(t, srv, "end", gauges{offline: 1, inflight: 1, queued: 7})
	r.disconnect()
	checkGauges(t, srv, "off2 offline again", gauges{offline: 2, inflight: 1, queued: 7})
	on2.disconnect()
	checkGauges(t, srv, "on offline", gauges{offline: 3, inflight: 1, queued: 7})
}

// Stats takes no session lock: it returns while a session's mu is held
// (before the gauges, it walked and locked every session).
func TestStats_TakesNoSessionLock(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	addr := wbServe(t, srv)
	c := wbDial(t, addr, packet.V311)
	c.connect("held", false, 0)
	c.disconnect()
	var s *session
	wbEventually(t, 5*time.Second, func() bool {
		srv.sessMu.Lock()
		s = srv.sessions["held"]
		srv.sessMu.Unlock()
		if s == nil {
			return false
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.conn == nil
	}, "the session offline")
	s.mu.Lock()
	locked := true
	defer func() {
		if locked { // failed: let the server shut down
			s.mu.Unlock()
		}
	}()
	done := make(chan Stats, 1)
	go func() { done <- srv.Stats() }()
	var st Stats
	wbEventually(t, 5*time.Second, func() bool {
		select {
		case st = <-done:
			return true
		default:
			return false
		}
	}, "Stats to return while a session is locked")
	s.mu.Unlock()
	locked = false
	if st.ClientsDisconnected != 1 {
		t.Fatalf("ClientsDisconnected = %d, want 1", st.ClientsDisconnected)
	}
}

// BenchmarkStats: Stats with 10,000 sessions (a $SYS tick, a Prometheus
// scrape).
func BenchmarkStats(b *testing.B) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	m := &Message{Topic: "t", Payload: []byte("x"), QoS: 1}
	for i := range 10000 {
		s := newSession(srv, fmt.Sprintf("c%d", i))
		s.persistent = true
		s.mu.Lock()
		s.enqueueLocked(&outMsg{msg: m, qos: 1})
		s.mu.Unlock()
		srv.sessions[s.id] = s
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_ = srv.Stats()
	}
}
