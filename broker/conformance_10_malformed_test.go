package broker_test

import (
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/internal/packettest"
	"github.com/mqttd/mqttd/packet"
)

// malCase is one bad input and the reason code of the 5.0 DISCONNECT.
type malCase struct {
	name string
	in   []byte
	rc   packet.ReasonCode
}

// Malformed packets and protocol violations from a connected client close
// the connection [MQTT-4.8.0-1] (5.0 [MQTT-4.13.1-1]: DISCONNECT with the
// reason code first), and the will is published; nothing is routed.
func TestMalformed_ClosesConnection_MQTT_4_8_0_1(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		p0 := props0(v)
		publish := func(first byte, topicName []byte, rest ...byte) []byte {
			b := append(append([]byte{}, topicName...), rest...)
			return frame(first, b)
		}
		cases := []malCase{
			{"[MQTT-3.3.2-2] wildcard # in topic name", publish(0x30, str("a/#"), append(p0, 'x')...), packet.TopicNameInvalid},
			{"[MQTT-3.3.2-2] wildcard + in topic name", publish(0x32, str("a/+/b"), append([]byte{0, 1}, p0...)...), packet.TopicNameInvalid},
			{"[MQTT-1.5.3-1] invalid UTF-8 in topic", publish(0x30, []byte{0, 2, 0xC3, 0x28}, p0...), packet.MalformedPacket},
			{"[MQTT-1.5.3-1] UTF-16 surrogate in topic", publish(0x30, []byte{0, 3, 0xED, 0xA0, 0x80}, p0...), packet.MalformedPacket},
			{"[MQTT-1.5.3-2] U+0000 in topic", publish(0x30, []byte{0, 3, 'a', 0, 'b'}, p0...), packet.MalformedPacket},
			{"[MQTT-4.7.3-1] empty topic name", publish(0x30, str(""), p0...), map[bool]packet.ReasonCode{true: packet.ProtocolError, false: packet.MalformedPacket}[v == packet.V5]},
			{"[MQTT-3.3.1-4] PUBLISH QoS 3", publish(0x36, str("a"), append([]byte{0, 1}, p0...)...), packet.MalformedPacket},
			{"[MQTT-3.3.1-2] DUP with QoS 0", publish(0x38, str("a"), p0...), packet.MalformedPacket},
			{"[MQTT-2.3.1-1] PUBLISH QoS 1 packet id 0", publish(0x32, str("a"), append([]byte{0, 0}, p0...)...), packet.ProtocolError},
			{"[MQTT-3.6.1-1] PUBREL flags 0000", []byte{0x60, 0x02, 0x00, 0x01}, packet.MalformedPacket},
			{"[MQTT-2.2.2-2] PUBACK flags 0010", []byte{0x42, 0x02, 0x00, 0x01}, packet.MalformedPacket},
			{"[MQTT-2.2.2-2] PINGREQ flags 0001", []byte{0xC1, 0x00}, packet.MalformedPacket},
			{"[MQTT-3.14.1-1] DISCONNECT flags 0001", []byte{0xE1, 0x00}, packet.MalformedPacket},
			{"PINGREQ with a body", []byte{0xC0, 0x01, 0x00}, packet.MalformedPacket},
			{"reserved packet type 0", []byte{0x00, 0x00}, packet.MalformedPacket},
			{"[MQTT-1.5.5-1] remaining length of 5 bytes", []byte{0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01}, packet.MalformedPacket},
			{"[MQTT-1.5.5-1] remaining length not minimal", []byte{0xC0, 0x80, 0x00}, packet.MalformedPacket},
			{"remaining length beyond the topic", []byte{0x30, 0x03, 0x00, 0x05, 'a'}, packet.MalformedPacket},
			{"server-to-client packet CONNACK", frame(0x20, append([]byte{0, 0}, p0...)), packet.ProtocolError},
			{"server-to-client packet SUBACK", []byte{0x90, 0x03, 0x00, 0x01, 0x00}, packet.ProtocolError},
		}
		if v == packet.V5 {
			cases = append(cases,
				// Alias 0 is 0x94 Topic Alias Invalid (section 3.3.2.3.4), as Mosquitto says.
				malCase{"[MQTT-3.3.2-8] topic alias 0", publish(0x30, str("a"), 3, 0x23, 0, 0), packet.TopicAliasInvalid},
				malCase{"[MQTT-3.3.2-9] topic alias above the maximum", publish(0x30, str("a"), 3, 0x23, 0, 11), packet.TopicAliasInvalid},
				malCase{"AUTH without an authentication method", []byte{0xF0, 0x00}, packet.ProtocolError})
		} else {
			cases = append(cases, malCase{"reserved packet type 15 (AUTH) before 5.0", []byte{0xF0, 0x00}, 0})
		}
		watch := client(t, srv, v, "mal-watch")
		subscribe(t, watch, 1, 0, "#")
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := brokertest.Dial(t, srv.Addr, v)
				cp := connectPkt(v, "mal", false)
				cp.Will = &packet.Will{Topic: "mal/will", Payload: []byte("w")}
				c.Send(cp)
				c.ExpectPacket(okConnack(v, false))
				c.SendRaw(tc.in)
				if v == packet.V5 {
					expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: tc.rc})
				} else {
					c.ExpectClosedWith()
				}
				expectPub(t, watch, pub("mal/will", "w", 0, 0)) // and only the will
			})
		}
	})
}

