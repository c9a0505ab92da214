package cluster

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/metrics"
	"github.com/mqttd/mqttd/packet"
)

// dropLog records the node's drop warnings.
type dropLog struct {
	mu    sync.Mutex
	lines int
	total int64
}

func (d *dropLog) Enabled(context.Context, slog.Level) bool { return true }
func (d *dropLog) WithAttrs([]slog.Attr) slog.Handler       { return d }
func (d *dropLog) WithGroup(string) slog.Handler            { return d }
func (d *dropLog) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelWarn || !strings.Contains(r.Message, "dropped") {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lines++
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "dropped" {
			d.total += a.Value.Int64()
		}
		return true
	})
	return nil
}

func (d *dropLog) read() (lines int, total int64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lines, d.total
}

// holdCluster blocks node n's publishing of the messages from the cluster
// on topics matching filter: an inline subscription that waits (it runs on
// the goroutine that publishes them into the broker) until release is
// called, or the test ends.
// isPuback reports whether p is a successful PUBACK.
func isPuback(p packet.Packet) bool {
	a, ok := p.(*packet.Puback)
	return ok && a.ReasonCode == packet.Success
}

func holdCluster(t *testing.T, n *tnode, filter string) (release func()) {
	t.Helper()
	ch := make(chan struct{})
	var once sync.Once
	release = func() { once.Do(func() { close(ch) }) }
	cancel, err := n.Server.Subscribe(filter, 0, func(*broker.Message) { <-ch })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { release(); cancel() })
	return release
}

// drain reads the n publishes c is to receive, acknowledging the QoS 1
// ones, and checks that no more come.
func drain(t *testing.T, c *brokertest.Conn, n int) (got []*packet.Publish) {
	t.Helper()
	for len(got) < n {
		p, err := c.RecvTimeout(10 * time.Second)
		if err != nil {
			t.Fatalf("%d publishes received of %d: %v", len(got), n, err)
		}
		pp, ok := p.(*packet.Publish)
		if !ok {
			t.Fatalf("expected PUBLISH, got %s", brokertest.Describe(p))
		}
		got = append(got, pp)
		if pp.QoS == 1 {
			c.Ack(pp)
		}
	}
	if p, err := c.RecvTimeout(200 * time.Millisecond); err == nil {
		t.Fatalf("one more than the %d expected: %s", n, brokertest.Describe(p))
	}
	return got
}

