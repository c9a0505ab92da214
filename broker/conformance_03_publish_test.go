package broker_test

import (
	"fmt"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// QoS 0 end to end, byte for byte: the subscriber gets a PUBLISH with DUP 0
// [MQTT-3.3.1-2], no packet id [MQTT-2.3.1-5] and the topic it subscribed to
// [MQTT-3.3.2-3].
func TestPublish_QoS0Bytes_MQTT_3_3_1_2(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, allVersions, func(t *testing.T, v packet.Version) {
		sub := client(t, srv, v, "q0sub")
		subscribe(t, sub, 1, 2, "q0/+")
		p := client(t, srv, v, "q0pub")
		body := append(str("q0/t"), 'h', 'i')
		if v == packet.V5 {
			body = append(str("q0/t"), 0, 'h', 'i')
		}
		p.SendRaw(frame(0x30, body))
		sub.ExpectBytes(frame(0x30, body))
		p.Ping()
		p.ExpectNothing(quiet) // nothing is acknowledged at QoS 0
	})
}

// QoS 1: the server answers PUBACK with the PUBLISH's packet id
// [MQTT-4.3.2-2] (5.0 [MQTT-4.3.2-4], 0x10 when nobody subscribed), and a
// PUBLISH with the same id after PUBACK is a new message [MQTT-4.3.2-5]
// (5.0). The subscriber gets it at QoS 1 with a non-zero id [MQTT-4.3.2-1]
// and DUP 0 though the publisher's copy had DUP 1 [MQTT-3.3.1-3].
func TestPublish_QoS1Flow_MQTT_4_3_2_2(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		// A topic of each version's own: the previous version's subscriber
		// may still be subscribed while its connection's close is handled.
		tp := fmt.Sprintf("q1/%d", v)
		p := client(t, srv, v, "q1pub")
		// Nobody subscribed yet.
		p.SendRaw(frame(0x32, append(str(tp), append([]byte{0x01, 0x02}, props0(v)...)...)))
		if v == packet.V5 {
			p.ExpectBytes([]byte{0x40, 0x03, 0x01, 0x02, 0x10})
		} else {
			p.ExpectBytes([]byte{0x40, 0x02, 0x01, 0x02})
		}
		sub := client(t, srv, v, "q1sub")
		subscribe(t, sub, 1, 1, tp)
		for i := range 2 { // same packet id twice, DUP set on the second
			first := byte(0x32)
			if i == 1 {
				first = 0x3A
			}
			p.SendRaw(frame(first, append(str(tp), append(append([]byte{0x01, 0x02}, props0(v)...), 'm')...)))
			p.ExpectBytes([]byte{0x40, 0x02, 0x01, 0x02})
			got := expectPub(t, sub, pub(tp, "m", 1, 0))
			sub.Ack(got)
		}
	})
}

// props0 is an empty property list in 5.0, nothing before.
func props0(v packet.Version) []byte {
	if v == packet.V5 {
		return []byte{0}
	}
	return nil
}

// QoS 2 inbound: PUBREC with the packet id; a re-sent PUBLISH with the same id
// before PUBREL is acknowledged again but not delivered twice; PUBREL gets
// PUBCOMP; after PUBCOMP the id is free for a new message [MQTT-4.3.3-2]
// (5.0 [MQTT-4.3.3-8], [MQTT-4.3.3-9], [MQTT-4.3.3-10], [MQTT-4.3.3-11]).
func TestPublish_QoS2InboundDedup_MQTT_4_3_3_2(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		sub := client(t, srv, v, "q2sub")
		subscribe(t, sub, 1, 2, "q2/t")
		p := client(t, srv, v, "q2pub")
		for round := range 2 {
			payload := fmt.Sprintf("r%d", round)
			p.Send(pub("q2/t", payload, 2, 77))
			p.ExpectPacket(&packet.Pubrec{PacketID: 77})
			dup := pub("q2/t", payload, 2, 77)
			dup.Dup = true
			p.Send(dup)
			p.ExpectPacket(&packet.Pubrec{PacketID: 77})
			got := expectPub(t, sub, pub("q2/t", payload, 2, 0))
			sub.Ack(got)
			sub.ExpectNothing(quiet) // exactly one copy
			p.Send(&packet.Pubrel{PacketID: 77})
			p.ExpectPacket(&packet.Pubcomp{PacketID: 77})
		}
		// PUBREL for an unknown id still completes: PUBCOMP (5.0: 0x92).
		p.Send(&packet.Pubrel{PacketID: 78})
		want := &packet.Pubcomp{PacketID: 78}
		if v == packet.V5 {
			want.ReasonCode = packet.PacketIdentifierNotFound
		}
		p.ExpectPacket(want)
	})
}

// QoS 2 outbound: the server sends PUBLISH QoS 2 with DUP 0 and a non-zero id
// [MQTT-4.3.3-1] (5.0 [MQTT-4.3.3-1], [MQTT-4.3.3-2]), answers PUBREC with a
// PUBREL of the same id and flags 0010 [MQTT-3.6.1-1] (5.0 [MQTT-4.3.3-4]),
// and a PUBCOMP ends the flow (nothing is re-sent).
func TestPublish_QoS2OutboundBytes_MQTT_4_3_3_1(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		sub := client(t, srv, v, "q2out")
		subscribe(t, sub, 1, 2, "q2o")
		p := client(t, srv, v, "q2outpub")
		p.Publish(pub("q2o", "x", 2, 1))
		got := expectPub(t, sub, pub("q2o", "x", 2, 0))
		sub.SendRaw([]byte{0x50, 0x02, byte(got.PacketID >> 8), byte(got.PacketID)})
		sub.ExpectBytes([]byte{0x62, 0x02, byte(got.PacketID >> 8), byte(got.PacketID)})
		sub.SendRaw([]byte{0x70, 0x02, byte(got.PacketID >> 8), byte(got.PacketID)})
		sub.ExpectNothing(quiet)
		brokertest.Eventually(t, fiveSec, func() bool { return srv.Stats().Inflight == 0 }, "message still in flight")
	})
}

