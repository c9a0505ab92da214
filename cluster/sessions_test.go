package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// startStored starts 3 linked nodes whose brokers keep persistent sessions
// (an in-memory store each).
func startStored(t *testing.T, name string) []*tnode {
	t.Helper()
	return startStoredWith(t, name, nil)
}

// startStoredWith is startStored with each node's Config changed by cfg.
func startStoredWith(t *testing.T, name string, cfg func(*Config)) []*tnode {
	t.Helper()
	return startStoredOn(t, name, cfg, func(int) store.Store { return mem.New() })
}

// startStoredOn is startStoredWith with node i's store from stores.
func startStoredOn(t *testing.T, name string, cfg func(*Config), stores func(i int) store.Store) []*tnode {
	t.Helper()
	nodes := startFresh(t, 3, func(addrs []string) []Config {
		var cfgs []Config
		for i := range addrs {
			cfgs = append(cfgs, Config{Name: name, Node: fmt.Sprintf("%s%d", name, i), Listen: addrs[i], Peers: addrs})
			if cfg != nil {
				cfg(&cfgs[i])
			}
		}
		return cfgs
	}, func(i int, o *broker.Options) { o.Store = stores(i) })
	brokertest.Eventually(t, 20*time.Second, func() bool { return linked(nodes, 2) }, "3 nodes linked")
	return nodes
}

// persistentConnect connects a v5 client with a session that outlives its
// connection (an hour).
func persistentConnect(t *testing.T, n *tnode, id string) (*brokertest.Conn, *packet.Connack) {
	t.Helper()
	return brokertest.DialConnect(t, n.Addr, &packet.Connect{Version: packet.V5, ClientID: id,
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}})
}

// disconnect ends c with a DISCONNECT (no will) and waits for the close.
func disconnect(c *brokertest.Conn) {
	c.Send(&packet.Disconnect{})
	c.ExpectClosed()
}

// queued is how many messages client id's session on n holds (queued or in
// flight); -1 when n has no session for id.
func queued(n *tnode, id string) int {
	d, ok := n.Server.Server.ClientDetail(id)
	if !ok {
		return -1
	}
	return d.Queued + d.Inflight
}

// expectSeq reads count QoS 1 messages numbered from first, in order,
// acknowledging each.
func expectSeq(t *testing.T, c *brokertest.Conn, topicName string, first, count int) {
	t.Helper()
	for i := first; i < first+count; i++ {
		p := c.ExpectPublish()
		if p.Topic != topicName || string(p.Payload) != fmt.Sprint(i) {
			t.Fatalf("message %d: got %s", i, brokertest.Describe(p))
		}
		c.Ack(p)
	}
}

