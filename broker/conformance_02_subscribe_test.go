package broker_test

import (
	"slices"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// SUBACK carries the SUBSCRIBE's packet id [MQTT-3.8.4-2] (3.1.1 also
// [MQTT-2.3.1-7]) and one granted QoS per filter [MQTT-3.8.4-5] (5.0
// [MQTT-3.8.4-6]) in the order of the filters [MQTT-3.9.3-1]; a SUBSCRIBE with
// several filters is handled as a sequence of subscriptions [MQTT-3.8.4-4]
// (5.0 [MQTT-3.8.4-5]). Byte for byte.
func TestSubscribe_SubackPerFilter_MQTT_3_9_3_1(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := client(t, srv, v, "suback")
		var body []byte
		body = append(body, 0x12, 0x34) // packet id
		if v == packet.V5 {
			body = append(body, 0) // no properties
		}
		body = append(append(body, str("a/2")...), 2)
		body = append(append(body, str("b/0")...), 0)
		body = append(append(body, str("c/+/#")...), 1)
		c.SendRaw(frame(0x82, body))
		if v == packet.V5 {
			c.ExpectBytes([]byte{0x90, 0x06, 0x12, 0x34, 0x00, 0x02, 0x00, 0x01})
		} else {
			c.ExpectBytes([]byte{0x90, 0x05, 0x12, 0x34, 0x02, 0x00, 0x01})
		}
		// Each subscription works [MQTT-3.8.4-1].
		p := client(t, srv, v, "suback-pub")
		for _, tp := range []string{"a/2", "b/0", "c/x/y"} {
			p.Publish(pub(tp, tp, 2, 7))
			got := c.ExpectPublish()
			if got.Topic != tp {
				t.Fatalf("got %s, want topic %q", brokertest.Describe(got), tp)
			}
			c.Ack(got)
		}
	})
}

// A filter the Authorize hook refuses gets 0x80 (5.0 0x87 not authorized)
// in its SUBACK slot [MQTT-3.8.4-5] (5.0 [MQTT-3.8.4-7]) while the others are
// granted; only 0x00-0x02 and 0x80 are used in 3.1.1 [MQTT-3.9.3-2].
func TestSubscribe_NotAllowedFilter0x80_MQTT_3_9_3_2(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Authorize = func(c *broker.ClientInfo, topicName string, write bool) bool {
			return topicName != "secret/topic"
		}
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := client(t, srv, v, "denied")
		c.Send(&packet.Subscribe{PacketID: 3, Subscriptions: []packet.Subscription{
			{Filter: "open/topic", QoS: 1}, {Filter: "secret/topic", QoS: 1}, {Filter: "open/#", QoS: 2},
		}})
		fail := packet.UnspecifiedError // 0x80
		if v == packet.V5 {
			fail = packet.NotAuthorized
		}
		expectPacketReason(t, c, &packet.Suback{PacketID: 3, ReasonCodes: []packet.ReasonCode{1, fail, 2}})
		// A denied topic is not delivered through a wildcard either.
		p := client(t, srv, v, "denied-pub")
		p.Publish(pub("secret/topic", "no", 0, 0))
		p.Publish(pub("open/topic", "yes", 1, 1))
		got := c.ExpectPublish()
		if got.Topic != "open/topic" || got.QoS != 1 {
			t.Fatalf("got %s", brokertest.Describe(got))
		}
		c.Ack(got)
		c.ExpectNothing(quiet)
	})
}

