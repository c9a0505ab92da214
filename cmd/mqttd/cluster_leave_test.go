package main

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// TestClusterSigterm [subprocess]: 3 mqttd processes; persistent sessions
// on one node, offline; a publisher on another node streams QoS 1 to them
// across the link. The node is stopped with SIGTERM: it hands its sessions
// to the others before its links go (cluster/leave.go), so the publisher
// is never refused (no DISCONNECT 0x89 while the others would hold the
// sessions: cluster/holdgate.go), and each session's client resumes on a
// survivor with every message acknowledged to the publisher, before the
// stop and after it.
func TestClusterSigterm(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 processes")
	}
	const name, sessions = "g", 3
	procs := startClusterProcs(t, name)
	victim, pubAt, resumeAt := procs[0], procs[1], procs[2]
	offlineSessions(t, name, victim, pubAt, sessions)

	var mu sync.Mutex
	acked := make([]map[string]bool, sessions)
	for i := range acked {
		acked[i] = map[string]bool{}
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range acked {
			n += len(a)
		}
		return n
	}
	stop := make(chan struct{})
	var pubErr error // under mu
	ended := make(chan struct{})
	fail := func(err error) {
		mu.Lock()
		pubErr = err
		mu.Unlock()
	}
	failed := func() error {
		mu.Lock()
		defer mu.Unlock()
		return pubErr
	}
	go func() {
		defer close(ended)
		c, _, err := rawConnect(pubAt.addr, &packet.Connect{ClientID: name + "-pub", CleanStart: true})
		if err != nil {
			fail(err)
			return
		}
		defer c.nc.Close()
		for k := 0; ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			i := k % sessions
			payload := strconv.Itoa(k)
			if err := c.publish(fmt.Sprintf("%s/%d/x", name, i), []byte(payload), uint16(k%65000+1)); err != nil {
				fail(fmt.Errorf("message %d: %w", k, err))
				return
			}
			mu.Lock()
			acked[i][payload] = true
			mu.Unlock()
		}
	}()
	brokertest.Eventually(t, 30*time.Second, func() bool { return count() >= 300 || failed() != nil },
		"publisher under way")
	if err := victim.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- victim.cmd.Wait() }()
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("the node stopped with %v (logs: %s)", err, victim.logs)
		}
	case <-time.After(90 * time.Second):
		t.Fatalf("the node did not stop (logs: %s)", victim.logs)
	}
	atExit := count()
	brokertest.Eventually(t, 30*time.Second, func() bool { return count() >= atExit+300 || failed() != nil },
		"publisher goes on after the node left")
	close(stop)
	<-ended
	if err := failed(); err != nil {
		t.Fatalf("publisher refused while the node left: %v (logs: %s; the third node's: %s; the node that left: %s)",
			err, pubAt.logs, resumeAt.logs, victim.logs)
	}
	logs := victim.logs.String()
	if !strings.Contains(logs, "cluster: sessions handed over to the other nodes before shutdown") {
		t.Fatalf("no handover in the node's logs: %s", logs)
	}
	for _, p := range []*clusterProc{pubAt, resumeAt} {
		if l := p.logs.String(); strings.Contains(l, "QoS 1 and 2 messages are refused") {
			t.Fatalf("a survivor refused acknowledgements for a node that left: %s", l)
		}
	}

	for i := range sessions {
		id := fmt.Sprintf("%s-s%d", name, i)
		c, ack, err := rawConnect(resumeAt.addr, &packet.Connect{ClientID: id,
			Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600)}})
		if err != nil {
			t.Fatalf("%s: %v (logs: %s)", id, err, resumeAt.logs)
		}
		if !ack.SessionPresent {
			t.Fatalf("%s: session not present on a survivor (logs: %s)", id, resumeAt.logs)
		}
		got := map[string]bool{}
		missing := func() int {
			n := 0
			for k := range acked[i] {
				if !got[k] {
					n++
				}
			}
			return n
		}
		c.receiveUntil(got, func() bool { return missing() == 0 })
		c.nc.Close()
		if m := missing(); m > 0 {
			t.Fatalf("%s: %d of %d acknowledged messages lost", id, m, len(acked[i]))
		}
		t.Logf("%s: %d messages, all delivered", id, len(acked[i]))
	}
	for line := range strings.Lines(logs) {
		if strings.Contains(line, "handed over to the other nodes") {
			t.Logf("victim: %s", strings.TrimSpace(line))
		}
	}
}
