package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// TestHeapTrimmedAfterConnections: once a wave of connections is in and
// the broker is quiet, it gives the heap's spare pages back to the system
// (internal/memtrim): the debug line says so and the resident memory
// falls, while every connection stays served.
func TestHeapTrimmedAfterConnections(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc")
	}
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "mqttd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\n", port)), 0o600)
	cmd := exec.Command(binary, "-c", conf, "-v")
	var logs lockedBuffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := waitListening(t, port)

	const n = 3000
	conns := make([]*brokertest.Conn, n)
	for i := range conns {
		c := brokertest.Dial(t, addr, packet.V311)
		c.Connect(&packet.Connect{ClientID: fmt.Sprintf("trim-%d", i), CleanStart: true, KeepAlive: 60})
		c.Subscribe(1, 1, fmt.Sprintf("trim/%d/cmd", i))
		conns[i] = c
	}
	connected := procRSS(t, cmd.Process.Pid)
	brokertest.Eventually(t, 20*time.Second, func() bool { return strings.Contains(logs.String(), "heap trimmed") },
		"the heap trimmed after %d connections", n)
	trimmed := procRSS(t, cmd.Process.Pid)
	t.Logf("RSS with %d connections: %d KiB, once trimmed %d KiB", n, connected>>10, trimmed>>10)
	if trimmed >= connected {
		t.Errorf("RSS %d KiB once trimmed, %d KiB before", trimmed>>10, connected>>10)
	}
	for _, c := range []*brokertest.Conn{conns[0], conns[n-1]} {
		c.Ping()
	}
}