// TestOverloadDropsCounted: a node whose broker does not keep up with
// the messages from the cluster drops QoS 0 messages past its inbound
// bound and keeps the QoS 1 ones (they have room of their own); every
// message is either delivered or counted, the drops are logged one line
// per window and published under $SYS/broker/cluster/.
func TestOverloadDropsCounted(t *testing.T) {
	nodes := cluster3(t)
	logs := &dropLog{}
	b, _ := joinNode(t, t.TempDir(), func(c *Config, o *broker.Options) {
		c.InboundBytes = 4096
		c.DropLogInterval = 50 * time.Millisecond
		c.Logger = slog.New(logs)
		o.SysInterval = 50 * time.Millisecond
	})
	sub := connect(t, b, "ov-sub")
	sub.Subscribe(1, 1, "ov/#")
	waitInterest(t, nodes[0], "ov/x", b)

	// The node's broker is held on the first message from the cluster.
	unblock := holdCluster(t, b, "ov/#")
	before := b.node.Stats()
	payload := make([]byte, 200)
	const n0, n1 = 100, 10
	// The QoS 1 messages first (under half the bound: the node is not yet
	// congested, so node 0 does not hold them), one per publisher: the
	// PUBACK of each waits until the node has published it (acks.go), and
	// its publisher is not read meanwhile. Then a burst of QoS 0 from
	// another publisher.
	pubs1 := make([]*brokertest.Conn, n1)
	for i := range pubs1 {
		pubs1[i] = connect(t, nodes[0], "ov-pub1-"+strconv.Itoa(i))
		pubs1[i].Send(&packet.Publish{Topic: "ov/1", QoS: 1, PacketID: 1, Payload: payload})
		brokertest.Eventually(t, 10*time.Second, func() bool {
			s := b.node.Stats()
			return s.ForwardedIn-before.ForwardedIn+int64(s.InboundQueued) == int64(i+1)
		}, "QoS 1 message %d reaches the node", i+1)
	}
	pub0 := connect(t, nodes[0], "ov-pub0")
	for range n0 {
		pub0.Publish(&packet.Publish{Topic: "ov/0", Payload: payload})
	}
	dropped := func(s Stats) int64 { return s.DroppedTotal() - before.DroppedTotal() }
	// Every message reached the node: published (the one held), waiting,
	// or dropped.
	brokertest.Eventually(t, 10*time.Second, func() bool {
		s := b.node.Stats()
		return s.ForwardedIn-before.ForwardedIn+int64(s.InboundQueued)+dropped(s) == n0+n1
	}, "%d messages reach the node", n0+n1)
	s := b.node.Stats()
	if s.DroppedOverloadQoS12 != before.DroppedOverloadQoS12 {
		t.Fatalf("%d QoS 1 messages dropped, want none (twice the bound is theirs)", s.DroppedOverloadQoS12-before.DroppedOverloadQoS12)
	}
	if s.DroppedOverloadQoS0 == before.DroppedOverloadQoS0 {
		t.Fatalf("no QoS 0 message dropped: the inbound bound did not apply (%d queued, %d bytes)", s.InboundQueued, s.InboundQueuedBytes)
	}
	if s.InboundQueuedBytes > 2*4096 {
		t.Fatalf("%d bytes queued, bound 2×4096", s.InboundQueuedBytes)
	}
	kept := n0 + n1 - int(dropped(s))
	pubs1[0].ExpectNothing(100 * time.Millisecond) // the PUBACKs wait for the node
	unblock()
	for _, p := range pubs1 {
		if got := p.Recv(); !isPuback(got) {
			t.Fatalf("expected PUBACK, got %s", brokertest.Describe(got))
		}
	}

	// What was not dropped is delivered, in order: all the QoS 1 messages,
	// then the QoS 0 ones kept.
	got0, got1 := 0, 0
	for _, p := range drain(t, sub, kept) {
		if p.QoS == 0 {
			got0++
			continue
		}
		if got0 > 0 {
			t.Fatalf("a QoS 1 message after a QoS 0 one: order lost")
		}
		got1++
	}
	if got1 != n1 {
		t.Fatalf("%d QoS 1 messages delivered, want %d", got1, n1)
	}
	s = b.node.Stats()
	if d := dropped(s); int64(got0)+d != n0 {
		t.Fatalf("QoS 0: %d delivered + %d dropped, want %d", got0, d, n0)
	}

	// Logged: a line per window, adding up to the drops.
	brokertest.Eventually(t, 5*time.Second, func() bool { _, total := logs.read(); return total == dropped(s) },
		"the drop warnings add up to %d", dropped(s))
	if lines, _ := logs.read(); lines > 3 {
		t.Errorf("%d drop warnings for one burst: not rate limited", lines)
	}

	// Published under $SYS/broker/cluster/ (retained).
	want := map[string]string{
		"$SYS/broker/cluster/messages/dropped/overload/qos0":  strconv.FormatInt(s.DroppedOverloadQoS0, 10),
		"$SYS/broker/cluster/messages/dropped/overload/qos12": strconv.FormatInt(s.DroppedOverloadQoS12, 10),
		"$SYS/broker/cluster/messages/dropped":                strconv.FormatInt(s.DroppedTotal(), 10),
	}
	sys := connect(t, b, "ov-sys")
	sys.Subscribe(1, 0, "$SYS/broker/cluster/messages/dropped/#", "$SYS/broker/cluster/messages/dropped")
	for len(want) > 0 {
		p := sys.ExpectPublish()
		if w, ok := want[p.Topic]; ok && string(p.Payload) == w {
			delete(want, p.Topic)
		}
	}
}