// TestPersistentSessionMovesWithQueue: a persistent session left offline
// on one node, with QoS 1 messages queued for it, is resumed on another
// node: session present [MQTT-3.2.2-3], its subscription and every queued
// message in order [MQTT-4.6.0-6] come with it, and the first node lets it
// go. What is published afterwards goes to the new node.
func TestPersistentSessionMovesWithQueue(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStored(t, "mv")
	a, b, c := nodes[0], nodes[1], nodes[2]

	sub, ack := persistentConnect(t, a, "mover")
	if ack.SessionPresent {
		t.Fatal("new session reported present")
	}
	sub.Subscribe(1, 1, "mv/t")
	waitInterest(t, b, "mv/t", a)
	disconnect(sub)

	pub := connect(t, b, "mv-pub")
	const n = 20
	for i := range n {
		if rc := pub.Publish(&packet.Publish{Topic: "mv/t", QoS: 1, PacketID: uint16(i + 1),
			Payload: []byte(fmt.Sprint(i))}); rc != packet.Success {
			t.Fatalf("publish %d: %v", i, rc)
		}
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(a, "mover") == n }, "20 queued on a")

	moved, ack := persistentConnect(t, c, "mover")
	if !ack.SessionPresent {
		t.Fatal("[MQTT-3.2.2-3] session moved to c not reported present")
	}
	expectSeq(t, moved, "mv/t", 0, n)
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(a, "mover") == -1 }, "a let the session go")
	if owner(t, c, "mover") != c.node.Name() {
		t.Fatalf("owner of mover: %q", owner(t, c, "mover"))
	}

	// Published on a and b from now on, delivered on c.
	waitInterest(t, a, "mv/t", c)
	pubA := connect(t, a, "mv-pub-a")
	pubA.Publish(&packet.Publish{Topic: "mv/t", QoS: 1, PacketID: 1, Payload: []byte(fmt.Sprint(n))})
	expectSeq(t, moved, "mv/t", n, 1)
	pub.Publish(&packet.Publish{Topic: "mv/t", QoS: 1, PacketID: 99, Payload: []byte(fmt.Sprint(n + 1))})
	expectSeq(t, moved, "mv/t", n+1, 1)

	// Taken offline again, and back to a: the queue follows once more.
	disconnect(moved)
	brokertest.Eventually(t, 10*time.Second, func() bool {
		d, ok := c.Server.Server.ClientDetail("mover")
		return ok && !d.Connected
	}, "mover offline on c")
	for i := n + 2; i < n+7; i++ {
		pub.Publish(&packet.Publish{Topic: "mv/t", QoS: 1, PacketID: uint16(i), Payload: []byte(fmt.Sprint(i))})
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(c, "mover") == 5 }, "5 queued on c")
	back, ack := persistentConnect(t, a, "mover")
	if !ack.SessionPresent {
		t.Fatal("session moved back to a not reported present")
	}
	expectSeq(t, back, "mv/t", n+2, 5)
	back.ExpectNothing(200 * time.Millisecond)
}