// The QoS delivered is the minimum of the published QoS and the granted QoS
// [MQTT-3.8.4-6] (5.0 [MQTT-3.8.4-8]).
func TestPublish_DeliveredQoSIsMinimum_MQTT_3_8_4_6(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		for granted := byte(0); granted <= 2; granted++ {
			sub := client(t, srv, v, fmt.Sprintf("min%d", granted))
			subscribe(t, sub, 1, granted, "min/t")
			p := client(t, srv, v, "minpub")
			for published := byte(0); published <= 2; published++ {
				p.Publish(pub("min/t", "m", published, 9))
				got := expectPub(t, sub, pub("min/t", "m", min(published, granted), 0))
				sub.Ack(got)
			}
			disconnect(t, sub)
		}
	})
}

// Packet ids of outbound QoS 1/2 messages are non-zero and never reused while
// in flight [MQTT-2.3.1-2], [MQTT-4.3.2-1] (5.0 [MQTT-2.2.1-4]); the window
// is Options.MaxInflight: past it messages wait until an acknowledgement frees
// a slot (5.0 [MQTT-3.3.4-9], [MQTT-4.9.0-2] with the client's Receive
// Maximum); messages are delivered in order [MQTT-4.6.0-6].
func TestPublish_InflightWindowAndIDs_MQTT_2_3_1_2(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.MaxInflight = 3
		o.ReceiveMaximum = 20 // the inbound window of okConnack, not MaxInflight's
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		sub := client(t, srv, v, "window")
		subscribe(t, sub, 1, 2, "w/#")
		p := client(t, srv, v, "windowpub")
		for i := range 8 {
			p.Publish(pub("w/t", fmt.Sprint(i), byte(1+i%2), uint16(i+1)))
		}
		inflight := map[uint16]*packet.Publish{}
		next := 0
		read := func(n int) {
			t.Helper()
			for range n {
				got := sub.ExpectPublish()
				if string(got.Payload) != fmt.Sprint(next) || got.PacketID == 0 || got.Dup {
					t.Fatalf("got %s, want payload %d in order", brokertest.Describe(got), next)
				}
				if inflight[got.PacketID] != nil {
					t.Fatalf("packet id %d reused while in flight", got.PacketID)
				}
				inflight[got.PacketID] = got
				next++
			}
		}
		read(3)
		sub.ExpectNothing(quiet) // the window is full
		for next < 8 {
			// Free the oldest slot; exactly one more message comes.
			var oldest *packet.Publish
			for _, m := range inflight {
				if oldest == nil || m.Payload[0] < oldest.Payload[0] {
					oldest = m
				}
			}
			sub.Ack(oldest)
			delete(inflight, oldest.PacketID)
			read(1)
		}
		for _, m := range inflight {
			sub.Ack(m)
		}
		sub.ExpectNothing(quiet)
	})
	t.Run("v5.0 Receive Maximum", func(t *testing.T) {
		sub := brokertest.Dial(t, srv.Addr, packet.V5)
		cp := connectPkt(packet.V5, "recvmax", false)
		cp.Props = &packet.Properties{ReceiveMaximum: packet.Ptr[uint16](1)}
		sub.Connect(cp)
		subscribe(t, sub, 1, 1, "rm")
		p := client(t, srv, packet.V5, "recvmaxpub")
		p.Publish(pub("rm", "a", 1, 1))
		p.Publish(pub("rm", "b", 1, 2))
		first := expectPub(t, sub, pub("rm", "a", 1, 0))
		sub.ExpectNothing(quiet)
		sub.Ack(first)
		sub.Ack(expectPub(t, sub, pub("rm", "b", 1, 0)))
	})
}

// A PUBLISH the Authorize hook refuses is not delivered; 3.1.1 has no way to
// say so and acknowledges normally [MQTT-3.3.5-2]; 5.0 says 0x87.
func TestPublish_NotAuthorized_MQTT_3_3_5_2(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Authorize = func(c *broker.ClientInfo, topicName string, write bool) bool {
			return !write || topicName != "ro/t"
		}
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		sub := client(t, srv, v, "authsub")
		subscribe(t, sub, 1, 2, "ro/t")
		p := client(t, srv, v, "authpub")
		want := packet.Success
		if v == packet.V5 {
			want = packet.NotAuthorized
		}
		for qos := byte(0); qos <= 2; qos++ {
			if rc := p.Publish(pub("ro/t", "no", qos, 3)); qos > 0 && rc != want {
				t.Fatalf("QoS %d: ack code %v, want %v", qos, rc, want)
			}
		}
		if v != packet.V5 {
			// QoS 2 refused in 3.1.1: PUBREC then PUBREL/PUBCOMP as usual.
			p.Ping()
		}
		sub.ExpectNothing(quiet)
	})
}
