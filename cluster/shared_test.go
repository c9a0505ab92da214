package cluster

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// sink reads what the broker sends one client, on its own goroutine,
// acknowledging QoS 1 messages, and counts the payloads.
type sink struct {
	c    *brokertest.Conn
	mu   sync.Mutex
	got  map[string]int // payload → times received
	n    int
	bad  []string // anomalies: wrong QoS, retain flag, unexpected packet
	done chan struct{}
}

// newSink starts reading c; c must not be read by the test any more.
func newSink(t *testing.T, c *brokertest.Conn, wantQoS byte) *sink {
	return newSinkAck(t, c, wantQoS, true)
}

// newSinkAck is newSink, acknowledging QoS 1 messages only if ack.
func newSinkAck(t *testing.T, c *brokertest.Conn, wantQoS byte, ack bool) *sink {
	s := &sink{c: c, got: map[string]int{}, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		for {
			p, err := packet.Read(c.R, c.Version, 0)
			if err != nil {
				return // the connection closed (the test's cleanup, or Close)
			}
			pub, ok := p.(*packet.Publish)
			s.mu.Lock()
			switch {
			case !ok:
				s.bad = append(s.bad, brokertest.Describe(p))
			case pub.QoS != wantQoS || pub.Retain:
				s.bad = append(s.bad, "unexpected "+brokertest.Describe(pub))
			}
			if ok {
				s.got[string(pub.Payload)]++
				s.n++
			}
			s.mu.Unlock()
			if ok && pub.QoS == 1 && ack {
				if err := packet.Write(c.NC, &packet.Puback{PacketID: pub.PacketID}, c.Version); err != nil {
					return
				}
			}
		}
	}()
	t.Cleanup(func() {
		c.NC.Close()
		<-s.done
	})
	return s
}

func (s *sink) snapshot() (n int, got map[string]int, bad []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	got = make(map[string]int, len(s.got))
	for k, v := range s.got {
		got[k] = v
	}
	return s.n, got, append([]string(nil), s.bad...)
}

// close disconnects the client and waits for its reader.
func (s *sink) close() {
	packet.Write(s.c.NC, &packet.Disconnect{}, s.c.Version)
	s.c.NC.Close()
	<-s.done
}

// waitShareQueue waits until node at routes to the shared queue group q of
// each node of from (their queue subscriptions reached it through the
// routes), or, with gone, until it routes to none of theirs any more.
func waitShareQueue(t *testing.T, at *tnode, q string, gone bool, from ...*tnode) {
	t.Helper()
	brokertest.Eventually(t, 10*time.Second, func() bool {
		have := routedTo(at, func(d *server.SubDetail) bool { return d.Queue == q })
		if have == nil {
			return false
		}
		for _, f := range from {
			if have[f.node.Name()] == gone {
				return false
			}
		}
		return true
	}, "queue group %q of %d nodes on node %s (gone %v)", q, len(from), at.node.Name(), gone)
}

// shareRun makes names unique per run: the cluster outlives a test
// (-count).
var shareRun atomic.Int64

func shareBase(t *testing.T) string {
	return fmt.Sprintf("shr%d-%d", time.Now().UnixNano()%1e9, shareRun.Add(1))
}

// publishN publishes n QoS 1 messages numbered from first on base/x.
func publishN(t *testing.T, pub *brokertest.Conn, base string, first, n int) {
	t.Helper()
	for i := first; i < first+n; i++ {
		p := &packet.Publish{Topic: base + "/x/" + strconv.Itoa(i%7), QoS: 1, PacketID: uint16(i%60000 + 1),
			Payload: []byte(strconv.Itoa(i))}
		if rc := pub.Publish(p); rc != packet.Success {
			t.Fatalf("publish %d: %v", i, rc)
		}
	}
}

// expectOnce waits until the members of one group got the messages
// numbered [first, first+n) between them, then checks that no member got
// one twice and no two members the same one [MQTT-4.8.2-3], even a moment
// later. Other messages are not counted. It returns how many of them each
// member got.
func expectOnce(t *testing.T, label string, members []*sink, first, n int) []int {
	t.Helper()
	count := func() (total int, times map[int]int, per []int) {
		times = map[int]int{}
		for _, m := range members {
			_, got, bad := m.snapshot()
			if len(bad) > 0 {
				t.Fatalf("%s: a member got %v", label, bad)
			}
			c := 0
			for i := first; i < first+n; i++ {
				if k := got[strconv.Itoa(i)]; k > 0 {
					times[i] += k
					c += k
				}
			}
			per = append(per, c)
			total += c
		}
		return
	}
	brokertest.Eventually(t, 20*time.Second, func() bool {
		total, _, _ := count()
		return total >= n
	}, "%s: %d messages to the group", label, n)
	// Duplicates, if any, follow closely: give them a moment to show.
	quiet := time.Now().Add(300 * time.Millisecond)
	brokertest.Eventually(t, time.Second, func() bool { return !time.Now().Before(quiet) })
	total, times, per := count()
	for i := first; i < first+n; i++ {
		if times[i] != 1 {
			t.Fatalf("%s: message %d delivered %d times to the group, want once (%d in all, %v each)",
				label, i, times[i], total, per)
		}
	}
	return per
}

