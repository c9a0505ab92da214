package broker_test

import (
	"testing"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// retainedPub builds a PUBLISH with RETAIN set.
func retainedPub(topicName, payload string, qos byte, id uint16) *packet.Publish {
	p := pub(topicName, payload, qos, id)
	p.Retain = true
	return p
}

// A retained message is stored per topic [MQTT-3.3.1-5] and sent to a new
// subscription with RETAIN 1 [MQTT-3.3.1-6], [MQTT-3.3.1-8] (5.0
// [MQTT-3.3.1-9]) at min(stored QoS, granted QoS) [MQTT-3.8.4-6]; live
// deliveries carry RETAIN 0 [MQTT-3.3.1-9] (5.0 [MQTT-3.3.1-12]); a newer one
// replaces it [MQTT-3.3.1-7] (5.0 [MQTT-3.3.1-5]); a PUBLISH without RETAIN
// does not touch it [MQTT-3.3.1-12] (5.0 [MQTT-3.3.1-8]).
func TestRetained_StoreReplaceDeliver_MQTT_3_3_1_5(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		p := client(t, srv, v, "rpub")
		p.Publish(retainedPub("r/a", "one", 1, 1))
		p.Publish(retainedPub("r/b", "b", 2, 2))
		p.Publish(retainedPub("r/a", "two", 2, 3)) // replaces "one"
		p.Publish(pub("r/a", "not retained", 1, 4))

		sub := client(t, srv, v, "rsub")
		subscribe(t, sub, 1, 1, "r/a")
		sub.Ack(expectPub(t, sub, retainedPub("r/a", "two", 1, 0)))
		sub.ExpectNothing(quiet)

		// Live delivery: RETAIN 0 even though published with RETAIN 1.
		p.Publish(retainedPub("r/a", "three", 0, 0))
		expectPub(t, sub, pub("r/a", "three", 0, 0))

		// A wildcard subscription gets every retained topic it matches.
		w := client(t, srv, v, "rwild")
		subscribe(t, w, 1, 2, "r/+")
		got := map[string]string{}
		for _, m := range w.RecvPublishes(2) { // in either order
			if !m.Retain {
				t.Fatalf("retained message without RETAIN: %s", brokertest.Describe(m))
			}
			got[m.Topic] = string(m.Payload)
			w.Ack(m)
		}
		if got["r/a"] != "three" || got["r/b"] != "b" || len(got) != 2 {
			t.Fatalf("retained on r/+: %v", got)
		}
		// Subscribing again re-sends the retained messages [MQTT-3.8.4-3].
		subscribe(t, sub, 2, 0, "r/a")
		expectPub(t, sub, retainedPub("r/a", "three", 0, 0))
		for _, tp := range []string{"r/a", "r/b"} { // leave the server clean for the next version
			p.Publish(retainedPub(tp, "", 0, 0))
		}
		// Handled before the next version's clients come: otherwise the
		// takeover of "rpub" reads these late, and the next "rsub" gets
		// them live.
		p.Ping()
	})
}

// A retained PUBLISH with an empty payload is delivered as normal to current
// subscribers and clears the topic's retained message, and is not stored
// itself [MQTT-3.3.1-10], [MQTT-3.3.1-11] (5.0 [MQTT-3.3.1-6],
// [MQTT-3.3.1-7]).
func TestRetained_EmptyPayloadClears_MQTT_3_3_1_10(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		p := client(t, srv, v, "clearpub")
		p.Publish(retainedPub("c/t", "keep", 1, 1))
		live := client(t, srv, v, "clearlive")
		subscribe(t, live, 1, 0, "c/t")
		expectPub(t, live, retainedPub("c/t", "keep", 0, 0))
		p.Publish(retainedPub("c/t", "", 1, 2))
		expectPub(t, live, pub("c/t", "", 0, 0))
		if n := srv.Stats().Retained; n != 0 {
			t.Fatalf("Retained = %d after clearing", n)
		}
		late := client(t, srv, v, "clearlate")
		subscribe(t, late, 1, 1, "c/#")
		late.ExpectNothing(quiet)
	})
}

// Retained messages are not part of the session: they survive the session of
// their publisher [MQTT-3.1.2-7].
func TestRetained_OutliveSession_MQTT_3_1_2_7(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		p := client(t, srv, v, "outlive")
		p.Publish(retainedPub("o/t", "still here", 0, 0))
		disconnect(t, p)
		sub := client(t, srv, v, "outlive-sub")
		subscribe(t, sub, 1, 0, "o/t")
		expectPub(t, sub, retainedPub("o/t", "still here", 0, 0))
	})
}

// 5.0 subscription options: Retain Handling 1 sends retained messages only for
// a new subscription [MQTT-3.3.1-10], 2 never [MQTT-3.3.1-11]; Retain As
// Published keeps RETAIN on live deliveries [MQTT-3.3.1-13].
func TestRetained_V5RetainHandling_MQTT_3_3_1_10(t *testing.T) {
	srv := brokertest.Start(t)
	p := client(t, srv, packet.V5, "rhpub")
	p.Publish(retainedPub("rh/t", "r", 1, 1))
	sub := client(t, srv, packet.V5, "rhsub")
	subOpt := func(id uint16, s packet.Subscription) {
		t.Helper()
		sub.Send(&packet.Subscribe{PacketID: id, Subscriptions: []packet.Subscription{s}})
		sub.ExpectPacket(&packet.Suback{PacketID: id, ReasonCodes: []packet.ReasonCode{packet.ReasonCode(s.QoS)}})
	}
	subOpt(1, packet.Subscription{Filter: "rh/t", RetainHandling: 2})
	sub.ExpectNothing(quiet)
	subOpt(2, packet.Subscription{Filter: "rh/+", RetainHandling: 1})
	expectPub(t, sub, retainedPub("rh/t", "r", 0, 0))
	subOpt(3, packet.Subscription{Filter: "rh/+", RetainHandling: 1}) // exists: nothing
	sub.ExpectNothing(quiet)
	subOpt(4, packet.Subscription{Filter: "rh/#", RetainAsPublished: true, RetainHandling: 2})
	p.Publish(retainedPub("rh/t", "live", 0, 0))
	expectPub(t, sub, retainedPub("rh/t", "live", 0, 0)) // one copy, RETAIN kept
	sub.ExpectNothing(quiet)
}
