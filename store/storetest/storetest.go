// Package storetest is the conformance suite that every store.Store passes:
// store/mem and store/pebble run it from their tests.
package storetest

import (
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// Base is the time the suite's records are stamped with (a whole
// millisecond: stores keep milliseconds).
var Base = time.UnixMilli(1_700_000_000_000)

// Opener returns a new, empty store; the suite closes it.
type Opener func(t *testing.T) store.Store

// Run runs the conformance suite against the stores open returns.
func Run(t *testing.T, open Opener) {
	tests := []struct {
		name string
		fn   func(t *testing.T, s store.Store)
	}{
		{"Empty", testEmpty},
		{"Sessions", testSessions},
		{"Subscriptions", testSubscriptions},
		{"QueueOrder", testQueueOrder},
		{"QueueEntryUpdate", testQueueEntryUpdate},
		{"MessageRefcount", testMessageRefcount},
		{"UnreferencedMessageDropped", testUnreferencedMessage},
		{"EntriesNameStoredMessage", testEntriesNameStoredMessage},
		{"Inbound", testInbound},
		{"Retained", testRetained},
		{"SessionExpiry", testSessionExpiry},
		{"MessageExpiry", testMessageExpiry},
		{"DeleteSessionCascade", testDeleteSessionCascade},
		{"DeleteThenRecreateInOneBatch", testDeleteThenRecreate},
		{"EntryGoneThenSessionInOneBatch", testEntryGoneThenSession},
		{"InvalidBatchAppliesNothing", testInvalidBatch},
		{"ConcurrentApply", testConcurrentApply},
		{"Closed", testClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// Apply applies the batch that fill builds and fails the test on error.
func Apply(t testing.TB, s store.Store, fill func(b *store.Batch)) {
	t.Helper()
	var b store.Batch
	fill(&b)
	if err := s.Apply(&b); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

// Load loads the store at now and fails the test on error.
func Load(t testing.TB, s store.Store, now time.Time) *store.State {
	t.Helper()
	st, err := s.Load(now)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	return st
}

// Msg returns a QoS 1 message on topic with payload and id.
func Msg(id uint64, topic, payload string) *store.Message {
	return &store.Message{
		ID:       id,
		Publish:  &packet.Publish{QoS: 1, PacketID: uint16(id%65535 + 1), Topic: topic, Payload: []byte(payload)},
		Received: Base,
	}
}

// Entry returns a queued QoS 1 entry of client naming message msgID.
func Entry(client string, seq, msgID uint64) *store.QueueEntry {
	return &store.QueueEntry{ClientID: client, Seq: seq, MessageID: msgID, QoS: 1}
}

// Sess returns a session of client that never expires.
func Sess(client string) *store.Session {
	return &store.Session{ClientID: client, Version: packet.V5, ExpiryInterval: store.NeverExpire}
}

// Dump renders a State as text, one record a line, in a canonical form:
// two states hold the same data exactly when their dumps are equal.
func Dump(st *store.State) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "next-id %d\n", st.NextMessageID)
	for _, ss := range st.Sessions {
		sb.WriteString(dumpSession("session", ss.Session))
		for _, sub := range ss.Subscriptions {
			fmt.Fprintf(&sb, "  sub client=%q group=%q %+v id=%d\n", sub.ClientID, sub.Group, sub.Sub, sub.SubID)
		}
		for _, e := range ss.Queue {
			fmt.Fprintf(&sb, "  queue client=%q seq=%d msg=%d qos=%d pid=%d %s retain=%t subids=%v\n",
				e.ClientID, e.Seq, e.MessageID, e.QoS, e.PacketID, e.State, e.Retain, e.SubIDs)
		}
		fmt.Fprintf(&sb, "  inbound %v\n", ss.Inbound)
	}
	for _, s := range st.Expired {
		sb.WriteString(dumpSession("expired", s))
	}
	ids := make([]uint64, 0, len(st.Messages))
	for id := range st.Messages {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		m := st.Messages[id]
		if m.ID != id {
			fmt.Fprintf(&sb, "message under id %d has id %d\n", id, m.ID)
		}
		sb.WriteString(dumpMessage("message", m))
	}
	for _, m := range st.Retained {
		sb.WriteString(dumpMessage("retained", m))
	}
	return sb.String()
}

func dumpTime(t time.Time) string {
	if t.IsZero() {
		return "zero"
	}
	return fmt.Sprint(t.UnixMilli())
}

func dumpPublish(p *packet.Publish) string {
	if p == nil {
		return "nil"
	}
	b, err := p.Encode(nil, packet.V5)
	if err != nil {
		return "error:" + err.Error()
	}
	return hex.EncodeToString(b)
}

func dumpMessage(kind string, m *store.Message) string {
	return fmt.Sprintf("%s id=%d received=%s expiry=%s %s\n", kind, m.ID, dumpTime(m.Received),
		dumpTime(m.Expiry), dumpPublish(m.Publish))
}

func dumpSession(kind string, s *store.Session) string {
	will := "none"
	if w := s.Will; w != nil {
		delay := "none"
		pub := &packet.Publish{QoS: w.QoS, Retain: w.Retain, Topic: w.Topic, Payload: w.Payload, PacketID: 1}
		if w.Props != nil {
			props := *w.Props
			if props.WillDelay != nil {
				delay = fmt.Sprint(*props.WillDelay)
			}
			props.WillDelay = nil
			pub.Props = &props
		}
		will = fmt.Sprintf("delay=%s %s", delay, dumpPublish(pub))
	}
	return fmt.Sprintf("%s client=%q user=%q listener=%q version=%d expiry=%d disconnected=%s will=%s\n", kind,
		s.ClientID, s.Username, s.Listener, s.Version, s.ExpiryInterval, dumpTime(s.DisconnectedAt), will)
}

func session(t *testing.T, st *store.State, client string) *store.SessionState {
	t.Helper()
	for _, ss := range st.Sessions {
		if ss.Session.ClientID == client {
			return ss
		}
	}
	t.Fatalf("session %q not loaded; state:\n%s", client, Dump(st))
	return nil
}

func noSession(t *testing.T, st *store.State, client string) {
	t.Helper()
	for _, ss := range st.Sessions {
		if ss.Session.ClientID == client {
			t.Fatalf("session %q loaded, want none; state:\n%s", client, Dump(st))
		}
	}
}

func queueSeqs(ss *store.SessionState) []uint64 {
	var seqs []uint64
	for _, e := range ss.Queue {
		seqs = append(seqs, e.Seq)
	}
	return seqs
}

// MessageExists reports whether the store still holds message id, by
// naming it from a new queue entry: that is invalid once it is gone. The
// probe entry is deleted again.
func MessageExists(t *testing.T, s store.Store, id uint64) bool {
	t.Helper()
	var b store.Batch
	b.PutQueueEntry(Entry("probe", 1, id))
	b.DeleteQueueEntry("probe", 1)
	err := s.Apply(&b)
	if errors.Is(err, store.ErrInvalid) {
		return false
	}
	if err != nil {
		t.Fatalf("Apply probe: %v", err)
	}
	return true
}

func testEmpty(t *testing.T, s store.Store) {
	st := Load(t, s, Base)
	if len(st.Sessions) != 0 || len(st.Retained) != 0 || len(st.Messages) != 0 || len(st.Expired) != 0 {
		t.Errorf("empty store loaded:\n%s", Dump(st))
	}
	if st.NextMessageID != 1 {
		t.Errorf("NextMessageID = %d, want 1", st.NextMessageID)
	}
	if err := s.Apply(&store.Batch{}); err != nil {
		t.Errorf("Apply(empty batch): %v", err)
	}
}

func testSessions(t *testing.T, s store.Store) {
	full := &store.Session{
		ClientID: "full", Username: "alice", Listener: "0.0.0.0:1883", Version: packet.V5, ExpiryInterval: 3600,
		DisconnectedAt: Base.Add(-time.Minute),
		Will: &packet.Will{Topic: "wills/full", Payload: []byte("gone"), QoS: 2, Retain: true,
			Props: &packet.Properties{WillDelay: packet.Ptr[uint32](30), MessageExpiry: packet.Ptr[uint32](60),
				ContentType: "text/plain", User: []packet.UserProperty{{Key: "k", Value: "v"}}}},
	}
	v3 := &store.Session{ClientID: "v3", Version: packet.V311, ExpiryInterval: store.NeverExpire,
		Will: &packet.Will{Topic: "w", Payload: []byte{0, 1, 2}}}
	noDelay := &store.Session{ClientID: "nodelay", Version: packet.V5, ExpiryInterval: 10,
		Will: &packet.Will{Topic: "w2", QoS: 1, Props: &packet.Properties{ResponseTopic: "r"}}}
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(full)
		b.PutSession(v3)
		b.PutSession(noDelay)
		b.PutSession(Sess("replaced"))
	})
	replaced := &store.Session{ClientID: "replaced", Username: "bob", Version: packet.V31, ExpiryInterval: 5}
	Apply(t, s, func(b *store.Batch) { b.PutSession(replaced) })
	st := Load(t, s, Base)
	want := []*store.Session{full, noDelay, replaced, v3} // by client id
	if len(st.Sessions) != len(want) {
		t.Fatalf("loaded %d sessions, want %d:\n%s", len(st.Sessions), len(want), Dump(st))
	}
	for i, w := range want {
		if got, want := dumpSession("session", st.Sessions[i].Session), dumpSession("session", w); got != want {
			t.Errorf("session %d:\n got %s want %s", i, got, want)
		}
	}
	Apply(t, s, func(b *store.Batch) { b.DeleteSession("v3"); b.DeleteSession("unknown") })
	st = Load(t, s, Base)
	noSession(t, st, "v3")
	if len(st.Sessions) != 3 {
		t.Errorf("after delete: %d sessions, want 3", len(st.Sessions))
	}
}

func testSubscriptions(t *testing.T, s store.Store) {
	subs := []*store.Subscription{
		{ClientID: "c", Sub: packet.Subscription{Filter: "b/#", QoS: 2, NoLocal: true, RetainAsPublished: true,
			RetainHandling: 2}, SubID: 268435455},
		{ClientID: "c", Sub: packet.Subscription{Filter: "a/+", QoS: 1, RetainHandling: 1}},
		{ClientID: "c", Group: "g1", Sub: packet.Subscription{Filter: "a/+", QoS: 0}, SubID: 7},
		{ClientID: "other", Sub: packet.Subscription{Filter: "x", QoS: 1}},
	}
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("c"))
		b.PutSession(Sess("other"))
		for _, sub := range subs {
			b.PutSubscription(sub)
		}
	})
	// Replace one, delete one, delete one that does not exist.
	Apply(t, s, func(b *store.Batch) {
		b.PutSubscription(&store.Subscription{ClientID: "c", Sub: packet.Subscription{Filter: "a/+", QoS: 2}, SubID: 3})
		b.DeleteSubscription("c", "", "b/#")
		b.DeleteSubscription("c", "nogroup", "a/+")
	})
	st := Load(t, s, Base)
	got := session(t, st, "c").Subscriptions
	want := []string{
		`group="" {Filter:a/+ QoS:2 NoLocal:false RetainAsPublished:false RetainHandling:0} id=3`,
		`group="g1" {Filter:a/+ QoS:0 NoLocal:false RetainAsPublished:false RetainHandling:0} id=7`,
	}
	if len(got) != len(want) {
		t.Fatalf("got %d subscriptions, want %d:\n%s", len(got), len(want), Dump(st))
	}
	for i, sub := range got {
		if sub.ClientID != "c" {
			t.Errorf("subscription %d: client %q", i, sub.ClientID)
		}
		if s := fmt.Sprintf("group=%q %+v id=%d", sub.Group, sub.Sub, sub.SubID); s != want[i] {
			t.Errorf("subscription %d:\n got %s\nwant %s", i, s, want[i])
		}
	}
	if o := session(t, st, "other").Subscriptions; len(o) != 1 || o[0].Sub.Filter != "x" {
		t.Errorf("other's subscriptions: %+v", o)
	}
	// All options survive: the first put, before it was deleted.
	Apply(t, s, func(b *store.Batch) { b.PutSubscription(subs[0]) })
	st = Load(t, s, Base)
	var found bool
	for _, sub := range session(t, st, "c").Subscriptions {
		if sub.Sub.Filter == "b/#" {
			found = true
			if sub.Sub != subs[0].Sub || sub.SubID != subs[0].SubID || sub.Group != "" {
				t.Errorf("b/#: got %+v id %d, want %+v id %d", sub.Sub, sub.SubID, subs[0].Sub, subs[0].SubID)
			}
		}
	}
	if !found {
		t.Errorf("b/# not loaded")
	}
}

