package pebble_test

import (
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// TestDeleteQueueEntryOf: a delete that names its message releases it
// without reading the entry back; the message goes with its last entry, and
// the counts agree after a reopen.
func TestDeleteQueueEntryOf(t *testing.T) {
	dir := t.TempDir()
	st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	var b store.Batch
	for _, c := range []string{"a", "b"} {
		b.PutSession(&store.Session{ClientID: c, Version: packet.V311, ExpiryInterval: store.NeverExpire})
	}
	b.PutMessage(&store.Message{ID: 7, Received: time.Now(), Publish: &packet.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: []byte("x")}})
	b.PutQueueEntry(&store.QueueEntry{ClientID: "a", Seq: 1, MessageID: 7, QoS: 1})
	b.PutQueueEntry(&store.QueueEntry{ClientID: "b", Seq: 1, MessageID: 7, QoS: 1})
	if err := st.Apply(&b); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.DeleteQueueEntryOf("a", 1, 7)
	if err := st.Apply(&b); err != nil {
		t.Fatal(err)
	}
	state, err := st.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if state.Messages[7] == nil || len(state.Sessions[0].Queue) != 0 || len(state.Sessions[1].Queue) != 1 {
		t.Fatalf("after the first delete: message %v, queues %d/%d", state.Messages[7] != nil,
			len(state.Sessions[0].Queue), len(state.Sessions[1].Queue))
	}
	st.Close()
	if st, err = pebble.Open(dir, pebble.Options{Sync: store.SyncNever}); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b.Reset()
	b.DeleteQueueEntryOf("b", 1, 7)
	if err := st.Apply(&b); err != nil {
		t.Fatal(err)
	}
	if state, err = st.Load(time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(state.Messages) != 0 {
		t.Fatalf("message kept after its last entry went: %v", state.Messages)
	}
}

// TestDeleteQueueEntryOfAfterSessionDeleted: a late acknowledgement from a
// connection whose session a clean start replaced names an entry that
// DeleteSession already removed; the message another session still names
// must stay (the soak saw "names unknown message" from this).
func TestDeleteQueueEntryOfAfterSessionDeleted(t *testing.T) {
	st, err := pebble.Open(t.TempDir(), pebble.Options{Sync: store.SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var b store.Batch
	for _, c := range []string{"taken", "durable"} {
		b.PutSession(&store.Session{ClientID: c, Version: packet.V311, ExpiryInterval: store.NeverExpire})
	}
	b.PutMessage(&store.Message{ID: 9, Received: time.Now(), Publish: &packet.Publish{Topic: "t", QoS: 1, PacketID: 1, Payload: []byte("x")}})
	b.PutQueueEntry(&store.QueueEntry{ClientID: "taken", Seq: 1, MessageID: 9, QoS: 1})
	b.PutQueueEntry(&store.QueueEntry{ClientID: "durable", Seq: 2, MessageID: 9, QoS: 1})
	if err := st.Apply(&b); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.DeleteSession("taken") // the clean start that replaced it
	b.PutSession(&store.Session{ClientID: "taken", Version: packet.V311, ExpiryInterval: store.NeverExpire})
	if err := st.Apply(&b); err != nil {
		t.Fatal(err)
	}
	b.Reset()
	b.DeleteQueueEntryOf("taken", 1, 9) // the old connection's late PUBACK
	if err := st.Apply(&b); err != nil {
		t.Fatal(err)
	}
	// The durable session's next entry batch names message 9 again: it must
	// still be known.
	b.Reset()
	b.PutQueueEntry(&store.QueueEntry{ClientID: "durable", Seq: 3, MessageID: 9, QoS: 1})
	if err := st.Apply(&b); err != nil {
		t.Fatalf("message 9 released from under durable's entry: %v", err)
	}
	state, err := st.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if state.Messages[9] == nil {
		t.Fatal("message 9 gone while durable's entries name it")
	}
}