// scrape reads the Prometheus text exposition of snap: each sample by
// its name with labels, as written ("name{a=\"b\"}").
func scrape(t *testing.T, snap func() metrics.Snapshot) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	metrics.Handler(snap).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	out := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(string(body)))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestClusterMetrics: a scrape of a node of the cluster shows the nodes,
// links, forwarded and dropped messages, link round trips and the latency
// of the JetStream key-value calls, with sane values.
func TestClusterMetrics(t *testing.T) {
	nodes := cluster3(t)
	sub := connect(t, nodes[1], "m-sub")
	sub.Subscribe(1, 0, "mx/#")
	waitInterest(t, nodes[0], "mx/1", nodes[1])
	pub := connect(t, nodes[0], "m-pub")
	pub.Publish(&packet.Publish{Topic: "mx/1", QoS: 1, PacketID: 1, Retain: true, Payload: []byte("r")})
	sub.ExpectPublish()
	pub.Publish(&packet.Publish{Topic: "mx/1", QoS: 1, PacketID: 2, Retain: true}) // clears it
	sub.ExpectPublish()
	kv := &nodes[0].node.kvLatency
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return kv[kvRetainedPut].count.Load() > 0 && kv[kvRetainedDelete].count.Load() > 0 &&
			kv[kvOwnerGet].count.Load() > 0
	}, "key-value calls recorded")

	st := nodes[0].node.Stats()
	m := scrape(t, func() metrics.Snapshot { return metrics.Snapshot{Cluster: nodes[0].node.Metrics()} })
	get := func(name string) float64 {
		t.Helper()
		v, ok := m[name]
		if !ok {
			t.Fatalf("no sample %s", name)
		}
		return v
	}
	links := get("mqttd_cluster_links_up")
	if links < 2 || get("mqttd_cluster_nodes") != links+1 {
		t.Errorf("links up %v, nodes %v: want at least 2 links and one node more", links, get("mqttd_cluster_nodes"))
	}
	if out := get(`mqttd_cluster_messages_forwarded_total{direction="out"}`); out < 2 || out < float64(st.ForwardedOut) {
		t.Errorf("forwarded out %v, want at least 2 and %d", out, st.ForwardedOut)
	}
	if in := get(`mqttd_cluster_messages_forwarded_total{direction="in"}`); in < float64(st.ForwardedIn) {
		t.Errorf("forwarded in %v, want at least %d", in, st.ForwardedIn)
	}
	for _, r := range []string{"overload_qos0", "overload_qos12", "slow_consumer", "undeliverable"} {
		if v := get(`mqttd_cluster_messages_dropped_total{reason="` + r + `"}`); v != 0 {
			t.Errorf("dropped %s %v, want 0", r, v)
		}
	}
	if f := get("mqttd_cluster_filters"); f != float64(st.Filters) {
		t.Errorf("filters %v, want %d", f, st.Filters)
	}
	rtts := 0
	for name, v := range m {
		if strings.HasPrefix(name, "mqttd_cluster_link_rtt_seconds{") {
			rtts++
			if v < 0 || v > 1 {
				t.Errorf("%s = %v s on loopback", name, v)
			}
		}
	}
	if float64(rtts) != links {
		t.Errorf("%d link round trips for %v links", rtts, links)
	}
	for _, op := range []string{"retained_put", "retained_delete", "owner_get"} {
		l := `{op="` + op + `"}`
		n, sum := get("mqttd_cluster_kv_seconds_count"+l), get("mqttd_cluster_kv_seconds_sum"+l)
		if n < 1 || sum <= 0 || sum/n > 5 {
			t.Errorf("%s: %v calls, %v s in all", op, n, sum)
		}
		prev := 0.0
		for _, b := range kvBounds {
			c := get(`mqttd_cluster_kv_seconds_bucket{op="` + op + `",le="` + strconv.FormatFloat(b, 'g', -1, 64) + `"}`)
			if c < prev || c > n {
				t.Errorf("%s: bucket le=%v holds %v (previous %v, count %v)", op, b, c, prev, n)
			}
			prev = c
		}
		if get(`mqttd_cluster_kv_seconds_bucket{op="`+op+`",le="+Inf"}`) != n {
			t.Errorf("%s: +Inf bucket is not the count", op)
		}
	}
	// A single broker has no cluster metrics.
	single := scrape(t, func() metrics.Snapshot { return metrics.Snapshot{Cluster: (*Node)(nil).Metrics()} })
	for name := range single {
		if strings.HasPrefix(name, "mqttd_cluster_") {
			t.Fatalf("single broker exposes %s", name)
		}
	}
}

