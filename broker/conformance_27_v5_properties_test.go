package broker_test

// MQTT 5 PUBLISH properties end to end (section 3.3.2.3), subscription
// options, and what 3.1.1 and 5.0 clients see of each other's messages.

import (
	"reflect"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// fullProps are PUBLISH properties a subscriber must get unaltered.
func fullProps() *packet.Properties {
	return &packet.Properties{
		PayloadFormat:   packet.Ptr[byte](1),
		ContentType:     "text/plain",
		ResponseTopic:   "reply/here",
		CorrelationData: []byte{0, 1, 2},
		User:            []packet.UserProperty{{Key: "b", Value: "2"}, {Key: "a", Value: "1"}, {Key: "b", Value: "3"}},
	}
}

// The server forwards Payload Format Indicator [MQTT-3.3.2-4], Response
// Topic [MQTT-3.3.2-15], Correlation Data [MQTT-3.3.2-16], User Properties
// in order [MQTT-3.3.2-17], [MQTT-3.3.2-18] and Content Type
// [MQTT-3.3.2-20] unaltered, adding the subscription identifier
// [MQTT-3.3.4-3]; a 3.1.1 subscriber gets the message without properties,
// and a 3.1.1 publisher's message reaches a v5 subscriber without any.
func TestV5Properties_PassedThrough_MQTT_3_3_2_17(t *testing.T) {
	srv := brokertest.Start(t)
	s5 := client(t, srv, packet.V5, "p-sub5")
	s5.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "props/#", QoS: 1}},
		Props: &packet.Properties{SubscriptionIDs: []uint32{42}}})
	s5.ExpectPacket(&packet.Suback{PacketID: 1, ReasonCodes: []packet.ReasonCode{1}})
	s3 := client(t, srv, packet.V311, "p-sub3")
	subscribe(t, s3, 1, 1, "props/#")

	p5 := client(t, srv, packet.V5, "p-pub5")
	in := pub("props/a", "héllo", 1, 1)
	in.Props = fullProps()
	p5.Publish(in)
	want := fullProps()
	want.SubscriptionIDs = []uint32{42}
	got := expectPub(t, s5, &packet.Publish{Topic: "props/a", QoS: 1, Payload: []byte("héllo"), Props: want})
	s5.Ack(got)
	s3.Ack(expectPub(t, s3, pub("props/a", "héllo", 1, 0))) // dropped for 3.1.1

	p3 := client(t, srv, packet.V311, "p-pub3")
	p3.Publish(pub("props/b", "plain", 1, 1))
	s5.Ack(expectPub(t, s5, &packet.Publish{Topic: "props/b", QoS: 1, Payload: []byte("plain"),
		Props: &packet.Properties{SubscriptionIDs: []uint32{42}}}))
	s3.Ack(expectPub(t, s3, pub("props/b", "plain", 1, 0)))
}

// A message that waited is forwarded with the remaining expiry
// [MQTT-3.3.2-6]; one that expired is not delivered [MQTT-3.3.2-5].
func TestV5Properties_MessageExpiry_MQTT_3_3_2_6(t *testing.T) {
	srv := brokertest.Start(t)
	sub := connect(t, srv, packet.V5, "exp-sub", true, false)
	subscribe(t, sub, 1, 1, "exp/#")
	disconnect(t, sub)
	p := client(t, srv, packet.V5, "exp-pub")
	for _, m := range []struct {
		topic  string
		expiry uint32
	}{{"exp/short", 1}, {"exp/long", 100}} {
		in := pub(m.topic, "x", 1, 1)
		in.Props = &packet.Properties{MessageExpiry: packet.Ptr(m.expiry)}
		if rc := p.Publish(in); rc != packet.Success {
			t.Fatalf("PUBACK %v", rc)
		}
	}
	// Let the 1 s expiry pass while queued (nothing to observe but the clock).
	queued := time.Now()
	brokertest.Eventually(t, fiveSec, func() bool { return time.Since(queued) > 1100*time.Millisecond })
	sub = connect(t, srv, packet.V5, "exp-sub", true, true)
	got := sub.ExpectPublish()
	if got.Topic != "exp/long" || got.Props == nil || got.Props.MessageExpiry == nil {
		t.Fatalf("got %s", brokertest.Describe(got))
	}
	if left := *got.Props.MessageExpiry; left != 98 && left != 99 {
		t.Fatalf("remaining expiry %d, want 98 or 99", left)
	}
	sub.Ack(got)
	sub.ExpectNothing(quiet)
}

