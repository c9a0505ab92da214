package main

import (
	"bytes"
	"net"
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

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mqttd-test")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "mqttd")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version="+version, "-o", binary, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitListening waits until a broker accepts connections on 127.0.0.1:port
// and returns that address.
func waitListening(t *testing.T, port int) string {
	t.Helper()
	addr := "127.0.0.1:" + strconv.Itoa(port)
	brokertest.Eventually(t, 15*time.Second, func() bool {
		c, err := brokertest.TryDial(addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "mqttd listening on %s", addr)
	return addr
}

// TestServeAndSignalShutdown starts the binary with -p, exchanges a message
// over a real socket and stops it with SIGTERM: exit status 0.
func TestServeAndSignalShutdown(t *testing.T) {
	port := freePort(t)
	cmd := exec.Command(binary, "-p", strconv.Itoa(port), "-v")
	cmd.Dir = t.TempDir() // its default store goes to ./data
	var logs bytes.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	brokertest.Eventually(t, 10*time.Second, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	}, "mqttd listening on %s", addr)

	sub := brokertest.Dial(t, addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "s", CleanStart: true, KeepAlive: 30})
	sub.Subscribe(1, 1, "t/#")
	pub := brokertest.Dial(t, addr, packet.V311)
	pub.Connect(&packet.Connect{ClientID: "p", CleanStart: true})
	pub.Send(&packet.Publish{Topic: "t/1", Payload: []byte("hello")})
	if got := sub.ExpectPublish(); got.Topic != "t/1" || string(got.Payload) != "hello" {
		t.Fatalf("got %v", got)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("mqttd did not exit after SIGTERM")
	}
	if !strings.Contains(logs.String(), "server stopped") {
		t.Errorf("logs lack the shutdown line:\n%s", logs.String())
	}
	sub.ExpectClosed()
}

func TestCommandLineErrors(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.conf")
	os.WriteFile(bad, []byte("listener 1883\nno_such_option yes\n"), 0o644)
	good := filepath.Join(dir, "good.conf")
	os.WriteFile(good, []byte("listener 1883 127.0.0.1\nallow_anonymous true\n"), 0o644)
	badCluster := filepath.Join(dir, "cluster.conf")
	os.WriteFile(badCluster, []byte("cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_cafile ca.pem\n"), 0o644)
	clusterFiles := filepath.Join(dir, "cluster-files.conf")
	os.WriteFile(clusterFiles, []byte("cluster_name p\ncluster_listen 127.0.0.1:7501\ncluster_cafile "+dir+
		"/ca.pem\ncluster_certfile "+dir+"/n.pem\ncluster_keyfile "+dir+"/n.key\n"), 0o644)
	cases := []struct {
		args   []string
		status int
		out    string
	}{
		{[]string{"--bogus"}, 1, `unknown option "--bogus"`},
		{[]string{"-p", "x"}, 1, `invalid port "x"`},
		{[]string{"-p"}, 1, "-p needs a value"},
		{[]string{"-c", bad}, 3, bad + `:2: unknown option "no_such_option"`},
		{[]string{"-c", filepath.Join(dir, "missing.conf")}, 3, "no such file"},
		{[]string{"--test-config", "-c", good}, 0, "configuration OK"},
		{[]string{"--test-config", "-c", bad}, 3, "no_such_option"},
		{[]string{"--test-config", "-c", badCluster}, 3, badCluster + ":3: cluster TLS needs"},
		{[]string{"--test-config", "-c", clusterFiles}, 3, clusterFiles + ":4: cluster_certfile/cluster_keyfile"},
		{[]string{"-h"}, 0, "Usage: mqttd"},
	}
	for _, c := range cases {
		out, err := exec.Command(binary, c.args...).CombinedOutput()
		status := 0
		if ee, ok := err.(*exec.ExitError); ok {
			status = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if status != c.status || !strings.Contains(string(out), c.out) {
			t.Errorf("mqttd %v: status %d, output %q; want %d and %q", c.args, status, out, c.status, c.out)
		}
		if status != 0 && len(bytes.TrimSpace(out)) > 0 && bytes.Count(bytes.TrimSpace(out), []byte("\n")) > 0 {
			t.Errorf("mqttd %v: want one line on error, got %q", c.args, out)
		}
	}
}

// TestListenerInUse: a port already taken is a clear error, not a hang.
func TestListenerInUse(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	cmd := exec.Command(binary, "-p", strconv.Itoa(port))
	cmd.Dir = t.TempDir()
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "address already in use") {
		t.Fatalf("got %v %q", err, out)
	}
}
