package broker_test

import (
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// TestDiskFull_WriteOutsideBurst_Refuses_MQTT_3_4_2_1: a store write made
// outside a read burst (here the session record a persistent subscriber's
// disconnect writes) that fails for a full disk turns on the same refusals
// as a failed read burst: the next v5 publisher of a message that must be
// stored hears PUBACK 0x97 Quota Exceeded [MQTT-3.4.2-1] instead of having
// its message routed and then being disconnected by the failing write.
func TestDiskFull_WriteOutsideBurst_Refuses_MQTT_3_4_2_1(t *testing.T) {
	fs := &fullStore{st: mem.New()}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = fs })
	sub := persistentSub(t, srv.Addr)

	fs.full.Store(true)
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed()
	brokertest.Eventually(t, 5*time.Second, func() bool { return fs.fails.Load() > 0 },
		"the disconnect's session record reaches the (full) store")
	pub := brokertest.Dial(t, srv.Addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 60})
	if rc := pub.Publish(&packet.Publish{Topic: "d/1", QoS: 1, PacketID: 1, Payload: []byte("x")}); rc != packet.QuotaExceeded {
		t.Fatalf("PUBACK %v, want 0x97 Quota Exceeded", rc)
	}
}