func testQueueOrder(t *testing.T, s store.Store) {
	seqs := []uint64{5, 1, 300, 2, 1 << 40, 256, 3}
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("c"))
		b.PutMessage(Msg(1, "t", "x"))
		for _, seq := range seqs {
			b.PutQueueEntry(Entry("c", seq, 1))
		}
	})
	Apply(t, s, func(b *store.Batch) { b.PutQueueEntry(Entry("c", 4, 1)) })
	st := Load(t, s, Base)
	want := []uint64{1, 2, 3, 4, 5, 256, 300, 1 << 40}
	if got := queueSeqs(session(t, st, "c")); !slices.Equal(got, want) {
		t.Errorf("queue order %v, want %v", got, want)
	}
}

func testQueueEntryUpdate(t *testing.T, s store.Store) {
	e := &store.QueueEntry{ClientID: "c", Seq: 9, MessageID: 1, QoS: 2, Retain: true, SubIDs: []uint32{1, 200000}}
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("c"))
		b.PutMessage(Msg(1, "t", "x"))
		b.PutQueueEntry(e)
	})
	st := Load(t, s, Base)
	got := session(t, st, "c").Queue
	if len(got) != 1 || got[0].State != store.Queued || got[0].PacketID != 0 || !got[0].Retain || got[0].QoS != 2 ||
		!slices.Equal(got[0].SubIDs, e.SubIDs) || got[0].MessageID != 1 {
		t.Fatalf("queue after put:\n%s", Dump(st))
	}
	for _, state := range []store.QueueState{store.PublishSent, store.PubrelSent} {
		Apply(t, s, func(b *store.Batch) {
			u := *e
			u.State, u.PacketID, u.SubIDs = state, 65535, nil
			b.PutQueueEntry(&u)
		})
		st = Load(t, s, Base)
		got = session(t, st, "c").Queue
		if len(got) != 1 || got[0].State != state || got[0].PacketID != 65535 || len(got[0].SubIDs) != 0 {
			t.Fatalf("queue after state %s:\n%s", state, Dump(st))
		}
		if _, ok := st.Messages[1]; !ok {
			t.Fatalf("message 1 gone after updating its only entry:\n%s", Dump(st))
		}
	}
}

