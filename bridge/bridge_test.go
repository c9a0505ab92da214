package bridge_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/bridge"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

func testLogger() *slog.Logger {
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// node is an mqttd broker on a chosen address (port 0: any), so that a
// test can stop it and start it again on the same port with the same store.
type node struct {
	srv  *broker.Server
	addr string
	done chan error
	st   store.Store
}

func startNode(t testing.TB, addr string, st store.Store) *node {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if st == nil {
		st = mem.New()
	}
	// Unbounded queues: a test that holds a stream back must not see the
	// session queue's drops (max_queued_messages), which apply to a bridge's
	// session as to any other.
	srv := broker.New(broker.Options{AllowAnonymous: true, SysInterval: -1, Store: st, Logger: testLogger(),
		MaxQueuedMessages: -1})
	if err := srv.Restore(); err != nil {
		t.Fatal(err)
	}
	var l net.Listener
	var err error
	brokertest.Eventually(t, 5*time.Second, func() bool {
		l, err = net.Listen("tcp", addr)
		return err == nil
	}, "listen %s: %v", addr, err)
	n := &node{srv: srv, addr: l.Addr().String(), done: make(chan error, 1), st: st}
	go func() { n.done <- srv.Serve(l) }()
	t.Cleanup(n.stop)
	return n
}

func (n *node) stop() {
	if n.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = n.srv.Shutdown(ctx)
	<-n.done
	n.srv = nil
}

// startBridge runs a bridge on local with the given section lines.
func startBridge(t testing.TB, local *broker.Server, lines ...string) *bridge.Bridge {
	t.Helper()
	c, err := bridge.NewConfig("b1", "test")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range lines {
		k, rest, _ := strings.Cut(l, " ")
		if err := c.Set(k, rest); err != nil {
			t.Fatalf("%s: %v", l, err)
		}
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	b, err := bridge.Start(c, local.DialLocal, testLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Stop)
	return b
}

type got struct {
	topic, payload string
	qos            byte
	retain         bool
}

// sink collects the messages a client receives.
type sink struct {
	mu   sync.Mutex
	msgs []got
	c    *client.Client
}

func (s *sink) add(m *client.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, got{m.Topic, string(m.Payload), m.QoS, m.Retain})
	s.mu.Unlock()
}

func (s *sink) count(topic, payload string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, m := range s.msgs {
		if m.topic == topic && (payload == "" || m.payload == payload) {
			n++
		}
	}
	return n
}

func (s *sink) find(topic string) (got, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, m := range s.msgs {
		if m.topic == topic {
			return m, true
		}
	}
	return got{}, false
}

func subscribe(t *testing.T, addr, id string, persistent bool, filters ...string) *sink {
	t.Helper()
	s := &sink{}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "mqtt://"+addr, client.Options{ClientID: id, Version: packet.V5, PersistentSession: persistent,
		AutoReconnect: persistent, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond, DefaultHandler: s.add})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var subs []packet.Subscription
	for _, f := range filters {
		subs = append(subs, packet.Subscription{Filter: f, QoS: 2})
	}
	if _, err := c.Subscribe(ctx, subs, s.add); err != nil {
		t.Fatal(err)
	}
	s.c = c
	return s
}

func publisher(t *testing.T, addr string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, "mqtt://"+addr, client.Options{Version: packet.V5})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func publish(t *testing.T, c *client.Client, topic, payload string, qos byte, retain bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.Publish(ctx, topic, []byte(payload), client.PublishOptions{QoS: qos, Retain: retain}); err != nil {
		t.Fatalf("publish %s: %v", topic, err)
	}
}

func waitConnected(t *testing.T, b *bridge.Bridge) {
	t.Helper()
	brokertest.Eventually(t, 15*time.Second, func() bool { return b.Stats().Connected }, "bridge not connected")
}

// checkDirections runs the out, in and both checks of a bridge from local
// (at localAddr) to the remote at remoteAddr configured with
// bridgeTopics.
var bridgeTopics = []string{
	"topic out/# out 1 l/ r/",
	"topic in/# in 2 li/ ri/",
	"topic sync/# both 2",
	`topic "" out 2 cmd/local cmd/remote`,
}

