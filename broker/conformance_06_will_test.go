package broker_test

import (
	"testing"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// connectWithWill connects id with a will on topicName, keep-alive ka seconds.
func connectWithWill(t *testing.T, srv *brokertest.Server, v packet.Version, id string, w *packet.Will, ka uint16) *brokertest.Conn {
	t.Helper()
	c := brokertest.Dial(t, srv.Addr, v)
	cp := connectPkt(v, id, false)
	cp.Will, cp.KeepAlive = w, ka
	c.Send(cp)
	c.ExpectPacket(okConnack(v, false))
	return c
}

// The will is published, with its QoS and retain flag [MQTT-3.1.2-16],
// [MQTT-3.1.2-17] (5.0 [MQTT-3.1.2-14], [MQTT-3.1.2-15]), when the connection
// closes for any reason but DISCONNECT [MQTT-3.1.2-8]: the socket closing, a
// protocol error [MQTT-4.8.0-1]; after DISCONNECT it is discarded
// [MQTT-3.14.4-3], [MQTT-3.1.2-10]; without a will nothing is published
// [MQTT-3.1.2-12]. (Keep-alive expiry: conformance_07; takeover: 08.)
func TestWill_PublishedOnAbnormalClose_MQTT_3_1_2_8(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, allVersions, func(t *testing.T, v packet.Version) {
		watch := client(t, srv, v, "watch")
		subscribe(t, watch, 1, 2, "will/#")
		cases := []struct {
			name    string
			will    *packet.Will
			end     func(c *brokertest.Conn)
			fired   bool
			subQoS  byte // QoS the watcher gets
			retains bool
		}{
			{"[MQTT-3.1.2-8] socket closed, QoS 1", &packet.Will{Topic: "will/a", Payload: []byte("a"), QoS: 1},
				func(c *brokertest.Conn) { c.NC.Close() }, true, 1, false},
			{"[MQTT-3.1.2-17] socket closed, QoS 2 retained", &packet.Will{Topic: "will/b", Payload: []byte("b"), QoS: 2, Retain: true},
				func(c *brokertest.Conn) { c.NC.Close() }, true, 2, true},
			{"[MQTT-4.8.0-1] protocol error, QoS 0", &packet.Will{Topic: "will/c", Payload: []byte("c")},
				func(c *brokertest.Conn) { c.SendRaw([]byte{0x30, 0x03, 0x00, 0x01, '#'}) }, true, 0, false},
			{"[MQTT-3.14.4-3] DISCONNECT discards the will", &packet.Will{Topic: "will/d", Payload: []byte("d"), QoS: 1},
				func(c *brokertest.Conn) { c.Send(&packet.Disconnect{}) }, false, 0, false},
			{"[MQTT-3.1.2-12] no will", nil, func(c *brokertest.Conn) { c.NC.Close() }, false, 0, false},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				c := connectWithWill(t, srv, v, "testament", tc.will, 0)
				tc.end(c)
				if !tc.fired {
					watch.ExpectNothing(quiet)
					return
				}
				// Live delivery: RETAIN 0 [MQTT-3.3.1-9]; QoS as the will's.
				got := expectPub(t, watch, pub(tc.will.Topic, string(tc.will.Payload), tc.subQoS, 0))
				watch.Ack(got)
				if tc.retains {
					late := client(t, srv, v, "late")
					subscribe(t, late, 1, 2, tc.will.Topic)
					late.Ack(expectPub(t, late, retainedPub(tc.will.Topic, string(tc.will.Payload), 2, 0)))
					disconnect(t, late)
				}
			})
		}
		disconnect(t, watch)
		p := client(t, srv, v, "cleanup")
		p.Publish(retainedPub("will/b", "", 1, 1)) // QoS 1: cleared before the next version's watcher subscribes
	})
}

// 5.0: DISCONNECT with reason 0x04 asks for the will to be published
// (MQTT 5.0 3.14.2.1), unlike a normal DISCONNECT [MQTT-3.14.4-3].
func TestWill_V5DisconnectWithWill(t *testing.T) {
	srv := brokertest.Start(t)
	watch := client(t, srv, packet.V5, "watch5")
	subscribe(t, watch, 1, 1, "will5")
	c := connectWithWill(t, srv, packet.V5, "w5", &packet.Will{Topic: "will5", Payload: []byte("bye"), QoS: 1}, 0)
	c.Send(&packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
	c.ExpectClosedWith()
	watch.Ack(expectPub(t, watch, pub("will5", "bye", 1, 0)))
}