func testMessageRefcount(t *testing.T, s store.Store) {
	clients := []string{"a", "b", "c"}
	Apply(t, s, func(b *store.Batch) {
		b.PutMessage(Msg(7, "t/7", "shared"))
		b.PutMessage(Msg(8, "t/8", "other"))
		for i, c := range clients {
			b.PutSession(Sess(c))
			b.PutQueueEntry(Entry(c, uint64(i+1), 7))
		}
		b.PutQueueEntry(Entry("a", 10, 8))
	})
	st := Load(t, s, Base)
	if len(st.Messages) != 2 || st.Messages[7] == nil || string(st.Messages[7].Publish.Payload) != "shared" {
		t.Fatalf("messages after put:\n%s", Dump(st))
	}
	if st.NextMessageID != 9 {
		t.Errorf("NextMessageID = %d, want 9", st.NextMessageID)
	}
	Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("a", 1); b.DeleteQueueEntry("b", 2) })
	if !MessageExists(t, s, 7) {
		t.Fatalf("message 7 deleted while c's entry names it")
	}
	st = Load(t, s, Base)
	if st.Messages[7] == nil {
		t.Fatalf("message 7 not loaded while c's entry names it:\n%s", Dump(st))
	}
	// Replacing the last entry naming 7 by one naming 8 releases 7.
	Apply(t, s, func(b *store.Batch) { b.PutQueueEntry(Entry("c", 3, 8)) })
	if MessageExists(t, s, 7) {
		t.Errorf("message 7 kept after its last entry moved to message 8")
	}
	Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("c", 3) })
	if !MessageExists(t, s, 8) {
		t.Fatalf("message 8 deleted while a's entry names it")
	}
	Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("a", 10); b.DeleteQueueEntry("a", 999) })
	if MessageExists(t, s, 8) {
		t.Errorf("message 8 kept after its last entry was deleted")
	}
	st = Load(t, s, Base)
	if len(st.Messages) != 0 || st.NextMessageID != 1 {
		t.Errorf("messages left after every entry was deleted (next id %d):\n%s", st.NextMessageID, Dump(st))
	}
}

