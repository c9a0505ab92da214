package cluster

import (
	"context"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// joinNode starts node n3, which joins the shared
// cluster, with its state in dir: a broker (restored from o.Store when set,
// before the node starts, as cmd/mqttd does) serving on 127.0.0.1:0, and
// the cluster node added to it as a hook. tweak adjusts the node's and the
// broker's options. stop ends both (the broker first, as at a process
// exit); it is also run when the test ends. Every test that adds a node
// uses this one name: JetStream keeps each server name it has seen as a
// peer of its meta group, so a new name per test would soon leave the 3
// shared nodes without a majority.
func joinNode(t *testing.T, dir string, tweak func(*Config, *broker.Options)) (tn *tnode, stop func()) {
	t.Helper()
	addr, err := freePorts(1) // not shared.addrs[3]: a port free at TestMain may be taken since
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Name: "test", Node: "n3", Listen: addr[0], Peers: append(shared.addrs[:3:3], addr[0]), Dir: dir,
		Logger: testLogger(), StartTimeout: 40 * time.Second}
	o := broker.Options{AllowAnonymous: true, SysInterval: -1, Logger: testLogger()}
	if tweak != nil {
		tweak(&cfg, &o)
	}
	n, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := broker.New(o)
	if err := srv.Restore(); err != nil {
		t.Fatal(err)
	}
	if err := srv.AddHook(n); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		n.Close()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-done
			n.Close()
			// The shared nodes no longer count on this one for their
			// marks (acks.go): a publish right after, in this test or
			// the next, is not failed for a link that was going away.
			brokertest.Eventually(t, 10*time.Second, func() bool {
				for _, o := range shared.nodes {
					if countsOn(o, cfg.Node) {
						return false
					}
				}
				return true
			}, "the nodes let %s go", cfg.Node)
		})
	}
	t.Cleanup(stop)
	return &tnode{Server: &brokertest.Server{Server: srv, Addr: l.Addr().String()}, node: n}, stop
}

// TestInterestAfterRestart: a node whose broker restored a persistent
// session from its store holds the NATS interest of that session's
// subscriptions, so a QoS 1 message published on another node while the
// client is away is queued for it [MQTT-3.1.2-5] and delivered when it
// comes back to the restarted node.
func TestInterestAfterRestart(t *testing.T) {
	nodes := cluster3(t)
	dir := t.TempDir()
	st := mem.New() // the broker's store, kept across the restart
	withStore := func(_ *Config, o *broker.Options) { o.Store = st }
	b, stop := joinNode(t, dir, withStore)
	cp := &packet.Connect{Version: packet.V5, ClientID: "restart-dev", CleanStart: true,
		Props: &packet.Properties{SessionExpiry: packet.Ptr(uint32(3600))}}
	c, _ := brokertest.DialConnect(t, b.Addr, cp)
	c.Subscribe(1, 1, "rs/#")
	waitInterest(t, nodes[0], "rs/x", b)
	c.Send(&packet.Disconnect{})
	brokertest.Eventually(t, 5*time.Second, func() bool {
		d, ok := b.ClientDetail("restart-dev")
		return ok && !d.Connected
	}, "session offline")
	stop()

	b, _ = joinNode(t, dir, withStore)
	if got := b.node.Interest()["rs/#"]; got != 1 {
		t.Fatalf("restarted node's interest in rs/# is %d, want 1 (the restored session's)", got)
	}
	waitInterest(t, nodes[0], "rs/x", b)
	pub := connect(t, nodes[0], "restart-pub")
	if rc := pub.Publish(&packet.Publish{Topic: "rs/x", QoS: 1, PacketID: 1, Payload: []byte("while away")}); rc != packet.Success {
		t.Fatalf("publish: %v", rc)
	}
	brokertest.Eventually(t, 5*time.Second, func() bool {
		d, ok := b.ClientDetail("restart-dev")
		return ok && d.Queued+d.Inflight == 1
	}, "message queued for the offline session on the restarted node")
	cp.CleanStart = false
	c, ack := brokertest.DialConnect(t, b.Addr, cp)
	if !ack.SessionPresent {
		t.Fatal("session present = 0 after the restart")
	}
	got := c.ExpectPublish()
	if got.Topic != "rs/x" || got.QoS != 1 || string(got.Payload) != "while away" {
		t.Fatalf("got %s", brokertest.Describe(got))
	}
	c.Ack(got)
}

