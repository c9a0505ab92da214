package broker_test

// Shared helpers of the black-box conformance tests (conformance_NN_*_test.go).
// Every test starts a real server on 127.0.0.1:0 with brokertest.Start and
// talks to it over TCP: raw bytes or packets in, exact packets out.

import (
	"reflect"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// bothVersions are the protocol versions most rules are checked for; MQTT 3.1
// (MQIsdp) is added where connect basics are concerned.
var (
	bothVersions = []packet.Version{packet.V311, packet.V5}
	allVersions  = []packet.Version{packet.V31, packet.V311, packet.V5}
)

// forVersions runs f as a subtest per version.
func forVersions(t *testing.T, vs []packet.Version, f func(t *testing.T, v packet.Version)) {
	t.Helper()
	for _, v := range vs {
		t.Run("v"+v.String(), func(t *testing.T) { f(t, v) })
	}
}

// sessionExpiry is the v5 Session Expiry Interval the helpers ask for when a
// session should outlive its connection (3.x: clean session 0).
const sessionExpiry = 300

// connectPkt builds a CONNECT for id. persistent asks for a session that
// outlives the connection: clean session 0 (3.x), or clean start 0 with a
// Session Expiry Interval (5.0).
func connectPkt(v packet.Version, id string, persistent bool) *packet.Connect {
	cp := &packet.Connect{Version: v, ClientID: id, CleanStart: !persistent}
	if v == packet.V5 && persistent {
		cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](sessionExpiry)}
	}
	return cp
}

// okConnack is the CONNACK the broker sends on success: in 5.0 it carries the
// server's Receive Maximum (max_inflight_messages, 20), Topic Alias Maximum
// and its default Maximum Packet Size.
func okConnack(v packet.Version, sessionPresent bool) *packet.Connack {
	ack := &packet.Connack{SessionPresent: sessionPresent}
	if v == packet.V5 {
		ack.Props = &packet.Properties{ReceiveMaximum: packet.Ptr[uint16](20), TopicAliasMaximum: packet.Ptr[uint16](10),
			MaximumPacketSize: packet.Ptr[uint32](broker.DefaultMaxPacketSize)}
	}
	return ack
}

// connect dials srv and connects id, asserting the exact CONNACK.
func connect(t *testing.T, srv *brokertest.Server, v packet.Version, id string, persistent, sessionPresent bool) *brokertest.Conn {
	t.Helper()
	c := brokertest.Dial(t, srv.Addr, v)
	c.Send(connectPkt(v, id, persistent))
	c.ExpectPacket(okConnack(v, sessionPresent))
	return c
}

// client connects a fresh clean-session client.
func client(t *testing.T, srv *brokertest.Server, v packet.Version, id string) *brokertest.Conn {
	t.Helper()
	return connect(t, srv, v, id, false, false)
}

// subscribe subscribes c to filter at qos and asserts the granted QoS.
func subscribe(t *testing.T, c *brokertest.Conn, id uint16, qos byte, filters ...string) {
	t.Helper()
	ack := c.Subscribe(id, qos, filters...)
	for i, rc := range ack.ReasonCodes {
		if rc != packet.ReasonCode(qos) {
			t.Fatalf("SUBACK code %d for %q = %v, want granted QoS %d", i, filters[i], rc, qos)
		}
	}
}

// pub builds a PUBLISH.
func pub(topicName, payload string, qos byte, id uint16) *packet.Publish {
	p := &packet.Publish{Topic: topicName, QoS: qos, PacketID: id}
	if payload != "" {
		p.Payload = []byte(payload)
	}
	return p
}

// disconnect sends a normal DISCONNECT and waits for the server to close.
func disconnect(t *testing.T, c *brokertest.Conn) {
	t.Helper()
	c.Send(&packet.Disconnect{})
	c.ExpectClosedWith()
}

// waitSessions polls until the server reports n offline (disconnected)
// sessions: a closed client has been detached.
func waitOffline(t *testing.T, srv *brokertest.Server, n int64) {
	t.Helper()
	brokertest.Eventually(t, 5*time.Second, func() bool { return srv.Stats().ClientsDisconnected == n },
		"want %d offline sessions, have %d", n, srv.Stats().ClientsDisconnected)
}

// waitConnected polls until the server counts n connected clients.
func waitConnected(t *testing.T, srv *brokertest.Server, n int64) {
	t.Helper()
	brokertest.Eventually(t, 5*time.Second, func() bool { return srv.Stats().ClientsConnected == n },
		"want %d connected clients, have %d", n, srv.Stats().ClientsConnected)
}