func testUnreferencedMessage(t *testing.T, s store.Store) {
	Apply(t, s, func(b *store.Batch) { b.PutMessage(Msg(1, "t", "alone")) })
	if MessageExists(t, s, 1) {
		t.Errorf("a message no entry names was kept")
	}
	// A message is alive for the whole batch that drops its last entry.
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("c"))
		b.PutMessage(Msg(2, "t", "x"))
		b.PutQueueEntry(Entry("c", 1, 2))
	})
	Apply(t, s, func(b *store.Batch) {
		b.DeleteQueueEntry("c", 1)
		b.PutQueueEntry(Entry("c", 2, 2))
	})
	st := Load(t, s, Base)
	if got := queueSeqs(session(t, st, "c")); !slices.Equal(got, []uint64{2}) || st.Messages[2] == nil {
		t.Errorf("after delete and re-add in one batch:\n%s", Dump(st))
	}
}

// testEntriesNameStoredMessage: a batch may name, in new queue entries, a
// message it does not put, when an earlier batch stored it and an entry
// still names it (the broker writes a message body once per batch, and not
// again for entries of a message already stored). The message lives until
// its last entry goes, whichever batch put that entry.
func testEntriesNameStoredMessage(t *testing.T, s store.Store) {
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("a"))
		b.PutSession(Sess("b"))
		b.PutMessage(Msg(5, "t", "body"))
		b.PutQueueEntry(Entry("a", 1, 5))
	})
	// A state change of a's entry, b's new entry without the body, and
	// a's entry deleted, in one batch.
	Apply(t, s, func(b *store.Batch) {
		e := Entry("a", 1, 5)
		e.State, e.PacketID = store.PublishSent, 3
		b.PutQueueEntry(e)
		b.PutQueueEntry(Entry("b", 1, 5))
		b.DeleteQueueEntry("a", 1)
	})
	st := Load(t, s, Base)
	if st.Messages[5] == nil || string(st.Messages[5].Publish.Payload) != "body" ||
		!slices.Equal(queueSeqs(session(t, st, "b")), []uint64{1}) || len(session(t, st, "a").Queue) != 0 {
		t.Fatalf("after b's entry named the stored message:\n%s", Dump(st))
	}
	Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntryOf("b", 1, 5) })
	if MessageExists(t, s, 5) {
		t.Errorf("message 5 kept after its last entry was deleted")
	}
	if st := Load(t, s, Base); len(st.Messages) != 0 {
		t.Errorf("messages left:\n%s", Dump(st))
	}
}