// TestLiveTakeoverKeepsQueue: a client connected on one node connects on
// another: the first connection gets DISCONNECT 0x8E [MQTT-3.1.4-3], the
// second session present, and the messages published before, during and
// after the move all arrive (at least once: the move may duplicate some,
// never lose one).
func TestLiveTakeoverKeepsQueue(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStored(t, "lt")
	a, b, c := nodes[0], nodes[1], nodes[2]
	first, _ := persistentConnect(t, a, "live")
	first.Subscribe(1, 1, "lt/t")
	waitInterest(t, b, "lt/t", a)
	pub := connect(t, b, "lt-pub")

	const n = 300
	done := make(chan error, 1)
	go func() {
		for i := range n {
			if rc := pub.Publish(&packet.Publish{Topic: "lt/t", QoS: 1, PacketID: uint16(i%60000 + 1),
				Payload: []byte(fmt.Sprint(i))}); rc != packet.Success {
				done <- fmt.Errorf("publish %d: %v", i, rc)
				return
			}
		}
		done <- nil
	}()
	// The first client reads (without acknowledging) until the takeover.
	seen := map[string]bool{}
	for len(seen) < 20 {
		p := first.ExpectPublish()
		seen[string(p.Payload)] = false // not acknowledged: redelivered after the move
	}
	second, ack := persistentConnect(t, c, "live")
	if !ack.SessionPresent {
		t.Fatal("[MQTT-3.2.2-3] session present after a takeover across nodes")
	}
	got := expectClosedWithin(t, first, 10*time.Second)
	var disc *packet.Disconnect
	for _, p := range got {
		if d, ok := p.(*packet.Disconnect); ok {
			disc = d
		}
	}
	if disc == nil || disc.ReasonCode != packet.SessionTakenOver {
		t.Fatalf("[MQTT-3.1.4-3] first connection got %v, want DISCONNECT 0x8E", got)
	}
	recv := map[string]int{}
	deadline := time.Now().Add(60 * time.Second)
	for len(recv) < n && time.Now().Before(deadline) {
		p, err := second.RecvTimeout(time.Until(deadline))
		if err != nil {
			break
		}
		if pp, ok := p.(*packet.Publish); ok {
			recv[string(pp.Payload)]++
			second.Ack(pp)
		}
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	var missing []int
	for i := range n {
		if recv[fmt.Sprint(i)] == 0 {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		d, _ := c.Server.Server.ClientDetail("live")
		t.Logf("c's session: %+v", d.ClientSummary)
		t.Fatalf("%d of %d messages never delivered after the takeover: %v", len(missing), n, missing)
	}
	dups := 0
	for _, k := range recv {
		dups += k - 1
	}
	t.Logf("%d messages, %d delivered twice", n, dups)
	if queued(a, "live") != -1 {
		t.Fatal("a kept the session")
	}
}

// TestSessionOfDeadNode: the node holding a persistent session and its
// queue stops without a word (its NATS server and broker closed: nothing
// is handed over); the client reconnects to a survivor and gets its session
// and every message that was acknowledged to the publisher, and the will
// it owed, at once [MQTT-3.1.2-8].
func TestSessionOfDeadNode(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStored(t, "dn")
	a, b, c := nodes[0], nodes[1], nodes[2]
	watcher := connect(t, c, "dn-watcher")
	watcher.Subscribe(1, 0, "dn/will")
	waitInterest(t, a, "dn/will", c)

	sub, _ := brokertest.DialConnect(t, a.Addr, &packet.Connect{Version: packet.V5, ClientID: "orphan",
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)},
		Will:  &packet.Will{Topic: "dn/will", Payload: []byte("gone")}})
	sub.Subscribe(1, 1, "dn/t")
	waitInterest(t, b, "dn/t", a)
	pub := connect(t, b, "dn-pub")
	const n = 10
	for i := range n {
		if rc := pub.Publish(&packet.Publish{Topic: "dn/t", QoS: 1, PacketID: uint16(i + 1),
			Payload: []byte(fmt.Sprint(i))}); rc != packet.Success {
			t.Fatalf("publish %d: %v", i, rc)
		}
	}
	// Read but not acknowledged: in flight when a dies.
	for range n {
		sub.ExpectPublish()
	}

	// a dies: its cluster node goes first (nothing more reaches the
	// cluster), then its broker.
	a.node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	a.Server.Server.Shutdown(ctx)
	cancel()
	brokertest.Eventually(t, 20*time.Second, func() bool { return linked(nodes[1:], 1) && b.node.Stats().LinksUp == 1 },
		"b and c see a gone")

	back, ack := persistentConnect(t, b, "orphan")
	if !ack.SessionPresent {
		t.Fatal("session of the dead node not present on the survivor")
	}
	seen := map[string]bool{}
	for len(seen) < n {
		p := back.ExpectPublish()
		if p.Topic != "dn/t" {
			t.Fatalf("got %s", brokertest.Describe(p))
		}
		seen[string(p.Payload)] = true
		back.Ack(p)
	}
	if w := watcher.ExpectPublish(); w.Topic != "dn/will" || string(w.Payload) != "gone" {
		t.Fatalf("will: %s", brokertest.Describe(w))
	}
	// The session goes on from b, once the survivors acknowledge again.
	waitAcking(t, b, nodes[2])
	pub.Publish(&packet.Publish{Topic: "dn/t", QoS: 1, PacketID: 50, Payload: []byte("after")})
	if p := back.ExpectPublish(); string(p.Payload) != "after" {
		t.Fatalf("after the move: %s", brokertest.Describe(p))
	}
}

// TestCleanStartEndsSessionElsewhere: a clean start on another node ends
// the persistent session the first node held, everywhere [MQTT-3.1.2-4]:
// no session present, nothing of the old queue delivered, and a later
// resume finds nothing either.
func TestCleanStartEndsSessionElsewhere(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStored(t, "cs")
	a, b, c := nodes[0], nodes[1], nodes[2]
	sub, _ := persistentConnect(t, a, "cleaner")
	sub.Subscribe(1, 1, "cs/t")
	waitInterest(t, b, "cs/t", a)
	disconnect(sub)
	pub := connect(t, b, "cs-pub")
	pub.Publish(&packet.Publish{Topic: "cs/t", QoS: 1, PacketID: 1, Payload: []byte("old")})
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(a, "cleaner") == 1 }, "queued on a")

	fresh, ack := brokertest.DialConnect(t, c.Addr, &packet.Connect{Version: packet.V5, ClientID: "cleaner",
		CleanStart: true, Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}})
	if ack.SessionPresent {
		t.Fatal("[MQTT-3.1.2-4] clean start reported a session present")
	}
	fresh.ExpectNothing(200 * time.Millisecond)
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(a, "cleaner") == -1 }, "a ended the session")
	disconnect(fresh)
	again, ack := persistentConnect(t, b, "cleaner")
	if !ack.SessionPresent {
		t.Fatal("the clean start's own (persistent) session not present on b")
	}
	again.ExpectNothing(200 * time.Millisecond)
}

