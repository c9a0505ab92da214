package broker_test

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// syncGateStore is a store.OrderedApplier whose "sync" the test holds: a
// batch putting a message is applied to memory and ordered at once, then,
// while armed, waits until the test opens the gate, as a write waits for
// the disk. Every batch the store refuses is recorded.
type syncGateStore struct {
	st      *mem.Store
	armed   atomic.Bool
	waiting chan struct{} // receives when a batch has been ordered and waits for the gate
	gate    chan struct{} // closed by the test: the sync is done

	mu      sync.Mutex
	refused []error
}

func newSyncGateStore() *syncGateStore {
	return &syncGateStore{st: mem.New(), waiting: make(chan struct{}, 16), gate: make(chan struct{})}
}

func (s *syncGateStore) Apply(b *store.Batch) error { return s.ApplyOrdered(b, nil) }

func (s *syncGateStore) ApplyOrdered(b *store.Batch, ordered func()) error {
	if err := s.st.Apply(b); err != nil {
		s.mu.Lock()
		s.refused = append(s.refused, err)
		s.mu.Unlock()
		return err
	}
	if ordered != nil {
		ordered()
	}
	if s.armed.Load() {
		for _, op := range b.Ops() {
			if op.Kind == store.OpPutMessage {
				s.waiting <- struct{}{}
				<-s.gate
				break
			}
		}
	}
	return nil
}

func (s *syncGateStore) Load(now time.Time) (*store.State, error) { return s.st.Load(now) }
func (s *syncGateStore) Close() error                             { return s.st.Close() }

func (s *syncGateStore) waitOrdered(t *testing.T) {
	t.Helper()
	select {
	case <-s.waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("no message batch reached the store")
	}
}

// TestHeldQoS1GoesBeforeSync_MQTT_4_3_3_2: a QoS 1 delivery to an online
// persistent session is written as soon as the publisher's batch is
// ordered in the store, before the write is on stable storage, while the
// publisher's PUBACK still waits for it; the subscriber's PUBACK, which
// deletes the entry, is accepted by the store. A QoS 2 delivery waits for
// stable storage: sent once, it must not be lost and sent again as a new
// message [MQTT-4.3.3-2]. Its PUBREC to the publisher waits too.
func TestHeldQoS1GoesBeforeSync_MQTT_4_3_3_2(t *testing.T) {
	st := newSyncGateStore()
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
	sub := brokertest.Dial(t, srv.Addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "keeper", CleanStart: true, KeepAlive: 60,
		Props: &packet.Properties{SessionExpiry: packet.Ptr(uint32(3600))}})
	sub.Subscribe(1, 2, "held/#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "pub", CleanStart: true})

	st.armed.Store(true)
	pub.Send(&packet.Publish{Topic: "held/1", QoS: 1, PacketID: 1, Payload: []byte("one")})
	st.waitOrdered(t)
	p := sub.ExpectPublish() // while the store still holds the publisher's write
	if p.Topic != "held/1" || p.QoS != 1 {
		t.Fatalf("got %s, want held/1 at QoS 1", brokertest.Describe(p))
	}
	sub.Ack(p)
	sub.Ping() // the subscriber's PUBACK was read and its write applied
	st.gate <- struct{}{}
	if ack, ok := pub.Recv().(*packet.Puback); !ok || ack.PacketID != 1 || ack.ReasonCode != packet.Success {
		t.Fatalf("publisher: got %s, want PUBACK 1", brokertest.Describe(ack))
	}

	pub.Send(&packet.Publish{Topic: "held/2", QoS: 2, PacketID: 2, Payload: []byte("two")})
	st.waitOrdered(t)
	// Had the QoS 2 delivery gone when the batch was ordered, it would be
	// in the subscriber's output before this PINGRESP.
	sub.Ping()
	close(st.gate)
	p = sub.ExpectPublish()
	if p.Topic != "held/2" || p.QoS != 2 {
		t.Fatalf("got %s, want held/2 at QoS 2", brokertest.Describe(p))
	}
	if rec, ok := pub.Recv().(*packet.Pubrec); !ok || rec.PacketID != 2 {
		t.Fatalf("publisher: got %s, want PUBREC 2", brokertest.Describe(rec))
	}
	sub.Send(&packet.Pubrec{PacketID: p.PacketID})
	sub.ExpectPacket(&packet.Pubrel{PacketID: p.PacketID})
	sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
	sub.Ping()
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, err := range st.refused {
		t.Errorf("the store refused a batch: %v", err)
	}
}