func testInbound(t *testing.T, s store.Store) {
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("c"))
		for _, id := range []uint16{65535, 1, 300, 2} {
			b.PutInbound("c", id)
		}
		b.PutInbound("c", 2) // twice: still once
	})
	Apply(t, s, func(b *store.Batch) { b.DeleteInbound("c", 300); b.DeleteInbound("c", 7) })
	st := Load(t, s, Base)
	if got, want := session(t, st, "c").Inbound, []uint16{1, 2, 65535}; !slices.Equal(got, want) {
		t.Errorf("inbound %v, want %v", got, want)
	}
}

func testRetained(t *testing.T, s store.Store) {
	a := &store.Message{ID: 3, Received: Base.Add(-time.Hour), Publish: &packet.Publish{Retain: true, Topic: "a",
		Payload: []byte("1"), Props: &packet.Properties{ContentType: "c", PayloadFormat: packet.Ptr[byte](1)}}}
	b2 := &store.Message{ID: 4, Received: Base, Expiry: Base.Add(time.Hour),
		Publish: &packet.Publish{Retain: true, QoS: 2, PacketID: 9, Topic: "b/c", Payload: []byte("2")}}
	Apply(t, s, func(b *store.Batch) {
		b.PutRetained(a)
		b.PutRetained(b2)
		b.PutRetained(Msg(5, "gone", "x"))
	})
	a2 := &store.Message{ID: 6, Received: Base, Publish: &packet.Publish{Retain: true, Topic: "a", Payload: []byte("new")}}
	Apply(t, s, func(b *store.Batch) { b.PutRetained(a2); b.DeleteRetained("gone"); b.DeleteRetained("none") })
	st := Load(t, s, Base)
	want := dumpMessage("retained", a2) + dumpMessage("retained", b2)
	var got strings.Builder
	for _, m := range st.Retained {
		got.WriteString(dumpMessage("retained", m))
	}
	if got.String() != want {
		t.Errorf("retained:\n got %s\nwant %s", got.String(), want)
	}
	if st.NextMessageID != 7 {
		t.Errorf("NextMessageID = %d, want 7 (above retained ids)", st.NextMessageID)
	}
	// Expired at Load: dropped, and deleted.
	st = Load(t, s, Base.Add(time.Hour))
	if len(st.Retained) != 1 || st.Retained[0].Publish.Topic != "a" {
		t.Errorf("after b/c expired:\n%s", Dump(st))
	}
	st = Load(t, s, Base)
	if len(st.Retained) != 1 {
		t.Errorf("expired retained message came back:\n%s", Dump(st))
	}
}