// TestSharedAcrossNodes: a shared subscription group with a member on
// each of 3 nodes gets every message exactly once, across the cluster
// [MQTT-4.8.2-3]; each member gets some; an ordinary subscriber of the same
// filter gets every message; the delivered QoS is the lower of published
// and granted [MQTT-3.8.4-8].
func TestSharedAcrossNodes(t *testing.T) {
	nodes := cluster3(t)
	base := shareBase(t)
	filter := base + "/#"
	var members []*sink
	for i, n := range nodes {
		c := connect(t, n, fmt.Sprintf("%s-m%d", base, i))
		if ack := c.Subscribe(1, 1, "$share/g/"+filter); ack.ReasonCodes[0] != 1 {
			t.Fatalf("member %d SUBACK %v", i, ack.ReasonCodes)
		}
		members = append(members, newSink(t, c, 1))
	}
	q := shareQueue("g", filter)
	for i, at := range nodes {
		others := append(append([]*tnode(nil), nodes[:i]...), nodes[i+1:]...)
		waitShareQueue(t, at, q, false, others...)
		// A node whose clients hold only the shared subscription holds no
		// ordinary interest in its filter.
		at.node.mu.Lock()
		plain, sh := at.node.refs[filter], at.node.refs["$share/g/"+filter]
		at.node.mu.Unlock()
		if plain != nil || sh == nil || sh.n != 1 {
			t.Fatalf("node %d: interest %v (ordinary) and %v (shared), want only the shared one", i, plain, sh)
		}
	}
	ord := connect(t, nodes[1], base+"-ord")
	ord.Subscribe(1, 1, filter)
	ordinary := newSink(t, ord, 1)
	// Not waitInterest: node 0 knows node 1's member's interest in the
	// filter already, and a message published before it knows the
	// ordinary subscriber's goes to the group only.
	waitPlainInterest(t, nodes[0], base+"/x/1", nodes[1])

	pub := connect(t, nodes[0], base+"-pub")
	const total = 300
	before := sharedDelivered(nodes)
	publishN(t, pub, base, 0, total)
	per := expectOnce(t, "group g", members, 0, total)
	if d := sharedDelivered(nodes) - before; d != total {
		t.Fatalf("the nodes gave %d messages to local members of groups, want %d", d, total)
	}
	for i, c := range per {
		if c == 0 {
			t.Fatalf("member on node %d got none of %d messages (%v): the group spans the cluster", i, total, per)
		}
	}
	t.Cleanup(func() {
		if t.Failed() { // what the nodes and the subscriber's session show
			n, got, _ := ordinary.snapshot()
			var missing []int
			for i := range total {
				if got[strconv.Itoa(i)] == 0 {
					missing = append(missing, i)
				}
			}
			d, _ := nodes[1].ClientDetail(base + "-ord")
			t.Logf("ordinary subscriber got %d, missing %v; its session on node 1: %+v", n, missing, d)
			for i, nd := range nodes {
				t.Logf("node %d: %+v", i, nd.node.Stats())
				st := nd.Server.Server.Stats()
				t.Logf("node %d's broker: received %d (QoS %v) sent %d (QoS %v) dropped %d", i, st.PublishReceived,
					st.PublishReceivedQoS, st.PublishSent, st.PublishSentQoS, st.PublishDropped)
			}
		}
	})
	brokertest.Eventually(t, 20*time.Second, func() bool { n, _, _ := ordinary.snapshot(); return n >= total },
		"ordinary subscriber: %d messages", total)
	if n, got, bad := ordinary.snapshot(); n != total || len(got) != total || len(bad) > 0 {
		t.Fatalf("ordinary subscriber got %d messages (%d distinct, %v), want each of %d once", n, len(got), bad, total)
	}
	t.Logf("per member: %v", per)
}