// An invalid topic filter: 3.1.1 closes the connection [MQTT-4.7.1-2],
// [MQTT-4.7.1-3], [MQTT-4.7.3-1], [MQTT-4.8.0-1]; 5.0 answers 0x8F topic
// filter invalid in its SUBACK slot.
func TestSubscribe_InvalidFilter_MQTT_4_7_1_2(t *testing.T) {
	srv := brokertest.Start(t)
	for _, f := range []string{"a/#/b", "a/b#", "a+/b", "", "#/"} {
		t.Run(f, func(t *testing.T) {
			t.Run("v3.1.1", func(t *testing.T) {
				c := client(t, srv, packet.V311, "badfilter")
				c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: f}}})
				c.ExpectClosedWith()
			})
			t.Run("v5.0", func(t *testing.T) {
				c := client(t, srv, packet.V5, "badfilter5")
				c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "ok", QoS: 1}, {Filter: f}}})
				c.ExpectPacket(&packet.Suback{PacketID: 1, ReasonCodes: []packet.ReasonCode{1, packet.TopicFilterInvalid}})
				c.Ping()
			})
		})
	}
}

// Malformed SUBSCRIBE and UNSUBSCRIBE packets close the connection: no
// filter at all [MQTT-3.8.3-3], [MQTT-3.10.3-2] (5.0 [MQTT-3.8.3-2]),
// reserved header flags [MQTT-3.8.1-1], [MQTT-3.10.1-1], reserved bits or QoS
// 3 in the requested QoS byte [MQTT-3-8.3-4] (5.0 [MQTT-3.8.3-5]), packet id
// 0 [MQTT-2.3.1-1]. 5.0 sends DISCONNECT with the reason first.
func TestSubscribe_MalformedCloses_MQTT_3_8_3_3(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		props := []byte{}
		if v == packet.V5 {
			props = []byte{0}
		}
		id := func(b ...byte) []byte { return append(append([]byte{0, 9}, props...), b...) }
		cases := []struct {
			name string
			in   []byte
			rc   packet.ReasonCode
		}{
			{"[MQTT-3.8.3-3] SUBSCRIBE without filters", frame(0x82, id()), packet.ProtocolError},
			{"[MQTT-3.10.3-2] UNSUBSCRIBE without filters", frame(0xA2, id()), packet.ProtocolError},
			{"[MQTT-3.8.1-1] SUBSCRIBE flags 0000", frame(0x80, id(append(str("a"), 0)...)), packet.MalformedPacket},
			{"[MQTT-3.10.1-1] UNSUBSCRIBE flags 0000", frame(0xA0, id(str("a")...)), packet.MalformedPacket},
			{"[MQTT-3-8.3-4] requested QoS 3", frame(0x82, id(append(str("a"), 3)...)), packet.ProtocolError},
			{"[MQTT-3-8.3-4] reserved option bits", frame(0x82, id(append(str("a"), 0xC0)...)), packet.MalformedPacket},
			// 5.0 [MQTT-2.2.1-3]: a protocol error there.
			{"[MQTT-2.3.1-1] packet id 0", frame(0x82, append(append([]byte{0, 0}, props...), append(str("a"), 0)...)), packet.ProtocolError},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := client(t, srv, v, "malsub")
				c.SendRaw(tc.in)
				if v == packet.V5 {
					expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: tc.rc})
				} else {
					c.ExpectClosedWith()
				}
			})
		}
	})
}

// Subscribing again to an identical filter replaces the subscription
// [MQTT-3.8.4-3]: one copy, at the new QoS, and the flow is not interrupted.
func TestSubscribe_ReplacesExisting_MQTT_3_8_4_3(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := client(t, srv, v, "replace")
		p := client(t, srv, v, "replace-pub")
		subscribe(t, c, 1, 2, "r/t")
		subscribe(t, c, 2, 0, "r/t")
		p.Publish(pub("r/t", "m", 2, 1))
		c.ExpectPacket(pub("r/t", "m", 0, 0))
		c.ExpectNothing(quiet)
		if n := srv.Stats().Subscriptions; n != 1 {
			t.Fatalf("Subscriptions = %d, want 1", n)
		}
		disconnect(t, c)
	})
}

