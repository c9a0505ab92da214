package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// tnode is one node of a test cluster: a broker on 127.0.0.1:0 and its
// cluster node.
type tnode struct {
	*brokertest.Server
	node *Node
}

func testLogger() *slog.Logger {
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// handedOut holds every port freePorts has returned in this process, so
// that two tests running side by side never get the same one.
var handedOut struct {
	sync.Mutex
	ports map[string]bool
}

// freePorts returns n distinct loopback ports that were free a moment
// ago and that no other caller in this process got. Another process (or a
// client socket) may still take one before the node binds it: see
// portTaken.
func freePorts(n int) ([]string, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[string]bool{}
	}
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	var out []string
	for len(out) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l) // held until all n are chosen: distinct
		if a := l.Addr().String(); !handedOut.ports[a] {
			handedOut.ports[a] = true
			out = append(out, a)
		}
	}
	return out, nil
}

// portTaken reports whether err is a node's Start failing because its
// cluster_listen port was taken after freePorts chose it.
func portTaken(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// startNodes starts one node per index of which, on addrs[i] (all of
// addrs are peers of each other), concurrently since JetStream needs a
// majority to start. stop ends them.
func startNodes(name string, addrs []string, which []int) (nodes []*tnode, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	for _, k := range which {
		dir, err := os.MkdirTemp("", "mqttd-cluster-test-")
		if err != nil {
			return nil, stop, err
		}
		stops = append(stops, func() { os.RemoveAll(dir) })
		n, err := New(Config{Name: name, Node: fmt.Sprintf("n%d", k), Listen: addrs[k], Peers: addrs,
			Dir: dir, Logger: testLogger(), StartTimeout: 40 * time.Second})
		if err != nil {
			return nil, stop, err
		}
		srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1, Logger: testLogger(), Hooks: []any{n}})
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, stop, err
		}
		done := make(chan error, 1)
		go func() { done <- srv.Serve(l) }()
		stops = append(stops, func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			srv.Shutdown(ctx)
			<-done
		}, func() { n.Close() })
		nodes = append(nodes, &tnode{Server: &brokertest.Server{Server: srv, Addr: l.Addr().String()}, node: n})
	}
	var wg sync.WaitGroup
	errs := make([]error, len(nodes))
	for i, tn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = tn.node.Start(context.Background())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			return nil, stop, fmt.Errorf("node %d: %w", i, err)
		}
	}
	return nodes, stop, nil
}

// shared is the 3-node cluster the tests share: clustered JetStream takes
// seconds to elect its leaders, too long to pay per test. addrs has a
// fourth address for a node that joins later.
var shared struct {
	nodes []*tnode
	addrs []string
}

func TestMain(m *testing.M) {
	var addrs []string
	var nodes []*tnode
	stop := func() {}
	err := errors.New("no free ports")
	for try := 0; try < 3 && (try == 0 || portTaken(err)); try++ {
		stop()
		if addrs, err = freePorts(4); err != nil {
			break
		}
		nodes, stop, err = startNodes("test", addrs[:3], []int{0, 1, 2})
	}
	if err == nil {
		deadline := time.Now().Add(10 * time.Second)
		for !linked(nodes, 2) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if !linked(nodes, 2) {
			err = fmt.Errorf("the 3 nodes are not linked after 10s")
		}
	}
	if err != nil {
		stop()
		fmt.Fprintln(os.Stderr, "cluster test setup:", err)
		os.Exit(1)
	}
	shared.nodes, shared.addrs = nodes, addrs
	code := m.Run()
	stop()
	os.Exit(code)
}

func linked(nodes []*tnode, links int) bool {
	for _, n := range nodes {
		if n.node.Stats().LinksUp < links {
			return false
		}
	}
	return true
}

func cluster3(t *testing.T) []*tnode {
	t.Helper()
	return shared.nodes
}