// TestSharedTwoGroups: two groups on the same filter each get every
// message once [MQTT-4.8.2-3], and a member granted QoS 0 gets QoS 0
// [MQTT-3.8.4-8]; a retained message published while the groups exist
// reaches one member of each, without the retain flag.
func TestSharedTwoGroups(t *testing.T) {
	nodes := cluster3(t)
	base := shareBase(t)
	filter := base + "/x/+"
	var ga, gb []*sink
	for i, n := range nodes {
		a := connect(t, n, fmt.Sprintf("%s-a%d", base, i))
		a.Subscribe(1, 1, "$share/ga/"+filter)
		ga = append(ga, newSink(t, a, 1))
		b := connect(t, n, fmt.Sprintf("%s-b%d", base, i))
		b.Subscribe(1, 0, "$share/gb/"+filter)
		gb = append(gb, newSink(t, b, 0))
	}
	for i, at := range nodes {
		others := append(append([]*tnode(nil), nodes[:i]...), nodes[i+1:]...)
		waitShareQueue(t, at, shareQueue("ga", filter), false, others...)
		waitShareQueue(t, at, shareQueue("gb", filter), false, others...)
	}
	pub := connect(t, nodes[2], base+"-pub")
	const total = 150
	publishN(t, pub, base, 0, total)
	expectOnce(t, "group ga", ga, 0, total)
	expectOnce(t, "group gb", gb, 0, total)

	// A retained message: one member of each group, retain flag clear
	// (sink checks it).
	p := &packet.Publish{Topic: base + "/x/r", QoS: 1, Retain: true, PacketID: 1, Payload: []byte(strconv.Itoa(total))}
	if rc := pub.Publish(p); rc != packet.Success {
		t.Fatalf("retained publish: %v", rc)
	}
	expectOnce(t, "group ga, retained", ga, 0, total+1)
	expectOnce(t, "group gb, retained", gb, 0, total+1)
	pub.Publish(&packet.Publish{Topic: base + "/x/r", Retain: true}) // clear it (QoS 0)
}

// TestSharedMemberLeaves: when a member leaves (its session ends), the
// rest of its group still gets every message exactly once, including
// those NATS had already chosen the member's node for (offered to the
// group again) [MQTT-4.8.2-3].
func TestSharedMemberLeaves(t *testing.T) {
	nodes := cluster3(t)
	base := shareBase(t)
	filter := base + "/#"
	var members []*sink
	for i, n := range nodes {
		c := connect(t, n, fmt.Sprintf("%s-m%d", base, i))
		c.Subscribe(1, 1, "$share/g/"+filter)
		members = append(members, newSink(t, c, 1))
	}
	q := shareQueue("g", filter)
	for i, at := range nodes {
		others := append(append([]*tnode(nil), nodes[:i]...), nodes[i+1:]...)
		waitShareQueue(t, at, q, false, others...)
	}
	pub := connect(t, nodes[0], base+"-pub")
	publishN(t, pub, base, 0, 60)
	expectOnce(t, "3 members", members, 0, 60)

	// The member on the publisher's node leaves: its node holds no queue
	// subscription of the group any more.
	members[0].close()
	brokertest.Eventually(t, 5*time.Second, func() bool { return nodes[0].node.Interest()[filter] == 0 },
		"node 0 drops the group's interest")
	rest := members[1:]
	const total = 200
	publishN(t, pub, base, 60, total)
	per := expectOnce(t, "2 members", rest, 60, total)
	for i, c := range per {
		if c == 0 {
			t.Fatalf("member on node %d got none of %d messages (%v)", i+1, total, per)
		}
	}

	// The member on node 1 leaves too, with no wait for the others to see
	// it: what NATS still routes to node 1 is offered to the group again.
	members[1].close()
	brokertest.Eventually(t, 5*time.Second, func() bool { return nodes[1].node.Interest()[filter] == 0 },
		"node 1 drops the group's interest")
	publishN(t, pub, base, 60+total, 50)
	expectOnce(t, "last member", members[2:], 60+total, 50)
	var redone int64
	for _, n := range nodes {
		_, r, _ := n.node.SharedCounts()
		redone += r
	}
	t.Logf("offered again so far (all tests of the run): %d", redone)
}

