package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
)

// TestCLIBenchConnsSubscribe: with --subscribe, every connection of conns
// holds one subscription of its own, at --qos, while it is held idle.
func TestCLIBenchConnsSubscribe(t *testing.T) {
	srv := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, mqttBin, "bench", "conns", "-L", srv.URL(), "--clients", "30", "--subscribe",
		"--qos", "0", "--duration", "30", "--json")
	var out bytes.Buffer
	var errOut lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	count := func() (n int, qos0 bool) {
		page, _ := srv.SubscriptionsPage("", "", 1000)
		qos0 = true
		for _, s := range page {
			if strings.HasPrefix(s.Filter, "bench/") && strings.Contains(s.Filter, "/conns/") {
				n++
				qos0 = qos0 && s.QoS == 0
			}
		}
		return n, qos0
	}
	brokertest.Eventually(t, 15*time.Second, func() bool { n, _ := count(); return n == 30 }, "30 subscriptions")
	// The broker holds a subscription before its SUBACK reaches the client:
	// a SIGTERM sent now would cancel a SUBSCRIBE still waiting for it.
	brokertest.Eventually(t, 15*time.Second, func() bool { return strings.Contains(errOut.String(), "holding them idle") },
		"the connecting phase over")
	if _, qos0 := count(); !qos0 {
		t.Error("a subscription is not at --qos 0")
	}
	// SIGTERM ends the hold early; the report still comes out.
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("mqtt bench: %v; stderr %q", err, errOut.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var res benchResult
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &res); err != nil {
		t.Fatalf("last line %q: %v", lines[len(lines)-1], err)
	}
	if res.Connections != 30 || res.ConnectErrors != 0 || res.ConnectRate <= 0 {
		t.Errorf("got %+v; stderr %q", res, errOut.String())
	}
}

// TestCLIBenchConnsSubscribeRefused: a refused subscription counts as a
// failed connection; when none succeeds, conns exits with the error.
func TestCLIBenchConnsSubscribeRefused(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.CheckSubscribe = func(*broker.ClientInfo, string) bool { return false }
	})
	r := runCLI(t, "", "bench", "conns", "-L", srv.URL(), "--clients", "5", "--subscribe", "--duration", "0.1", "--json")
	if r.code == 0 || !strings.Contains(r.stderr, "subscribe") {
		t.Errorf("exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

func TestCLIBenchSubscribeOnlyConns(t *testing.T) {
	r := runCLI(t, "", "bench", "pairs", "-p", "1", "--subscribe")
	if r.code == 0 || !strings.Contains(r.stderr, "--subscribe is for the conns scenario") {
		t.Errorf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := parseArgs("bench", []string{"conns", "--subscribe"}); err != nil {
		t.Errorf("conns --subscribe: %v", err)
	}
}

// lockedBuffer is a bytes.Buffer the test reads while a process writes it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
