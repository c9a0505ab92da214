package broker_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// holdGate is an AckGate that holds each burst until the test answers it,
// and records the tokens it was asked about.
type holdGate struct {
	mu     sync.Mutex
	asked  [][2]uint64
	answer chan error
}

func (g *holdGate) AwaitAcks(_ *broker.ClientInfo, first, last uint64) error {
	g.mu.Lock()
	g.asked = append(g.asked, [2]uint64{first, last})
	g.mu.Unlock()
	return <-g.answer
}

func (g *holdGate) calls() [][2]uint64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([][2]uint64(nil), g.asked...)
}

// TestAckGate: a message given a token by what routed it (Message.HoldAck,
// here an inline subscription) is acknowledged (PUBACK [MQTT-4.3.2-2],
// PUBREC [MQTT-4.3.3-2]) only once the AckGate lets it; the acknowledgements
// keep their order; a gate that fails closes the connection with
// DISCONNECT 0x89 and no acknowledgement; a message with no token is not
// held. With and without a store.
func TestAckGate(t *testing.T) {
	for _, stored := range []bool{false, true} {
		name := "memory"
		if stored {
			name = "store"
		}
		t.Run(name, func(t *testing.T) {
			g := &holdGate{answer: make(chan error)}
			srv := brokertest.Start(t, func(o *broker.Options) {
				o.Hooks = append(o.Hooks, g)
				if stored {
					o.Store = mem.New()
				}
			})
			var next uint64
			var mu sync.Mutex
			cancel, err := srv.Subscribe("held/#", 2, func(m *broker.Message) {
				mu.Lock()
				next++
				m.HoldAck(next)
				mu.Unlock()
			})
			if err != nil {
				t.Fatal(err)
			}
			defer cancel()
			pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "pub", CleanStart: true})

			// Not held: acknowledged at once, the gate not asked.
			if rc := pub.Publish(&packet.Publish{Topic: "free/1", QoS: 1, PacketID: 1, Payload: []byte("f")}); rc.IsError() {
				t.Fatalf("free publish: %v", rc)
			}
			if c := g.calls(); len(c) != 0 {
				t.Fatalf("gate asked %v for a message with no token", c)
			}

			// Held: nothing until the gate answers.
			pub.Send(&packet.Publish{Topic: "held/1", QoS: 1, PacketID: 2, Payload: []byte("h")})
			brokertest.Eventually(t, 5*time.Second, func() bool { return len(g.calls()) == 1 }, "the gate asked")
			pub.ExpectNothing(200 * time.Millisecond)
			if c := g.calls()[0]; c != [2]uint64{1, 1} {
				t.Fatalf("gate asked about %v, want [1 1]", c)
			}
			g.answer <- nil
			if a, ok := pub.Recv().(*packet.Puback); !ok || a.PacketID != 2 {
				t.Fatal("no PUBACK 2 after the gate let it go")
			}

			// QoS 2: the PUBREC waits the same way.
			pub.Send(&packet.Publish{Topic: "held/2", QoS: 2, PacketID: 3, Payload: []byte("h")})
			brokertest.Eventually(t, 5*time.Second, func() bool { return len(g.calls()) == 2 }, "the gate asked")
			pub.ExpectNothing(200 * time.Millisecond)
			g.answer <- nil
			if r, ok := pub.Recv().(*packet.Pubrec); !ok || r.PacketID != 3 {
				t.Fatal("no PUBREC 3 after the gate let it go")
			}
			pub.Send(&packet.Pubrel{PacketID: 3})
			if c, ok := pub.Recv().(*packet.Pubcomp); !ok || c.PacketID != 3 {
				t.Fatal("no PUBCOMP 3")
			}

			// The gate fails: no PUBACK, DISCONNECT Server busy.
			pub.Send(&packet.Publish{Topic: "held/3", QoS: 1, PacketID: 4, Payload: []byte("h")})
			brokertest.Eventually(t, 5*time.Second, func() bool { return len(g.calls()) == 3 }, "the gate asked")
			g.answer <- errors.New("test: not safe")
			got := pub.Recv()
			if d, ok := got.(*packet.Disconnect); !ok || d.ReasonCode != packet.ServerBusy {
				t.Fatalf("after a failing gate: %s, want DISCONNECT Server busy", brokertest.Describe(got))
			}
		})
	}
}