func testSessionExpiry(t *testing.T, s store.Store) {
	now := Base.Add(time.Hour)
	will := &packet.Will{Topic: "w", Payload: []byte("bye")}
	sessions := []*store.Session{
		// Expired: disconnected 10 s before now with a 10 s expiry.
		{ClientID: "expired", Version: packet.V5, ExpiryInterval: 10, DisconnectedAt: now.Add(-10 * time.Second),
			Will: will},
		// Expiry 0 ends with the disconnect.
		{ClientID: "zero", Version: packet.V5, DisconnectedAt: now.Add(-time.Millisecond)},
		{ClientID: "live", Version: packet.V5, ExpiryInterval: 10, DisconnectedAt: now.Add(-9 * time.Second)},
		{ClientID: "never", Version: packet.V311, ExpiryInterval: store.NeverExpire, DisconnectedAt: Base},
		// Still marked connected (the broker stopped without marking it).
		{ClientID: "connected", Version: packet.V5, ExpiryInterval: 1},
	}
	Apply(t, s, func(b *store.Batch) {
		b.PutMessage(Msg(1, "t", "x"))
		b.PutMessage(Msg(2, "t", "only-expired"))
		for i, sess := range sessions {
			b.PutSession(sess)
			b.PutSubscription(&store.Subscription{ClientID: sess.ClientID, Sub: packet.Subscription{Filter: "t"}})
			b.PutQueueEntry(Entry(sess.ClientID, uint64(i), 1))
			b.PutInbound(sess.ClientID, 1)
		}
		b.PutQueueEntry(Entry("expired", 100, 2))
	})
	st := Load(t, s, now)
	for _, c := range []string{"live", "never", "connected"} {
		ss := session(t, st, c)
		if len(ss.Subscriptions) != 1 || len(ss.Queue) != 1 || len(ss.Inbound) != 1 {
			t.Errorf("session %q lost records:\n%s", c, Dump(st))
		}
	}
	noSession(t, st, "expired")
	noSession(t, st, "zero")
	if len(st.Expired) != 2 || st.Expired[0].ClientID != "expired" || st.Expired[1].ClientID != "zero" ||
		st.Expired[0].Will == nil || string(st.Expired[0].Will.Payload) != "bye" {
		t.Errorf("Expired = %+v, want expired (with its will) and zero", st.Expired)
	}
	if st.Messages[2] != nil || MessageExists(t, s, 2) {
		t.Errorf("message 2, named only by the expired session, was kept")
	}
	if !MessageExists(t, s, 1) {
		t.Errorf("message 1 deleted while live sessions name it")
	}
	// The expired sessions are gone for good, and a new one with the same id
	// starts empty.
	Apply(t, s, func(b *store.Batch) { b.PutSession(Sess("expired")) })
	st = Load(t, s, Base)
	if ss := session(t, st, "expired"); len(ss.Subscriptions)+len(ss.Queue)+len(ss.Inbound) != 0 {
		t.Errorf("recreated session inherited records:\n%s", Dump(st))
	}
	noSession(t, st, "zero")
	if len(st.Expired) != 0 {
		t.Errorf("Expired on second load: %+v", st.Expired)
	}
}

