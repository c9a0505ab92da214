//go:build mosquitto

package client

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
)

// startBroker runs /usr/sbin/mosquitto (or $MOSQUITTO) for the test, so that
// `go test -tags mosquitto` checks the client against Mosquitto. Tests that
// need mqttd's hooks (opts) are skipped.
// Mosquitto 2.0 closes a taken-over connection without a DISCONNECT.
const takeoverDisconnect = false

func startBroker(t testing.TB, opts ...func(*broker.Options)) *brokertest.Server {
	t.Helper()
	if len(opts) > 0 {
		t.Skip("needs mqttd broker options")
	}
	bin := os.Getenv("MOSQUITTO")
	if bin == "" {
		bin = "/usr/sbin/mosquitto"
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_, port, _ := net.SplitHostPort(addr)
	l.Close()
	conf := filepath.Join(t.TempDir(), "mosquitto.conf")
	text := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 0\n", port)
	if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Skipf("mosquitto: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	brokertest.Eventually(t, 5*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "mosquitto did not listen on %s", addr)
	return &brokertest.Server{Addr: addr}
}
