package main

import (
	"bufio"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// rawClient is a minimal MQTT 5 client over a socket whose errors are
// returned, not fatal: its broker is killed under it.
type rawClient struct {
	nc net.Conn
	r  *bufio.Reader
}

func rawConnect(addr string, cp *packet.Connect) (*rawClient, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c := &rawClient{nc: nc, r: bufio.NewReader(nc)}
	cp.Version = packet.V5
	if err := c.send(cp); err != nil {
		nc.Close()
		return nil, nil, err
	}
	p, err := c.recv(20 * time.Second)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReasonCode != packet.Success {
		nc.Close()
		return nil, nil, fmt.Errorf("CONNECT answered with %v", p)
	}
	return c, ack, nil
}

func (c *rawClient) send(p packet.Packet) error {
	c.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	return packet.Write(c.nc, p, packet.V5)
}

func (c *rawClient) recv(d time.Duration) (packet.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(d))
	return packet.Read(c.r, packet.V5, 1<<20)
}

// publish sends a QoS 1 PUBLISH and waits for its PUBACK.
func (c *rawClient) publish(topic string, payload []byte, id uint16) error {
	if err := c.send(&packet.Publish{Topic: topic, QoS: 1, PacketID: id, Payload: payload}); err != nil {
		return err
	}
	for {
		p, err := c.recv(10 * time.Second)
		if err != nil {
			return err
		}
		if a, ok := p.(*packet.Puback); ok && a.PacketID == id {
			if a.ReasonCode.IsError() {
				return a.ReasonCode
			}
			return nil
		}
	}
}

type clusterProc struct {
	cmd  *exec.Cmd
	addr string
	logs *lockedBuffer
}

type lockedBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// adoptAfter is the kill test's cluster_adopt_after: short, so that the
// survivors adopt the victim's sessions while their clients reconnect
// (each session moves either way, by its client's CONNECT or by the
// adoption, and the two race).
const adoptAfter = 2

// startClusterProcs runs 3 mqttd processes forming one cluster, each with
// its own store and data directory, and waits until all listen.
func startClusterProcs(t *testing.T, name string) []*clusterProc {
	t.Helper()
	var links []string
	for range 3 {
		links = append(links, "127.0.0.1:"+strconv.Itoa(freePort(t)))
	}
	procs := make([]*clusterProc, 3)
	for i := range procs {
		dir := t.TempDir()
		port := freePort(t)
		conf := fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence true\n"+
			"persistence_location %s\ncluster_name %s\ncluster_node %s%d\ncluster_listen %s\ncluster_adopt_after %d\nmax_queued_messages 1000000\n",
			port, filepath.Join(dir, "data"), name, name, i, links[i], adoptAfter)
		for _, l := range links {
			conf += "cluster_peer " + l + "\n"
		}
		path := filepath.Join(dir, "mqttd.conf")
		if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(binary, "-c", path)
		logs := &lockedBuffer{}
		cmd.Stdout, cmd.Stderr = logs, logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		procs[i] = &clusterProc{cmd: cmd, addr: "127.0.0.1:" + strconv.Itoa(port), logs: logs}
	}
	for i, p := range procs {
		// The listener opens first; the broker serves once the node joined.
		brokertest.Eventually(t, 90*time.Second, func() bool {
			return strings.Contains(p.logs.String(), "cluster: node started")
		}, "node %d started (logs: %s)", i, p.logs)
	}
	return procs
}

// TestClusterKill9 [subprocess]: 3 mqttd processes (queues unbounded by
// count: a full queue drops by design, which is not what is counted here);
// persistent sessions
// on one node, publishers streaming QoS 1 to them on the same node and
// from a survivor (across the link); that node is killed (SIGKILL) at a
// random moment. Each session's client then connects to a survivor:
// session present, and every message acknowledged to a publisher, on
// either node, is delivered (a survivor acknowledges a message it
// forwarded only once the victim stored it: docs/operations.md,
// "Acknowledgements across nodes").
func TestClusterKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 processes per run")
	}
	runs := 2
	if v, err := strconv.Atoi(os.Getenv("MQTTD_KILL_RUNS")); err == nil && v > 0 {
		runs = v
	}
	var totalAcked, totalLost, crossAcked, crossLost int
	for run := range runs {
		acked, lost, xa, xl := clusterKillRun(t, fmt.Sprintf("k%d", run))
		totalAcked += acked
		totalLost += lost
		crossAcked += xa
		crossLost += xl
	}
	t.Logf("%d runs: same node: %d acknowledged, %d lost; from a survivor across the link: %d acknowledged, "+
		"%d lost", runs, totalAcked, totalLost, crossAcked, crossLost)
	if totalLost+crossLost > 0 {
		t.Fatalf("%d acknowledged messages lost (%d from the same node, %d across the link)", totalLost+crossLost,
			totalLost, crossLost)
	}
}

