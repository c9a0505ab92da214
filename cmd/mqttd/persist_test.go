package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// startConf runs mqttd -c conf and waits until it listens on port.
func startConf(t *testing.T, conf string, port int) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binary, "-c", conf)
	var logs bytes.Buffer
	cmd.Stderr = &logs
	cmd.Stdout = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	brokertest.Eventually(t, 15*time.Second, func() bool {
		if cmd.ProcessState != nil {
			return true
		}
		c, err := brokertest.TryDial(addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "mqttd listening on %s", addr)
	return cmd, &logs
}

func stopGracefully(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("mqttd exit: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("mqttd did not stop")
	}
}

// TestPersistenceByDefault: with no persistence option, mqttd keeps
// persistent sessions in its store (a data directory beside the config): a
// queued QoS 1 message survives a restart.
func TestPersistenceByDefault(t *testing.T) {
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "mqttd.conf")
	os.WriteFile(conf, []byte("listener "+strconv.Itoa(port)+" 127.0.0.1\nallow_anonymous true\n"), 0o644)
	addr := "127.0.0.1:" + strconv.Itoa(port)

	cmd, _ := startConf(t, conf, port)
	sub := brokertest.Dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "keeper", CleanStart: false})
	sub.Subscribe(1, 1, "alerts/#")
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed()
	pub := brokertest.Dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "p", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "alerts/fire", QoS: 1, PacketID: 1, Payload: []byte("evacuate")})
	if _, ok := pub.Recv().(*packet.Puback); !ok {
		t.Fatal("no PUBACK")
	}
	stopGracefully(t, cmd)
	if _, err := os.Stat(filepath.Join(dir, "data", storeDirName)); err != nil {
		t.Fatalf("no store beside the config: %v", err)
	}

	startConf(t, conf, port)
	sub2 := brokertest.Dial(t, addr, packet.V311)
	if ack := sub2.Connect(&packet.Connect{ClientID: "keeper", CleanStart: false}); !ack.SessionPresent {
		t.Fatal("session not restored")
	}
	if p := sub2.ExpectPublish(); p.Topic != "alerts/fire" || string(p.Payload) != "evacuate" {
		t.Fatalf("got %v", p)
	}
}

// TestDamagedStore: a damaged store is refused with an error naming the
// directory and what to do; with persistence_on_corruption move-aside it is
// renamed and mqttd starts empty, loudly.
func TestDamagedStore(t *testing.T) {
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "store", storeDirName)
	port := freePort(t)
	conf := filepath.Join(dir, "mqttd.conf")
	base := "listener " + strconv.Itoa(port) + " 127.0.0.1\nallow_anonymous true\npersistence_location " + filepath.Join(dir, "store") + "\n"
	os.WriteFile(conf, []byte(base), 0o644)
	cmd, _ := startConf(t, conf, port)
	stopGracefully(t, cmd)
	// Damage the store: garbage over its MANIFEST.
	manifests, _ := filepath.Glob(filepath.Join(storeDir, "MANIFEST-*"))
	if len(manifests) == 0 {
		t.Fatalf("no MANIFEST in %s", storeDir)
	}
	for _, m := range manifests {
		fi, _ := os.Stat(m)
		os.WriteFile(m, bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, int(fi.Size())/4+1), 0o644)
	}
	out, err := exec.Command(binary, "-c", conf).CombinedOutput()
	if err == nil {
		t.Fatal("mqttd started on a damaged store")
	}
	if !strings.Contains(string(out), storeDir) || !strings.Contains(string(out), "persistence_on_corruption move-aside") {
		t.Fatalf("error does not name the directory and the way out:\n%s", out)
	}

	os.WriteFile(conf, []byte(base+"persistence_on_corruption move-aside\n"), 0o644)
	cmd, logs := startConf(t, conf, port)
	if cmd.ProcessState != nil {
		t.Fatalf("mqttd exited:\n%s", logs)
	}
	stopGracefully(t, cmd)
	if !strings.Contains(logs.String(), "moved it aside and starting EMPTY") {
		t.Fatalf("no loud line about the move:\n%s", logs)
	}
	matches, _ := filepath.Glob(storeDir + "*")
	if len(matches) < 2 {
		t.Fatalf("damaged store not kept aside: %v", matches)
	}
}
