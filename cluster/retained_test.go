package cluster

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// retainedOn returns node n's retained payload of topic t ("" for none).
func retainedOn(n *tnode, t string) string {
	m, ok := n.RetainedMessage(t)
	if !ok {
		return ""
	}
	return string(m.Payload)
}

// bucketValue returns the bucket's retained payload of topic t ("" for
// none), read through node n.
func bucketValue(t *testing.T, n *tnode, topicName string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := n.node.retained.Get(ctx, retainedKey(topicName))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	m, err := decodeMessage(e.Value())
	if err != nil {
		return "", err
	}
	return string(m.Payload), nil
}

// clearRetainedEverywhere clears topic t from node n and waits until no
// node holds it: the shared nodes outlive the test.
func clearRetainedEverywhere(t *testing.T, nodes []*tnode, topics ...string) {
	t.Helper()
	for _, tp := range topics {
		if err := nodes[0].Publish(&broker.Message{Topic: tp, Retain: true}); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.Eventually(t, 20*time.Second, func() bool {
		for _, n := range nodes {
			for _, tp := range topics {
				if retainedOn(n, tp) != "" {
					return false
				}
			}
		}
		return true
	}, "retained %v cleared on every node", topics)
}

// letGo waits until no shared node's marks wait for n3, the node other
// tests start and stop (TestRetainedAcrossNodes does not wait for it): a
// QoS 1 publisher is then not failed for a link that was going away
// (acks.go).
func letGo(t *testing.T, nodes []*tnode) {
	t.Helper()
	brokertest.Eventually(t, 20*time.Second, func() bool {
		for _, n := range nodes {
			if countsOn(n, "n3") {
				return false
			}
		}
		return true
	}, "the shared nodes let n3 go")
}

// converged reports whether every node holds the bucket's value of topic
// t, and returns it.
func converged(t *testing.T, nodes []*tnode, topicName string) (string, bool) {
	t.Helper()
	want, err := bucketValue(t, nodes[0], topicName)
	if err != nil {
		return "", false
	}
	for _, n := range nodes {
		if retainedOn(n, topicName) != want {
			return want, false
		}
	}
	return want, true
}

// TestRetainedConcurrentSetsConverge: two nodes set the same retained topic
// at the same time, 50 rounds (clients on two nodes released together);
// then all three nodes hold one value, the bucket's, the last set of one of
// them [MQTT-3.3.1-5], and a SUBSCRIBE on each gets it [MQTT-3.3.1-6].
func TestRetainedConcurrentSetsConverge(t *testing.T) {
	nodes := cluster3(t)
	const topicName, rounds = "rc/concurrent", 50
	t.Cleanup(func() { clearRetainedEverywhere(t, nodes, topicName) })
	letGo(t, nodes)
	pubs := []*brokertest.Conn{connect(t, nodes[0], "rc-p0"), connect(t, nodes[1], "rc-p1")}
	for r := range rounds {
		start := make(chan struct{})
		errs := make([]error, len(pubs))
		var wg sync.WaitGroup
		for i, c := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = packet.Write(c.NC, &packet.Publish{Topic: topicName, Retain: true, QoS: 1,
					PacketID: uint16(r + 1), Payload: fmt.Appendf(nil, "n%d-r%d", i, r)}, packet.V5)
			}()
		}
		close(start)
		wg.Wait()
		for i, c := range pubs {
			if errs[i] != nil {
				t.Fatalf("round %d: publisher %d: %v", r, i, errs[i])
			}
			if ack, ok := c.Recv().(*packet.Puback); !ok || ack.PacketID != uint16(r+1) || ack.ReasonCode != packet.Success {
				t.Fatalf("round %d: publisher %d: got %v, want PUBACK %d", r, i, ack, r+1)
			}
		}
	}
	// The bucket's last value is final once both nodes wrote their last
	// set.
	brokertest.Eventually(t, 30*time.Second, func() bool {
		return nodes[0].node.ret.unwritten.Load() == 0 && nodes[1].node.ret.unwritten.Load() == 0
	}, "both nodes' sets written to the bucket")
	var final string
	brokertest.Eventually(t, 30*time.Second, func() bool {
		var ok bool
		final, ok = converged(t, nodes, topicName)
		return ok
	}, "the 3 nodes hold the bucket's value of %s", topicName)
	if last := fmt.Sprintf("r%d", rounds-1); final != "n0-"+last && final != "n1-"+last {
		t.Fatalf("converged on %q, want the last set of node 0 or 1", final)
	}
	// It stays so (no late copy or update undoes it), and each node's
	// SUBSCRIBE gets it.
	for i, n := range nodes {
		s := connect(t, n, fmt.Sprintf("rc-s%d", i))
		s.Subscribe(1, 0, topicName)
		if p := s.ExpectPublish(); !p.Retain || string(p.Payload) != final {
			t.Fatalf("node %d: SUBSCRIBE got %s, want %q", i, brokertest.Describe(p), final)
		}
		s.ExpectNothing(50 * time.Millisecond)
	}
	if got, ok := converged(t, nodes, topicName); !ok || got != final {
		t.Fatalf("after convergence on %q: bucket %q, nodes %q %q %q", final, got,
			retainedOn(nodes[0], topicName), retainedOn(nodes[1], topicName), retainedOn(nodes[2], topicName))
	}
}