// rawConnect encodes a CONNECT by hand, so that tests can set any protocol
// name, level and flag byte; payload follows the variable header (for 5.0 an
// empty property list is written first).
func rawConnect(name string, level, flags byte, keepAlive uint16, payload ...[]byte) []byte {
	var body []byte
	body = appendStr(body, name)
	body = append(body, level, flags, byte(keepAlive>>8), byte(keepAlive))
	if level == 5 {
		body = append(body, 0) // property length
	}
	for _, p := range payload {
		body = append(body, p...)
	}
	return frame(0x10, body)
}

// frame prefixes body with a first byte and its remaining length.
func frame(first byte, body []byte) []byte {
	return append(packet.AppendVarint([]byte{first}, uint32(len(body))), body...)
}

// appendStr appends a length-prefixed string.
func appendStr(b []byte, s string) []byte {
	return append(append(b, byte(len(s)>>8), byte(len(s))), s...)
}

// str returns a length-prefixed string.
func str(s string) []byte { return appendStr(nil, s) }

// quiet is how long a test waits to be sure that nothing more arrives.
const quiet = 150 * time.Millisecond

// fiveSec bounds every wait for something that should happen promptly.
const fiveSec = 5 * time.Second

// expectPub reads the next packet and asserts that it is want exactly, except
// that a QoS 1/2 PUBLISH may carry any non-zero packet id [MQTT-2.3.1-1]
// (5.0 [MQTT-2.2.1-3]) when want.PacketID is 0. It returns the PUBLISH.
func expectPub(t *testing.T, c *brokertest.Conn, want *packet.Publish) *packet.Publish {
	t.Helper()
	got := c.ExpectPublish()
	w := *want
	if w.QoS > 0 && w.PacketID == 0 {
		if got.PacketID == 0 {
			t.Fatalf("QoS %d PUBLISH with packet id 0", got.QoS)
		}
		w.PacketID = got.PacketID
	}
	if !reflect.DeepEqual(got, &w) {
		t.Fatalf("got  %s\nwant %s", brokertest.Describe(got), brokertest.Describe(&w))
	}
	return got
}

// stripReason returns a copy of p without its v5 Reason String (properties
// left empty become nil), and that string. Packets without one come back
// as they are.
func stripReason(p packet.Packet) (packet.Packet, string) {
	var props **packet.Properties
	switch q := p.(type) {
	case *packet.Connack:
		c := *q
		p, props = &c, &c.Props
	case *packet.Disconnect:
		c := *q
		p, props = &c, &c.Props
	case *packet.Suback:
		c := *q
		p, props = &c, &c.Props
	case *packet.Puback:
		c := *q
		p, props = &c, &c.Props
	case *packet.Pubrec:
		c := *q
		p, props = &c, &c.Props
	case *packet.Auth:
		c := *q
		p, props = &c, &c.Props
	default:
		return p, ""
	}
	if *props == nil {
		return p, ""
	}
	pp := **props
	reason := pp.ReasonString
	pp.ReasonString = ""
	if pp.IsEmpty() {
		*props = nil
	} else {
		*props = &pp
	}
	return p, reason
}

// expectPacketReason reads the next packet and asserts that, without its
// Reason String, it is want exactly; it returns the reason string.
func expectPacketReason(t *testing.T, c *brokertest.Conn, want packet.Packet) string {
	t.Helper()
	got, reason := stripReason(c.Recv())
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %s\nwant %s", brokertest.Describe(got), brokertest.Describe(want))
	}
	return reason
}

// expectClosedWithReason asserts that the server sends exactly want
// (Reason Strings aside) and closes; it returns the reason strings.
func expectClosedWithReason(t *testing.T, c *brokertest.Conn, want ...packet.Packet) []string {
	t.Helper()
	raw := c.ExpectClosed()
	got := make([]packet.Packet, len(raw))
	reasons := make([]string, len(raw))
	for i, p := range raw {
		got[i], reasons[i] = stripReason(p)
	}
	if len(got) != len(want) || (len(want) > 0 && !reflect.DeepEqual(got, want)) {
		var g, w []string
		for _, p := range got {
			g = append(g, brokertest.Describe(p))
		}
		for _, p := range want {
			w = append(w, brokertest.Describe(p))
		}
		t.Fatalf("before close got %v, want %v", g, w)
	}
	return reasons
}
