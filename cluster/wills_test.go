package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// willRecords is how many will records of node of the bucket holds, as
// seen from at (-1 when they cannot be read).
func willRecords(t *testing.T, at, of *tnode) int {
	t.Helper()
	ids := willClients(t, at, of)
	if ids == nil {
		return -1
	}
	return len(ids)
}

// willClients is the set of client ids with a will record of node of, as
// seen from at (nil when they cannot be read).
func willClients(t *testing.T, at, of *tnode) map[string]bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	recs, err := at.node.readWills(ctx, "w."+nodeToken(of.node.Name())+".*")
	if err != nil {
		return nil
	}
	ids := map[string]bool{}
	for _, e := range recs {
		var rec willRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatalf("will record %s: %v", e.Key(), err)
		}
		ids[rec.ClientID] = true
	}
	return ids
}

// TestWillOfCleanSessionOfDeadNode: clients with clean sessions and wills
// (5.0 with Session Expiry 0, one with a Will Delay Interval, and 3.1.1
// with Clean Session) are connected to a node that dies without a word;
// after the survivors adopt the node, each will is published once
// [MQTT-3.1.2-8], at once: a clean session ends with its connection, which
// ends the delay. Clients that sent DISCONNECT before the node died get no
// will published [MQTT-3.1.2-10], and the records of the wills are gone.
func TestWillOfCleanSessionOfDeadNode(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStoredWith(t, "wl", func(c *Config) { c.AdoptAfter = 500 * time.Millisecond })
	a, b, c := nodes[0], nodes[1], nodes[2]
	watcher := connect(t, b, "wl-watcher")
	watcher.Subscribe(1, 1, "wl/will/#")
	waitInterest(t, a, "wl/will/#", b)
	waitInterest(t, c, "wl/will/#", b)

	const gone = 6
	for i := range gone {
		cp := &packet.Connect{Version: packet.V5, ClientID: fmt.Sprintf("wl-gone%d", i), CleanStart: true,
			Will: &packet.Will{Topic: fmt.Sprintf("wl/will/gone%d", i), Payload: []byte("gone"), QoS: 1}}
		switch i {
		case 1:
			cp.Will.Props = &packet.Properties{WillDelay: packet.Ptr[uint32](3600)}
		case 2, 3:
			cp.Version = packet.V311
		}
		brokertest.DialConnect(t, a.Addr, cp)
	}
	for i := range 2 {
		left, _ := brokertest.DialConnect(t, a.Addr, &packet.Connect{Version: packet.V5, ClientID: fmt.Sprintf("wl-left%d", i),
			CleanStart: true, Will: &packet.Will{Topic: fmt.Sprintf("wl/will/left%d", i), Payload: []byte("left"), QoS: 1}})
		disconnect(left)
	}
	// A persistent session's will goes by its session record, not by a
	// will record.
	persistentConnect(t, a, "wl-persistent")
	want := map[string]bool{}
	for i := range gone {
		want[fmt.Sprintf("wl-gone%d", i)] = true
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return maps.Equal(willClients(t, b, a), want) },
		"will records of a for %v", want)

	kill(a)
	got := map[string]int{}
	deadline := time.Now().Add(40 * time.Second)
	for len(got) < gone && time.Now().Before(deadline) {
		p, err := watcher.RecvTimeout(time.Until(deadline))
		if err != nil {
			break
		}
		if pp, ok := p.(*packet.Publish); ok {
			got[pp.Topic]++
			watcher.Ack(pp)
		}
	}
	for i := range gone {
		if topic := fmt.Sprintf("wl/will/gone%d", i); got[topic] != 1 {
			t.Fatalf("[MQTT-3.1.2-8] will %s published %d times, want once (got %v)", topic, got[topic], got)
		}
	}
	// Nothing more: no will of the clients that sent DISCONNECT, none twice.
	watcher.ExpectNothing(time.Second)
	brokertest.Eventually(t, 10*time.Second, func() bool { return willRecords(t, c, a) == 0 }, "records of a deleted")
}

// TestWillRecordFollowsSession: a clean session's will record exists while
// its client is connected and goes when the session ends, whether the will
// was discarded (DISCONNECT) or published (the connection lost); a
// persistent session has none; nothing is published by a node that did
// not die.
func TestWillRecordFollowsSession(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStored(t, "wr")
	a, b := nodes[0], nodes[1]
	watcher := connect(t, b, "wr-watcher")
	watcher.Subscribe(1, 1, "wr/will/#")
	waitInterest(t, a, "wr/will/#", b)

	first, _ := brokertest.DialConnect(t, a.Addr, &packet.Connect{Version: packet.V5, ClientID: "wr-1", CleanStart: true,
		Will: &packet.Will{Topic: "wr/will/1", Payload: []byte("1"), QoS: 1}})
	second, _ := brokertest.DialConnect(t, a.Addr, &packet.Connect{Version: packet.V5, ClientID: "wr-2", CleanStart: true,
		Will: &packet.Will{Topic: "wr/will/2", Payload: []byte("2"), QoS: 1}})
	brokertest.DialConnect(t, a.Addr, &packet.Connect{Version: packet.V5, ClientID: "wr-plain", CleanStart: true})
	persistentConnect(t, a, "wr-persistent")
	brokertest.Eventually(t, 10*time.Second, func() bool { return willRecords(t, b, a) == 2 }, "2 will records")

	disconnect(first)
	brokertest.Eventually(t, 10*time.Second, func() bool { return willRecords(t, b, a) == 1 }, "1 will record")
	second.NC.Close() // lost: a publishes the will itself
	if p := watcher.ExpectPublish(); p.Topic != "wr/will/2" {
		t.Fatalf("will: %s", brokertest.Describe(p))
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return willRecords(t, b, a) == 0 }, "no will record")
	watcher.ExpectNothing(300 * time.Millisecond)
}