// TestInterestWalkRacesEvents: the walk of the broker's subscriptions at
// Start and the subscription events that arrive meanwhile agree: a filter
// is counted once per client, and one removed during the walk is not
// added back by it.
func TestInterestWalkRacesEvents(t *testing.T) {
	n, err := New(Config{Name: "walk", Node: "w", Listen: "127.0.0.1:1", Dir: os.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	info := &broker.ClientInfo{ClientID: "c1"}
	n.mu.Lock()
	n.walk = newWalkMarks()
	n.mu.Unlock()
	// An event, then the walk reading the same subscription: counted once.
	n.OnSubscription(info, broker.SubscriptionEvent{Filter: "a/#", Routed: "a/#", QoS: 1})
	n.mu.Lock()
	n.addWalkedLocked(broker.SubscriptionInfo{ClientID: "c1", Filter: "a/#"})
	n.mu.Unlock()
	// The walk read b/+ and $share/g/s, then they were removed (UNSUBSCRIBE,
	// then the session ended) before the walk recorded them.
	n.OnSubscription(info, broker.SubscriptionEvent{Filter: "b/+", Routed: "b/+", Removed: true})
	n.OnSession(&broker.ClientInfo{ClientID: "c2"}, broker.SessionEnded)
	n.mu.Lock()
	n.addWalkedLocked(broker.SubscriptionInfo{ClientID: "c1", Filter: "b/+"})
	n.addWalkedLocked(broker.SubscriptionInfo{ClientID: "c2", Filter: "$share/g/s"})
	n.addWalkedLocked(broker.SubscriptionInfo{ClientID: "c3", Filter: "$share/g/s"})
	n.addWalkedLocked(broker.SubscriptionInfo{ClientID: "c3", Filter: "$SYS/#"})
	n.walk = nil
	n.mu.Unlock()
	got := n.Interest()
	if len(got) != 2 || got["a/#"] != 1 || got["s"] != 1 {
		t.Fatalf("interest %v, want a/#: 1 and s: 1 (c3's shared subscription)", got)
	}
}

// serveMounted serves another listener of n with mount point mp; it is
// closed when the test ends.
func serveMounted(t *testing.T, n *tnode, mp string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- n.ServeListener(l, broker.ListenerOptions{MountPoint: mp}) }()
	t.Cleanup(func() {
		l.Close()
		<-done
	})
	return l.Addr().String()
}

// TestMountPointInterest: a listener's mount point prefixes its clients'
// topics in the broker, so the interest a node holds for them, and what
// crosses the link, is the mounted filter and topic; the prefix is taken
// off again on delivery.
func TestMountPointInterest(t *testing.T) {
	nodes := cluster3(t)
	mounted := serveMounted(t, nodes[1], "tenant/")
	sub, _ := brokertest.DialConnect(t, mounted, &packet.Connect{Version: packet.V5, ClientID: "mnt-sub", CleanStart: true})
	sub.Subscribe(1, 1, "t/#", "$share/g/u/+")
	if got := nodes[1].node.Interest(); got["tenant/t/#"] != 1 || got["tenant/u/+"] != 1 || got["t/#"] != 0 || got["u/+"] != 0 {
		t.Fatalf("node 1 interest %v, want the mounted filters tenant/t/# and tenant/u/+", got)
	}
	waitInterest(t, nodes[0], "tenant/t/1", nodes[1])
	waitInterest(t, nodes[0], "tenant/u/1", nodes[1])

	pub := connect(t, nodes[0], "mnt-pub")
	for i, tp := range []string{"tenant/t/1", "tenant/u/1"} {
		if rc := pub.Publish(&packet.Publish{Topic: tp, QoS: 1, PacketID: uint16(i + 1), Payload: []byte(tp)}); rc != packet.Success {
			t.Fatalf("publish %s: %v", tp, rc)
		}
	}
	// One ordinary and one shared subscription: two paths across the
	// cluster (shared.go), so either may arrive first (ordering is per
	// topic [MQTT-4.6.0-6]).
	seen := map[string]bool{}
	for range 2 {
		got := sub.ExpectPublish()
		if got.Topic != "t/1" && got.Topic != "u/1" || string(got.Payload) != "tenant/"+got.Topic || seen[got.Topic] {
			t.Fatalf("mounted subscriber got %s, want t/1 and u/1 once each", brokertest.Describe(got))
		}
		seen[got.Topic] = true
		sub.Ack(got)
	}

	// A client of the mounted listener publishes under the prefix, on
	// every node.
	s2 := connect(t, nodes[2], "mnt-s2")
	s2.Subscribe(1, 0, "tenant/#")
	waitInterest(t, nodes[1], "tenant/x", nodes[2])
	mp, _ := brokertest.DialConnect(t, mounted, &packet.Connect{Version: packet.V5, ClientID: "mnt-mp", CleanStart: true})
	mp.Publish(&packet.Publish{Topic: "x", Payload: []byte("from the mount")})
	if got := s2.ExpectPublish(); got.Topic != "tenant/x" || string(got.Payload) != "from the mount" {
		t.Fatalf("node 2 got %s, want tenant/x", brokertest.Describe(got))
	}

	// UNSUBSCRIBE through the mount point drops the mounted interest.
	sub.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"t/#", "$share/g/u/+"}})
	sub.Recv()
	if got := nodes[1].node.Interest(); got["tenant/t/#"] != 0 || got["tenant/u/+"] != 0 {
		t.Fatalf("after UNSUBSCRIBE node 1 interest %v", got)
	}
}