func checkDirections(t *testing.T, localAddr, remoteAddr string, echo bool) {
	t.Helper()
	atRemote := subscribe(t, remoteAddr, "rsub", false, "r/#", "sync/#", "cmd/#", "l/#")
	atLocal := subscribe(t, localAddr, "lsub", false, "li/#", "sync/#", "ri/#")
	pl, pr := publisher(t, localAddr), publisher(t, remoteAddr)
	within := 10 * time.Second

	// Out with prefixes: the lower of the line's QoS (1) and the message's (2).
	publish(t, pl, "l/out/x", "q2", 2, false)
	brokertest.Eventually(t, within, func() bool { return atRemote.count("r/out/x", "q2") == 1 }, "out q2")
	if m, _ := atRemote.find("r/out/x"); m.qos != 1 {
		t.Errorf("out QoS %d, want 1", m.qos)
	}
	publish(t, pl, "l/out/zero", "q0", 0, false)
	brokertest.Eventually(t, within, func() bool { return atRemote.count("r/out/zero", "q0") == 1 }, "out q0")
	// A "" pattern maps exactly one topic.
	publish(t, pl, "cmd/local", "c", 1, false)
	brokertest.Eventually(t, within, func() bool { return atRemote.count("cmd/remote", "c") == 1 }, "exact topic")

	// In with prefixes, QoS 2 kept.
	publish(t, pr, "ri/in/y", "in2", 2, false)
	brokertest.Eventually(t, within, func() bool { return atLocal.count("li/in/y", "in2") == 1 }, "in q2")
	if m, _ := atLocal.find("li/in/y"); m.qos != 2 {
		t.Errorf("in QoS %d, want 2", m.qos)
	}
	// Unbridged topics stay where they are.
	publish(t, pl, "out/x", "no", 1, false)
	publish(t, pr, "in/y", "no", 1, false)

	// Both: each side gets it once, and it never comes back: No Local on the
	// local subscription and on a v5 remote's [MQTT-3.8.3-3].
	publish(t, pl, "sync/a", "from-local", 2, false) // QoS 2 out: PUBREC/PUBREL/PUBCOMP before the local ack
	publish(t, pr, "sync/b", "from-remote", 1, false)
	brokertest.Eventually(t, within, func() bool {
		return atRemote.count("sync/a", "") == 1 && atLocal.count("sync/b", "") == 1
	}, "both directions")
	// Sentinels over the same paths, after which a loop would have shown.
	publish(t, pl, "sync/end", "l", 1, false)
	publish(t, pr, "sync/end", "r", 1, false)
	brokertest.Eventually(t, within, func() bool {
		return atRemote.count("sync/end", "l") == 1 && atLocal.count("sync/end", "r") == 1
	}, "sentinels")
	publish(t, pl, "l/out/end", "e", 1, false)
	brokertest.Eventually(t, within, func() bool { return atRemote.count("r/out/end", "e") == 1 }, "sentinel out")
	for _, c := range []struct {
		s     *sink
		topic string
		want  int
	}{{atLocal, "sync/a", 1}, {atRemote, "sync/b", 1}, {atRemote, "sync/a", 1}, {atLocal, "sync/b", 1},
		{atLocal, "sync/end", 2}, {atRemote, "sync/end", 2}, {atRemote, "l/out/x", 0}, {atLocal, "ri/in/y", 0},
		{atRemote, "out/x", 0}, {atLocal, "in/y", 0}} {
		if echo && c.s == atLocal && (c.topic == "sync/a" || c.topic == "sync/end") {
			// A 3.1.1 remote that does not honour the bridge bit sends the
			// bridge's own message back once (as to Mosquitto's bridge);
			// local No Local stops it there.
			c.want++
		}
		if n := c.s.count(c.topic, ""); n != c.want {
			t.Errorf("%s received %d times, want %d", c.topic, n, c.want)
		}
	}

	// Retained: kept as retained on the remote (the local subscription has
	// Retain As Published [MQTT-3.3.1-12]).
	publish(t, pl, "l/out/ret", "kept", 1, true)
	brokertest.Eventually(t, within, func() bool { return atRemote.count("r/out/ret", "kept") == 1 }, "retained out")
	late := subscribe(t, remoteAddr, "late", false, "r/out/ret")
	brokertest.Eventually(t, within, func() bool { return late.count("r/out/ret", "kept") == 1 }, "retained at the remote")
	if m, _ := late.find("r/out/ret"); !m.retain {
		t.Error("the remote's retained message lost its retain flag")
	}
}

// TestBridgeMqttdToMqttd: out, in and both with prefixes, QoS 0/1/2 and
// retained, to a 3.1.1 and a 5.0 remote; no loops.
func TestBridgeMqttdToMqttd(t *testing.T) {
	for _, v := range []string{"mqttv311", "mqttv50"} {
		t.Run(v, func(t *testing.T) {
			remote := startNode(t, "", nil)
			local := startNode(t, "", nil)
			b := startBridge(t, local.srv, append([]string{"address " + remote.addr, "bridge_protocol_version " + v,
				"restart_timeout 1", "notifications false"}, bridgeTopics...)...)
			waitConnected(t, b)
			// mqttd honours the bridge bit (try_private): a 3.1.1 link
			// sends nothing back either.
			if v == "mqttv311" && !b.Stats().Private {
				t.Fatal("the remote mqttd refused try_private")
			}
			checkDirections(t, local.addr, remote.addr, false)
			st := b.Stats()
			if st.MsgsOut == 0 || st.MsgsIn == 0 || st.BytesOut == 0 {
				t.Errorf("stats %+v", st)
			}
		})
	}
}

