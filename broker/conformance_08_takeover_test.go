package broker_test

import (
	"testing"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// A CONNECT with the client id of a connected client closes the old
// connection [MQTT-3.1.4-2] (5.0 [MQTT-3.1.4-3]: DISCONNECT 0x8E first),
// whose will is published; with clean session 0 the new connection inherits
// the session (session present 1 [MQTT-3.2.2-2], subscriptions and in-flight
// messages) [MQTT-3.1.2-4]; with clean session 1 the state is discarded
// [MQTT-3.1.2-6] (5.0 [MQTT-3.1.2-4]).
func TestTakeover_ClosesOldAndInheritsSession_MQTT_3_1_4_2(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		watch := client(t, srv, v, "tw")
		subscribe(t, watch, 1, 1, "tw/will")
		p := client(t, srv, v, "tpub")

		old := brokertest.Dial(t, srv.Addr, v)
		cp := connectPkt(v, "dup", true)
		cp.Will = &packet.Will{Topic: "tw/will", Payload: []byte("old gone"), QoS: 1}
		old.Send(cp)
		old.ExpectPacket(okConnack(v, false))
		subscribe(t, old, 1, 1, "t/x")
		p.Publish(pub("t/x", "unacked", 1, 1))
		m := expectPub(t, old, pub("t/x", "unacked", 1, 0))

		nu := connect(t, srv, v, "dup", true, true)
		if v == packet.V5 {
			old.ExpectClosedWith(&packet.Disconnect{ReasonCode: packet.SessionTakenOver})
		} else {
			old.ExpectClosedWith()
		}
		watch.Ack(expectPub(t, watch, pub("tw/will", "old gone", 1, 0)))
		// The in-flight message is re-sent with DUP [MQTT-4.4.0-1].
		want := *m
		want.Dup = true
		nu.ExpectPacket(&want)
		nu.Ack(m)
		p.Publish(pub("t/x", "inherited", 1, 2))
		nu.Ack(expectPub(t, nu, pub("t/x", "inherited", 1, 0)))
		waitConnected(t, srv, 3)

		// Clean session 1 takes over and discards the session.
		clean := connect(t, srv, v, "dup", false, false)
		nu.ExpectClosed()
		p.Publish(pub("t/x", "nobody", 1, 3))
		clean.ExpectNothing(quiet)
		disconnect(t, clean)
		disconnect(t, watch)
		disconnect(t, p)
		waitConnected(t, srv, 0)
	})
}
