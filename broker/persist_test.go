package broker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// startStored starts a broker on the pebble store in dir; stop it with the
// returned function (graceful shutdown, then the store is closed).
// opts adjust the server's options after the store is set.
func startStored(t *testing.T, dir string, opts ...func(*broker.Options)) (*brokertest.Server, func()) {
	t.Helper()
	st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncAlways})
	if err != nil {
		t.Fatal(err)
	}
	srv := brokertest.Start(t, append([]func(*broker.Options){func(o *broker.Options) { o.Store = st }}, opts...)...)
	var once sync.Once
	stop := func() {
		once.Do(func() {
			srv.Stop()
			if err := st.Close(); err != nil {
				t.Errorf("close store: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return srv, stop
}

// TestPersistRestart: a persistent subscriber is offline while QoS 1 and 2
// messages are published; the broker restarts; the subscriber gets exactly
// those messages, in order, with session present [MQTT-3.2.2-2].
func TestPersistRestart(t *testing.T) {
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			dir := t.TempDir()
			srv, stop := startStored(t, dir)
			connect := func(addr string) (*brokertest.Conn, *packet.Connack) {
				c := brokertest.Dial(t, addr, v)
				cp := &packet.Connect{ClientID: "keeper", CleanStart: false}
				if v == packet.V5 {
					cp.Props = &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}
				}
				return c, c.Connect(cp)
			}
			sub, _ := connect(srv.Addr)
			sub.Subscribe(1, 2, "fleet/#")
			sub.Send(&packet.Disconnect{})
			sub.ExpectClosed()

			pub := brokertest.Dial(t, srv.Addr, v)
			pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true})
			const n = 20
			for i := range n {
				qos := byte(1 + i%2)
				pub.Send(&packet.Publish{Topic: fmt.Sprintf("fleet/%d", i), QoS: qos, PacketID: uint16(i + 1), Payload: []byte(fmt.Sprint(i))})
				switch ack := pub.Recv().(type) {
				case *packet.Puback:
				case *packet.Pubrec:
					pub.Send(&packet.Pubrel{PacketID: ack.PacketID})
					pub.Recv() // PUBCOMP
				default:
					t.Fatalf("ack: %v", ack)
				}
			}
			if st := srv.Stats(); st.StoreWrites == 0 || st.StoreWriteSeconds <= 0 {
				t.Fatalf("store writes not counted: %d in %vs", st.StoreWrites, st.StoreWriteSeconds)
			}
			stop()

			srv2, _ := startStored(t, dir)
			sub2, ack := connect(srv2.Addr)
			if !ack.SessionPresent {
				t.Fatal("session not restored: session present = 0")
			}
			seen := map[string]bool{}
			pendingRel := 0
			for len(seen) < n || pendingRel > 0 {
				switch p := sub2.Recv().(type) {
				case *packet.Publish:
					if seen[string(p.Payload)] {
						t.Fatalf("duplicate %q", p.Payload) // QoS 2: exactly once
					}
					seen[string(p.Payload)] = true
					if p.QoS == 1 {
						sub2.Send(&packet.Puback{PacketID: p.PacketID})
					} else {
						sub2.Send(&packet.Pubrec{PacketID: p.PacketID})
						pendingRel++
					}
				case *packet.Pubrel:
					sub2.Send(&packet.Pubcomp{PacketID: p.PacketID})
					pendingRel--
				default:
					t.Fatalf("unexpected %v", p)
				}
			}
			sub2.ExpectNothing(200 * time.Millisecond)
		})
	}
}