// TestBackPressureHoldsQoS1: while a node is behind (its queue past half
// its bound), the other nodes hold the QoS 1 messages of their publishers,
// whose PUBACKs wait, instead of sending them to be dropped.
//
// The sizes make the outcome certain: the node (bound B = 16 KiB, QoS 1 and
// 2 up to 2B) is held with QoS 0 messages waiting past B/2 (8192 bytes;
// 39 to 70 messages of 210 bytes), then a QoS 1 burst of 127 messages
// (26924 bytes) is published. Sent at once, it would not fit (8192 + 26924
// > 2B): some would be dropped. Held
// until the node has caught up to B/8 and says so, it fits even if the node
// then made no progress at all (2048 + 26924 < 2B).
func TestBackPressureHoldsQoS1(t *testing.T) {
	nodes := cluster3(t)
	const bound = 16 << 10
	b, _ := joinNode(t, t.TempDir(), func(c *Config, _ *broker.Options) { c.InboundBytes = bound })
	sub := connect(t, b, "bp-sub")
	sub.Subscribe(1, 1, "bp/#")
	waitInterest(t, nodes[0], "bp/x", b)
	unblock := holdCluster(t, b, "bp/#")
	before, before0 := b.node.Stats(), nodes[0].node.Stats()

	// QoS 0 messages past half the bound (the first is the one held in the
	// broker): the node says it is congested.
	pub := connect311(t, nodes[0], "bp-pub") // 127 in flight: past an MQTT 5 receive maximum
	payload := make([]byte, 200)
	const n1 = 127
	congested := func() bool {
		until, _, _ := nodes[0].node.cong.holdUntil(time.Now(), time.Minute)
		return !until.IsZero()
	}
	// 45 at least; more, one at a time, while the node does not say so:
	// the burst the node took before the broker held it may have been
	// more than one message (under load, the first 45 at once), leaving
	// less than half the bound queued. At most 70 queued (14,700 bytes):
	// below the bound, so none is dropped.
	n0 := 0
	for n0 < 45 || (b.node.Stats().InboundQueued < 70 && !waitFor(100*time.Millisecond, congested)) {
		pub.Publish(&packet.Publish{Topic: "bp/0", Payload: payload})
		n0++
	}
	brokertest.Eventually(t, 5*time.Second, congested, "node 0 sees the node congested")
	// The node takes a burst of what waits (up to inboundBurst) before
	// the broker holds it: the rest is queued.
	// Every QoS 0 message has arrived (taken or queued) before the count
	// is kept: one still on its way would be counted after the burst.
	var queued0 int
	brokertest.Eventually(t, 5*time.Second, func() bool {
		s := b.node.Stats()
		queued0 = s.InboundQueued
		taken := int(s.ForwardedIn - before.ForwardedIn)
		return queued0+taken == n0 && queued0 <= n0-1 && queued0 >= n0-inboundBurst
	}, "the QoS 0 messages queued")
	if s := b.node.Stats(); s.DroppedTotal() != before.DroppedTotal() {
		t.Fatalf("%d dropped; want none", s.DroppedTotal()-before.DroppedTotal())
	}

	// The QoS 1 burst: node 0 holds it.
	for i := range n1 {
		pub.Send(&packet.Publish{Topic: "bp/1", QoS: 1, PacketID: uint16(i + 1), Payload: payload})
	}
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return nodes[0].node.Stats().BackPressureWaits > before0.BackPressureWaits
	}, "node 0 holds the QoS 1 messages")
	if s := b.node.Stats(); s.InboundQueued != queued0 {
		t.Fatalf("%d messages queued on the congested node, want %d: the QoS 1 burst was not held", s.InboundQueued, queued0)
	}
	unblock()

	for range n1 {
		got := pub.Recv()
		if p, ok := got.(*packet.Puback); !ok || p.ReasonCode != packet.Success {
			t.Fatalf("expected PUBACK, got %s", brokertest.Describe(got))
		}
	}
	got := drain(t, sub, n0+n1)
	for i, p := range got {
		if want := byte(min(i/n0, 1)); p.QoS != want {
			t.Fatalf("message %d has QoS %d, want %d: order lost", i, p.QoS, want)
		}
	}
	s, s0 := b.node.Stats(), nodes[0].node.Stats()
	if d := s.DroppedTotal() - before.DroppedTotal(); d != 0 {
		t.Fatalf("%d messages dropped", d)
	}
	if s.CongestedEpisodes == before.CongestedEpisodes {
		t.Error("the node did not count its congestion")
	}
	if to := s0.BackPressureTimeouts - before0.BackPressureTimeouts; to != 0 {
		t.Errorf("%d holds went past the limit", to)
	}
}

// TestBackPressureByCount: small messages congest a node by their number
// (congestMessages) long before their bytes would: what waits in its queue
// was acknowledged by other nodes and would die with it, so the others
// hold their QoS 1 publishers until it has caught up.
func TestBackPressureByCount(t *testing.T) {
	nodes := cluster3(t)
	b, _ := joinNode(t, t.TempDir(), nil)
	sub := connect(t, b, "bpc-sub")
	sub.Subscribe(1, 1, "bpc/#")
	waitInterest(t, nodes[0], "bpc/x", b)
	unblock := holdCluster(t, b, "bpc/#")
	before0 := nodes[0].node.Stats()

	pub := connect(t, nodes[0], "bpc-pub")
	n0 := congestMessages + inboundBurst + 10 // a burst of them is taken from the queue, held in the broker
	for range n0 {
		pub.Publish(&packet.Publish{Topic: "bpc/0", Payload: []byte("x")})
	}
	brokertest.Eventually(t, 10*time.Second, func() bool {
		until, _, _ := nodes[0].node.cong.holdUntil(time.Now(), time.Minute)
		return !until.IsZero()
	}, "node 0 sees the node congested by the count of its queue")
	pub.Send(&packet.Publish{Topic: "bpc/1", QoS: 1, PacketID: 1, Payload: []byte("y")})
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return nodes[0].node.Stats().BackPressureWaits > before0.BackPressureWaits
	}, "node 0 holds the QoS 1 message")
	unblock()
	if got := pub.Recv(); !isPuback(got) {
		t.Fatalf("expected PUBACK, got %s", brokertest.Describe(got))
	}
	got := drain(t, sub, n0+1)
	if last := got[len(got)-1]; last.Topic != "bpc/1" {
		t.Fatalf("last message %s, want the held QoS 1 one", brokertest.Describe(last))
	}
}

// waitFor polls cond every 5 ms for up to d and reports whether it held.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(5 * time.Millisecond)
	}
	return true
}
