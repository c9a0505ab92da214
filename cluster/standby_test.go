package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// holder returns the node of nodes that holds client id's session, or nil.
func holder(nodes []*tnode, id string) *tnode {
	for _, n := range nodes {
		if _, ok := n.ClientDetail(id); ok {
			return n
		}
	}
	return nil
}

// killNode stops n as a dying node goes: its cluster node first (nothing
// more reaches the cluster), then its broker.
func killNode(n *tnode) {
	n.node.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n.Server.Server.Shutdown(ctx)
}

// expectPayloads reads len(want) PUBLISHes on c, acknowledging each, and
// fails unless they carry want (in any order) [MQTT-4.3.2-1].
func expectPayloads(t *testing.T, c *brokertest.Conn, want map[string]bool) {
	t.Helper()
	got := map[string]bool{}
	for range len(want) {
		p := c.ExpectPublish()
		if !want[string(p.Payload)] || got[string(p.Payload)] {
			t.Fatalf("got %s, want one of %v once", brokertest.Describe(p), want)
		}
		got[string(p.Payload)] = true
		c.Ack(p)
	}
	c.ExpectNothing(300 * time.Millisecond)
}

// TestMessagesForDeadNodeHeld: when a node dies, the survivors hold its
// persistent sessions at once (long before adoption), so QoS 1 messages
// published for them on any survivor are acknowledged and kept: a client
// that resumes its session on either survivor, the holder or the other,
// gets them all, and no held copy is left behind.
func TestMessagesForDeadNodeHeld(t *testing.T) {
	t.Parallel() // a cluster of its own
	nodes := startStoredWith(t, "hd", func(c *Config) { c.AdoptAfter = time.Hour })
	a, b, c := nodes[0], nodes[1], nodes[2]
	ids := []string{"held-0", "held-1", "held-2", "held-3", "held-4", "held-5"}
	for _, id := range ids {
		s, _ := persistentConnect(t, a, id)
		s.Subscribe(1, 1, "hd/t")
		disconnect(s)
	}
	waitInterest(t, b, "hd/t", a)
	waitInterest(t, c, "hd/t", a)

	killNode(a)
	survivors := nodes[1:]
	brokertest.Eventually(t, 20*time.Second, func() bool { return linked(survivors, 1) && b.node.Stats().LinksUp == 1 && c.node.Stats().LinksUp == 1 },
		"b and c see a gone")
	brokertest.Eventually(t, 20*time.Second, func() bool {
		for _, id := range ids {
			if holder(survivors, id) == nil {
				return false
			}
		}
		return true
	}, "the survivors hold a's sessions")
	waitAcking(t, b, c)

	want := map[string]bool{}
	for i, n := range survivors {
		pub := connect(t, n, fmt.Sprintf("hd-pub%d", i))
		for j := range 3 {
			payload := fmt.Sprintf("from %d #%d", i, j)
			if rc := pub.Publish(&packet.Publish{Topic: "hd/t", QoS: 1, PacketID: uint16(j + 1),
				Payload: []byte(payload)}); rc != packet.Success {
				t.Fatalf("publish %q: %v", payload, rc)
			}
			want[payload] = true
		}
	}
	resumedOnHolder, resumedElsewhere := 0, 0
	for k, id := range ids {
		at := survivors[k/2%2] // the holder alternates with k (an FNV hash of ids ending 0 to 5)
		if holder(survivors, id) == at {
			resumedOnHolder++
		} else {
			resumedElsewhere++
		}
		back, ack := persistentConnect(t, at, id)
		if !ack.SessionPresent {
			t.Fatalf("%s: session of the dead node not present", id)
		}
		expectPayloads(t, back, want)
		other := survivors[1-k/2%2]
		brokertest.Eventually(t, 5*time.Second, func() bool { return queued(other, id) == -1 },
			"%s: the copy held on %s let go", id, other.node.Name())
	}
	t.Logf("resumed on the holder %d, on the other survivor %d", resumedOnHolder, resumedElsewhere)
}

