package broker_test

// MQTT 5 flow control (section 4.9): the client's Receive Maximum limits
// what the server sends; the server's Receive Maximum limits what a client
// may send.

import (
	"bytes"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// encodeAll encodes packets into one buffer, to arrive in one read burst.
func encodeAll(t *testing.T, v packet.Version, ps ...packet.Packet) []byte {
	t.Helper()
	var buf bytes.Buffer
	for _, p := range ps {
		if err := packet.Write(&buf, p, v); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// More unacknowledged QoS 2 PUBLISH than the server's Receive Maximum is
// DISCONNECT 0x93 [MQTT-3.3.4-7]; a re-sent PUBLISH with a held id does not
// count again, and PUBCOMP frees a slot.
func TestV5Flow_ServerReceiveMaximumQoS2_MQTT_3_3_4_7(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.ReceiveMaximum = 2 })
	c, ack := connect5(t, srv, "rm2", nil)
	if got := ack.Props.ReceiveMaximum; got == nil || *got != 2 {
		t.Fatalf("CONNACK Receive Maximum %v, want 2", got)
	}
	for id := uint16(1); id <= 2; id++ {
		c.Send(pub("q2", "x", 2, id))
		c.ExpectPacket(&packet.Pubrec{PacketID: id, ReasonCode: packet.NoMatchingSubscribers})
	}
	dup := pub("q2", "x", 2, 2)
	dup.Dup = true
	c.Send(dup)
	c.ExpectPacket(&packet.Pubrec{PacketID: 2}) // held, not routed again
	c.Send(&packet.Pubrel{PacketID: 1})
	c.ExpectPacket(&packet.Pubcomp{PacketID: 1})
	c.Send(pub("q2", "x", 2, 3)) // a slot was freed
	c.ExpectPacket(&packet.Pubrec{PacketID: 3, ReasonCode: packet.NoMatchingSubscribers})
	c.Send(pub("q2", "x", 2, 4))
	expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.ReceiveMaximumExceeded})
}

// With persistence, PUBACKs wait for the end of the read burst; those
// count as unacknowledged: a burst of Receive Maximum QoS 1 PUBLISH is
// fine, one more is DISCONNECT 0x93 [MQTT-3.3.4-7].
func TestV5Flow_ServerReceiveMaximumDeferredAcks_MQTT_3_3_4_7(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.ReceiveMaximum = 3; o.Store = mem.New() })
	retained := func(id uint16) *packet.Publish {
		p := pub("keep", "x", 1, id)
		p.Retain = true // a store write: the PUBACK waits for the burst's end
		return p
	}
	c, _ := connect5(t, srv, "rm3", nil)
	c.SendRaw(encodeAll(t, packet.V5, retained(1), retained(2), retained(3)))
	for id := uint16(1); id <= 3; id++ {
		c.ExpectPacket(&packet.Puback{PacketID: id, ReasonCode: packet.NoMatchingSubscribers})
	}
	c.SendRaw(encodeAll(t, packet.V5, retained(4), retained(5), retained(6), retained(7)))
	// The three accepted are acknowledged once on disk, then the fourth ends it.
	noSubs := packet.NoMatchingSubscribers
	expectClosedWithReason(t, c, &packet.Puback{PacketID: 4, ReasonCode: noSubs}, &packet.Puback{PacketID: 5, ReasonCode: noSubs},
		&packet.Puback{PacketID: 6, ReasonCode: noSubs}, &packet.Disconnect{ReasonCode: packet.ReceiveMaximumExceeded})

	// 3.x clients have no Receive Maximum.
	v3 := client(t, srv, packet.V311, "v3")
	v3.SendRaw(encodeAll(t, packet.V311, retained(1), retained(2), retained(3), retained(4), retained(5)))
	for id := uint16(1); id <= 5; id++ {
		v3.ExpectPacket(&packet.Puback{PacketID: id})
	}
}

// The server sends no more than the client's Receive Maximum QoS 1/2
// PUBLISH unacknowledged [MQTT-3.3.4-9], and delays nothing else meanwhile
// [MQTT-3.3.4-10].
func TestV5Flow_ClientReceiveMaximum_MQTT_3_3_4_9(t *testing.T) {
	srv := brokertest.Start(t)
	sub, _ := connect5(t, srv, "rm-sub", &packet.Properties{ReceiveMaximum: packet.Ptr[uint16](1)})
	subscribe(t, sub, 1, 1, "rm/#")
	p := client(t, srv, packet.V5, "rm-pub")
	p.Publish(pub("rm/1", "one", 1, 1))
	p.Publish(pub("rm/2", "two", 1, 2))
	first := expectPub(t, sub, pub("rm/1", "one", 1, 0))
	sub.Ping() // [MQTT-3.3.4-10]: PINGRESP is not held back
	sub.ExpectNothing(quiet)
	sub.Ack(first)
	expectPub(t, sub, pub("rm/2", "two", 1, 0))
}
