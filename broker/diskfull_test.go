package broker_test

import (
	"fmt"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// fullStore is a store whose writes fail with ENOSPC while full is set, as
// a store on a full disk does.
type fullStore struct {
	st    *mem.Store
	full  atomic.Bool
	fails atomic.Int64
}

func (f *fullStore) Apply(b *store.Batch) error {
	if f.full.Load() {
		f.fails.Add(1)
		return fmt.Errorf("write: %w", syscall.ENOSPC)
	}
	return f.st.Apply(b)
}
func (f *fullStore) Load(now time.Time) (*store.State, error) { return f.st.Load(now) }
func (f *fullStore) Close() error                             { return f.st.Close() }

// persistentSub connects a v5 subscriber whose session is stored, so that
// QoS 1/2 messages for it must be written before they are acknowledged.
func persistentSub(t *testing.T, addr string) *brokertest.Conn {
	t.Helper()
	sub := brokertest.Dial(t, addr, packet.V5)
	sub.Connect(&packet.Connect{ClientID: "keeper", CleanStart: true, KeepAlive: 60,
		Props: &packet.Properties{SessionExpiry: packet.Ptr(uint32(3600))}})
	sub.Subscribe(1, 1, "d/#")
	return sub
}

// drainUntil reads the subscriber's PUBLISH packets, acknowledging each,
// until one carries want; a payload in refused fails the test.
func drainUntil(t *testing.T, sub *brokertest.Conn, want string, refused map[string]bool) {
	t.Helper()
	for {
		p := sub.ExpectPublish()
		if refused[string(p.Payload)] {
			t.Fatalf("the subscriber got %q, whose publisher was told it was refused", p.Payload)
		}
		sub.Ack(p)
		if string(p.Payload) == want {
			return
		}
	}
}

// TestDiskFull_StoreFailing_RefusedAndRecovers_MQTT_3_4_2_1: while store
// writes fail (ENOSPC), a v5 publisher of a QoS 1 message that must be
// stored hears PUBACK 0x97 Quota Exceeded [MQTT-3.4.2-1] and the message
// reaches nobody; the write that first fails (its message was routed
// already) disconnects its publisher without PUBACK, as does every refusal
// of a 3.1.1 publisher, so that they send again. A subscriber whose
// acknowledgements cannot be written stays connected. Once the store works
// again, messages are accepted and delivered.
func TestDiskFull_StoreFailing_RefusedAndRecovers_MQTT_3_4_2_1(t *testing.T) {
	fs := &fullStore{st: mem.New()}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = fs })
	sub := persistentSub(t, srv.Addr)
	refused := map[string]bool{}

	fs.full.Store(true)
	first := brokertest.Dial(t, srv.Addr, packet.V5)
	first.Connect(&packet.Connect{ClientID: "first", CleanStart: true, KeepAlive: 60})
	first.Send(&packet.Publish{Topic: "d/1", QoS: 1, PacketID: 1, Payload: []byte("first")})
	for _, p := range first.ExpectClosed() {
		if _, ok := p.(*packet.Puback); ok {
			t.Fatalf("PUBACK for a message the store did not take")
		}
	}
	drainUntil(t, sub, "first", refused) // routed before the write failed; its ack cannot be written either
	sub.Ping()

	// Refused before routing. (The store is tried again every second: a
	// publish that finds it still failing is disconnected as above.)
	pub := brokertest.Dial(t, srv.Addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 60})
	rc := pub.Publish(&packet.Publish{Topic: "d/1", QoS: 1, PacketID: 1, Payload: []byte("refused-1")})
	if rc != packet.QuotaExceeded {
		t.Fatalf("PUBACK %v while the store fails, want 0x97 Quota Exceeded", rc)
	}
	refused["refused-1"] = true

	old := brokertest.Dial(t, srv.Addr, packet.V311)
	old.Connect(&packet.Connect{ClientID: "old", CleanStart: true, KeepAlive: 60})
	old.Send(&packet.Publish{Topic: "d/1", QoS: 1, PacketID: 1, Payload: []byte("old")})
	for _, p := range old.ExpectClosed() {
		t.Fatalf("3.1.1 publisher got %s while the store fails, want the connection closed", brokertest.Describe(p))
	}
	if fs.fails.Load() == 0 {
		t.Fatal("the store was never tried")
	}

	// The store works again: within a second, messages are taken again.
	fs.full.Store(false)
	id := uint16(2)
	brokertest.Eventually(t, 5*time.Second, func() bool {
		payload := fmt.Sprintf("try-%d", id)
		rc := pub.Publish(&packet.Publish{Topic: "d/1", QoS: 1, PacketID: id, Payload: []byte(payload)})
		id++
		if rc == packet.QuotaExceeded {
			refused[payload] = true
			return false
		}
		if rc.IsError() {
			t.Fatalf("PUBACK %v", rc)
		}
		return true
	}, "a QoS 1 message accepted once the store works")
	drainUntil(t, sub, fmt.Sprintf("try-%d", id-1), refused)
	sub.Ping()
}

