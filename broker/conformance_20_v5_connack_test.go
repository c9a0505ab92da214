package broker_test

// MQTT 5 CONNACK: what the server advertises (MQTT 5.0 section 3.2.2.3) and
// how it holds clients to it; Response Information and Request Problem
// Information.

import (
	"reflect"
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// connect5 connects a v5 client with the given CONNECT properties and
// returns it with its CONNACK, which must be a success.
func connect5(t *testing.T, srv *brokertest.Server, id string, props *packet.Properties) (*brokertest.Conn, *packet.Connack) {
	t.Helper()
	return brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: id, CleanStart: true, Props: props})
}

// A default server advertises only its Receive Maximum (max_inflight_messages,
// 20, as Mosquitto), its Topic Alias Maximum and its default Maximum Packet
// Size: every other capability has its default (absent) value [MQTT-3.2.2-17].
func TestV5Connack_DefaultAdvertisesTopicAliasMaximum_MQTT_3_2_2_17(t *testing.T) {
	srv := brokertest.Start(t)
	c := brokertest.Dial(t, srv.Addr, packet.V5)
	c.Send(connectPkt(packet.V5, "caps", false))
	c.ExpectPacket(okConnack(packet.V5, false))
}

// Configured limits are advertised: Maximum QoS [MQTT-3.2.2-9], Retain
// Available, Receive Maximum, Maximum Packet Size, no topic aliases, no
// wildcard / subscription identifier / shared subscriptions, and the
// Server Keep Alive [MQTT-3.2.2-21] with the assigned client id [MQTT-3.2.2-16].
func TestV5Connack_AdvertisesConfiguredCapabilities_MQTT_3_2_2_9(t *testing.T) {
	no := false
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.RetainAvailable = &no
		o.MaxQoS = packet.Ptr[byte](1)
		o.MaxTopicAlias = -1
		o.ReceiveMaximum = 5
		o.WildcardSubAvailable, o.SubIDAvailable, o.SharedSubAvailable = &no, &no, &no
		o.MaxPacketSize = 1000
		o.MaxKeepAlive = 30
	})
	c := brokertest.Dial(t, srv.Addr, packet.V5)
	c.Send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", CleanStart: true, KeepAlive: 60})
	got := c.Recv().(*packet.Connack)
	if got.Props == nil || got.Props.AssignedClientID == "" {
		t.Fatalf("no Assigned Client Identifier: %s", brokertest.Describe(got))
	}
	want := &packet.Connack{Props: &packet.Properties{
		AssignedClientID:     got.Props.AssignedClientID,
		ServerKeepAlive:      packet.Ptr[uint16](30),
		ReceiveMaximum:       packet.Ptr[uint16](5),
		MaximumQoS:           packet.Ptr[byte](1),
		RetainAvailable:      packet.Ptr[byte](0),
		MaximumPacketSize:    packet.Ptr[uint32](1000),
		WildcardSubAvailable: packet.Ptr[byte](0),
		SubIDAvailable:       packet.Ptr[byte](0),
		SharedSubAvailable:   packet.Ptr[byte](0),
	}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %s\nwant %s", brokertest.Describe(got), brokertest.Describe(want))
	}
}

