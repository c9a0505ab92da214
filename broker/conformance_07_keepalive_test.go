package broker_test

import (
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// [MQTT-3.12.4-1]: PINGREQ is answered by PINGRESP, byte for byte.
func TestKeepAlive_PingResp_MQTT_3_12_4_1(t *testing.T) {
	srv := brokertest.Start(t)
	forVersions(t, allVersions, func(t *testing.T, v packet.Version) {
		c := client(t, srv, v, "pinger")
		for range 3 {
			c.SendRaw([]byte{0xC0, 0x00})
			c.ExpectBytes([]byte{0xD0, 0x00})
		}
	})
}

// [MQTT-3.1.2-24] (5.0 [MQTT-3.1.2-22]): with keep-alive 1 s and no packet
// for 1.5 s the server closes the connection (5.0: DISCONNECT 0x8D first) and
// publishes the will [MQTT-3.1.2-8]; a client that keeps pinging stays.
func TestKeepAlive_ExpiryClosesAndFiresWill_MQTT_3_1_2_24(t *testing.T) {
	t.Parallel()
	srv := brokertest.Start(t)
	for _, v := range allVersions {
		t.Run("v"+v.String(), func(t *testing.T) {
			t.Parallel()
			id := "ka" + v.String()
			watch := client(t, srv, v, "watch"+id)
			subscribe(t, watch, 1, 1, "ka/"+id)
			alive := connectWithWill(t, srv, v, "alive"+id, &packet.Will{Topic: "ka/" + id, Payload: []byte("alive died")}, 1)
			c := connectWithWill(t, srv, v, id, &packet.Will{Topic: "ka/" + id, Payload: []byte("timeout"), QoS: 1}, 1)
			start := time.Now()
			done := make(chan []packet.Packet, 1)
			go func() {
				p, _ := c.RecvTimeout(5 * time.Second)
				_, err := c.RecvTimeout(5 * time.Second)
				if err == nil {
					p = nil
				}
				done <- []packet.Packet{p}
			}()
			// The pinging client survives meanwhile.
			for range 5 {
				alive.ExpectNothing(400 * time.Millisecond) // the client's own keep-alive rhythm
				alive.Ping()
			}
			got := <-done
			elapsed := time.Since(start)
			if elapsed < 1400*time.Millisecond {
				t.Fatalf("closed after %v, before 1.5 x keep-alive", elapsed)
			}
			if v == packet.V5 {
				if d, ok := got[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.KeepAliveTimeout {
					t.Fatalf("before close got %s, want DISCONNECT 0x8D", brokertest.Describe(got[0]))
				}
			} else if got[0] != nil {
				t.Fatalf("3.x got %s before close", brokertest.Describe(got[0]))
			}
			watch.Ack(expectPub(t, watch, pub("ka/"+id, "timeout", 1, 0)))
			alive.Ping()
		})
	}
}

// A socket that sends no CONNECT within Options.ConnectTimeout is closed, as
// is one that sends only part of it.
func TestKeepAlive_ConnectTimeout(t *testing.T) {
	t.Parallel()
	srv := brokertest.Start(t, func(o *broker.Options) { o.ConnectTimeout = 200 * time.Millisecond })
	for _, tc := range []struct {
		name string
		in   []byte
	}{
		{"nothing", nil},
		{"partial CONNECT", rawConnect("MQTT", 4, 0x02, 60, str("slow"))[:7]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := brokertest.Dial(t, srv.Addr, packet.V311)
			if tc.in != nil {
				c.SendRaw(tc.in)
			}
			start := time.Now()
			c.ExpectClosedWith()
			if d := time.Since(start); d > 2*time.Second {
				t.Fatalf("closed after %v", d)
			}
		})
	}
}

// Keep-alive 0 turns the mechanism off [MQTT-3.1.2-23]-[MQTT-3.1.2-24]: once
// connected, the connect timeout no longer applies either.
func TestKeepAlive_ZeroNeverTimesOut(t *testing.T) {
	t.Parallel()
	srv := brokertest.Start(t, func(o *broker.Options) { o.ConnectTimeout = 200 * time.Millisecond })
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		c := client(t, srv, v, "forever") // keep-alive 0
		c.ExpectNothing(600 * time.Millisecond)
		c.Ping()
	})
}