// TestRetainedBucketUpdateNotDelivered: a retained message reaches a
// subscriber on another node once (the live copy), and a bucket update
// (here written to the bucket only, as by a node that was cut off) changes
// every node's retained state without a delivery: a subscriber has it on
// SUBSCRIBE [MQTT-3.3.1-6], a live subscriber gets nothing.
func TestRetainedBucketUpdateNotDelivered(t *testing.T) {
	nodes := cluster3(t)
	const topicName = "rc/once"
	t.Cleanup(func() { clearRetainedEverywhere(t, nodes, topicName) })
	letGo(t, nodes)
	sub := connect(t, nodes[2], "rc-once-sub")
	sub.Subscribe(1, 1, topicName)
	waitInterest(t, nodes[0], topicName, nodes[2])
	pub := connect(t, nodes[0], "rc-once-pub")
	pub.Publish(&packet.Publish{Topic: topicName, Retain: true, QoS: 1, PacketID: 1, Payload: []byte("v1")})
	p := sub.ExpectPublish()
	if string(p.Payload) != "v1" {
		t.Fatalf("live copy: %s", brokertest.Describe(p))
	}
	sub.Ack(p)
	brokertest.Eventually(t, 10*time.Second, func() bool {
		v, ok := converged(t, nodes, topicName)
		return ok && v == "v1"
	}, "v1 in the bucket and on every node")

	applied := nodes[2].node.ret.applied.Load()
	body, err := encodeMessage(&broker.Message{Topic: topicName, Payload: []byte("kv"), QoS: 1, Retain: true}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[1].node.retained.Put(context.Background(), retainedKey(topicName), body); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 10*time.Second, func() bool {
		v, ok := converged(t, nodes, topicName)
		return ok && v == "kv"
	}, "the bucket's update applied on every node")
	if nodes[2].node.ret.applied.Load() == applied {
		t.Fatal("node 2 counted no bucket update applied")
	}
	sub.ExpectNothing(200 * time.Millisecond)
	s := connect(t, nodes[2], "rc-once-late")
	s.Subscribe(1, 1, topicName)
	if p := s.ExpectPublish(); !p.Retain || string(p.Payload) != "kv" || p.QoS != 1 {
		t.Fatalf("SUBSCRIBE after the update: %s", brokertest.Describe(p))
	} else {
		s.Ack(p)
	}
}

