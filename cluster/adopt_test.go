package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// setStep installs f as the cluster's test step hook until the test ends.
func setStep(t *testing.T, f func(ctx context.Context, node, step, id string) error) {
	t.Helper()
	testStep.Store(&f)
	t.Cleanup(func() { testStep.Store(nil) })
}

// adopterOf is the node among live that adopts client id's session when
// its node is lost (adoptSessions' choice).
func adopterOf(id string, live ...*tnode) *tnode {
	names := make([]string, 0, len(live))
	for _, n := range live {
		names = append(names, n.node.Name())
	}
	name := nodeFor(id, names)
	for _, n := range live {
		if n.node.Name() == name {
			return n
		}
	}
	return nil
}

// idAdoptedBy returns a client id starting with prefix whose session the
// adopter among live adopts.
func idAdoptedBy(prefix string, adopter *tnode, live ...*tnode) string {
	for i := 0; ; i++ {
		id := fmt.Sprintf("%s%d", prefix, i)
		if adopterOf(id, live...) == adopter {
			return id
		}
	}
}

// tryResume connects a v5 client resuming client id's session on n and
// returns the connection and its CONNACK, whatever its reason code; the
// CONNACK may take a while (the session moves first).
func tryResume(t *testing.T, n *tnode, id string) (*brokertest.Conn, *packet.Connack) {
	t.Helper()
	c := brokertest.Dial(t, n.Addr, packet.V5)
	c.Send(&packet.Connect{Version: packet.V5, ProtocolName: "MQTT", ClientID: id,
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}})
	p, err := c.RecvTimeout(30 * time.Second)
	if err != nil {
		t.Fatalf("%s: no CONNACK: %v", id, err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		t.Fatalf("%s: got %s, want CONNACK", id, brokertest.Describe(p))
	}
	return c, ack
}

// resume connects client id to n until a CONNECT is accepted (a survivor
// refuses one while JetStream elects the leaders of a lost node: the client
// may try again), and expects its session present.
func resume(t *testing.T, n *tnode, id string) *brokertest.Conn {
	t.Helper()
	deadline := time.Now().Add(40 * time.Second)
	for {
		c, ack := tryResume(t, n, id)
		if ack.ReasonCode == packet.Success {
			if !ack.SessionPresent {
				t.Fatalf("[MQTT-3.2.2-3] %s: resumed session not present", id)
			}
			return c
		}
		c.NC.Close()
		if time.Now().After(deadline) {
			t.Fatalf("%s: CONNECT refused until the deadline: %v", id, ack.ReasonCode)
		}
	}
}

// expectAll reads QoS 1 messages on c, acknowledging each, until every
// payload 0..n-1 of topicName arrived (duplicates allowed), and fails the
// test with the missing ones after timeout.
func expectAll(t *testing.T, c *brokertest.Conn, id, topicName string, n int, timeout time.Duration) {
	t.Helper()
	got := map[string]bool{}
	deadline := time.Now().Add(timeout)
	for len(got) < n && time.Now().Before(deadline) {
		p, err := c.RecvTimeout(time.Until(deadline))
		if err != nil {
			break
		}
		pp, ok := p.(*packet.Publish)
		if !ok {
			continue
		}
		if pp.Topic != topicName {
			t.Fatalf("%s: got %s", id, brokertest.Describe(pp))
		}
		got[string(pp.Payload)] = true
		c.Ack(pp)
	}
	var missing []int
	for i := range n {
		if !got[fmt.Sprint(i)] {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s: %d of %d queued messages lost: %v", id, len(missing), n, missing)
	}
}

// queueOffline gives client id a persistent session on n subscribed to
// topicName, takes it offline, and queues count QoS 1 messages for it
// (payloads 0..count-1), published on n; each peer learns the interest.
func queueOffline(t *testing.T, n *tnode, id, topicName string, count int, peers ...*tnode) {
	t.Helper()
	sub, _ := persistentConnect(t, n, id)
	sub.Subscribe(1, 1, topicName)
	for _, p := range peers {
		waitInterest(t, p, topicName, n)
	}
	disconnect(sub)
	pub := connect(t, n, id+"-pub")
	for i := range count {
		pub.Send(&packet.Publish{Topic: topicName, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(fmt.Sprint(i))})
		got, err := pub.RecvTimeout(5 * time.Second)
		if err != nil {
			t.Fatalf("publish %d of %d for %s on %s: no PUBACK: %v", i, count, id, n.node.Name(), err)
		}
		if a, ok := got.(*packet.Puback); !ok || a.PacketID != uint16(i+1) || a.ReasonCode != packet.Success {
			t.Fatalf("publish %d of %d for %s on %s: got %s", i, count, id, n.node.Name(), brokertest.Describe(got))
		}
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(n, id) == count }, "%d queued for %s", count, id)
}