func testMessageExpiry(t *testing.T, s store.Store) {
	// [MQTT-3.3.2-5]: an expired message not yet sent to a subscriber is
	// deleted for it; one whose delivery started stays to complete.
	exp := Msg(1, "t", "expiring")
	exp.Expiry = Base.Add(time.Minute)
	keep := Msg(2, "t", "no expiry")
	later := Msg(3, "t", "later")
	later.Expiry = Base.Add(time.Hour)
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("c"))
		b.PutSession(Sess("d"))
		b.PutMessage(exp)
		b.PutMessage(keep)
		b.PutMessage(later)
		b.PutQueueEntry(&store.QueueEntry{ClientID: "c", Seq: 1, MessageID: 1, QoS: 1, State: store.PublishSent, PacketID: 5})
		b.PutQueueEntry(Entry("c", 2, 1))
		b.PutQueueEntry(Entry("c", 3, 2))
		b.PutQueueEntry(Entry("c", 4, 3))
		b.PutQueueEntry(Entry("d", 1, 1))
	})
	st := Load(t, s, Base.Add(time.Minute))
	if got := queueSeqs(session(t, st, "c")); !slices.Equal(got, []uint64{1, 3, 4}) {
		t.Errorf("c's queue %v, want [1 3 4] (queued copy of the expired message dropped):\n%s", got, Dump(st))
	}
	if got := queueSeqs(session(t, st, "d")); len(got) != 0 {
		t.Errorf("d's queue %v, want empty", got)
	}
	if st.Messages[1] == nil || st.Messages[2] == nil || st.Messages[3] == nil {
		t.Errorf("messages:\n%s", Dump(st))
	}
	// Completing the in-flight delivery releases the expired message.
	Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("c", 1) })
	if MessageExists(t, s, 1) {
		t.Errorf("expired message kept after its last entry was deleted")
	}
	st = Load(t, s, Base.Add(2*time.Hour))
	if got := queueSeqs(session(t, st, "c")); !slices.Equal(got, []uint64{3}) || len(st.Messages) != 1 {
		t.Errorf("after message 3 expired: queue %v:\n%s", got, Dump(st))
	}
}

func testDeleteSessionCascade(t *testing.T, s store.Store) {
	Apply(t, s, func(b *store.Batch) {
		b.PutMessage(Msg(1, "t", "shared"))
		b.PutMessage(Msg(2, "t", "mine"))
		for _, c := range []string{"c", "keep", "c2"} { // "c2" shares a prefix with "c"
			b.PutSession(Sess(c))
			b.PutSubscription(&store.Subscription{ClientID: c, Sub: packet.Subscription{Filter: "t"}})
			b.PutSubscription(&store.Subscription{ClientID: c, Group: "g", Sub: packet.Subscription{Filter: "t"}})
			b.PutInbound(c, 1)
			b.PutQueueEntry(Entry(c, 1, 1))
		}
		b.PutQueueEntry(Entry("c", 2, 2))
	})
	Apply(t, s, func(b *store.Batch) { b.DeleteSession("c") })
	st := Load(t, s, Base)
	noSession(t, st, "c")
	for _, c := range []string{"keep", "c2"} {
		ss := session(t, st, c)
		if len(ss.Subscriptions) != 2 || len(ss.Queue) != 1 || len(ss.Inbound) != 1 {
			t.Errorf("session %q lost records when c was deleted:\n%s", c, Dump(st))
		}
	}
	if MessageExists(t, s, 2) {
		t.Errorf("message 2 kept after the only session naming it was deleted")
	}
	if !MessageExists(t, s, 1) {
		t.Errorf("message 1 deleted while other sessions name it")
	}
	Apply(t, s, func(b *store.Batch) { b.DeleteSession("keep"); b.DeleteSession("c2") })
	if MessageExists(t, s, 1) {
		t.Errorf("message 1 kept after every session naming it was deleted")
	}
	if st := Load(t, s, Base); len(st.Sessions) != 0 || len(st.Messages) != 0 {
		t.Errorf("left after deleting every session:\n%s", Dump(st))
	}
}

// testEntryGoneThenSession: a batch that deletes or replaces queue entries
// of a session and then deletes the session releases each entry's message
// once: a message another session names stays.
func testEntryGoneThenSession(t *testing.T, s store.Store) {
	Apply(t, s, func(b *store.Batch) {
		b.PutMessage(Msg(1, "t", "shared"))
		b.PutMessage(Msg(2, "t", "also shared"))
		for _, c := range []string{"c", "keep"} {
			b.PutSession(Sess(c))
			b.PutQueueEntry(Entry(c, 1, 1))
			b.PutQueueEntry(Entry(c, 2, 2))
		}
	})
	Apply(t, s, func(b *store.Batch) {
		b.DeleteQueueEntry("c", 1) // acknowledged
		b.PutQueueEntry(&store.QueueEntry{ClientID: "c", Seq: 2, MessageID: 2, QoS: 1, State: store.PublishSent})
		b.DeleteSession("c") // then its session ends
	})
	st := Load(t, s, Base)
	noSession(t, st, "c")
	if ss := session(t, st, "keep"); len(ss.Queue) != 2 {
		t.Errorf("session keep lost entries:\n%s", Dump(st))
	}
	for _, id := range []uint64{1, 2} {
		if !MessageExists(t, s, id) {
			t.Errorf("message %d deleted while session keep names it", id)
		}
	}
}