// routedTo returns the nodes that node at has a subscription of through
// the routes for which match holds.
func routedTo(at *tnode, match func(d *server.SubDetail) bool) map[string]bool {
	rz, err := at.node.ns.Routez(&server.RoutezOptions{SubscriptionsDetail: true})
	if err != nil {
		return nil
	}
	have := map[string]bool{}
	for _, r := range rz.Routes {
		for i := range r.SubsDetail {
			if match(&r.SubsDetail[i]) {
				have[r.RemoteName] = true
			}
		}
	}
	return have
}

// routesAll reports whether have holds every node of from.
func routesAll(have map[string]bool, from []*tnode) bool {
	for _, f := range from {
		if !have[f.node.Name()] {
			return false
		}
	}
	return have != nil
}

// waitInterest waits until node at routes messages on topicName to each
// node of from: their subscriptions (queue group "node.NAME") reached it
// through the routes.
func waitInterest(t *testing.T, at *tnode, topicName string, from ...*tnode) {
	t.Helper()
	subj := topicSubject(topicName)
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return routesAll(routedTo(at, func(d *server.SubDetail) bool { return server.SubjectMatchesFilter(subj, d.Subject) }), from)
	}, "interest in %q on node %s", topicName, at.node.Name())
}

// waitPlainInterest is waitInterest for the nodes' ordinary interest only
// (not a shared subscription's queue subscription on the same subject): a
// node with both may have told at of the shared one only.
func waitPlainInterest(t *testing.T, at *tnode, topicName string, from ...*tnode) {
	t.Helper()
	subj := topicSubject(topicName)
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return routesAll(routedTo(at, func(d *server.SubDetail) bool {
			return !strings.HasPrefix(d.Queue, shareQueuePrefix) && server.SubjectMatchesFilter(subj, d.Subject)
		}), from)
	}, "ordinary interest in %q on node %s", topicName, at.node.Name())
}

func connect(t *testing.T, n *tnode, id string) *brokertest.Conn {
	t.Helper()
	c, _ := brokertest.DialConnect(t, n.Addr, &packet.Connect{Version: packet.V5, ClientID: id, CleanStart: true})
	return c
}

// connect311 connects an MQTT 3.1.1 client (no receive maximum) to node n.
func connect311(t *testing.T, n *tnode, id string) *brokertest.Conn {
	t.Helper()
	c, _ := brokertest.DialConnect(t, n.Addr, &packet.Connect{Version: packet.V311, ClientID: id, CleanStart: true})
	return c
}