// Overlapping subscriptions of one client: one copy at the highest granted
// QoS [MQTT-3.3.5-1] (5.0 [MQTT-3.3.4-2]), in 5.0 carrying the identifiers of
// every matching subscription [MQTT-3.3.4-3], [MQTT-3.3.4-4].
func TestSubscribe_OverlappingOneCopy_MQTT_3_3_5_1(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := client(t, srv, v, "overlap")
		subs := []struct {
			f   string
			qos byte
			id  uint32
		}{{"o/+/c", 0, 11}, {"o/#", 2, 0}, {"o/b/c", 1, 13}}
		for i, s := range subs {
			sp := &packet.Subscribe{PacketID: uint16(i + 1), Subscriptions: []packet.Subscription{{Filter: s.f, QoS: s.qos}}}
			if v == packet.V5 && s.id != 0 {
				sp.Props = &packet.Properties{SubscriptionIDs: []uint32{s.id}}
			}
			c.Send(sp)
			c.ExpectPacket(&packet.Suback{PacketID: uint16(i + 1), ReasonCodes: []packet.ReasonCode{packet.ReasonCode(s.qos)}})
		}
		p := client(t, srv, v, "overlap-pub")
		p.Publish(pub("o/b/c", "once", 2, 5))
		got := c.ExpectPublish()
		if got.QoS != 2 || got.Topic != "o/b/c" || string(got.Payload) != "once" || got.Dup || got.Retain {
			t.Fatalf("got %s, want one QoS 2 copy", brokertest.Describe(got))
		}
		if v == packet.V5 {
			var ids []uint32
			if got.Props != nil {
				ids = slices.Sorted(slices.Values(got.Props.SubscriptionIDs))
			}
			if !slices.Equal(ids, []uint32{11, 13}) {
				t.Fatalf("subscription identifiers %v, want [11 13]", ids)
			}
		} else if got.Props != nil {
			t.Fatalf("3.1.1 PUBLISH with properties")
		}
		c.Ack(got)
		c.ExpectNothing(quiet) // no second copy
		// The topic matches only o/# now: a single QoS 1 copy without ids.
		p.Publish(pub("o/x", "one", 1, 6))
		expectPub(t, c, pub("o/x", "one", 1, 0))
	})
}

// UNSUBACK carries the UNSUBSCRIBE's packet id [MQTT-3.10.4-4] and is sent
// even when nothing was subscribed [MQTT-3.10.4-5] (5.0: code 0x11 for that
// filter, codes in filter order [MQTT-3.11.3-1]); the filter is compared
// character by character [MQTT-3.10.4-1] and delivery stops [MQTT-3.10.4-2].
func TestUnsubscribe_Unsuback_MQTT_3_10_4_4(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := client(t, srv, v, "unsub")
		p := client(t, srv, v, "unsub-pub")
		subscribe(t, c, 1, 1, "u/+", "u/a")
		var body []byte
		body = append(body, 0xAB, 0xCD)
		if v == packet.V5 {
			body = append(body, 0)
		}
		body = append(body, str("u/+")...)
		body = append(body, str("u/#")...) // not subscribed: no match with u/+ or u/a
		c.SendRaw(frame(0xA2, body))
		if v == packet.V5 {
			c.ExpectBytes([]byte{0xB0, 0x05, 0xAB, 0xCD, 0x00, 0x00, 0x11})
		} else {
			c.ExpectBytes([]byte{0xB0, 0x02, 0xAB, 0xCD})
		}
		p.Publish(pub("u/b", "gone", 1, 1)) // matched only u/+
		p.Publish(pub("u/a", "kept", 1, 2))
		got := c.ExpectPublish()
		if got.Topic != "u/a" {
			t.Fatalf("got %s after unsubscribing u/+", brokertest.Describe(got))
		}
		c.Ack(got)
		c.ExpectNothing(quiet)
		// UNSUBSCRIBE of something never subscribed still gets UNSUBACK.
		c.Send(&packet.Unsubscribe{PacketID: 9, Filters: []string{"never"}})
		want := &packet.Unsuback{PacketID: 9}
		if v == packet.V5 {
			want.ReasonCodes = []packet.ReasonCode{packet.NoSubscriptionExisted}
		}
		c.ExpectPacket(want)
	})
}
