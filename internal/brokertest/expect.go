package brokertest

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"reflect"
	"testing"

	"github.com/mqttd/mqttd/packet"
)

// DialConnect dials addr, sends cp (its Version decides the protocol) and
// expects a successful CONNACK, which it returns with the connection.
func DialConnect(t testing.TB, addr string, cp *packet.Connect) (*Conn, *packet.Connack) {
	t.Helper()
	v := cp.Version
	if v == 0 {
		v = packet.V311
	}
	c := Dial(t, addr, v)
	return c, c.Connect(cp)
}

// ExpectPacket reads the next packet and asserts that it equals want exactly
// (every field, properties included); it returns what was read.
func (c *Conn) ExpectPacket(want packet.Packet) packet.Packet {
	c.t.Helper()
	got := c.Recv()
	if !reflect.DeepEqual(got, want) {
		c.t.Fatalf("brokertest: got  %s\n            want %s", Describe(got), Describe(want))
	}
	return got
}

// ExpectBytes reads len(want) bytes and asserts that they are want.
func (c *Conn) ExpectBytes(want []byte) {
	c.t.Helper()
	if got := c.RecvRaw(len(want)); !bytes.Equal(got, want) {
		c.t.Fatalf("brokertest: got bytes % X, want % X", got, want)
	}
}

// ExpectClosedWith asserts that the server sends exactly the packets want
// (none for a plain close) and then closes the connection.
func (c *Conn) ExpectClosedWith(want ...packet.Packet) {
	c.t.Helper()
	got := c.ExpectClosed()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !reflect.DeepEqual(got, want) {
		c.t.Fatalf("brokertest: before close got %s, want %s", describeAll(got), describeAll(want))
	}
}

// RecvPublishes reads n packets and asserts that each is a PUBLISH.
func (c *Conn) RecvPublishes(n int) []*packet.Publish {
	c.t.Helper()
	out := make([]*packet.Publish, 0, n)
	for range n {
		out = append(out, c.ExpectPublish())
	}
	return out
}

// Publish sends p and completes the publisher's side of its QoS flow: it
// expects PUBACK (QoS 1) or PUBREC, sends PUBREL and expects PUBCOMP
// (QoS 2). It returns the PUBACK or PUBREC reason code (Success for QoS 0).
// The connection must not be receiving other packets meanwhile.
func (c *Conn) Publish(p *packet.Publish) packet.ReasonCode {
	c.t.Helper()
	c.Send(p)
	switch p.QoS {
	case 1:
		got := c.Recv()
		ack, ok := got.(*packet.Puback)
		if !ok || ack.PacketID != p.PacketID {
			c.t.Fatalf("brokertest: expected PUBACK %d, got %s", p.PacketID, Describe(got))
		}
		return ack.ReasonCode
	case 2:
		got := c.Recv()
		rec, ok := got.(*packet.Pubrec)
		if !ok || rec.PacketID != p.PacketID {
			c.t.Fatalf("brokertest: expected PUBREC %d, got %s", p.PacketID, Describe(got))
		}
		if rec.ReasonCode.IsError() {
			return rec.ReasonCode
		}
		c.Send(&packet.Pubrel{PacketID: p.PacketID})
		got = c.Recv()
		if comp, ok := got.(*packet.Pubcomp); !ok || comp.PacketID != p.PacketID {
			c.t.Fatalf("brokertest: expected PUBCOMP %d, got %s", p.PacketID, Describe(got))
		}
		return rec.ReasonCode
	}
	return packet.Success
}

// Ack completes the receiver's side of a PUBLISH the server sent: PUBACK for
// QoS 1; PUBREC, then the expected PUBREL, then PUBCOMP for QoS 2.
func (c *Conn) Ack(p *packet.Publish) {
	c.t.Helper()
	switch p.QoS {
	case 1:
		c.Send(&packet.Puback{PacketID: p.PacketID})
	case 2:
		c.Send(&packet.Pubrec{PacketID: p.PacketID})
		c.ExpectPacket(&packet.Pubrel{PacketID: p.PacketID})
		c.Send(&packet.Pubcomp{PacketID: p.PacketID})
	}
}

// Ping sends PINGREQ and expects PINGRESP: a round trip that proves the
// connection is open and everything sent before it was processed.
func (c *Conn) Ping() {
	c.t.Helper()
	c.Send(&packet.Pingreq{})
	if p := c.Recv(); p.Type() != packet.PINGRESP {
		c.t.Fatalf("brokertest: expected PINGRESP, got %s", Describe(p))
	}
}

// Describe renders a packet with its fields for failure messages.
func Describe(p packet.Packet) string {
	if p == nil || reflect.ValueOf(p).IsNil() {
		return "<nil>"
	}
	v := reflect.ValueOf(p).Elem()
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s{", p.Type())
	for i := range v.NumField() {
		f := v.Field(i)
		if f.IsZero() {
			continue
		}
		if b.Len() > len(p.Type().String())+1 {
			b.WriteString(" ")
		}
		val := f.Interface()
		switch x := val.(type) {
		case []byte:
			val = fmt.Sprintf("%q", x)
		case *packet.Properties:
			val = fmt.Sprintf("%+v", *x)
		case *packet.Will:
			val = fmt.Sprintf("%+v", *x)
		}
		fmt.Fprintf(&b, "%s:%v", v.Type().Field(i).Name, val)
	}
	b.WriteString("}")
	return b.String()
}

func describeAll(ps []packet.Packet) string {
	var b bytes.Buffer
	b.WriteString("[")
	for i, p := range ps {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(Describe(p))
	}
	b.WriteString("]")
	return b.String()
}

// NewConn wraps an already-dialed connection (one with custom socket options,
// say) as a raw client connection speaking v; it is closed when the test ends.
func NewConn(t testing.TB, nc net.Conn, v packet.Version) *Conn {
	t.Cleanup(func() { nc.Close() })
	return &Conn{t: t, NC: nc, R: bufio.NewReader(nc), Version: v}
}