// TestHeldSessionsGoBack: a node that comes back (restarted with its store,
// before adoption) gets what the others queued for its sessions while it
// was away, and they let their copies go.
func TestHeldSessionsGoBack(t *testing.T) {
	t.Parallel() // a cluster of its own
	stores := make([]store.Store, 3)
	nodes := startFresh(t, 3, func(addrs []string) []Config {
		var cfgs []Config
		for i := range addrs {
			cfgs = append(cfgs, Config{Name: "hb", Node: fmt.Sprintf("hb%d", i), Listen: addrs[i], Peers: addrs,
				AdoptAfter: time.Hour})
		}
		return cfgs
	}, func(i int, o *broker.Options) {
		stores[i] = mem.New() // new for each start: a retry on other ports starts clean
		o.Store = stores[i]
	})
	brokertest.Eventually(t, 20*time.Second, func() bool { return linked(nodes, 2) }, "3 nodes linked")
	a, b := nodes[0], nodes[1]
	s, _ := persistentConnect(t, a, "homing")
	s.Subscribe(1, 1, "hb/t")
	disconnect(s)
	waitInterest(t, b, "hb/t", a)

	cfg := a.node.cfg
	killNode(a)
	survivors := nodes[1:]
	brokertest.Eventually(t, 20*time.Second, func() bool { return holder(survivors, "homing") != nil },
		"the survivors hold a's session")
	waitAcking(t, survivors...)
	pub := connect(t, b, "hb-pub")
	want := map[string]bool{}
	for j := range 3 {
		payload := fmt.Sprintf("while away #%d", j)
		if rc := pub.Publish(&packet.Publish{Topic: "hb/t", QoS: 1, PacketID: uint16(j + 1),
			Payload: []byte(payload)}); rc != packet.Success {
			t.Fatalf("publish: %v", rc)
		}
		want[payload] = true
	}

	// a comes back: same name, data directory, address and store.
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1, Logger: testLogger(), Store: stores[0]})
	if err := srv.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(n); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() { n.Close() })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	back := &tnode{Server: &brokertest.Server{Server: srv, Addr: l.Addr().String()}, node: n}
	// JetStream on the node that came back may take a while to serve the
	// bucket (collectOne tries for up to a minute).
	brokertest.Eventually(t, 60*time.Second, func() bool {
		return holder(survivors, "homing") == nil && queued(back, "homing") == len(want)
	}, "the held copy let go and its messages queued on the node that came back")
	r, ack := persistentConnect(t, back, "homing")
	if !ack.SessionPresent {
		t.Fatal("session not present on the node that came back")
	}
	expectPayloads(t, r, want)
}

// waitAcking waits until the nodes acknowledge forwarded QoS 1 and 2
// messages again: each survivor of a lost node holds its share of that
// node's sessions (holdgate.go). Until then a publisher gets 0x89.
func waitAcking(t *testing.T, nodes ...*tnode) {
	t.Helper()
	brokertest.Eventually(t, holdGateMax+10*time.Second, func() bool {
		for _, n := range nodes {
			if n.node.acks.gating.Load() {
				return false
			}
		}
		return true
	}, "the survivors acknowledge again")
}

