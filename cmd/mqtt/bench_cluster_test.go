package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/cluster"
	"github.com/mqttd/mqttd/internal/brokertest"
)

// clusterNode is one node of an in-process test cluster.
type clusterNode struct {
	srv  *brokertest.Server
	node *cluster.Node
}

// startCluster starts n cluster nodes in this process, each a broker on
// 127.0.0.1:0 with its link on a free loopback port, and waits until they
// are linked. They stop when the test ends.
func startCluster(t *testing.T, n int) []clusterNode {
	t.Helper()
	var links []string
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		links = append(links, l.Addr().String())
	}
	for _, l := range ls {
		l.Close()
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	nodes := make([]clusterNode, n)
	for i := range n {
		node, err := cluster.New(cluster.Config{Name: "bench", Node: fmt.Sprintf("n%d", i), Listen: links[i], Peers: links,
			Dir: t.TempDir(), Logger: logger, StartTimeout: 40 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = append(o.Hooks, node) })
		t.Cleanup(func() { node.Close() }) // before the broker's shutdown (cleanups run last first)
		nodes[i] = clusterNode{srv: srv, node: node}
	}
	// JetStream needs a majority: the nodes start together.
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range nodes {
		wg.Go(func() { errs[i] = nodes[i].node.Start(context.Background()) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatalf("starting the cluster: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		linked := true
		for _, cn := range nodes {
			linked = linked && cn.node.Stats().LinksUp >= n-1
		}
		if linked {
			return nodes
		}
		if time.Now().After(deadline) {
			t.Fatalf("the %d nodes are not linked after 10s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCLIBenchSubURLCluster runs mqtt bench with the publishers on one node
// of a 2-node cluster and the subscribers on the other (--sub-url): every
// message crosses the link and none is lost, and the warm-up messages that
// wait for the subscriptions to reach the publishers' node are not counted.
func TestCLIBenchSubURLCluster(t *testing.T) {
	nodes := startCluster(t, 2)
	pubPort := portOf(t, nodes[0].srv)
	subURL := nodes[1].srv.URL()
	tests := []struct {
		scenario string
		args     []string
		subs     int
	}{
		{"pairs", []string{"--clients", "3", "--qos", "1"}, 3},
		{"pairs-qos0", []string{"--clients", "2", "--qos", "0"}, 2},
		{"fanin", []string{"--clients", "3", "--qos", "1", "-V", "mqttv5"}, 1},
		{"fanout", []string{"--clients", "3", "--qos", "2", "--size", "100"}, 3},
		{"shared", []string{"--clients", "2", "--publishers", "2", "--qos", "1", "-V", "5"}, 2},
		{"latency", []string{"--qos", "1", "--rate", "200"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.scenario, func(t *testing.T) {
			scenario, _, _ := strings.Cut(tt.scenario, "-")
			in := nodes[1].node.Stats().ForwardedIn
			// A bounded offered rate, as in TestCLIBench: the test checks
			// the accounting across the link, not the peak rate.
			args := append([]string{"bench", scenario, "-h", "127.0.0.1", "-p", pubPort, "--sub-url", subURL,
				"--duration", "1", "--json", "--rate", "1000"}, tt.args...)
			r := runCLI(t, "", args...)
			if r.code != 0 {
				t.Fatalf("exit %d, stderr %q, stdout %q", r.code, r.stderr, r.stdout)
			}
			lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
			var res benchResult
			if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
				t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
			}
			if res.SubBroker != subURL || res.Broker != "mqtt://127.0.0.1:"+pubPort {
				t.Errorf("brokers: publishers %q, subscribers %q; want %q and %q", res.Broker, res.SubBroker, "mqtt://127.0.0.1:"+pubPort, subURL)
			}
			if res.Sent == 0 || res.PublishErrors != 0 || res.Lost != 0 || res.Duplicates != 0 || res.Foreign != 0 {
				t.Errorf("counters: %+v", res)
			}
			perMsg := uint64(1)
			if scenario == "fanout" {
				perMsg = uint64(tt.subs)
			}
			if res.Expected != res.Sent*perMsg || res.Received != res.Expected || res.Unique != res.Received {
				t.Errorf("sent %d, expected %d, received %d, unique %d", res.Sent, res.Expected, res.Received, res.Unique)
			}
			if res.Subscribers != tt.subs || res.Latency == nil || res.Latency.P50 <= 0 {
				t.Errorf("report: %+v latency %+v", res, res.Latency)
			}
			// Every message crossed the link to the subscribers' node
			// (once per node, not per subscriber: fanout's 3 subscribers
			// are on one node).
			if got := nodes[1].node.Stats().ForwardedIn - in; got < int64(res.Sent) {
				t.Errorf("the subscribers' node received %d messages from the cluster, want at least the %d sent", got, res.Sent)
			}
			if !strings.Contains(r.stderr, "warm-up: the subscribers on "+subURL) || !strings.Contains(lines[0], "subscribers on "+subURL) {
				t.Errorf("no warm-up line on stderr %q, or the summary %q does not name the subscribers' broker", r.stderr, lines[0])
			}
		})
	}
}

// TestBenchSubURLNotACluster: subscribers on a broker that is not linked to
// the publishers' one never get the warm-up messages, and the run ends
// with a clear error instead of reporting every message lost.
func TestBenchSubURLNotACluster(t *testing.T) {
	pubSrv, subSrv := brokertest.Start(t), brokertest.Start(t)
	old := warmupTimeout
	warmupTimeout = 300 * time.Millisecond
	t.Cleanup(func() { warmupTimeout = old })
	c, err := parseArgs("bench", []string{"pairs", "-L", pubSrv.URL(), "--sub-url", subSrv.URL(), "--clients", "2", "--duration", "1"})
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err = runBench(context.Background(), c, &stdout, &stderr)
	var ee *exitError
	if !errors.As(err, &ee) || ee.code != 1 || !strings.Contains(ee.msg, "2 of 2 publishers on "+pubSrv.URL()+" still reach no subscriber on "+subSrv.URL()) {
		t.Fatalf("got %v, want exit 1 naming both brokers", err)
	}
	if stdout.Len() != 0 {
		t.Errorf("a report was printed: %q", stdout.String())
	}
}

func TestBenchSubURLFlag(t *testing.T) {
	good := []struct{ arg, want string }{
		{"mqtt://127.0.0.1:1884", "mqtt://127.0.0.1:1884"},
		{"mqtt://node2", "mqtt://node2:1883"},
		{"MQTTS://node2/", "mqtts://node2:8883"},
		{"ws://node2:8080/mqtt", "ws://node2:8080/mqtt"},
		{"wss://node2", "wss://node2:443"},
		{"mqtt://[::1]:1885", "mqtt://[::1]:1885"},
		{"mqtt://[::1]", "mqtt://[::1]:1883"},
	}
	for _, g := range good {
		c, err := parseArgs("bench", []string{"pairs", "--sub-url", g.arg})
		if err != nil || c.subURL != g.want {
			t.Errorf("--sub-url %s: got %q, %v; want %q", g.arg, c.subURL, err, g.want)
		}
	}
	bad := []struct{ arg, msg string }{
		{"node2:1883", "Invalid --sub-url"},
		{"http://node2", "Unsupported URL scheme"},
		{"mqtt://user:pw@node2", "no user name"},
		{"mqtt://node2/topic", "only ws:// and wss:// take a path"},
		{"mqtt://:1883", "no host"},
		{"mqtt://node2:70000", "Invalid port"},
		{"mqtt://node2:x", "Invalid port"},
	}
	for _, b := range bad {
		_, err := parseArgs("bench", []string{"pairs", "--sub-url", b.arg})
		var ue *usageError
		if !errors.As(err, &ue) || !strings.Contains(ue.msg, b.msg) {
			t.Errorf("--sub-url %s: got %v, want a usage error containing %q", b.arg, err, b.msg)
		}
	}
	if _, err := parseArgs("pub", []string{"-t", "x", "-m", "y", "--sub-url", "mqtt://a"}); err == nil {
		t.Error("mqtt pub accepted --sub-url")
	}
	c, err := parseArgs("bench", []string{"conns", "--sub-url", "mqtt://127.0.0.1:1"})
	if err != nil {
		t.Fatal(err)
	}
	var ue *usageError
	if err := runBench(context.Background(), c, new(bytes.Buffer), new(bytes.Buffer)); !errors.As(err, &ue) {
		t.Errorf("conns with --sub-url: got %v, want a usage error", err)
	}
}
