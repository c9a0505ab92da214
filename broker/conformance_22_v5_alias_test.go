package broker_test

// MQTT 5 topic aliases (section 3.3.2.3.4), both ways.

import (
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

func aliasPub(topicName, payload string, alias uint16) *packet.Publish {
	p := pub(topicName, payload, 0, 0)
	p.Props = &packet.Properties{TopicAlias: packet.Ptr(alias)}
	return p
}

// Inbound: an alias set with a topic is resolved on later PUBLISH with an
// empty topic and may be re-mapped [MQTT-3.3.2-12]; 0 or above the maximum
// is DISCONNECT 0x94 [MQTT-3.3.2-8], [MQTT-3.3.2-9]; an alias never set on
// this connection is a protocol error, mappings not carrying over from an
// earlier connection [MQTT-3.3.2-7].
func TestV5Alias_Inbound_MQTT_3_3_2_12(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.MaxTopicAlias = 3 })
	sub := client(t, srv, packet.V311, "in-sub")
	subscribe(t, sub, 1, 0, "al/#")
	c, ack := connect5(t, srv, "in", nil)
	if m := ack.Props.TopicAliasMaximum; m == nil || *m != 3 {
		t.Fatalf("Topic Alias Maximum %v, want 3", m)
	}
	c.Send(aliasPub("al/a", "1", 3))
	c.Send(aliasPub("", "2", 3))
	c.Send(aliasPub("al/b", "3", 3)) // re-mapped
	c.Send(aliasPub("", "4", 3))
	for _, w := range []*packet.Publish{pub("al/a", "1", 0, 0), pub("al/a", "2", 0, 0), pub("al/b", "3", 0, 0), pub("al/b", "4", 0, 0)} {
		expectPub(t, sub, w)
	}
	c.Send(&packet.Disconnect{})
	c.ExpectClosedWith()

	for _, tc := range []struct {
		name string
		p    *packet.Publish
		rc   packet.ReasonCode
	}{
		{"[MQTT-3.3.2-9] above the maximum", aliasPub("al/a", "x", 4), packet.TopicAliasInvalid},
		{"[MQTT-3.3.2-7] not set on this connection", aliasPub("", "x", 3), packet.ProtocolError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := connect5(t, srv, "in", nil)
			c.Send(tc.p)
			expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: tc.rc})
		})
	}
	t.Run("max_topic_alias 0", func(t *testing.T) {
		srv := brokertest.Start(t, func(o *broker.Options) { o.MaxTopicAlias = -1 })
		c, ack := connect5(t, srv, "none", nil)
		if ack.Props != nil && ack.Props.TopicAliasMaximum != nil {
			t.Fatalf("Topic Alias Maximum advertised: %v", *ack.Props.TopicAliasMaximum)
		}
		c.Send(aliasPub("al/a", "x", 1))
		expectClosedWithReason(t, c, &packet.Disconnect{ReasonCode: packet.TopicAliasInvalid})
	})
}

// Outbound (TopicAliasLRU): aliases up to the client's Topic Alias Maximum
// [MQTT-3.3.2-11], [MQTT-3.1.2-26]; a known topic goes with an empty topic
// name; when all are taken the least recently used is re-mapped; none to a
// client that allows none [MQTT-3.1.2-27]; none carried to a new connection
// [MQTT-3.3.2-7]; none with TopicAliasOff (topic_alias_out false).
func TestV5Alias_OutboundLRU_MQTT_3_3_2_11(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.TopicAliasPolicy = broker.TopicAliasLRU })
	sub, _ := connect5(t, srv, "out", &packet.Properties{TopicAliasMaximum: packet.Ptr[uint16](2)})
	subscribe(t, sub, 1, 0, "lru/#")
	plain, _ := connect5(t, srv, "plain", nil) // no Topic Alias Maximum
	subscribe(t, plain, 1, 0, "lru/#")
	p := client(t, srv, packet.V5, "lru-pub")
	steps := []struct {
		topic string
		send  string // the topic name on the wire
		alias uint16
	}{
		{"lru/a", "lru/a", 1},
		{"lru/b", "lru/b", 2},
		{"lru/a", "", 1},
		{"lru/c", "lru/c", 2}, // lru/b was least recently used
		{"lru/a", "", 1},
		{"lru/b", "lru/b", 2},
	}
	for i, st := range steps {
		payload := string(rune('0' + i))
		p.Publish(pub(st.topic, payload, 0, 0))
		expectPub(t, sub, &packet.Publish{Topic: st.send, Payload: []byte(payload),
			Props: &packet.Properties{TopicAlias: packet.Ptr(st.alias)}})
		expectPub(t, plain, pub(st.topic, payload, 0, 0)) // [MQTT-3.1.2-27]
	}
	// A new connection starts with no mappings [MQTT-3.3.2-7].
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosedWith()
	sub, _ = connect5(t, srv, "out", &packet.Properties{TopicAliasMaximum: packet.Ptr[uint16](2)})
	subscribe(t, sub, 1, 0, "lru/#")
	p.Publish(pub("lru/a", "again", 0, 0))
	expectPub(t, sub, &packet.Publish{Topic: "lru/a", Payload: []byte("again"),
		Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](1)}})

	t.Run("policy off", func(t *testing.T) {
		srv := brokertest.Start(t, func(o *broker.Options) { o.TopicAliasPolicy = broker.TopicAliasOff })
		sub, _ := connect5(t, srv, "off", &packet.Properties{TopicAliasMaximum: packet.Ptr[uint16](5)})
		subscribe(t, sub, 1, 0, "x")
		client(t, srv, packet.V5, "off-pub").Publish(pub("x", "y", 0, 0))
		expectPub(t, sub, pub("x", "y", 0, 0))
	})
}
