package bridge_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/bridge"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/client"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// TestMain lets the test binary run as an edge broker with a bridge
// (MQTTD_BRIDGE_EDGE=DIR, MQTTD_BRIDGE_REMOTE=host:port) for the kill -9
// test: the pebble store in DIR, a bridge `topic crash/# out 1`, and its
// address printed on stdout.
func TestMain(m *testing.M) {
	if dir := os.Getenv("MQTTD_BRIDGE_EDGE"); dir != "" {
		runEdge(dir, os.Getenv("MQTTD_BRIDGE_REMOTE"))
		return
	}
	os.Exit(m.Run())
}

func runEdge(dir, remote string) {
	fail := func(err error) {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncAlways})
	if err != nil {
		fail(err)
	}
	srv := broker.New(broker.Options{AllowAnonymous: true, Store: st, SysInterval: -1, MaxQueuedMessages: -1,
		Logger: testLogger()})
	if err := srv.Restore(); err != nil {
		fail(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fail(err)
	}
	go srv.Serve(l)
	c, _ := bridge.NewConfig("edge", "edge")
	for _, line := range []string{"address " + remote, "restart_timeout 1", "topic crash/# out 1", "notifications false"} {
		k, rest, _ := strings.Cut(line, " ")
		if err := c.Set(k, rest); err != nil {
			fail(err)
		}
	}
	if err := c.Finish(); err != nil {
		fail(err)
	}
	if _, err := bridge.Start(c, srv.DialLocal, testLogger()); err != nil {
		fail(err)
	}
	fmt.Println("ADDR", l.Addr().String())
	select {}
}

type edge struct {
	cmd  *exec.Cmd
	addr string
}

func startEdge(t *testing.T, dir, remote string) *edge {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MQTTD_BRIDGE_EDGE="+dir, "MQTTD_BRIDGE_REMOTE="+remote)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		t.Fatalf("edge broker: %q %v", line, err)
	}
	e := &edge{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))}
	t.Cleanup(e.kill)
	return e
}

func (e *edge) kill() {
	if e.cmd.ProcessState == nil {
		_ = e.cmd.Process.Signal(syscall.SIGKILL)
		_ = e.cmd.Wait()
	}
}

// TestBridgeKill9NoLoss: an edge mqttd bridges a QoS 1 stream to a remote
// and is killed with SIGKILL in the middle of it. After its restart every
// message the edge acknowledged to its publisher reaches the remote: the
// bridge acknowledges a message locally only once the remote has.
func TestBridgeKill9NoLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("kill -9 test: not in -short")
	}
	remote := startNode(t, "", nil)
	sinkAt := subscribe(t, remote.addr, "sink", true, "crash/#")
	dir := t.TempDir()
	acked := map[string]bool{}
	var mu sync.Mutex
	for run := range 3 {
		e := startEdge(t, dir, remote.addr)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		pub, err := client.Dial(ctx, "mqtt://"+e.addr, client.Options{Version: packet.V5, MaxInflight: 50})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				id := fmt.Sprintf("r%d-%d", run, i)
				err := pub.PublishAsync(context.Background(), "crash/x", []byte(id), client.PublishOptions{QoS: 1}, func(err error) {
					if err == nil {
						mu.Lock()
						acked[id] = true
						mu.Unlock()
					}
				})
				if err != nil {
					return
				}
			}
		}()
		// Kill once this run's stream is well under way.
		start := len(snapshot(&mu, acked))
		brokertest.Eventually(t, 20*time.Second, func() bool { return len(snapshot(&mu, acked)) > start+300 }, "stream")
		e.kill()
		inFlight := 0
		have := payloads(sinkAt)
		for id := range snapshot(&mu, acked) {
			if !have[id] {
				inFlight++
			}
		}
		t.Logf("run %d: killed with %d acknowledged messages not yet at the remote", run, inFlight)
		close(stop)
		pub.Close()
		wg.Wait()
	}
	e := startEdge(t, dir, remote.addr) // the last run's queue goes out
	_ = e
	want := snapshot(&mu, acked)
	deadline := time.Now().Add(30 * time.Second)
	missing := 0
	for time.Now().Before(deadline) {
		have := payloads(sinkAt)
		missing = 0
		for id := range want {
			if !have[id] {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		time.Sleep(20 * time.Millisecond) // polling with a deadline
	}
	if missing > 0 {
		t.Fatalf("%d of %d acknowledged messages never reached the remote", missing, len(want))
	}
	t.Logf("%d acknowledged messages, all at the remote after 3 kill -9", len(want))
}

func snapshot(mu *sync.Mutex, m map[string]bool) map[string]bool {
	mu.Lock()
	defer mu.Unlock()
	out := make(map[string]bool, len(m))
	for k := range m {
		out[k] = true
	}
	return out
}

func payloads(s *sink) map[string]bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string]bool{}
	for _, m := range s.msgs {
		out[m.payload] = true
	}
	return out
}
