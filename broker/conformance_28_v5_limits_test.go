package broker_test

// MQTT 5 limits and refusals: a client PUBLISH with a Subscription
// Identifier, Topic Alias 0, the server's Receive Maximum
// (max_inflight_messages) and the server's own topic aliases by default.

import (
	"strings"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/config"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// A PUBLISH from a client carrying a Subscription Identifier is a protocol
// error [MQTT-3.3.4-6]: DISCONNECT 0x82, and the message is not routed.
func TestV5Limits_PublishWithSubscriptionID_MQTT_3_3_4_6(t *testing.T) {
	srv := brokertest.Start(t)
	watch := client(t, srv, packet.V311, "sid-watch")
	subscribe(t, watch, 1, 0, "sid/#")
	c, _ := connect5(t, srv, "sid", nil)
	p := pub("sid/a", "x", 0, 0)
	p.Props = &packet.Properties{SubscriptionIDs: []uint32{7}}
	c.Send(p)
	expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.ProtocolError})
	watch.Send(&packet.Pingreq{})
	watch.ExpectPacket(&packet.Pingresp{}) // nothing routed before it
}

// A Topic Alias of 0 is DISCONNECT 0x94 Topic Alias Invalid [MQTT-3.3.2-8]
// (MQTT 5.0 section 3.3.2.3.4), as Mosquitto answers.
func TestV5Limits_TopicAliasZero_MQTT_3_3_2_8(t *testing.T) {
	srv := brokertest.Start(t)
	c, _ := connect5(t, srv, "alias0", nil)
	// PUBLISH QoS 0, topic "a", properties: Topic Alias 0.
	c.SendRaw([]byte{0x30, 0x07, 0x00, 0x01, 'a', 0x03, 0x23, 0x00, 0x00})
	expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.TopicAliasInvalid})
}

// The server's Receive Maximum is max_inflight_messages (Options.MaxInflight,
// default 20) unless Options.ReceiveMaximum says otherwise, as Mosquitto
// advertises it (MQTT 5.0 section 3.2.2.3.3), and it is enforced on inbound
// QoS 1/2: one more unacknowledged is DISCONNECT 0x93 [MQTT-3.3.4-7].
func TestV5Limits_ReceiveMaximumIsMaxInflight_MQTT_3_3_4_7(t *testing.T) {
	for _, tc := range []struct {
		name string
		opt  func(*broker.Options)
		want uint16 // 0: not advertised (65535)
	}{
		{"default 20", func(*broker.Options) {}, 20},
		{"max_inflight_messages 3", func(o *broker.Options) { o.MaxInflight = 3 }, 3},
		{"max_inflight_messages 0 (unlimited)", func(o *broker.Options) { o.MaxInflight = -1 }, 0},
		{"ReceiveMaximum set", func(o *broker.Options) { o.MaxInflight = 3; o.ReceiveMaximum = 5 }, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := brokertest.Start(t, tc.opt)
			c, ack := connect5(t, srv, "rmx", nil)
			got := ack.Props.ReceiveMaximum
			if tc.want == 0 {
				if got != nil {
					t.Fatalf("Receive Maximum %d advertised, want none", *got)
				}
				return
			}
			if got == nil || *got != tc.want {
				t.Fatalf("CONNACK Receive Maximum %v, want %d", got, tc.want)
			}
			for id := uint16(1); id <= tc.want; id++ {
				c.Send(pub("rmx", "x", 2, id))
				c.ExpectPacket(&packet.Pubrec{PacketID: id, ReasonCode: packet.NoMatchingSubscribers})
			}
			c.Send(pub("rmx", "x", 2, tc.want+1))
			expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.ReceiveMaximumExceeded})
		})
	}
}

// The server assigns topic aliases by default to a v5 client that allows
// them (Topic Alias Maximum > 0 in CONNECT) [MQTT-3.3.2-11], [MQTT-3.1.2-26];
// `topic_alias_out false` turns them off.
func TestV5Limits_TopicAliasOutDefault_MQTT_3_3_2_11(t *testing.T) {
	aliased := func(t *testing.T, srv *brokertest.Server, want bool) {
		t.Helper()
		sub, _ := connect5(t, srv, "ta-sub", &packet.Properties{TopicAliasMaximum: packet.Ptr[uint16](4)})
		subscribe(t, sub, 1, 0, "ta/#")
		p := client(t, srv, packet.V5, "ta-pub")
		p.Publish(pub("ta/x", "1", 0, 0))
		p.Publish(pub("ta/x", "2", 0, 0))
		if !want {
			expectPub(t, sub, pub("ta/x", "1", 0, 0))
			expectPub(t, sub, pub("ta/x", "2", 0, 0))
			return
		}
		expectPub(t, sub, &packet.Publish{Topic: "ta/x", Payload: []byte("1"),
			Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](1)}})
		expectPub(t, sub, &packet.Publish{Topic: "", Payload: []byte("2"),
			Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](1)}})
	}
	t.Run("default", func(t *testing.T) {
		aliased(t, brokertest.Start(t), true)
	})
	for _, tc := range []struct {
		conf string
		want bool
	}{
		{"topic_alias_out false\n", false},
		{"topic_alias_out true\n", true},
	} {
		t.Run(strings.TrimSpace(tc.conf), func(t *testing.T) {
			cfg, err := config.Parse(strings.NewReader(tc.conf), "alias.conf")
			if err != nil {
				t.Fatal(err)
			}
			aliased(t, brokertest.Start(t, func(o *broker.Options) { o.TopicAliasPolicy = cfg.Broker.TopicAliasPolicy }), tc.want)
		})
	}
}
