package broker_test

import (
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// A takeover does not wait for the old connection's writer: with the old
// client not reading and its writer stuck on full socket buffers (for up
// to WriteTimeout, 30 s here), the new connection is answered at once
// [MQTT-3.1.4-3], and the old one is closed well before WriteTimeout.
func TestTakeover_StuckOldWriterDoesNotStallNewConnection_MQTT_3_1_4_3(t *testing.T) {
	var w closeWatch
	srv := brokertest.Start(t, w.options, func(o *broker.Options) {
		o.WriteTimeout = 30 * time.Second
		o.MaxBacklogBytes = 256 << 10
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		id := "stall" + v.String()
		old := dialSmallWindow(t, srv.Addr, v)
		old.Send(connectPkt(v, id, false))
		old.ExpectPacket(okConnack(v, false))
		subscribe(t, old, 1, 0, "stall/"+id)
		// The old client stops reading; 12.8 MB of QoS 0 messages fill
		// its socket buffers (4 MB at most), then its backlog: its writer
		// is stuck, and the broker drops what is over the backlog.
		p := client(t, srv, v, id+"-pub")
		payload := strings.Repeat("z", 32<<10)
		before := srv.Stats().PublishDropped
		for range 400 {
			p.Publish(pub("stall/"+id, payload, 0, 0))
		}
		p.Ping() // every PUBLISH is routed
		if srv.Stats().PublishDropped == before {
			t.Fatal("the old connection's writer never blocked")
		}
		old.Send(&packet.Pingreq{}) // the old client still talks
		start := time.Now()
		nu := brokertest.Dial(t, srv.Addr, v)
		nu.Send(connectPkt(v, id, false))
		nu.NC.SetReadDeadline(time.Now().Add(2 * time.Second))
		nu.ExpectPacket(okConnack(v, false))
		nu.Ping()
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("CONNACK and PINGRESP took %v", d)
		}
		nu.NC.SetReadDeadline(time.Time{})
		brokertest.Eventually(t, 5*time.Second, func() bool {
			_, ok := w.ended(id)
			return ok
		}, "the old connection is still open")
		w.expect(t, srv.Server, id, broker.CauseTakenOver, "")
		disconnect(t, nu)
	})
}