// What the server does not support is refused the way section 3.2.2.3
// says: a will above Maximum QoS (0x9B) [MQTT-3.2.2-12], a retained will
// without Retain Available (0x9A) [MQTT-3.2.2-13], a PUBLISH above Maximum
// QoS (DISCONNECT 0x9B) [MQTT-3.2.2-11], a retained PUBLISH (DISCONNECT
// 0x9A) [MQTT-3.2.2-14], a subscription identifier (DISCONNECT 0xA1), a
// wildcard or shared filter (SUBACK 0xA2 / 0x9E); a SUBSCRIBE at QoS 2 is
// still accepted, granted the Maximum QoS [MQTT-3.2.2-10].
func TestV5Connack_CapabilitiesEnforced_MQTT_3_2_2_10(t *testing.T) {
	no := false
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.RetainAvailable = &no
		o.MaxQoS = packet.Ptr[byte](1)
		o.WildcardSubAvailable, o.SubIDAvailable, o.SharedSubAvailable = &no, &no, &no
	})
	caps := &packet.Properties{ReceiveMaximum: packet.Ptr[uint16](20), TopicAliasMaximum: packet.Ptr[uint16](10), MaximumQoS: packet.Ptr[byte](1),
		MaximumPacketSize: packet.Ptr[uint32](broker.DefaultMaxPacketSize),
		RetainAvailable:   packet.Ptr[byte](0), WildcardSubAvailable: packet.Ptr[byte](0),
		SubIDAvailable: packet.Ptr[byte](0), SharedSubAvailable: packet.Ptr[byte](0)}
	refused := []struct {
		name string
		will *packet.Will
		rc   packet.ReasonCode
	}{
		{"[MQTT-3.2.2-12] will QoS 2", &packet.Will{Topic: "w", Payload: []byte("x"), QoS: 2}, packet.QoSNotSupported},
		{"[MQTT-3.2.2-13] retained will", &packet.Will{Topic: "w", Payload: []byte("x"), Retain: true}, packet.RetainNotSupported},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			c := brokertest.Dial(t, srv.Addr, packet.V5)
			c.Send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: "w", CleanStart: true, Will: tc.will})
			if reason := expectPacketReason(t, c, &packet.Connack{ReasonCode: tc.rc}); reason == "" {
				t.Error("no reason string")
			}
			c.ExpectClosedWith()
		})
	}
	closed := []struct {
		name string
		in   packet.Packet
		rc   packet.ReasonCode
	}{
		{"[MQTT-3.2.2-11] PUBLISH QoS 2", pub("a", "x", 2, 1), packet.QoSNotSupported},
		{"[MQTT-3.2.2-14] retained PUBLISH", &packet.Publish{Topic: "a", Retain: true, Payload: []byte("x")}, packet.RetainNotSupported},
		{"subscription identifier", &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a"}},
			Props: &packet.Properties{SubscriptionIDs: []uint32{7}}}, packet.SubscriptionIDsNotSupported},
	}
	for _, tc := range closed {
		t.Run(tc.name, func(t *testing.T) {
			c := brokertest.Dial(t, srv.Addr, packet.V5)
			c.Send(connectPkt(packet.V5, "cap", false))
			c.ExpectPacket(&packet.Connack{Props: caps})
			c.Send(tc.in)
			expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: tc.rc})
		})
	}
	t.Run("[MQTT-3.2.2-10] SUBSCRIBE", func(t *testing.T) {
		c := brokertest.Dial(t, srv.Addr, packet.V5)
		c.Send(connectPkt(packet.V5, "sub", false))
		c.ExpectPacket(&packet.Connack{Props: caps})
		c.Send(&packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{
			{Filter: "a", QoS: 2}, {Filter: "a/+"}, {Filter: "$share/g/a"}}})
		reason := expectPacketReason(t, c, &packet.Suback{PacketID: 2, ReasonCodes: []packet.ReasonCode{
			packet.GrantedQoS1, packet.WildcardSubscriptionsNotSupported, packet.SharedSubscriptionsNotSupported}})
		if reason == "" {
			t.Error("SUBACK refusal without a reason string")
		}
	})
	t.Run("3.1.1 PUBLISH QoS 2 closes", func(t *testing.T) {
		c := client(t, srv, packet.V311, "v3")
		c.Send(pub("a", "x", 2, 1))
		c.ExpectClosedWith()
	})
}

// Response Information only for a client that asks with Request Response
// Information 1 [MQTT-3.1.2-28].
func TestV5Connack_ResponseInformation_MQTT_3_1_2_28(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.ResponseInformation = func(c *broker.ClientInfo) string { return "reply/" + c.ClientID }
	})
	tests := []struct {
		name string
		req  *byte
		want string
	}{
		{"asked", packet.Ptr[byte](1), "reply/ri"},
		{"0: not sent", packet.Ptr[byte](0), ""},
		{"absent: not sent", nil, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ack := connect5(t, srv, "ri", &packet.Properties{RequestResponseInfo: tc.req})
			if ack.Props.ResponseInfo != tc.want {
				t.Fatalf("Response Information %q, want %q", ack.Props.ResponseInfo, tc.want)
			}
		})
	}
}

// Reason strings explain refusals, unless Request Problem Information is 0:
// then none on anything but CONNACK, PUBLISH, DISCONNECT [MQTT-3.1.2-29].
func TestV5Connack_RequestProblemInformation_MQTT_3_1_2_29(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Authorize = func(_ *broker.ClientInfo, topic string, write bool) bool { return topic != "secret" }
	})
	for _, tc := range []struct {
		name   string
		req    *byte
		reason string
	}{
		{"default", nil, "not authorized to publish to secret"},
		{"1", packet.Ptr[byte](1), "not authorized to publish to secret"},
		{"0", packet.Ptr[byte](0), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := connect5(t, srv, "rpi", &packet.Properties{RequestProblemInfo: tc.req})
			c.Send(pub("secret", "x", 1, 1))
			ack := &packet.Puback{PacketID: 1, ReasonCode: packet.NotAuthorized}
			if tc.reason != "" {
				ack.Props = &packet.Properties{ReasonString: tc.reason}
			}
			c.ExpectPacket(ack)
			c.Send(&packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{{Filter: "secret"}}})
			sub := &packet.Suback{PacketID: 2, ReasonCodes: []packet.ReasonCode{packet.NotAuthorized}}
			if tc.reason != "" {
				sub.Props = &packet.Properties{ReasonString: "not authorized to subscribe to secret"}
			}
			c.ExpectPacket(sub)
		})
	}
}