// TestRetainedLateLiveCopyReplaced: a live copy applied after the bucket
// moved on (it came late), or never written to the bucket (its node died
// first), is replaced by the bucket's value within retainedConfirmWait
// and a check.
func TestRetainedLateLiveCopyReplaced(t *testing.T) {
	nodes := cluster3(t)
	const late, unstored = "rc/late", "rc/unstored"
	t.Cleanup(func() { clearRetainedEverywhere(t, nodes, late, unstored) })
	if err := nodes[0].Publish(&broker.Message{Topic: late, Retain: true, Payload: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 10*time.Second, func() bool {
		v, ok := converged(t, nodes, late)
		return ok && v == "new"
	}, "%s = new everywhere", late)
	n2 := nodes[2]
	newSum := retainedSum(&broker.Message{Topic: late, Payload: []byte("new")})
	brokertest.Eventually(t, 10*time.Second, func() bool {
		r := &n2.node.ret
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.recent[late].sum == newSum
	}, "node 2's watch delivered %s = new", late)
	corrected := n2.node.ret.corrected.Load()
	// What publishLoop does with a live copy from another node, late.
	for _, m := range []*broker.Message{{Topic: late, Payload: []byte("old"), Retain: true},
		{Topic: unstored, Payload: []byte("lost"), Retain: true}} {
		if err := n2.SetRetained(m); err != nil {
			t.Fatal(err)
		}
		n2.node.noteLiveRetained(m)
	}
	if retainedOn(n2, late) != "old" || retainedOn(n2, unstored) != "lost" {
		t.Fatal("the late copies were not applied")
	}
	brokertest.Eventually(t, retainedConfirmWait+10*time.Second, func() bool {
		return retainedOn(n2, late) == "new" && retainedOn(n2, unstored) == ""
	}, "node 2 back to the bucket's values")
	// (Live copies of earlier tests may be corrected meanwhile too.)
	if got := n2.node.ret.corrected.Load() - corrected; got < 2 {
		t.Fatalf("corrected %d, want at least 2", got)
	}
}

// TestRetainedSumOfContent: the digest that decides "equal to what the
// node holds" covers what a SUBSCRIBE gets, and nothing else.
func TestRetainedSumOfContent(t *testing.T) {
	exp := uint32(60)
	exp2 := uint32(30)
	pf := byte(1)
	base := func() *broker.Message {
		return &broker.Message{Topic: "a", Payload: []byte("x"), QoS: 1, Props: &packet.Properties{ContentType: "c",
			User: []packet.UserProperty{{Key: "k", Value: "v"}}, MessageExpiry: &exp}}
	}
	b := retainedSum(base())
	if b == 0 || retainedSum(nil) != 0 || retainedSum(&broker.Message{Topic: "a"}) != 0 {
		t.Fatal("0 must stand for no message, and only for it")
	}
	same := base()
	same.Props.MessageExpiry = &exp2 // what was left of it when forwarded
	same.Props.TopicAlias = packet.Ptr(uint16(3))
	if retainedSum(same) != b {
		t.Fatal("expiry left or topic alias changed the digest")
	}
	if retainedSum(&broker.Message{Topic: "a", Payload: []byte("x")}) !=
		retainedSum(&broker.Message{Topic: "a", Payload: []byte("x"), Props: &packet.Properties{}}) {
		t.Fatal("nil and empty properties differ")
	}
	for name, change := range map[string]func(m *broker.Message){
		"payload":   func(m *broker.Message) { m.Payload = []byte("y") },
		"qos":       func(m *broker.Message) { m.QoS = 0 },
		"type":      func(m *broker.Message) { m.Props.ContentType = "d" },
		"user":      func(m *broker.Message) { m.Props.User[0].Value = "w" },
		"user2":     func(m *broker.Message) { m.Props.User = nil },
		"expiry":    func(m *broker.Message) { m.Props.MessageExpiry = nil },
		"format":    func(m *broker.Message) { m.Props.PayloadFormat = &pf },
		"response":  func(m *broker.Message) { m.Props.ResponseTopic = "r" },
		"corr":      func(m *broker.Message) { m.Props.CorrelationData = []byte{1} },
		"shift k/v": func(m *broker.Message) { m.Props.User = []packet.UserProperty{{Key: "kv", Value: ""}} },
	} {
		m := base()
		change(m)
		if retainedSum(m) == b {
			t.Errorf("%s: digest unchanged", name)
		}
	}
	if _, err := retainedTopic("x.abc"); err == nil {
		t.Fatal("key without prefix accepted")
	}
	if _, err := retainedTopic("t.%%%"); err == nil {
		t.Fatal("bad base64 accepted")
	}
	for _, tp := range []string{"a/b", "$x/y", "", "sp ace/ü/+"} {
		if got, err := retainedTopic(retainedKey(tp)); err != nil || got != tp {
			t.Fatalf("round trip of %q: %q, %v", tp, got, err)
		}
	}
}