// TestShareNames: the queue group names and keys of shared subscriptions
// read back, for any group and filter.
func TestShareNames(t *testing.T) {
	for _, c := range []struct{ g, f string }{{"g", "a/#"}, {"g~.x", "a/+/b c/#"}, {"ü", "$x/~"}} {
		q := shareQueue(c.g, c.f)
		g, f, ok := parseShareQueue(q)
		if !ok || g != c.g || f != c.f {
			t.Fatalf("parseShareQueue(%q) = %q %q %v, want %q %q", q, g, f, ok, c.g, c.f)
		}
	}
	for _, q := range []string{"node.n1", "shr~", "shr~@@~YQ", "shr~Zw"} {
		if _, _, ok := parseShareQueue(q); ok {
			t.Fatalf("parseShareQueue(%q) accepted", q)
		}
	}
	if k := interestKey("$share/g/a/#", "mnt/a/#"); k != "$share/g/mnt/a/#" {
		t.Fatalf("interestKey: %q", k)
	}
	if k := interestKey("$share/g/$x/#", "$x/#"); k != "$x/#" {
		t.Fatalf("interestKey of a $ filter: %q, want the routed filter (per node)", k)
	}
	if g, f, ok := shareKey("$share/g/mnt/a/#"); !ok || g != "g" || f != "mnt/a/#" {
		t.Fatalf("shareKey: %q %q %v", g, f, ok)
	}
}

func sharedDelivered(nodes []*tnode) int64 {
	var sum int64
	for _, n := range nodes {
		d, _, _ := n.node.SharedCounts()
		sum += d
	}
	return sum
}

// TestSharedRedoBounded: a message NATS chose a node for after the
// group's member there left is offered to the group again, at most
// maxShareHops times, then counted as lost (and in Stats.Dropped).
func TestSharedRedoBounded(t *testing.T) {
	n := cluster3(t)[0].node
	base := shareBase(t)
	body, err := encodeMessage(&broker.Message{Topic: base + "/a", QoS: 1, Payload: []byte("x")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	q := shareQueue("nobody", base+"/#")
	_, redone0, lost0 := n.SharedCounts()
	dropped0 := n.Stats().Dropped
	n.deliverShared(&nats.Msg{Subject: topicSubject(base + "/a"), Data: body, Sub: &nats.Subscription{Queue: q}},
		"nobody", base+"/#")
	if _, redone, lost := n.SharedCounts(); redone != redone0+1 || lost != lost0 {
		t.Fatalf("first offer with no member: redone %d lost %d, want it offered again", redone-redone0, lost-lost0)
	}
	last := shareRedoSubject(q, maxShareHops)
	n.deliverShared(&nats.Msg{Subject: last, Data: body, Sub: &nats.Subscription{Queue: q}}, "nobody", base+"/#")
	if _, redone, lost := n.SharedCounts(); redone != redone0+1 || lost != lost0+1 {
		t.Fatalf("offer %d with no member: redone %d lost %d, want it lost", maxShareHops, redone-redone0, lost-lost0)
	}
	if d := n.Stats().Dropped - dropped0; d != 1 {
		t.Fatalf("Stats.Dropped grew by %d, want 1", d)
	}
}

// TestSharedLeaverHandsOver: the QoS 1 messages a member had not
// acknowledged when its session ended go to another member of the group
// (MQTT 5.0 section 4.8.2: the Server may send them to another member),
// on another node when none is left on the member's node (OfferShared).
func TestSharedLeaverHandsOver(t *testing.T) {
	nodes := cluster3(t)
	base := shareBase(t)
	filter := base + "/#"
	c0 := connect(t, nodes[0], base+"-m0")
	c0.Subscribe(1, 1, "$share/g/"+filter)
	m0 := newSinkAck(t, c0, 1, false) // never acknowledges
	c1 := connect(t, nodes[1], base+"-m1")
	c1.Subscribe(1, 1, "$share/g/"+filter)
	m1 := newSink(t, c1, 1)
	waitShareQueue(t, nodes[2], shareQueue("g", filter), false, nodes[0], nodes[1])
	waitShareQueue(t, nodes[1], shareQueue("g", filter), false, nodes[0])

	pub := connect(t, nodes[2], base+"-pub")
	const total = 40
	publishN(t, pub, base, 0, total)
	// Node 0 sends its member at most its inflight limit and queues the
	// rest; whatever it holds for the member goes on when it leaves.
	brokertest.Eventually(t, 20*time.Second, func() bool { return countOf(m0) > 0 },
		"some of the messages to the member on node 0")
	m0.close() // its session ends with its messages unacknowledged
	expectOnce(t, "the member left", []*sink{m1}, 0, total)
}

func countOf(s *sink) int {
	n, _, _ := s.snapshot()
	return n
}