// kill stops n without a word: its cluster node first (nothing more
// reaches the cluster), then its broker.
func kill(n *tnode) {
	n.node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	n.Server.Server.Shutdown(ctx)
	cancel()
}

// TestMoveInterruptedKeepsQueue: a move of a persistent session from one
// node to another fails after the new node installed its subscriptions and
// the former owner let it go (the CONNECT is refused); the client connects
// to the new node again and finds its session with every queued message
// [MQTT-4.6.0-6], not the subscriptions alone.
func TestMoveInterruptedKeepsQueue(t *testing.T) {
	nodes := startStored(t, "mi")
	a, b := nodes[0], nodes[1]
	const n = 30
	queueOffline(t, a, "interrupted", "mi/t", n, b)

	var failed atomic.Bool
	setStep(t, func(_ context.Context, node, step, id string) error {
		if node == b.node.Name() && step == "move.released" && id == "interrupted" && failed.CompareAndSwap(false, true) {
			return errors.New("test: the move fails here")
		}
		return nil
	})
	c, ack := tryResume(t, b, "interrupted")
	if ack.ReasonCode == packet.Success || !failed.Load() {
		t.Fatalf("first CONNECT: %v (step reached: %v), want it refused", ack.ReasonCode, failed.Load())
	}
	c.NC.Close()
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(a, "interrupted") == -1 }, "a let the session go")

	back := resume(t, b, "interrupted")
	expectAll(t, back, "interrupted", "mi/t", n, 20*time.Second)
	back.ExpectNothing(300 * time.Millisecond)
	if o := owner(t, a, "interrupted"); o != b.node.Name() {
		t.Fatalf("owner: %q", o)
	}
}

// TestAdoptionYieldsToReconnect: the survivor adopting a lost node's
// session is held at a step of its adoption while the client connects to
// the other survivor; that one gets the session and every queued message,
// and the adopter keeps no copy of the session (which would queue, and
// publish the will, a second time). When the client moves on to the
// adopter later, only what was queued since arrives.
//
//   - held after it claimed the client id and read the session, before
//     its import: the adoption stops;
//   - held after its import (an import longer than the wait for it): the
//     session is handed over, and the adopter deletes its records of it.
func TestAdoptionYieldsToReconnect(t *testing.T) {
	for _, step := range []string{"adopt.fetched", "adopt.imported"} {
		t.Run(step, func(t *testing.T) { adoptionRace(t, step) })
	}
}