// Subscription options: No Local [MQTT-3.8.3-3] and Retain As Published
// [MQTT-3.3.1-12], [MQTT-3.3.1-13].
func TestV5Properties_SubscriptionOptions_MQTT_3_8_3_3(t *testing.T) {
	srv := brokertest.Start(t)
	c := client(t, srv, packet.V5, "opts")
	c.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{
		{Filter: "nl", NoLocal: true}, {Filter: "rap", RetainAsPublished: true}, {Filter: "norap"}}})
	c.ExpectPacket(&packet.Suback{PacketID: 1, ReasonCodes: []packet.ReasonCode{0, 0, 0}})
	c.Publish(pub("nl", "mine", 0, 0))
	c.ExpectNothing(quiet)
	other := client(t, srv, packet.V5, "opts-pub")
	for _, name := range []string{"rap", "norap"} {
		r := pub(name, "kept", 0, 0)
		r.Retain = true
		other.Publish(r)
	}
	expectPub(t, c, &packet.Publish{Topic: "rap", Retain: true, Payload: []byte("kept")})
	expectPub(t, c, pub("norap", "kept", 0, 0))
}

// Payload Format Indicator 1 with a payload that is not UTF-8, with
// StrictPayloadFormat: PUBACK/PUBREC 0x99, DISCONNECT 0x99 for QoS 0, a
// will refused with CONNACK 0x99; without the option it passes through
// unaltered [MQTT-3.3.2-4].
func TestV5Properties_PayloadFormatInvalid_MQTT_3_3_2_4(t *testing.T) {
	bad := func(qos byte, id uint16) *packet.Publish {
		p := pub("pf", "", qos, id)
		p.Payload = []byte{0xff, 0xfe}
		p.Props = &packet.Properties{PayloadFormat: packet.Ptr[byte](1)}
		return p
	}
	strict := brokertest.Start(t, func(o *broker.Options) { o.StrictPayloadFormat = true })
	t.Run("QoS 1", func(t *testing.T) {
		c := client(t, strict, packet.V5, "pf1")
		c.Send(bad(1, 1))
		if expectPacketReason(t, c, &packet.Puback{PacketID: 1, ReasonCode: packet.PayloadFormatInvalid}) == "" {
			t.Error("no reason string")
		}
	})
	t.Run("QoS 2", func(t *testing.T) {
		c := client(t, strict, packet.V5, "pf2")
		c.Send(bad(2, 1))
		expectPacketReason(t, c, &packet.Pubrec{PacketID: 1, ReasonCode: packet.PayloadFormatInvalid})
	})
	t.Run("QoS 0", func(t *testing.T) {
		c := client(t, strict, packet.V5, "pf0")
		c.Send(bad(0, 0))
		expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.PayloadFormatInvalid})
	})
	t.Run("will", func(t *testing.T) {
		c := brokertest.Dial(t, strict.Addr, packet.V5)
		c.Send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: "pfw", CleanStart: true,
			Will: &packet.Will{Topic: "w", Payload: []byte{0xff}, Props: &packet.Properties{PayloadFormat: packet.Ptr[byte](1)}}})
		expectPacketReason(t, c, &packet.Connack{ReasonCode: packet.PayloadFormatInvalid})
	})
	t.Run("not strict: unaltered", func(t *testing.T) {
		srv := brokertest.Start(t)
		sub := client(t, srv, packet.V5, "pf-sub")
		subscribe(t, sub, 1, 0, "pf")
		c := client(t, srv, packet.V5, "pf-pub")
		c.Publish(bad(0, 0))
		got := sub.ExpectPublish()
		if want := bad(0, 0); !reflect.DeepEqual(got, want) {
			t.Fatalf("got %s", brokertest.Describe(got))
		}
	})
}