// TestDiskFull_LowFreeSpace_Refused_MQTT_3_5_2_1: with less free space on
// the store's file system than StoreMinFreeBytes (here: more than any
// disk has), messages that must be stored are refused before anything is
// written: v5 QoS 1 PUBACK 0x97 [MQTT-3.4.2-1], QoS 2 PUBREC 0x97
// [MQTT-3.5.2-1], a retained QoS 0 PUBLISH DISCONNECT 0x97, a 3.1.1 QoS 1
// PUBLISH the connection closed without PUBACK. QoS 0 is not stored and
// still flows; nothing refused is delivered.
func TestDiskFull_LowFreeSpace_Refused_MQTT_3_5_2_1(t *testing.T) {
	fs := &fullStore{st: mem.New()}
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Store = fs
		o.StoreDir = t.TempDir()
		o.StoreMinFreeBytes = 1 << 62
	})
	sub := persistentSub(t, srv.Addr)
	refused := map[string]bool{"q1": true, "q2": true, "retained": true, "old": true}

	pub := brokertest.Dial(t, srv.Addr, packet.V5)
	pub.Connect(&packet.Connect{ClientID: "pub", CleanStart: true, KeepAlive: 60})
	if rc := pub.Publish(&packet.Publish{Topic: "d/1", QoS: 1, PacketID: 1, Payload: []byte("q1")}); rc != packet.QuotaExceeded {
		t.Fatalf("PUBACK %v, want 0x97", rc)
	}
	if rc := pub.Publish(&packet.Publish{Topic: "d/1", QoS: 2, PacketID: 2, Payload: []byte("q2")}); rc != packet.QuotaExceeded {
		t.Fatalf("PUBREC %v, want 0x97", rc)
	}
	pub.Publish(&packet.Publish{Topic: "d/1", Payload: []byte("q0")})
	drainUntil(t, sub, "q0", refused)

	pub.Send(&packet.Publish{Topic: "d/r", Retain: true, Payload: []byte("retained")})
	got := pub.ExpectClosed()
	if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.QuotaExceeded {
		t.Fatalf("retained QoS 0 got %v, want DISCONNECT 0x97", got)
	}

	old := brokertest.Dial(t, srv.Addr, packet.V311)
	old.Connect(&packet.Connect{ClientID: "old", CleanStart: true, KeepAlive: 60})
	old.Send(&packet.Publish{Topic: "d/1", QoS: 1, PacketID: 1, Payload: []byte("old")})
	for _, p := range old.ExpectClosed() {
		t.Fatalf("3.1.1 publisher got %s, want the connection closed", brokertest.Describe(p))
	}

	pub2 := brokertest.Dial(t, srv.Addr, packet.V5)
	pub2.Connect(&packet.Connect{ClientID: "pub2", CleanStart: true, KeepAlive: 60})
	pub2.Publish(&packet.Publish{Topic: "d/1", Payload: []byte("last")})
	drainUntil(t, sub, "last", refused)
	if n := fs.fails.Load(); n != 0 {
		t.Fatalf("%d store writes tried", n)
	}
	if srv.Stats().Retained != 0 {
		t.Fatal("the refused retained message was kept")
	}
}