// The maximum packet size is checked on the fixed header, before the body is
// read or allocated: a PUBLISH announcing 256 MB is refused at once (5.0
// DISCONNECT 0x95; the server told its maximum in CONNACK [MQTT-3.2.2-15]).
func TestMalformed_MaxPacketSizeBeforeAllocation(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxPacketSize = 1024 })
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := brokertest.Dial(t, srv.Addr, v)
		c.Send(connectPkt(v, "big", false))
		want := okConnack(v, false)
		if v == packet.V5 {
			want.Props.MaximumPacketSize = packet.Ptr[uint32](1024)
		}
		c.ExpectPacket(want)
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		c.SendRaw([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 'a'}) // 268435455 bytes announced, 3 sent
		if v == packet.V5 {
			expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.PacketTooLarge})
		} else {
			c.ExpectClosedWith()
		}
		runtime.ReadMemStats(&after)
		if grew := after.TotalAlloc - before.TotalAlloc; grew > 64<<20 {
			t.Fatalf("allocated %d MB for a refused packet", grew>>20)
		}
		// Exactly at the limit is fine.
		ok := brokertest.Dial(t, srv.Addr, v)
		ok.Send(connectPkt(v, "fits", false))
		ok.ExpectPacket(want)
		subscribe(t, ok, 1, 0, "fit")
		hdr := 1 + 2 + 2 + 3 + len(props0(v)) // fixed header (2-byte length) + topic "fit"
		ok.Publish(pub("fit", strings.Repeat("x", 1024-hdr), 0, 0))
		if got := ok.ExpectPublish(); len(got.Payload) != 1024-hdr {
			t.Fatalf("payload %d bytes", len(got.Payload))
		}
	})
}

// Options.MessageSizeLimit: a larger payload is dropped (5.0 PUBACK 0x97
// quota exceeded; 3.x acknowledges normally [MQTT-3.3.5-2]); the limit itself
// passes.
func TestMalformed_MessageSizeLimit(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MessageSizeLimit = 10 })
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		sub := client(t, srv, v, "limit-sub")
		subscribe(t, sub, 1, 1, "lim")
		p := client(t, srv, v, "limit-pub")
		want := packet.Success
		if v == packet.V5 {
			want = packet.QuotaExceeded
		}
		if rc := p.Publish(pub("lim", "01234567890", 1, 1)); rc != want {
			t.Fatalf("PUBACK %v, want %v", rc, want)
		}
		sub.ExpectNothing(quiet)
		p.Publish(pub("lim", "0123456789", 1, 2))
		sub.Ack(expectPub(t, sub, pub("lim", "0123456789", 1, 0)))
	})
}

// Invalid input never panics the server and never stops it serving others:
// every golden fixture, truncated and bit-flipped, is sent by a connected
// client and before CONNECT.
func TestMalformed_GarbageNeverStopsTheServer(t *testing.T) {
	srv := brokertest.Start(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var fixtures []packettest.Fixture
	for range 4 {
		fixtures = append(fixtures, packettest.Fixtures...)
	}
	for i, f := range fixtures {
		in := append([]byte(nil), f.Bytes...)
		switch i % 3 {
		case 0:
			in = in[:rng.IntN(len(in)+1)]
		case 1:
			for range 1 + rng.IntN(3) {
				in[rng.IntN(len(in))] ^= byte(1 << rng.IntN(8))
			}
		case 2:
			in = append(in, f.Bytes...)
		}
		v := f.Version
		c := brokertest.Dial(t, srv.Addr, v)
		if i%2 == 0 {
			c.Send(connectPkt(v, "garbage", false))
			c.ExpectPacket(okConnack(v, false))
		}
		c.SendRaw(in)
		c.NC.Close()
	}
	c := client(t, srv, packet.V5, "still-serving")
	subscribe(t, c, 1, 1, "alive")
	c.Publish(pub("alive", "yes", 0, 0))
	expectPub(t, c, pub("alive", "yes", 0, 0))
}