func adoptionRace(t *testing.T, holdAt string) {
	nodes := startStoredWith(t, "ay", func(c *Config) { c.AdoptAfter = 500 * time.Millisecond })
	a, b, c := nodes[0], nodes[1], nodes[2]
	id := idAdoptedBy("yield", c, b, c)
	const n = 40
	queueOffline(t, a, id, "ay/t", n, b, c)
	brokertest.Eventually(t, 10*time.Second, func() bool { return owner(t, b, id) == a.node.Name() }, "owned by a")

	held := make(chan struct{})
	release := make(chan struct{})
	var once atomic.Bool
	setStep(t, func(ctx context.Context, node, step, sid string) error {
		if node != c.node.Name() || step != holdAt || sid != id || !once.CompareAndSwap(false, true) {
			return nil
		}
		close(held)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	})
	kill(a)
	select {
	case <-held:
	case <-time.After(40 * time.Second):
		t.Fatal("c did not adopt the session")
	}
	if o := owner(t, b, id); o != c.node.Name() {
		t.Fatalf("owner while c adopts: %q", o)
	}

	back := resume(t, b, id)
	expectAll(t, back, id, "ay/t", n, 20*time.Second)
	close(release)
	brokertest.Eventually(t, 20*time.Second, func() bool {
		_, adopting := c.node.adopting.Load(id)
		return !adopting
	}, "c's adoption ended")
	if q := queued(c, id); q != -1 {
		t.Fatalf("c kept a copy of the session (%d messages) that b resumed", q)
	}
	// Copies read twice (the import held) are acknowledged too.
	for {
		p, err := back.RecvTimeout(500 * time.Millisecond)
		if err != nil {
			break
		}
		if pp, ok := p.(*packet.Publish); ok {
			back.Ack(pp)
		}
	}

	// Offline on b, 5 more queued, then back on c: those 5, nothing else.
	disconnect(back)
	brokertest.Eventually(t, 10*time.Second, func() bool {
		d, ok := b.Server.Server.ClientDetail(id)
		return ok && !d.Connected
	}, "offline on b")
	waitAcking(t, b, c)
	pub := connect(t, b, "ay-pub")
	for i := range 5 {
		pub.Publish(&packet.Publish{Topic: "ay/t", QoS: 1, PacketID: uint16(i + 1), Payload: []byte(fmt.Sprint(i))})
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return queued(b, id) == 5 }, "5 queued on b")
	again := resume(t, c, id)
	expectSeq(t, again, "ay/t", 0, 5)
	again.ExpectNothing(300 * time.Millisecond)
}

// TestReconnectDuringAdoption: sessions of a lost node, each with QoS 1
// messages queued, whose clients connect to the survivor that does not
// adopt them at points spread over the adoption: before it begins, once
// the adopter claimed the id, once the adopter holds the session, and once
// it is done. Every client gets its session and every message, and one
// node holds each session afterwards.
func TestReconnectDuringAdoption(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStoredWith(t, "rd", func(c *Config) { c.AdoptAfter = time.Second })
	a, b, c := nodes[0], nodes[1], nodes[2]
	const n = 25
	type sess struct {
		id, topic      string
		adopter, other *tnode
	}
	var ss []sess
	for i := range 4 {
		adopter, other := b, c
		if i%2 == 1 {
			adopter, other = c, b
		}
		id := idAdoptedBy(fmt.Sprintf("rd%d-", i), adopter, b, c)
		ss = append(ss, sess{id: id, topic: fmt.Sprintf("rd/%d", i), adopter: adopter, other: other})
		queueOffline(t, a, id, ss[i].topic, n, b, c)
	}
	brokertest.Eventually(t, 10*time.Second, func() bool { return owner(t, b, ss[3].id) == a.node.Name() }, "owned by a")
	kill(a)
	brokertest.Eventually(t, 20*time.Second, func() bool { return b.node.Stats().LinksUp == 1 && c.node.Stats().LinksUp == 1 },
		"b and c see a gone")

	points := []func(s sess) bool{
		func(sess) bool { return true },
		func(s sess) bool { return owner(t, s.other, s.id) == s.adopter.node.Name() },
		func(s sess) bool { return queued(s.adopter, s.id) >= 0 },
		func(s sess) bool {
			_, adopting := s.adopter.node.adopting.Load(s.id)
			return !adopting && queued(s.adopter, s.id) >= 0
		},
	}
	for i, s := range ss {
		brokertest.Eventually(t, 30*time.Second, func() bool { return points[i](s) }, "point %d of %s", i, s.id)
		back := resume(t, s.other, s.id)
		expectAll(t, back, s.id, s.topic, n, 20*time.Second)
	}
	for _, s := range ss {
		brokertest.Eventually(t, 20*time.Second, func() bool {
			_, adopting := s.adopter.node.adopting.Load(s.id)
			return !adopting && queued(s.adopter, s.id) == -1
		}, "%s held by %s only", s.id, s.other.node.Name())
	}
}