// TestCrossNodeQoS: a publisher on one node, subscribers on the two others;
// the delivered QoS is the lower of published and granted [MQTT-3.8.4-8],
// and MQTT 5 properties arrive unchanged [MQTT-3.3.2-17] [MQTT-3.3.2-18]
// [MQTT-3.3.2-20].
func TestCrossNodeQoS(t *testing.T) {
	nodes := cluster3(t)
	before := counters(nodes)
	sub2 := connect(t, nodes[1], "sub2")
	sub2.Subscribe(1, 2, "q/#")
	sub1 := connect(t, nodes[2], "sub1")
	sub1.Subscribe(1, 1, "q/+")
	waitInterest(t, nodes[0], "q/x", nodes[1], nodes[2])
	pub := connect(t, nodes[0], "pub")
	props := &packet.Properties{ContentType: "text/plain", ResponseTopic: "reply/here",
		CorrelationData: []byte{1, 2, 3}, MessageExpiry: packet.Ptr(uint32(3600)),
		PayloadFormat: packet.Ptr(byte(1)),
		User:          []packet.UserProperty{{Key: "k", Value: "v"}, {Key: "k", Value: "v2"}}}
	for qos := byte(0); qos <= 2; qos++ {
		p := &packet.Publish{Topic: fmt.Sprintf("q/%d", qos), QoS: qos, Payload: []byte{'m', '0' + qos}}
		if qos > 0 {
			p.PacketID = uint16(10 + qos)
		}
		if qos == 2 {
			p.Props = props
		}
		if rc := pub.Publish(p); rc != packet.Success {
			t.Fatalf("publish QoS %d: %v", qos, rc)
		}
	}
	for _, r := range []struct {
		c       *brokertest.Conn
		granted byte
	}{{sub2, 2}, {sub1, 1}} {
		for qos := byte(0); qos <= 2; qos++ {
			got := r.c.ExpectPublish()
			want := min(qos, r.granted)
			if got.Topic != fmt.Sprintf("q/%d", qos) || got.QoS != want || !bytes.Equal(got.Payload, []byte{'m', '0' + qos}) {
				t.Fatalf("granted %d: got %s QoS %d %q, want q/%d QoS %d", r.granted, got.Topic, got.QoS, got.Payload, qos, want)
			}
			if qos == 2 {
				gp := got.Props
				if gp == nil || gp.ContentType != "text/plain" || gp.ResponseTopic != "reply/here" ||
					!bytes.Equal(gp.CorrelationData, []byte{1, 2, 3}) || gp.MessageExpiry == nil ||
					*gp.MessageExpiry > 3600 || *gp.MessageExpiry < 3590 || gp.PayloadFormat == nil ||
					len(gp.User) != 2 || gp.User[1].Value != "v2" {
					t.Fatalf("properties not carried: %s", brokertest.Describe(got))
				}
			}
			r.c.Ack(got)
		}
	}
	d := delta(nodes, before)
	if d[0].out != 3 {
		t.Errorf("node 0 forwarded %d messages, want 3", d[0].out)
	}
	for i := 1; i < 3; i++ {
		if d[i].in != 3 || d[i].out != 0 {
			t.Errorf("node %d: in %d out %d, want 3 and 0 (a message from the cluster is not forwarded again)",
				i, d[i].in, d[i].out)
		}
	}
}

// TestWildcardsDollarAndOddTopics: '#' does not match $-topics across
// nodes [MQTT-4.7.2-1], and topics with '.', '*', '>', spaces and empty
// levels cross intact.
func TestWildcardsDollarAndOddTopics(t *testing.T) {
	nodes := cluster3(t)
	all := connect(t, nodes[1], "all")
	all.Subscribe(1, 0, "#")
	dollar := connect(t, nodes[1], "dollar")
	dollar.Subscribe(1, 0, "$app/#")
	plus := connect(t, nodes[2], "plus")
	plus.Subscribe(1, 0, "a.b/+/>")
	waitInterest(t, nodes[0], "z", nodes[1])
	waitInterest(t, nodes[0], "$app/x", nodes[1])
	waitInterest(t, nodes[0], "a.b/ x/>", nodes[1], nodes[2])

	pub := connect(t, nodes[0], "pub")
	odd := []string{"a.b/*/>", "a.b/ x/>", "sp ace/ lev el ", "a//b", "/lead", "trail/", "ü/ñ", ">", "*", "."}
	pub.Publish(&packet.Publish{Topic: "$app/x", Payload: []byte("d")})
	for _, tp := range odd {
		pub.Publish(&packet.Publish{Topic: tp, Payload: []byte(tp)})
	}
	for _, tp := range odd {
		got := all.ExpectPublish()
		if got.Topic != tp || string(got.Payload) != tp {
			t.Fatalf("'#' got %q %q, want %q (a $-topic must not match '#')", got.Topic, got.Payload, tp)
		}
	}
	all.ExpectNothing(100 * time.Millisecond)
	if got := dollar.ExpectPublish(); got.Topic != "$app/x" {
		t.Fatalf("$app/# got %q", got.Topic)
	}
	for _, want := range []string{"a.b/*/>", "a.b/ x/>"} {
		if got := plus.ExpectPublish(); got.Topic != want {
			t.Fatalf("a.b/+/> got %q, want %q", got.Topic, want)
		}
	}
	plus.ExpectNothing(100 * time.Millisecond)
}

