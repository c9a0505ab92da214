package broker_test

import (
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// A 3.1.1 client with the bridge bit (protocol level 0x84, Mosquitto's
// try_private) gets none of its own messages back, and sees retain flags as
// published: no loop through a bridge that speaks 3.1.1.
func TestBridgeBit_NoLocalAndRetainAsPublished(t *testing.T) {
	srv := brokertest.Start(t)
	br, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "edge", CleanStart: true, Bridge: true})
	br.Subscribe(1, 1, "#")
	other, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "other", CleanStart: true})
	br.Publish(&packet.Publish{Topic: "from/edge", QoS: 1, PacketID: 1, Payload: []byte("x")})
	other.Publish(&packet.Publish{Topic: "from/other", QoS: 0, Retain: true, Payload: []byte("y")})
	got := br.ExpectPublish()
	if got.Topic != "from/other" {
		t.Fatalf("the bridge got %q back: its own message looped", got.Topic)
	}
	if !got.Retain {
		t.Error("retain flag not kept as published for a bridge")
	}
	br.ExpectNothing(200 * time.Millisecond)
}

// Bridges publish their state under $SYS/broker/connection/ (their will
// too); the rest of $SYS stays the broker's own.
func TestBridgeBit_StateTopicUnderSys(t *testing.T) {
	srv := brokertest.Start(t)
	watch, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "w", CleanStart: true})
	watch.Subscribe(1, 0, "$SYS/broker/connection/#", "$SYS/other")
	edge, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "edge", CleanStart: true,
		Bridge: true, Will: &packet.Will{Topic: "$SYS/broker/connection/edge/state", Payload: []byte("0"), Retain: true}})
	edge.Publish(&packet.Publish{Topic: "$SYS/other", QoS: 0, Payload: []byte("no")})
	edge.Publish(&packet.Publish{Topic: "$SYS/broker/connection/edge/state", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("1")})
	if got := watch.ExpectPublish(); got.Topic != "$SYS/broker/connection/edge/state" || string(got.Payload) != "1" {
		t.Fatalf("got %s, want the bridge state (and not $SYS/other)", brokertest.Describe(got))
	}
	edge.NC.Close() // no DISCONNECT: the will goes
	if got := watch.ExpectPublish(); got.Topic != "$SYS/broker/connection/edge/state" || string(got.Payload) != "0" {
		t.Fatalf("got %s, want the bridge's will", brokertest.Describe(got))
	}
}