// TestGuardRead: a read of a bucket that gets no first record within its
// first wait ends with errReadStalled (right after a node's loss, its
// request may wait on a leader that is gone, and is sent again); once a
// record came it is given readIdle from each one, however long the read.
func TestGuardRead(t *testing.T) {
	start := time.Now()
	ctx, _, stop := guardRead(context.Background(), 50*time.Millisecond)
	<-ctx.Done()
	stop()
	if !errors.Is(readErr(ctx, nil), errReadStalled) {
		t.Fatalf("stalled read ended with %v", readErr(ctx, nil))
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("stalled read given up after %v, before its first wait", d)
	}

	ctx, progress, stop := guardRead(context.Background(), 50*time.Millisecond)
	progress() // a first record: from now on readIdle
	select {
	case <-ctx.Done():
		t.Fatalf("a read making progress was given up: %v", readErr(ctx, nil))
	case <-time.After(200 * time.Millisecond):
	}
	stop()
	if err := readErr(ctx, errors.New("watch")); errors.Is(err, errReadStalled) {
		t.Fatalf("a read ended by its caller reports %v", err)
	}

	// An outer context ending is reported as such.
	outer, cancel := context.WithCancel(context.Background())
	ctx, _, stop = guardRead(outer, time.Minute)
	cancel()
	<-ctx.Done()
	if err := readErr(ctx, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("outer cancel reported as %v", err)
	}
	stop()

	// The first waits: short while a new leader may just have been
	// elected after a node's loss, longer for a JetStream only slow to
	// answer, and long at once when no node was lost lately.
	n := &Node{}
	if w := n.readFirstWait(1); w != 2*time.Second {
		t.Fatalf("no node lost: first wait %v, want 2s", w)
	}
	n.linkLostAt.Store(time.Now().UnixNano())
	var waits []time.Duration
	var total time.Duration
	for try := 1; try <= 15; try++ {
		waits = append(waits, n.readFirstWait(try))
		total += n.readFirstWait(try)
	}
	if waits[0] != 250*time.Millisecond || waits[11] != time.Second || waits[14] != 4*time.Second {
		t.Fatalf("first waits %v", waits)
	}
	if sum := total - waits[12] - waits[13] - waits[14]; sum < 9*time.Second {
		t.Fatalf("the short first waits cover %v, less than NATS's longest election timeout", sum)
	}
	n.linkLostAt.Store(time.Now().Add(-readShortFor - time.Second).UnixNano())
	if w := n.readFirstWait(1); w != 2*time.Second {
		t.Fatalf("a node lost long ago: first wait %v, want 2s", w)
	}
}

