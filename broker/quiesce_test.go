package broker_test

import (
	"bufio"
	"context"
	"net"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// TestQuiesce: Quiesce ends every connection as a shutdown does (5.0:
// DISCONNECT 0x8B [MQTT-3.14.2-1]), refuses new ones, and keeps the
// server going for its sessions: a message published through the
// embedding API is queued for a persistent session, now offline, which
// HandOver can then let go.
func TestQuiesce(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = mem.New() })
	c, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "q-sub",
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}})
	c.Subscribe(1, 1, "q/#")

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Server.Quiesce(ctx); err != nil {
		t.Fatalf("quiesce: %v", err)
	}
	got := c.Recv()
	if d, ok := got.(*packet.Disconnect); !ok || d.ReasonCode != packet.ServerShuttingDown {
		t.Fatalf("client got %s, want DISCONNECT 0x8B", brokertest.Describe(got))
	}
	c.ExpectClosed()
	if nc, err := net.DialTimeout("tcp", srv.Addr, time.Second); err == nil {
		// The listener is closed; a connection that still got through
		// (another listener's) is closed unanswered.
		packet.Write(nc, &packet.Connect{Version: packet.V5, ClientID: "late", CleanStart: true}, packet.V5)
		nc.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := packet.Read(bufio.NewReader(nc), packet.V5, 0); err == nil {
			t.Fatal("a CONNECT answered after Quiesce")
		}
		nc.Close()
	}

	if err := srv.Server.Publish(&broker.Message{Topic: "q/1", QoS: 1, Payload: []byte("x")}); err != nil {
		t.Fatalf("publish after Quiesce: %v", err)
	}
	d, ok := srv.Server.ClientDetail("q-sub")
	if !ok || d.Connected || d.Queued != 1 {
		t.Fatalf("session after Quiesce: %+v %v, want offline with 1 queued", d, ok)
	}
	if had, err := srv.Server.HandOver(ctx, "q-sub", true); !had || err != nil {
		t.Fatalf("hand over: %v %v", had, err)
	}
	if _, ok := srv.Server.ClientDetail("q-sub"); ok {
		t.Fatal("session still here after HandOver")
	}
	if err := srv.Server.Quiesce(ctx); err != nil {
		t.Fatalf("a second Quiesce: %v", err)
	}
}