// TestBridgeRemoteRestart: the remote broker restarts in the middle of a
// QoS 1 stream; every message arrives.
func TestBridgeRemoteRestart(t *testing.T) {
	remote := startNode(t, "", nil)
	local := startNode(t, "", nil)
	sinkAt := subscribe(t, remote.addr, "sink", true, "d/#")
	b := startBridge(t, local.srv, "address "+remote.addr, "restart_timeout 1", "topic d/# out 1", "notifications false")
	waitConnected(t, b)
	pub := publisher(t, local.addr)
	const n = 2000
	done := make(chan error, 1)
	go func() {
		for i := range n {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			err := pub.Publish(ctx, "d/x", []byte(fmt.Sprint(i)), client.PublishOptions{QoS: 1})
			cancel()
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	brokertest.Eventually(t, 20*time.Second, func() bool { return distinct(sinkAt) > 200 }, "stream started")
	addr, st := remote.addr, remote.st
	remote.stop()
	remote = startNode(t, addr, st)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for distinct(sinkAt) < n && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // polling with a deadline
	}
	if got := distinct(sinkAt); got != n {
		t.Fatalf("after the remote restart: %d of %d distinct messages (%+v)", got, n, b.Stats())
	}
	if b.Stats().Reconnects == 0 {
		t.Error("no reconnection counted")
	}
}

func distinct(s *sink) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for _, m := range s.msgs {
		seen[m.payload] = true
	}
	return len(seen)
}

// mosquitto runs Debian's mosquitto with extra configuration lines; it is
// required in CI and skipped elsewhere when missing.
func mosquitto(t testing.TB, extra ...string) string {
	t.Helper()
	bin := os.Getenv("MOSQUITTO")
	if bin == "" {
		bin = "/usr/sbin/mosquitto"
	}
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("mosquitto is required in CI: %v", err)
		}
		t.Skipf("no mosquitto: %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	l.Close()
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 100000\n%s\n", port, strings.Join(extra, "\n"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	brokertest.Eventually(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "mosquitto did not listen on %s", addr)
	return addr
}

// TestBridgeToMosquitto: mqttd's bridge with Debian's mosquitto as the
// remote, 3.1.1 (with try_private) and 5.0.
func TestBridgeToMosquitto(t *testing.T) {
	for _, v := range []string{"mqttv311", "mqttv50"} {
		t.Run(v, func(t *testing.T) {
			remote := mosquitto(t)
			local := startNode(t, "", nil)
			b := startBridge(t, local.srv, append([]string{"address " + remote, "bridge_protocol_version " + v,
				"restart_timeout 1", "notifications false"}, bridgeTopics...)...)
			waitConnected(t, b)
			if v == "mqttv311" && !b.Stats().Private {
				t.Error("mosquitto refused try_private")
			}
			checkDirections(t, local.addr, remote, false)
		})
	}
}

// TestMosquittoBridgesToMqttd: Debian's mosquitto bridging to mqttd (mqttd
// as the remote).
func TestMosquittoBridgesToMqttd(t *testing.T) {
	for _, v := range []string{"mqttv311", "mqttv50"} {
		t.Run(v, func(t *testing.T) {
			remote := startNode(t, "", nil)
			lines := append([]string{"connection b1", "address " + remote.addr, "bridge_protocol_version " + v,
				"restart_timeout 1", "notifications false", "cleansession true"}, bridgeTopics...)
			local := mosquitto(t, lines...)
			// Wait for the bridge: a probe message over it.
			pl := publisher(t, local)
			probe := subscribe(t, remote.addr, "probe", false, "r/#")
			brokertest.Eventually(t, 15*time.Second, func() bool {
				publish(t, pl, "l/out/probe", "p", 0, false)
				return probe.count("r/out/probe", "") > 0
			}, "mosquitto's bridge did not connect")
			probe.c.Close()
			// mqttd honours Mosquitto's try_private bridge bit: no echo on
			// 3.1.1 either.
			checkDirections(t, local, remote.addr, false)
		})
	}
}