// TestRouteByInterest: a node with no matching subscription receives
// nothing, and a message matching several filters of one node crosses to
// it once.
func TestRouteByInterest(t *testing.T) {
	nodes := cluster3(t)
	before := counters(nodes)
	sub := connect(t, nodes[1], "sub")
	sub.Subscribe(1, 0, "k/#", "k/1", "+/1")
	other := connect(t, nodes[2], "other")
	other.Subscribe(1, 0, "elsewhere/#")
	waitInterest(t, nodes[0], "k/1", nodes[1])
	waitInterest(t, nodes[0], "elsewhere/x", nodes[2])
	if got := nodes[1].node.Interest(); got["k/#"] != 1 || got["k/1"] != 1 || got["+/1"] != 1 {
		t.Fatalf("node 1 interest %v, want k/#, k/1 and +/1", got)
	}
	pub := connect(t, nodes[0], "pub")
	const n = 20
	for i := range n {
		pub.Publish(&packet.Publish{Topic: "k/1", QoS: 1, PacketID: uint16(i + 1), Payload: []byte{byte(i)}})
	}
	for i := range n {
		got := sub.ExpectPublish()
		if got.Payload[0] != byte(i) {
			t.Fatalf("message %d out of order: %d", i, got.Payload[0])
		}
		sub.Ack(got)
	}
	sub.ExpectNothing(100 * time.Millisecond) // v5: one copy per client for overlapping filters
	d := delta(nodes, before)
	if d[1].in != n {
		t.Errorf("node 1 got %d messages from the cluster, want %d (once per node)", d[1].in, n)
	}
	if d[2].in != 0 {
		t.Errorf("node 2 (no interest) got %d messages", d[2].in)
	}

	// Unsubscribing and ending the session drop the interest.
	sub.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"k/1"}})
	sub.Recv()
	if got := nodes[1].node.Interest(); got["k/1"] != 0 || got["k/#"] != 1 {
		t.Fatalf("after UNSUBSCRIBE node 1 interest %v", got)
	}
	sub.Send(&packet.Disconnect{})
	brokertest.Eventually(t, 2*time.Second, func() bool { return nodes[1].node.Interest()["k/#"] == 0 },
		"interest of an ended session dropped")
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return !nodes[0].node.ns.GlobalAccount().SubscriptionInterest(topicSubject("k/1"))
	}, "node 0 still routes k/1")
}