func testDeleteThenRecreate(t *testing.T, s store.Store) {
	Apply(t, s, func(b *store.Batch) {
		b.PutSession(Sess("c"))
		b.PutMessage(Msg(1, "t", "old"))
		b.PutQueueEntry(Entry("c", 1, 1))
		b.PutQueueEntry(Entry("c", 2, 1))
		b.PutSubscription(&store.Subscription{ClientID: "c", Sub: packet.Subscription{Filter: "old"}})
		b.PutInbound("c", 1)
	})
	// Clean start: the old session goes, a new one comes, in one batch;
	// the new queue names the old message again.
	Apply(t, s, func(b *store.Batch) {
		b.PutQueueEntry(Entry("c", 3, 1))
		b.DeleteSession("c")
		b.PutSession(&store.Session{ClientID: "c", Version: packet.V5, ExpiryInterval: 60})
		b.PutSubscription(&store.Subscription{ClientID: "c", Sub: packet.Subscription{Filter: "new"}})
		b.PutQueueEntry(Entry("c", 2, 1))
		b.PutQueueEntry(Entry("c", 5, 1))
		b.DeleteQueueEntry("c", 5)
	})
	st := Load(t, s, Base)
	ss := session(t, st, "c")
	if ss.Session.ExpiryInterval != 60 || len(ss.Subscriptions) != 1 || ss.Subscriptions[0].Sub.Filter != "new" ||
		!slices.Equal(queueSeqs(ss), []uint64{2}) || len(ss.Inbound) != 0 || st.Messages[1] == nil {
		t.Fatalf("after delete and recreate:\n%s", Dump(st))
	}
	Apply(t, s, func(b *store.Batch) { b.DeleteQueueEntry("c", 2) })
	if MessageExists(t, s, 1) {
		t.Errorf("message 1 kept: the reference count went wrong across delete and recreate")
	}
}

func testInvalidBatch(t *testing.T, s store.Store) {
	Apply(t, s, func(b *store.Batch) { b.PutSession(Sess("c")) })
	tests := []struct {
		name string
		fill func(b *store.Batch)
	}{
		{"unknown message", func(b *store.Batch) {
			b.PutSession(Sess("new"))
			b.PutQueueEntry(Entry("c", 1, 42))
		}},
		{"message named before it is put", func(b *store.Batch) {
			b.PutQueueEntry(Entry("c", 1, 43))
			b.PutMessage(Msg(43, "t", "x"))
		}},
		{"empty client id", func(b *store.Batch) {
			b.PutSession(Sess("new"))
			b.PutSession(Sess(""))
		}},
		{"message without publish", func(b *store.Batch) {
			b.PutSession(Sess("new"))
			b.PutMessage(&store.Message{ID: 44})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var b store.Batch
			tc.fill(&b)
			if err := s.Apply(&b); !errors.Is(err, store.ErrInvalid) {
				t.Fatalf("Apply = %v, want ErrInvalid", err)
			}
			st := Load(t, s, Base)
			if len(st.Sessions) != 1 || len(st.Sessions[0].Queue) != 0 || len(st.Messages) != 0 {
				t.Errorf("a failed batch left changes:\n%s", Dump(st))
			}
		})
	}
}

func testConcurrentApply(t *testing.T, s store.Store) {
	const workers, perWorker = 8, 25
	Apply(t, s, func(b *store.Batch) { b.PutSession(Sess("c")) })
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				id := uint64(w*perWorker + i + 1)
				var b store.Batch
				b.PutMessage(Msg(id, "t", "x"))
				b.PutQueueEntry(Entry("c", id, id))
				if err := s.Apply(&b); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("Apply: %v", err)
	}
	st := Load(t, s, Base)
	ss := session(t, st, "c")
	if len(ss.Queue) != workers*perWorker || len(st.Messages) != workers*perWorker {
		t.Fatalf("loaded %d entries and %d messages, want %d", len(ss.Queue), len(st.Messages), workers*perWorker)
	}
	for i, e := range ss.Queue {
		if e.Seq != uint64(i+1) || e.MessageID != e.Seq {
			t.Fatalf("entry %d: seq %d message %d", i, e.Seq, e.MessageID)
		}
	}
}

func testClosed(t *testing.T, s store.Store) {
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	var b store.Batch
	b.PutSession(Sess("c"))
	if err := s.Apply(&b); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Apply after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Load(Base); !errors.Is(err, store.ErrClosed) {
		t.Errorf("Load after Close = %v, want ErrClosed", err)
	}
}