// TestBridgeNotifications: the state topic says 1 on both sides once the
// bridge is up; when the link dies the remote publishes the will (0) and
// the bridge publishes 0 locally; 1 again after the reconnection.
func TestBridgeNotifications(t *testing.T) {
	remote := startNode(t, "", nil)
	local := startNode(t, "", nil)
	atRemote := subscribe(t, remote.addr, "rn", false, "bridges/#")
	atLocal := subscribe(t, local.addr, "ln", false, "bridges/#")
	b := startBridge(t, local.srv, "address "+remote.addr, "restart_timeout 1", "topic a/# both 1",
		"remote_clientid edge-1", "notification_topic bridges/edge-1/state")
	waitConnected(t, b)
	const tp = "bridges/edge-1/state"
	brokertest.Eventually(t, 10*time.Second, func() bool {
		return atRemote.count(tp, "1") == 1 && atLocal.count(tp, "1") == 1
	}, "state 1 on both sides")
	if !remote.srv.Disconnect("edge-1", packet.AdministrativeAction) {
		t.Fatal("the bridge was not connected to the remote")
	}
	brokertest.Eventually(t, 10*time.Second, func() bool {
		return atRemote.count(tp, "0") >= 1 && atLocal.count(tp, "0") >= 1
	}, "state 0 on both sides after the link died (the remote's from the will)")
	brokertest.Eventually(t, 10*time.Second, func() bool {
		return atRemote.count(tp, "1") == 2 && atLocal.count(tp, "1") == 2
	}, "state 1 again after the reconnection")
	if b.Stats().Reconnects != 1 {
		t.Errorf("reconnects %d, want 1", b.Stats().Reconnects)
	}
}

// TestBridgeFailover: with the first address down the bridge uses the
// second; with round_robin false it returns to the first once it answers.
func TestBridgeFailover(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	primary := l.Addr().String()
	l.Close() // nothing listens there yet
	secondary := startNode(t, "", nil)
	local := startNode(t, "", nil)
	b := startBridge(t, local.srv, "address "+primary+" "+secondary.addr, "restart_timeout 1",
		"topic a/# out 1", "notifications false")
	brokertest.Eventually(t, 15*time.Second, func() bool { return b.Stats().Address == secondary.addr },
		"not connected to the secondary")
	p := startNode(t, primary, nil)
	atPrimary := subscribe(t, p.addr, "psub", false, "a/#")
	brokertest.Eventually(t, 20*time.Second, func() bool { return b.Stats().Address == primary },
		"did not return to the primary")
	pub := publisher(t, local.addr)
	publish(t, pub, "a/1", "x", 1, false)
	brokertest.Eventually(t, 10*time.Second, func() bool { return atPrimary.count("a/1", "x") == 1 }, "via the primary")
}

// TestBridgeLazy: start_type lazy connects once threshold messages wait
// and disconnects after idle_timeout.
func TestBridgeLazy(t *testing.T) {
	remote := startNode(t, "", nil)
	local := startNode(t, "", nil)
	atRemote := subscribe(t, remote.addr, "lazy-sub", false, "a/#")
	b := startBridge(t, local.srv, "address "+remote.addr, "restart_timeout 1", "topic a/# out 1",
		"notifications false", "start_type lazy", "threshold 3", "idle_timeout 1")
	pub := publisher(t, local.addr)
	publish(t, pub, "a/1", "1", 1, false)
	publish(t, pub, "a/2", "2", 1, false)
	brokertest.Eventually(t, 5*time.Second, func() bool { return b.Stats().Queued == 2 }, "two waiting")
	if b.Stats().Connected {
		t.Fatal("connected below the threshold")
	}
	publish(t, pub, "a/3", "3", 1, false)
	brokertest.Eventually(t, 10*time.Second, func() bool {
		return atRemote.count("a/1", "") == 1 && atRemote.count("a/2", "") == 1 && atRemote.count("a/3", "") == 1
	}, "threshold reached: all three sent")
	brokertest.Eventually(t, 10*time.Second, func() bool { return !b.Stats().Connected }, "idle: disconnected")
}

// TestBridgeStartOnce: start_type once is not restarted after its
// connection ends.
func TestBridgeStartOnce(t *testing.T) {
	remote := startNode(t, "", nil)
	local := startNode(t, "", nil)
	b := startBridge(t, local.srv, "address "+remote.addr, "restart_timeout 1", "topic a/# out 1",
		"notifications false", "start_type once", "remote_clientid once-1")
	waitConnected(t, b)
	remote.srv.Disconnect("once-1", packet.AdministrativeAction)
	brokertest.Eventually(t, 5*time.Second, func() bool { return !b.Stats().Connected }, "still connected")
	deadline := time.Now().Add(2500 * time.Millisecond) // over two restart_timeouts
	for time.Now().Before(deadline) {
		if b.Stats().Connected || b.Stats().Reconnects > 0 {
			t.Fatal("a start_type once bridge was restarted")
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
}