// TestRetainedAcrossNodes: set on one node, delivered on SUBSCRIBE on the
// others [MQTT-3.3.1-6], cleared from a third [MQTT-3.3.1-10], and loaded
// by a node that joins later.
func TestRetainedAcrossNodes(t *testing.T) {
	nodes := cluster3(t)
	before := counters(nodes)
	t.Cleanup(func() {
		// Clear r/1 on every node: the shared nodes outlive the test (-count
		// runs the other tests again, and '#' would get it).
		// QoS 0: the late node just stopped, and a QoS 1 publisher whose
		// message was forwarded while a link went down is disconnected
		// (acks.go); the bucket's watch brings the clear to every node.
		c := connect(t, nodes[0], "r-clear")
		c.Publish(&packet.Publish{Topic: "r/1", Retain: true})
		brokertest.Eventually(t, 5*time.Second, func() bool {
			for _, n := range nodes {
				if page, _ := n.RetainedPage("r/1", "", 1); len(page) > 0 {
					return false
				}
			}
			return true
		}, "r/1 cleared on every node")
	})
	pub := connect(t, nodes[0], "pub")
	pub.Publish(&packet.Publish{Topic: "r/1", Retain: true, QoS: 1, PacketID: 1, Payload: []byte("one"),
		Props: &packet.Properties{User: []packet.UserProperty{{Key: "a", Value: "b"}}}})
	pub.Publish(&packet.Publish{Topic: "r/2", Retain: true, QoS: 0, Payload: []byte("two")})
	brokertest.Eventually(t, 5*time.Second, func() bool { d := delta(nodes, before); return d[1].in == 2 && d[2].in == 2 },
		"retained messages reach every node")
	s := connect(t, nodes[2], "s")
	s.Subscribe(1, 1, "r/#")
	got := s.RecvPublishes(2)
	if got[0].Topic > got[1].Topic { // retained messages come in no set order
		got[0], got[1] = got[1], got[0]
	}
	if got[0].Topic != "r/1" || !got[0].Retain || string(got[0].Payload) != "one" || got[0].Props == nil ||
		len(got[0].Props.User) != 1 || got[1].Topic != "r/2" {
		t.Fatalf("retained on node 2: %s, %s", brokertest.Describe(got[0]), brokertest.Describe(got[1]))
	}
	s.Ack(got[0])
	s.Ack(got[1])

	// The bucket is written asynchronously, by the node where each change
	// was made: it keeps the order in which writes reach it, not the order
	// of publication, so a clear made on another node before the set was
	// written could be overtaken by it. Wait for the sets first.
	brokertest.Eventually(t, 5*time.Second, func() bool {
		kv := nodes[0].node.retained
		_, err1 := kv.Get(context.Background(), retainedKey("r/1"))
		_, err2 := kv.Get(context.Background(), retainedKey("r/2"))
		return err1 == nil && err2 == nil
	}, "retained sets written to the bucket")

	clr := connect(t, nodes[1], "clr")
	clr.Publish(&packet.Publish{Topic: "r/2", Retain: true})
	brokertest.Eventually(t, 5*time.Second, func() bool { return delta(nodes, before)[0].in == 1 })
	s0 := connect(t, nodes[0], "s0")
	s0.Subscribe(1, 0, "r/#")
	if p := s0.ExpectPublish(); p.Topic != "r/1" {
		t.Fatalf("node 0 after clear: %s", brokertest.Describe(p))
	}
	s0.ExpectNothing(150 * time.Millisecond)

	// A fourth node joins: it reads the retained messages from JetStream.
	brokertest.Eventually(t, 5*time.Second, func() bool {
		kv := nodes[0].node.retained
		_, err1 := kv.Get(context.Background(), retainedKey("r/1"))
		_, err2 := kv.Get(context.Background(), retainedKey("r/2"))
		return err1 == nil && errors.Is(err2, jetstream.ErrKeyNotFound)
	}, "retained bucket written")
	lates, stop, err := startNodes("test", shared.addrs, []int{3})
	t.Cleanup(stop)
	if err != nil {
		t.Fatal(err)
	}
	late := lates[0]
	sl := connect(t, late, "sl")
	sl.Subscribe(1, 0, "r/#")
	if p := sl.ExpectPublish(); p.Topic != "r/1" || string(p.Payload) != "one" || !p.Retain {
		t.Fatalf("late node: %s", brokertest.Describe(p))
	}
	sl.ExpectNothing(150 * time.Millisecond)
}

// TestTakeoverAcrossNodes: the same client id connecting on another node
// makes the first node close its connection with DISCONNECT 0x8E
// [MQTT-3.1.4-3].
func TestTakeoverAcrossNodes(t *testing.T) {
	nodes := cluster3(t)
	var before int64 // other tests' takeovers
	for _, n := range nodes {
		before += n.node.Stats().TakeoversIn
	}
	prev := connect(t, nodes[0], "dev")
	brokertest.Eventually(t, 5*time.Second, func() bool { return owner(t, nodes[0], "dev") == "n0" })
	for _, k := range []int{1, 2, 0} {
		c := connect(t, nodes[k], "dev")
		got := prev.ExpectClosed()
		if len(got) != 1 || got[0].(*packet.Disconnect).ReasonCode != packet.SessionTakenOver {
			t.Fatalf("node %d took over: the old connection got %v, want DISCONNECT 0x8E", k, got)
		}
		want := fmt.Sprintf("n%d", k)
		brokertest.Eventually(t, 5*time.Second, func() bool { return owner(t, nodes[0], "dev") == want },
			"owner %s", want)
		prev = c
	}
	prev.Ping()
	var in int64
	for _, n := range nodes {
		in += n.node.Stats().TakeoversIn
	}
	if in-before != 3 {
		t.Errorf("takeovers %d, want 3", in-before)
	}
	// A clean end releases the id.
	prev.Send(&packet.Disconnect{})
	brokertest.Eventually(t, 5*time.Second, func() bool { return owner(t, nodes[1], "dev") == "" })
}

