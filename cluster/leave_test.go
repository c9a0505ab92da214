package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// TestGracefulLeave: a node shut down gracefully (Quiesce, Leave) hands its
// persistent sessions to the other nodes before its links go: its
// connected clients are told 0x8B [MQTT-3.14.2-1], each session is owned
// by another node with its queue, and when the links go the others refuse
// no acknowledgement (no hold gate), so the cluster's QoS 1 publishers are
// not disconnected. The clients resume their sessions on any node with
// every message [MQTT-4.6.0-6], those published after the node left too.
func TestGracefulLeave(t *testing.T) {
	t.Parallel() // a cluster of its own

	logs := &logRecorder{} // a's
	nodes := startStoredWith(t, "lv", func(c *Config) {
		if c.Node == "lv0" {
			c.Logger = slog.New(logs)
		}
	})
	a, b, c := nodes[0], nodes[1], nodes[2]
	const before, after = 5, 5
	queueOffline(t, a, "lv-off", "lv/off", before, b, c)
	on, _ := persistentConnect(t, a, "lv-on")
	on.Subscribe(1, 1, "lv/on")
	waitInterest(t, b, "lv/on", a)
	pub := connect(t, b, "lv-pub")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := a.Server.Server.Quiesce(ctx); err != nil {
		t.Fatalf("quiesce: %v", err)
	}
	got, err := on.RecvTimeout(5 * time.Second)
	if d, ok := got.(*packet.Disconnect); err != nil || !ok || d.ReasonCode != packet.ServerShuttingDown {
		t.Fatalf("connected client got %s, %v; want DISCONNECT 0x8B", brokertest.Describe(got), err)
	}
	// Published while the sessions are offline on a and not moved yet.
	if rc := pub.Publish(&packet.Publish{Topic: "lv/on", QoS: 1, PacketID: 1, Payload: []byte("0")}); rc != packet.Success {
		t.Fatalf("publish: %v", rc)
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(a, "lv-on") == 1 }, "queued on a")

	// a leads the sessions' stream: its writes must not wait for an
	// election once a is gone.
	const stream = "KV_" + bucketSessions
	leadsSessions(t, a, nodes)

	moved, err := a.node.Leave(ctx)
	if err != nil || moved != 2 {
		t.Fatalf("leave: %d sessions moved, %v; want 2", moved, err)
	}
	for _, id := range []string{"lv-off", "lv-on"} {
		if o := owner(t, b, id); o != b.node.Name() && o != c.node.Name() {
			t.Fatalf("%s owned by %q after the leave", id, o)
		}
		if queued(a, id) != -1 {
			t.Fatalf("%s still on the node that left", id)
		}
	}
	if acc := server.DEFAULT_GLOBAL_ACCOUNT; a.node.ns.JetStreamIsStreamLeader(acc, stream) ||
		!b.node.ns.JetStreamIsStreamLeader(acc, stream) && !c.node.ns.JetStreamIsStreamLeader(acc, stream) {
		t.Fatal("the node that left did not hand the leadership of the sessions' stream to another")
	}
	// It saw the new leader before it left: a request for the stream's
	// info sent while the stream had none (right after the stepdown) got
	// no answer and took the whole wait, the leave 5 s longer.
	if logs.has("no other leader of a bucket yet") {
		t.Fatal("the node that left did not see the new leader of the sessions' stream")
	}
	kill(a)
	brokertest.Eventually(t, 10*time.Second, func() bool {
		return !countsOn(b, a.node.Name()) && !countsOn(c, a.node.Name())
	}, "b and c see a gone")
	if b.node.acks.gating.Load() || c.node.acks.gating.Load() {
		t.Fatal("the hold gate closed for a node that left with its sessions handed over")
	}
	for i := range after {
		for _, tp := range []string{"lv/off", "lv/on"} {
			p := &packet.Publish{Topic: tp, QoS: 1, PacketID: uint16(10 + 2*i), Payload: []byte(fmt.Sprint(before + i))}
			if tp == "lv/on" {
				p.PacketID++
				p.Payload = []byte(fmt.Sprint(1 + i))
			}
			if rc := pub.Publish(p); rc != packet.Success {
				t.Fatalf("publish after the leave: %v", rc)
			}
		}
	}

	// Each client resumes on the node that does not hold its session: the
	// session moves once more, with everything.
	for _, tc := range []struct {
		id, topic string
		n         int
	}{{"lv-off", "lv/off", before + after}, {"lv-on", "lv/on", 1 + after}} {
		at := b
		if owner(t, b, tc.id) == b.node.Name() {
			at = c
		}
		conn, ack := persistentConnect(t, at, tc.id)
		if !ack.SessionPresent {
			t.Fatalf("%s: session present 0 on %s", tc.id, at.node.Name())
		}
		expectAll(t, conn, tc.id, tc.topic, tc.n, 10*time.Second)
	}
}

// leadsSessions makes n the leader of the sessions bucket's stream, by
// stepping down whichever node of nodes leads it until n is elected.
func leadsSessions(t *testing.T, n *tnode, nodes []*tnode) {
	t.Helper()
	const stream = "KV_" + bucketSessions
	acc := server.DEFAULT_GLOBAL_ACCOUNT
	brokertest.Eventually(t, 60*time.Second, func() bool {
		if n.node.ns.JetStreamIsStreamLeader(acc, stream) {
			return true
		}
		for _, o := range nodes {
			if o != n && o.node.ns.JetStreamIsStreamLeader(acc, stream) {
				o.node.ns.JetStreamStepdownStream(acc, stream) // then no node leads until the election ends
			}
		}
		return false
	}, "%s leads %s", n.node.Name(), stream)
}

// TestNodeForMovesOnlyTheGoneShare: nodeFor spreads client ids about
// evenly, and when a node goes only the ids it was chosen for move; every
// other id keeps its node (a holder that goes hands nothing of the others'
// over, standby.go).
func TestNodeForMovesOnlyTheGoneShare(t *testing.T) {
	nodes := []string{"a", "b", "c", "d", "e"}
	const ids = 10000
	per := map[string]int{}
	for i := range ids {
		id := fmt.Sprintf("client-%d", i)
		was := nodeFor(id, nodes)
		per[was]++
		now := nodeFor(id, []string{"a", "b", "d", "e"}) // c goes
		if was != "c" && now != was {
			t.Fatalf("%s moved from %s to %s when c went", id, was, now)
		}
		if now == "c" {
			t.Fatalf("%s chosen for c, which is gone", id)
		}
	}
	for _, n := range nodes {
		if got := per[n]; got < ids/5*8/10 || got > ids/5*12/10 {
			t.Errorf("node %s chosen for %d of %d ids, want about %d: %v", n, got, ids, ids/5, per)
		}
	}
}
