package broker_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// A persistent session (clean session 0; 5.0 clean start 0 with a Session
// Expiry Interval) keeps its subscriptions and the QoS 1/2 messages that
// arrive while it is offline [MQTT-3.1.2-4], [MQTT-3.1.2-5] (5.0
// [MQTT-3.1.2-5], [MQTT-3.1.2-23]); on reconnect CONNACK says session present
// 1 [MQTT-3.2.2-2] (5.0 [MQTT-3.2.2-3]) and the queued messages are delivered
// in order [MQTT-4.6.0-6]. QoS 0 is not queued offline by default.
func TestSession_PersistentQueuesOffline_MQTT_3_1_2_5(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		id := "persist" + v.String()
		c := connect(t, srv, v, id, true, false) // no session yet [MQTT-3.2.2-3]
		subscribe(t, c, 1, 2, "p/#")
		disconnect(t, c)
		waitOffline(t, srv, 1)

		p := client(t, srv, v, "persist-pub")
		p.Publish(pub("p/a", "q1", 1, 1))
		p.Publish(pub("p/b", "q0", 0, 0))
		p.Publish(pub("p/c", "q2", 2, 2))

		c = connect(t, srv, v, id, true, true)
		c.Ack(expectPub(t, c, pub("p/a", "q1", 1, 0)))
		c.Ack(expectPub(t, c, pub("p/c", "q2", 2, 0)))
		c.ExpectNothing(quiet) // the QoS 0 message was not kept
		// The subscription survived too.
		p.Publish(pub("p/d", "live", 1, 3))
		c.Ack(expectPub(t, c, pub("p/d", "live", 1, 0)))
		disconnect(t, c)
		waitOffline(t, srv, 1)
		// Clean session 1 discards it [MQTT-3.1.2-6] (5.0 [MQTT-3.1.2-4]):
		// session present 0 [MQTT-3.2.2-1] (5.0 [MQTT-3.2.2-2]), no subscription.
		c = connect(t, srv, v, id, false, false)
		p.Publish(pub("p/e", "lost", 1, 4))
		c.ExpectNothing(quiet)
		disconnect(t, c)
		waitOffline(t, srv, 0)
		// ... and nothing of it is reused later [MQTT-3.1.2-6].
		c = connect(t, srv, v, id, true, false)
		disconnect(t, c)
		connect(t, srv, v, id, false, false) // clean up
	})
}

// Options.QueueQoS0 keeps QoS 0 messages for offline persistent sessions.
func TestSession_QueueQoS0Option(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.QueueQoS0 = true })
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		id := "q0queue" + v.String()
		c := connect(t, srv, v, id, true, false)
		subscribe(t, c, 1, 1, "z/#")
		disconnect(t, c)
		waitOffline(t, srv, 1)
		p := client(t, srv, v, "q0queue-pub")
		p.Publish(pub("z/a", "zero", 0, 0))
		p.Publish(pub("z/b", "one", 1, 1))
		c = connect(t, srv, v, id, true, true)
		expectPub(t, c, pub("z/a", "zero", 0, 0))
		c.Ack(expectPub(t, c, pub("z/b", "one", 1, 0)))
		disconnect(t, c)
		connect(t, srv, v, id, false, false)
	})
}

// Unacknowledged messages are re-sent on reconnect with their original
// packet ids [MQTT-4.4.0-1] and DUP 1 [MQTT-3.3.1-1]; a QoS 2 message whose
// PUBREC arrived is continued with PUBREL, not PUBLISH (5.0 [MQTT-4.3.3-6]).
func TestSession_InflightResentWithDup_MQTT_4_4_0_1(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		id := "resend" + v.String()
		c := connect(t, srv, v, id, true, false)
		subscribe(t, c, 1, 2, "d/#")
		p := client(t, srv, v, "resend-pub")
		p.Publish(pub("d/1", "one", 1, 1))
		p.Publish(pub("d/2", "two", 2, 2))
		p.Publish(pub("d/3", "three", 2, 3))
		m1 := expectPub(t, c, pub("d/1", "one", 1, 0))
		m2 := expectPub(t, c, pub("d/2", "two", 2, 0))
		m3 := expectPub(t, c, pub("d/3", "three", 2, 0))
		c.Send(&packet.Pubrec{PacketID: m3.PacketID})
		c.ExpectPacket(&packet.Pubrel{PacketID: m3.PacketID})
		c.NC.Close() // gone without acknowledging anything else
		waitOffline(t, srv, 1)

		c = connect(t, srv, v, id, true, true)
		for _, m := range []*packet.Publish{m1, m2} {
			want := *m
			want.Dup = true
			c.ExpectPacket(&want)
		}
		c.ExpectPacket(&packet.Pubrel{PacketID: m3.PacketID})
		c.Send(&packet.Pubcomp{PacketID: m3.PacketID})
		c.Send(&packet.Puback{PacketID: m1.PacketID})
		c.Ack(m2)
		c.ExpectNothing(quiet)
		brokertest.Eventually(t, fiveSec, func() bool { return srv.Stats().Inflight == 0 }, "still in flight")
		disconnect(t, c)
		connect(t, srv, v, id, false, false)
	})
}