type count struct{ in, out int64 }

func counters(nodes []*tnode) []count {
	var out []count
	for _, n := range nodes {
		s := n.node.Stats()
		out = append(out, count{s.ForwardedIn, s.ForwardedOut})
	}
	return out
}

func delta(nodes []*tnode, before []count) []count {
	now := counters(nodes)
	for i := range now {
		now[i].in -= before[i].in
		now[i].out -= before[i].out
	}
	return now
}

func owner(t *testing.T, n *tnode, id string) string {
	e, err := n.node.owners.Get(context.Background(), ownerKey(id))
	if err != nil {
		return ""
	}
	return string(e.Value())
}

// BenchmarkHop compares a publisher and a subscriber on one node with the
// same pair on two nodes: QoS 1 publishes in windows of 100 (PUBACKs read
// after the window), the subscriber reads and acknowledges each window.
//
//	go test ./cluster -run '^$' -bench Hop -benchtime 20000x
func BenchmarkHop(b *testing.B) {
	nodes := shared.nodes
	for _, bc := range []struct {
		name     string
		pub, sub *tnode
	}{{"same-node", nodes[0], nodes[0]}, {"cross-node", nodes[0], nodes[1]}} {
		b.Run(bc.name, func(b *testing.B) {
			sub, _ := brokertest.DialConnect(b, bc.sub.Addr, &packet.Connect{Version: packet.V311, ClientID: "bs-" + bc.name, CleanStart: true})
			sub.Subscribe(1, 1, "bench/"+bc.name)
			waitInterestB(b, bc.pub, bc.sub, "bench/"+bc.name)
			// MQTT 3.1.1: 100 in flight is past an MQTT 5 Receive Maximum of 20.
			pub, _ := brokertest.DialConnect(b, bc.pub.Addr, &packet.Connect{Version: packet.V311, ClientID: "bp-" + bc.name, CleanStart: true})
			payload := make([]byte, 64)
			b.ResetTimer()
			for done := 0; done < b.N; {
				w := min(100, b.N-done)
				for i := range w {
					pub.Send(&packet.Publish{Topic: "bench/" + bc.name, QoS: 1, PacketID: uint16(i + 1), Payload: payload})
				}
				for range w {
					if _, ok := pub.Recv().(*packet.Puback); !ok {
						b.Fatal("expected PUBACK")
					}
				}
				for range w {
					p := sub.ExpectPublish()
					sub.Send(&packet.Puback{PacketID: p.PacketID})
				}
				done += w
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

func waitInterestB(b *testing.B, pub, sub *tnode, topicName string) {
	if pub == sub {
		return
	}
	deadline := time.Now().Add(5 * time.Second)
	for !pub.node.ns.GlobalAccount().SubscriptionInterest(topicSubject(topicName)) {
		if time.Now().After(deadline) {
			b.Fatal("no interest")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestClusterListenTaken: a node whose cluster_listen port another socket
// holds fails to start with the cause in its error, not after
// StartTimeout with an error that names none.
func TestClusterListenTaken(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	addr := l.Addr().String()
	n, err := New(Config{Name: "taken", Node: "x0", Listen: addr, Peers: []string{addr}, Dir: t.TempDir(),
		Logger: testLogger(), StartTimeout: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Start(t, func(o *broker.Options) { o.Hooks = append(o.Hooks, n) })
	err = n.Start(context.Background())
	if !portTaken(err) || !strings.Contains(err.Error(), addr) {
		t.Fatalf("Start on a taken cluster_listen: %v; want an error naming %s and the cause", err, addr)
	}
}