// TestSurvivorsAdoptSessions: a node with persistent sessions goes away
// and stays away; after Config.AdoptAfter the survivors adopt its
// sessions: the will it owed is published [MQTT-3.1.2-8] without its
// client coming back, messages published meanwhile are queued for the
// session, and the client finds all of them when it connects to any
// survivor, with session present.
func TestSurvivorsAdoptSessions(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStoredWith(t, "ad", func(c *Config) { c.AdoptAfter = time.Second })
	a, b, c := nodes[0], nodes[1], nodes[2]
	watcher := connect(t, c, "ad-watcher")
	watcher.Subscribe(1, 0, "ad/will")
	waitInterest(t, a, "ad/will", c)
	var subs []*brokertest.Conn
	for i := range 4 {
		s, _ := brokertest.DialConnect(t, a.Addr, &packet.Connect{Version: packet.V5, ClientID: fmt.Sprintf("adoptee%d", i),
			Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)},
			Will:  &packet.Will{Topic: "ad/will", Payload: []byte(fmt.Sprint(i))}})
		s.Subscribe(1, 1, fmt.Sprintf("ad/t/%d", i))
		subs = append(subs, s)
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return owner(t, b, "adoptee3") == a.node.Name() }, "owned by a")

	a.node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	a.Server.Server.Shutdown(ctx)
	cancel()
	wills := map[string]bool{}
	deadline := time.Now().Add(30 * time.Second)
	for len(wills) < 4 && time.Now().Before(deadline) {
		p, err := watcher.RecvTimeout(time.Until(deadline))
		if err != nil {
			break
		}
		if pp, ok := p.(*packet.Publish); ok && pp.Topic == "ad/will" {
			wills[string(pp.Payload)] = true
		}
	}
	if len(wills) != 4 {
		t.Fatalf("[MQTT-3.1.2-8] wills published by the survivors: %v, want 4", wills)
	}
	holder := func(id string) *tnode {
		for _, n := range []*tnode{b, c} {
			if queued(n, id) >= 0 {
				return n
			}
		}
		return nil
	}
	for i := range 4 {
		id := fmt.Sprintf("adoptee%d", i)
		brokertest.Eventually(t, 10*time.Second, func() bool { return holder(id) != nil }, "%s adopted", id)
		waitInterest(t, b, fmt.Sprintf("ad/t/%d", i))
	}
	waitAcking(t, b, c)
	pub := connect(t, b, "ad-pub")
	for i := range 4 {
		if rc := pub.Publish(&packet.Publish{Topic: fmt.Sprintf("ad/t/%d", i), QoS: 1, PacketID: uint16(i + 1),
			Payload: []byte("while away")}); rc != packet.Success {
			t.Fatalf("publish: %v", rc)
		}
	}
	for i := range 4 {
		id := fmt.Sprintf("adoptee%d", i)
		brokertest.Eventually(t, 10*time.Second, func() bool { return queued(holder(id), id) == 1 }, "%s queued", id)
		// Back on whichever survivor did not adopt it.
		at := b
		if holder(id) == b {
			at = c
		}
		back, ack := persistentConnect(t, at, id)
		if !ack.SessionPresent {
			t.Fatalf("%s: adopted session not present", id)
		}
		if p := back.ExpectPublish(); string(p.Payload) != "while away" || p.Topic != fmt.Sprintf("ad/t/%d", i) {
			t.Fatalf("%s: %s", id, brokertest.Describe(p))
		}
	}
}
