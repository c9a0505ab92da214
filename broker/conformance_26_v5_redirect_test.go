package broker_test

// Server redirection (MQTT 5.0 section 4.11): Server Reference with
// CONNACK or DISCONNECT 0x9C use another server / 0x9D server moved.

import (
	"testing"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

func TestV5Redirect_Connack(t *testing.T) {
	for _, tc := range []struct {
		name  string
		moved bool
		rc    packet.ReasonCode
	}{
		{"use another server", false, packet.UseAnotherServer},
		{"server moved", true, packet.ServerMoved},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := brokertest.Start(t, func(o *broker.Options) { o.ServerReference, o.ServerMoved = "other:1883", tc.moved })
			c := brokertest.Dial(t, srv.Addr, packet.V5)
			c.Send(connectPkt(packet.V5, "r", false))
			c.ExpectPacket(&packet.Connack{ReasonCode: tc.rc, Props: &packet.Properties{ServerReference: "other:1883"}})
			c.ExpectClosedWith()
			v3 := brokertest.Dial(t, srv.Addr, packet.V311)
			v3.Send(connectPkt(packet.V311, "r3", false))
			v3.ExpectBytes([]byte{0x20, 0x02, 0x00, packet.V3ServerUnavailable})
		})
	}
}

func TestV5Redirect_Disconnect(t *testing.T) {
	srv := brokertest.Start(t)
	c5 := client(t, srv, packet.V5, "r5")
	c3 := client(t, srv, packet.V311, "r3")
	srv.Redirect("elsewhere:1883", true)
	c5.ExpectClosedWith(&packet.Disconnect{ReasonCode: packet.ServerMoved, Props: &packet.Properties{ServerReference: "elsewhere:1883"}})
	c3.ExpectClosedWith()
}