// The offline queue is bounded by count (MaxQueuedMessages) and bytes
// (MaxQueuedBytes); what does not fit is dropped and counted.
func TestSession_QueueBounds(t *testing.T) {
	cases := []struct {
		name string
		opts func(o *broker.Options)
		want int
	}{
		{"MaxQueuedMessages", func(o *broker.Options) { o.MaxQueuedMessages = 3 }, 3},
		// Each message counts its payload (7 bytes), not its topic, as in
		// Mosquitto: 4 fit in 30 bytes.
		{"MaxQueuedBytes", func(o *broker.Options) { o.MaxQueuedBytes = 30 }, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := brokertest.Start(t, tc.opts)
			forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
				before := srv.Stats().PublishDropped
				id := "bounded" + v.String()
				c := connect(t, srv, v, id, true, false)
				subscribe(t, c, 1, 1, "b/t")
				disconnect(t, c)
				waitOffline(t, srv, 1)
				p := client(t, srv, v, "bounded-pub")
				for i := range 10 {
					p.Publish(pub("b/t", fmt.Sprintf("msg-%03d", i), 1, uint16(i+1)))
				}
				if got := srv.Stats().Queued; got != int64(tc.want) {
					t.Fatalf("Queued = %d, want %d", got, tc.want)
				}
				if d := srv.Stats().PublishDropped - before; d != int64(10-tc.want) {
					t.Fatalf("dropped %d, want %d", d, 10-tc.want)
				}
				c = connect(t, srv, v, id, true, true)
				for i := range tc.want {
					c.Ack(expectPub(t, c, pub("b/t", fmt.Sprintf("msg-%03d", i), 1, 0)))
				}
				c.ExpectNothing(quiet)
				disconnect(t, c)
				connect(t, srv, v, id, false, false)
			})
		})
	}
}

// Persistent 3.x sessions are removed after Options.PersistentClientExpiration
// offline; 5.0 sessions after their Session Expiry Interval, and at once with
// interval 0 [MQTT-3.1.2-23].
func TestSession_Expiry(t *testing.T) {
	t.Parallel()
	expired := func(t *testing.T, v packet.Version, cp *packet.Connect) {
		t.Helper()
		t.Parallel()
		srv := brokertest.Start(t, func(o *broker.Options) { o.PersistentClientExpiration = 300 * time.Millisecond })
		c := brokertest.Dial(t, srv.Addr, v)
		c.Connect(cp)
		subscribe(t, c, 1, 1, "e/t")
		before := srv.Stats().ClientsExpired
		disconnect(t, c)
		if cp.Props != nil && *cp.Props.SessionExpiry == 0 {
			// Ended at disconnect, not expired.
			brokertest.Eventually(t, fiveSec, func() bool { return srv.Stats().ClientsDisconnected == 0 }, "session kept")
		} else {
			brokertest.Eventually(t, fiveSec, func() bool { return srv.Stats().ClientsExpired > before }, "session not expired")
		}
		c = connect(t, srv, v, cp.ClientID, true, false)                                            // session present 0
		c.Send(&packet.Disconnect{Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](0)}}) // 3.x: expires again
		c.ExpectClosedWith()
	}
	t.Run("v3.1.1 PersistentClientExpiration", func(t *testing.T) {
		expired(t, packet.V311, connectPkt(packet.V311, "exp3", true))
	})
	t.Run("v5.0 Session Expiry Interval 1s", func(t *testing.T) {
		cp := connectPkt(packet.V5, "exp5", true)
		cp.Props.SessionExpiry = packet.Ptr[uint32](1)
		expired(t, packet.V5, cp)
	})
	t.Run("[MQTT-3.1.2-23] v5.0 Session Expiry Interval 0", func(t *testing.T) {
		cp := connectPkt(packet.V5, "exp50", true)
		cp.Props.SessionExpiry = packet.Ptr[uint32](0)
		expired(t, packet.V5, cp)
	})
}