// TestHeldSessionsHeldAgainWhenHolderGoes: of five nodes, one dies and
// the survivors hold its persistent sessions; then one of those holders
// goes too, killed or shut down gracefully (Quiesce, Leave), before the
// sessions are adopted. The three left hold again what it held (each on
// the node nodeFor picks among them, the others' held copies staying where
// they are), refusing acknowledgements until they do, so a QoS 1 message
// published afterwards for such a session reaches its client when it
// resumes on any node [MQTT-4.6.0-6]. Before, nobody held those sessions
// until their adoption, and what was published for them meanwhile was
// acknowledged and lost.
func TestHeldSessionsHeldAgainWhenHolderGoes(t *testing.T) {
	for _, how := range []string{"killed", "left"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel() // a cluster of its own
			name := "hg" + how[:1]
			nodes := startFresh(t, 5, func(addrs []string) []Config {
				var cfgs []Config
				for i := range addrs {
					cfgs = append(cfgs, Config{Name: name, Node: fmt.Sprintf("%s%d", name, i), Listen: addrs[i],
						Peers: addrs, AdoptAfter: time.Hour})
				}
				return cfgs
			}, func(i int, o *broker.Options) { o.Store = mem.New() })
			brokertest.Eventually(t, 30*time.Second, func() bool { return linked(nodes, 4) }, "5 nodes linked")

			// Two nodes that no bucket has two replicas on: the buckets keep
			// a quorum when both go.
			dead, gone := quorumSafePair(t, nodes)
			var survivors, rest []*tnode
			var restNames []string
			for _, n := range nodes {
				if n != dead {
					survivors = append(survivors, n)
				}
				if n != dead && n != gone {
					rest = append(rest, n)
					restNames = append(restNames, n.node.Name())
				}
			}
			var survivorNames []string
			for _, n := range survivors {
				survivorNames = append(survivorNames, n.node.Name())
			}
			// Sessions on dead: three that gone will hold, three others.
			topic := name + "/t"
			var moving, staying []string
			for k := 0; len(moving) < 3 || len(staying) < 3; k++ {
				id := fmt.Sprintf("%s-%d", name, k)
				if nodeFor(id, survivorNames) == gone.node.Name() {
					if len(moving) < 3 {
						moving = append(moving, id)
					}
				} else if len(staying) < 3 {
					staying = append(staying, id)
				}
			}
			for _, id := range append(slices.Clone(moving), staying...) {
				s, _ := persistentConnect(t, dead, id)
				s.Subscribe(1, 1, topic)
				disconnect(s)
			}
			for _, n := range survivors {
				waitInterest(t, n, topic, dead)
			}

			killNode(dead)
			brokertest.Eventually(t, 30*time.Second, func() bool {
				for _, id := range append(slices.Clone(moving), staying...) {
					if holder(survivors, id) == nil {
						return false
					}
				}
				return true
			}, "the survivors hold the dead node's sessions")
			for _, id := range moving {
				if h := holder(survivors, id); h != gone {
					t.Fatalf("%s held on %s, want %s (nodeFor)", id, h.node.Name(), gone.node.Name())
				}
			}
			stayedOn := map[string]*tnode{}
			for _, id := range staying {
				stayedOn[id] = holder(survivors, id)
			}

			if how == "left" {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				if err := gone.Server.Server.Quiesce(ctx); err != nil {
					t.Fatalf("quiesce: %v", err)
				}
				if _, err := gone.node.Leave(ctx); err != nil {
					t.Fatalf("leave: %v", err)
				}
			}
			killNode(gone)
			brokertest.Eventually(t, 30*time.Second, func() bool {
				for _, n := range rest {
					if n.node.Stats().LinksUp != 2 {
						return false
					}
				}
				return true
			}, "the three left see both nodes gone")
			brokertest.Eventually(t, holdGateMax+10*time.Second, func() bool {
				for _, id := range moving {
					if h := holder(rest, id); h == nil || h.node.Name() != nodeFor(id, restNames) {
						return false
					}
				}
				return true
			}, "what %s held is held again", gone.node.Name())
			for _, id := range staying {
				if h := holder(rest, id); h != stayedOn[id] {
					t.Fatalf("%s moved from %s to %v", id, stayedOn[id].node.Name(), h)
				}
			}
			waitAcking(t, rest...)

			pub := connect(t, rest[0], name+"-pub")
			if rc := pub.Publish(&packet.Publish{Topic: topic, QoS: 1, PacketID: 1, Payload: []byte("after")}); rc != packet.Success {
				t.Fatalf("publish: %v", rc)
			}
			for _, id := range append(slices.Clone(moving), staying...) {
				at := rest[0]
				if at == holder(rest, id) {
					at = rest[1]
				}
				c, ack := persistentConnect(t, at, id)
				if !ack.SessionPresent {
					t.Fatalf("%s: session present 0 on %s", id, at.node.Name())
				}
				expectPayloads(t, c, map[string]bool{"after": true})
				disconnect(c)
			}
		})
	}
}

// quorumSafePair returns two nodes of nodes that no bucket's stream has
// replicas on both of.
func quorumSafePair(t *testing.T, nodes []*tnode) (*tnode, *tnode) {
	t.Helper()
	acc := server.DEFAULT_GLOBAL_ACCOUNT
	var on map[*tnode][]bool
	brokertest.Eventually(t, 30*time.Second, func() bool {
		on = map[*tnode][]bool{}
		for _, b := range []string{bucketSessions, bucketOwners, bucketRetained} {
			count := 0
			for _, n := range nodes {
				in := n.node.ns.JetStreamIsStreamAssigned(acc, "KV_"+b)
				on[n] = append(on[n], in)
				if in {
					count++
				}
			}
			if count != 3 {
				return false // placed on three nodes once the meta group has applied it
			}
		}
		return true
	}, "each bucket on three nodes")
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			both := false
			for i := range on[a] {
				both = both || on[a][i] && on[b][i]
			}
			if !both {
				return a, b
			}
		}
	}
	t.Fatal("no two nodes without a common bucket replica")
	return nil, nil
}
