package broker

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// countingStore counts what the broker hands its store: message bodies
// (payload and topic bytes of PutMessage) and queue entries.
type countingStore struct {
	store.Store
	msgBytes atomic.Int64
	msgs     atomic.Int64
	entries  atomic.Int64
}

func (c *countingStore) Apply(b *store.Batch) error {
	for _, op := range b.Ops() {
		switch op.Kind {
		case store.OpPutMessage:
			c.msgs.Add(1)
			c.msgBytes.Add(int64(len(op.Message.Publish.Payload) + len(op.Message.Publish.Topic)))
		case store.OpPutQueueEntry:
			c.entries.Add(1)
		}
	}
	return c.Store.Apply(b)
}

// A QoS 1 message of 10 KB to 1,000 offline persistent subscribers is
// written to the store once (not once per subscriber: 10 MB), with one
// queue entry per subscriber; after a restart each subscriber still gets
// it [MQTT-3.1.2-5], and once every entry is acknowledged the message is
// gone from the store.
func TestPersist_FanOutStoresMessageOnce_MQTT_3_1_2_5(t *testing.T) {
	const subscribers = 1000
	dir := t.TempDir()
	st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	var b store.Batch
	for i := range subscribers {
		id := fmt.Sprintf("s%04d", i)
		b.PutSession(&store.Session{ClientID: id, Version: packet.V311, ExpiryInterval: store.NeverExpire,
			DisconnectedAt: time.Now()})
		b.PutSubscription(&store.Subscription{ClientID: id, Sub: packet.Subscription{Filter: "fan/t", QoS: 1}})
	}
	if err := st.Apply(&b); err != nil {
		t.Fatal(err)
	}
	cs := &countingStore{Store: st}
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Store: cs, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Restore(); err != nil {
		t.Fatal(err)
	}
	addr := wbServe(t, srv)
	payload := bytes.Repeat([]byte("p"), 10<<10)
	pub := wbDial(t, addr, packet.V311)
	pub.connect("pub", true, 0)
	pub.publish1("fan/t", payload, nil) // PUBACK: the entries are in the store
	if n := cs.entries.Load(); n != subscribers {
		t.Fatalf("%d queue entries written, want %d", n, subscribers)
	}
	if n := cs.msgBytes.Load(); n >= 1<<20 {
		t.Fatalf("%d message bytes (%d messages) written for one 10 KB message to %d subscribers, want < 1 MB",
			n, cs.msgs.Load(), subscribers)
	}
	t.Logf("message bytes written: %d in %d message records, %d queue entries", cs.msgBytes.Load(), cs.msgs.Load(), cs.entries.Load())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	// Restart: every subscriber gets the message once it reconnects.
	st, err = pebble.Open(dir, pebble.Options{Sync: store.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv = New(Options{AllowAnonymous: true, SysInterval: -1, Store: st, Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Restore(); err != nil {
		t.Fatal(err)
	}
	addr = wbServe(t, srv)
	for i := range subscribers {
		c := wbDial(t, addr, packet.V311)
		if ack := c.connect(fmt.Sprintf("s%04d", i), false, 0); !ack.SessionPresent {
			t.Fatalf("s%04d: no session after the restart", i)
		}
		p := c.expect(packet.PUBLISH).(*packet.Publish)
		if p.Topic != "fan/t" || !bytes.Equal(p.Payload, payload) {
			t.Fatalf("s%04d got %q (%d bytes)", i, p.Topic, len(p.Payload))
		}
		c.send(&packet.Puback{PacketID: p.PacketID})
		c.ping()
		c.disconnect()
	}
	wbEventually(t, 5*time.Second, func() bool { return srv.Stats().ClientsDisconnected == subscribers },
		"every subscriber offline")
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel2()
	srv.Shutdown(ctx2)
	state, err := st.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Messages) != 0 {
		t.Fatalf("%d messages left in the store after every entry was acknowledged", len(state.Messages))
	}
}
