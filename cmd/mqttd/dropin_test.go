package main

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
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

// passwd runs `mqttd passwd args...` and fails the test on error.
func passwd(t *testing.T, args ...string) {
	t.Helper()
	out, err := exec.Command(binary, append([]string{"passwd"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mqttd passwd %v: %v\n%s", args, err, out)
	}
}

// connack dials addr, sends a 3.1.1 CONNECT for user and returns the
// connection and its CONNACK code.
func connack(t *testing.T, addr, id, user, password string) (*brokertest.Conn, packet.ReasonCode) {
	t.Helper()
	c := brokertest.Dial(t, addr, packet.V311)
	c.Send(&packet.Connect{Version: packet.V311, ProtocolName: "MQTT", ClientID: id, CleanStart: true, KeepAlive: 60,
		Username: user, HasUsername: true, Password: []byte(password), HasPassword: true})
	ack, ok := c.Recv().(*packet.Connack)
	if !ok {
		t.Fatal("no CONNACK")
	}
	return c, ack.ReasonCode
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestDropInReload runs mqttd from a mosquitto.conf with a password file
// made by `mqttd passwd`, an ACL file, a pid file, a log file and the
// metrics endpoint; then changes the password file and sends SIGHUP: the
// new credentials work and the connection made before stays up.
func TestDropInReload(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	passwd(t, "-c", "-b", pw, "alice", "secret")
	acl := filepath.Join(dir, "acl")
	os.WriteFile(acl, []byte("user alice\ntopic readwrite alice/#\nuser carol\ntopic readwrite carol/#\n"), 0o644)
	port, mport := freePort(t), freePort(t)
	pidFile, logFile := filepath.Join(dir, "mqttd.pid"), filepath.Join(dir, "mqttd.log")
	conf := filepath.Join(dir, "mosquitto.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf(`# a mosquitto.conf
pid_file %s
log_dest file %s
log_type all
listener %d 127.0.0.1
password_file %s
acl_file %s
metrics_listener %d 127.0.0.1
`, pidFile, logFile, port, pw, acl, mport)), 0o644)

	cmd := exec.Command(binary, "-c", conf)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	brokertest.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "mqttd listening on %s; stderr: %s", addr, &stderr)

	// The listening socket accepts (into its backlog) before start-up has
	// written the pid file: wait for it.
	brokertest.Eventually(t, 10*time.Second, func() bool {
		b, _ := os.ReadFile(pidFile)
		return strings.TrimSpace(string(b)) == strconv.Itoa(cmd.Process.Pid)
	}, "pid_file does not hold %d", cmd.Process.Pid)
	alice, rc := connack(t, addr, "alice1", "alice", "secret")
	if rc != 0 {
		t.Fatalf("alice: %v", rc)
	}
	alice.Subscribe(1, 0, "#")
	if _, rc := connack(t, addr, "carol1", "carol", "pw"); rc != packet.NotAuthorized {
		t.Fatalf("carol before reload: %v (Mosquitto answers not authorised)", rc)
	}

	passwd(t, "-b", pw, "carol", "pw")
	cmd.Process.Signal(syscall.SIGHUP)
	var carol *brokertest.Conn
	brokertest.Eventually(t, 10*time.Second, func() bool {
		c, rc := connack(t, addr, "carol1", "carol", "pw")
		carol = c
		return rc == 0
	}, "carol accepted after SIGHUP")
	// The old connection stayed up and the ACL still applies.
	carol.Send(&packet.Publish{Topic: "alice/x", Payload: []byte("denied")})
	carol.Send(&packet.Publish{Topic: "carol/x", Payload: []byte("denied for alice to read")})
	alice.Send(&packet.Publish{Topic: "alice/y", Payload: []byte("mine")})
	if got := alice.ExpectPublish(); got.Topic != "alice/y" {
		t.Fatalf("alice got %s", brokertest.Describe(got))
	}

	body := scrape(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", mport))
	for _, want := range []string{"mqttd_clients_connected 2\n", "mqttd_subscriptions 1\n", "mqttd_auth_failures_total "} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(body, "mqttd_auth_failures_total 0\n") {
		t.Error("auth failure not counted")
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("mqttd did not exit after SIGTERM")
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("pid_file left behind: %v", err)
	}
	logs, _ := os.ReadFile(logFile)
	for _, want := range []string{
		"New client connected from " + alice.NC.LocalAddr().String() + " as alice1 (p2, c1, k60, u'alice').",
		"Client <unknown> disconnected, not authorised.",
		"Reloading config.",
		"Opening listen socket on port " + strconv.Itoa(port),
	} {
		if !bytes.Contains(logs, []byte(want)) {
			t.Errorf("log file lacks %q:\n%s", want, logs)
		}
	}
}

// --test-config loads the files a configuration names.
func TestTestConfigChecksFiles(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "m.conf")
	os.WriteFile(conf, []byte("listener 1883\npassword_file "+filepath.Join(dir, "missing")+"\n"), 0o644)
	out, err := exec.Command(binary, "--test-config", "-c", conf).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "password_file") {
		t.Fatalf("got %v %q", err, out)
	}
	out, err = exec.Command(binary, "passwd", "-h").CombinedOutput()
	if !strings.Contains(string(out), "mqttd passwd") {
		t.Fatalf("mqttd passwd -h: %v %q", err, out)
	}
}
