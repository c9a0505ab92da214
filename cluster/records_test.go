package cluster

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// recordKinds counts, for client id in the sessions bucket, the records of
// each kind (the key's first token): the live keys (live), and the keys
// ever written, a deleted one keeping its marker (written).
func recordKinds(t *testing.T, n *tnode, id string) (live, written map[string]int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	live, written = map[string]int{}, map[string]int{}
	l, err := n.node.sessions.ListKeysFiltered(ctx, "*."+clientToken(id)+".>")
	if err != nil {
		t.Fatal(err)
	}
	for k := range l.Keys() {
		live[strings.SplitN(k, ".", 2)[0]]++
	}
	info, err := n.node.sessStream.Info(ctx, jetstream.WithSubjectFilter(n.node.sessPrefix+"*."+clientToken(id)+".>"))
	if err != nil {
		t.Fatal(err)
	}
	for subj := range info.State.Subjects {
		written[strings.SplitN(strings.TrimPrefix(subj, n.node.sessPrefix), ".", 2)[0]]++
	}
	return live, written
}

// TestQueueEntryRecords: a QoS 1 delivery to a persistent session is one
// record in the bucket (its entry with the message) and that record's
// deletion once acknowledged; a QoS 2 delivery adds its PUBREL state
// [MQTT-4.3.3-2] as a second record, deleted with it at PUBCOMP.
func TestQueueEntryRecords(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStored(t, "rc")
	a, b := nodes[0], nodes[1]
	const id = "rc-sub"
	sub, _ := persistentConnect(t, a, id)
	sub.Subscribe(1, 2, "rc/t")
	waitInterest(t, b, "rc/t", a)
	pub := connect(t, b, "rc-pub")

	kinds := func(want map[string]int) map[string]int {
		t.Helper()
		var live, written map[string]int
		brokertest.Eventually(t, 5*time.Second, func() bool {
			live, written = recordKinds(t, a, id)
			for _, k := range []string{"e", "q", "b"} {
				if live[k] != want[k] {
					return false
				}
			}
			return true
		}, "records of the queue")
		return written
	}

	if rc := pub.Publish(&packet.Publish{Topic: "rc/t", QoS: 1, PacketID: 1, Payload: []byte("one")}); rc != packet.Success {
		t.Fatalf("publish: %v", rc)
	}
	p := sub.ExpectPublish()
	kinds(map[string]int{"e": 1})
	sub.Ack(p)
	if w := kinds(nil); w["e"] != 1 || w["q"] != 0 || w["b"] != 0 {
		t.Fatalf("a QoS 1 delivery wrote the records %v, want its entry only", w)
	}

	if rc := pub.Publish(&packet.Publish{Topic: "rc/t", QoS: 2, PacketID: 2, Payload: []byte("two")}); rc != packet.Success {
		t.Fatalf("publish: %v", rc)
	}
	p = sub.ExpectPublish()
	kinds(map[string]int{"e": 1})
	sub.Send(&packet.Pubrec{PacketID: p.PacketID})
	sub.ExpectPacket(&packet.Pubrel{PacketID: p.PacketID})
	kinds(map[string]int{"e": 1, "q": 1})
	sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
	if w := kinds(nil); w["e"] != 2 || w["q"] != 1 || w["b"] != 0 {
		t.Fatalf("after a QoS 2 delivery the records %v were written, want 2 entries and 1 state", w)
	}
}

// TestEarlierEntryFormatRead: queue entries a node wrote in the earlier
// format (entry and message as two records) are read when the session
// moves, and deleted from the bucket once imported; an entry without its
// message (never acknowledged) is skipped.
func TestEarlierEntryFormatRead(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStored(t, "lf")
	a, c := nodes[0], nodes[2]
	const id = "lf-sub"
	sub, _ := persistentConnect(t, a, id)
	sub.Subscribe(1, 1, "lf/t")
	disconnect(sub)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	put := func(key string, v any) {
		t.Helper()
		body, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.node.js.Publish(ctx, a.node.sessPrefix+key, body); err != nil {
			t.Fatal(err)
		}
	}
	old := nodeToken("lf-old")
	tok := clientToken(id)
	put("q."+tok+"."+old+".7", &store.QueueEntry{ClientID: id, Seq: 7, MessageID: 3, QoS: 1, State: store.Queued})
	put("b."+tok+"."+old+".7", &store.Message{ID: 3, Received: time.Now(),
		Publish: &packet.Publish{Topic: "lf/t", QoS: 1, PacketID: 1, Payload: []byte("earlier")}})
	put("q."+tok+"."+old+".8", &store.QueueEntry{ClientID: id, Seq: 8, MessageID: 4, QoS: 1, State: store.Queued})

	back, ack := persistentConnect(t, c, id)
	if !ack.SessionPresent {
		t.Fatal("session not present after the move")
	}
	p := back.ExpectPublish()
	if p.Topic != "lf/t" || string(p.Payload) != "earlier" || p.QoS != 1 {
		t.Fatalf("got %s, want the entry in the earlier format", brokertest.Describe(p))
	}
	back.Ack(p)
	back.ExpectNothing(200 * time.Millisecond)
	brokertest.Eventually(t, 5*time.Second, func() bool {
		live, _ := recordKinds(t, c, id)
		return live["q"] == 0 && live["b"] == 0 && live["e"] == 0
	}, "the earlier records deleted once imported")
}

// TestEntryStates: which deletions need more than the entry's record.
func TestEntryStates(t *testing.T) {
	var es entryStates
	if q, old := es.deleted(5); !q || !old {
		t.Fatalf("before any write: q %v old %v, want both (written by an earlier process)", q, old)
	}
	es.wrote(10)
	es.wrote(11)
	if q, old := es.deleted(9); !q || !old {
		t.Fatalf("entry 9: q %v old %v, want both", q, old)
	}
	if q, old := es.deleted(11); q || old {
		t.Fatalf("entry 11: q %v old %v, want neither", q, old)
	}
	es.changed("x", 12)
	es.changed("x", 12)
	es.changed("y", 13)
	if q, old := es.deleted(12); !q || old {
		t.Fatalf("entry 12 (state written): q %v old %v", q, old)
	}
	if q, _ := es.deleted(12); q {
		t.Fatal("entry 12 deleted twice: its state is forgotten")
	}
	es.changed("x", 14)
	es.ended("x")
	if es.count.Load() != 1 {
		t.Fatalf("after the end of x, %d states remembered, want 1 (y's)", es.count.Load())
	}
	if q, _ := es.deleted(13); !q {
		t.Fatal("entry 13 of y: state forgotten")
	}
}