func clusterKillRun(t *testing.T, name string) (acked, lost, crossAcked, crossLost int) {
	procs := startClusterProcs(t, name)
	victim := rand.IntN(3)
	survivor := procs[(victim+1)%3]
	const sessions = 4
	for i := range sessions {
		c, _, err := rawConnect(procs[victim].addr, &packet.Connect{ClientID: fmt.Sprintf("%s-s%d", name, i),
			Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}})
		if err != nil {
			t.Fatalf("%v (logs: %s)", err, procs[victim].logs)
		}
		c.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: fmt.Sprintf("%s/%d/#", name, i), QoS: 1}}})
		if p, err := c.recv(10 * time.Second); err != nil {
			t.Fatalf("SUBACK: %v %v", p, err)
		}
		c.send(&packet.Disconnect{})
		c.nc.Close()
	}
	// The survivor learns the sessions' interest in the background: a
	// probe subscribed after them on the same node shows when it has.
	probe, _, err := rawConnect(procs[victim].addr, &packet.Connect{ClientID: name + "-probe", CleanStart: true})
	if err != nil {
		t.Fatalf("probe: %v (logs: %s)", err, procs[victim].logs)
	}
	probe.send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: name + "/probe"}}})
	if _, err := probe.recv(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	prober, _, err := rawConnect(survivor.addr, &packet.Connect{ClientID: name + "-prober", CleanStart: true})
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 20*time.Second, func() bool {
		prober.send(&packet.Publish{Topic: name + "/probe", Payload: []byte("p")})
		p, err := probe.recv(200 * time.Millisecond)
		_, ok := p.(*packet.Publish)
		return err == nil && ok
	}, "the survivor knows the victim's interest")
	probe.nc.Close()
	prober.nc.Close()
	type stream struct {
		mu    sync.Mutex
		acked map[string]bool
	}
	same := make([]*stream, sessions)
	cross := make([]*stream, sessions)
	var wg sync.WaitGroup
	stop := make(chan struct{})
	pub := func(s *stream, addr, topic, prefix string) {
		defer wg.Done()
		c, _, err := rawConnect(addr, &packet.Connect{ClientID: "", CleanStart: true})
		if err != nil {
			return
		}
		defer c.nc.Close()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			payload := prefix + strconv.Itoa(k)
			if err := c.publish(topic, []byte(payload), uint16(k%65000+1)); err != nil {
				return
			}
			s.mu.Lock()
			s.acked[payload] = true
			s.mu.Unlock()
		}
	}
	for i := range sessions {
		same[i] = &stream{acked: map[string]bool{}}
		cross[i] = &stream{acked: map[string]bool{}}
		wg.Add(2)
		go pub(same[i], procs[victim].addr, fmt.Sprintf("%s/%d/same", name, i), "s")
		go pub(cross[i], survivor.addr, fmt.Sprintf("%s/%d/cross", name, i), "x")
	}
	brokertest.Eventually(t, 30*time.Second, func() bool {
		for _, s := range same {
			s.mu.Lock()
			n := len(s.acked)
			s.mu.Unlock()
			if n < 20 {
				return false
			}
		}
		return true
	}, "publishers under way")
	kill := time.Duration(100+rand.IntN(700)) * time.Millisecond
	timer := time.NewTimer(kill)
	<-timer.C
	procs[victim].cmd.Process.Kill() // SIGKILL
	close(stop)
	procs[victim].cmd.Wait()
	wg.Wait()

	for i := range sessions {
		id := fmt.Sprintf("%s-s%d", name, i)
		var c *rawClient
		var ack *packet.Connack
		brokertest.Eventually(t, 60*time.Second, func() bool {
			var err error
			c, ack, err = rawConnect(survivor.addr, &packet.Connect{ClientID: id,
				Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}})
			return err == nil
		}, "%s reconnects to a survivor (logs: %s)", id, survivor.logs)
		if !ack.SessionPresent {
			t.Fatalf("%s: session not present on the survivor (logs: %s)\nvictim's logs: %s", id, survivor.logs,
				procs[victim].logs)
		}
		got := map[string]bool{}
		want := func(s *stream) (missing int) {
			s.mu.Lock()
			defer s.mu.Unlock()
			for k := range s.acked {
				if !got[k] {
					missing++
				}
			}
			return missing
		}
		deadline := time.Now().Add(20 * time.Second)
		for want(same[i]) > 0 && time.Now().Before(deadline) {
			p, err := c.recv(time.Until(deadline))
			if err != nil {
				break
			}
			if pp, ok := p.(*packet.Publish); ok {
				got[string(pp.Payload)] = true
				c.send(&packet.Puback{PacketID: pp.PacketID})
			}
		}
		// What else is there (the cross stream's) for a short while.
		for {
			p, err := c.recv(500 * time.Millisecond)
			if err != nil {
				break
			}
			if pp, ok := p.(*packet.Publish); ok {
				got[string(pp.Payload)] = true
				c.send(&packet.Puback{PacketID: pp.PacketID})
			}
		}
		c.nc.Close()
		acked += len(same[i].acked)
		lost += want(same[i])
		crossAcked += len(cross[i].acked)
		crossLost += want(cross[i])
	}
	t.Logf("run %s: node %d killed after %v: same node %d acknowledged, %d lost; across the link %d "+
		"acknowledged, %d lost", name, victim, kill, acked, lost, crossAcked, crossLost)
	if lost+crossLost > 0 {
		for i, p := range procs {
			if i != victim {
				t.Logf("node %d's log:\n%s", i, p.logs)
			}
		}
	}
	for _, p := range procs {
		p.cmd.Process.Kill()
		p.cmd.Wait()
	}
	return acked, lost, crossAcked, crossLost
}
