package main

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// BenchmarkIdleConnMemory opens MQTTD_BENCH_CONNS (default 10,000) idle
// connections, each subscribed to a topic of its own, to a broker process and
// reports the growth of the process's resident memory per connection. It
// measures mqttd and, when the mosquitto binary is installed, Mosquitto in
// the same run:
//
//	go test -run '^$' -bench IdleConnMemory -benchtime 1x ./cmd/mqttd
func BenchmarkIdleConnMemory(b *testing.B) {
	n := 10000
	if s := os.Getenv("MQTTD_BENCH_CONNS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	bin := filepath.Join(b.TempDir(), "mqttd")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		b.Fatalf("build: %v\n%s", err, out)
	}
	brokers := []struct {
		name string
		cmd  func(port int) *exec.Cmd
	}{
		{"mqttd", func(port int) *exec.Cmd { return exec.Command(bin, "-p", strconv.Itoa(port)) }},
	}
	if path, err := exec.LookPath("mosquitto"); err == nil {
		brokers = append(brokers, struct {
			name string
			cmd  func(port int) *exec.Cmd
		}{"mosquitto", func(port int) *exec.Cmd { return exec.Command(path, "-p", strconv.Itoa(port)) }})
	}
	for _, br := range brokers {
		b.Run(br.name, func(b *testing.B) {
			for range b.N {
				perConn := measureIdleConns(b, br.cmd, n)
				b.ReportMetric(perConn, "B/conn")
			}
		})
	}
}

func measureIdleConns(b *testing.B, start func(port int) *exec.Cmd, n int) float64 {
	b.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	cmd := start(port)
	cmd.Dir = b.TempDir() // mqttd's default store goes to ./data
	if err := cmd.Start(); err != nil {
		b.Fatalf("start broker: %v", err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("broker did not listen on %s", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := settledRSS(b, cmd.Process.Pid)

	conns := make([]net.Conn, n)
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	const workers = 32
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += workers {
				c, err := openSubscribed(addr, fmt.Sprintf("idle-%d", i), fmt.Sprintf("devices/%d/cmd", i))
				if err != nil {
					select {
					case errs <- err:
					default:
					}
					return
				}
				conns[i] = c
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case err := <-errs:
		b.Fatalf("opening connections: %v", err)
	default:
	}
	after := settledRSS(b, cmd.Process.Pid)
	per := float64(after-before) / float64(n)
	b.Logf("%d connections: RSS %d KiB -> %d KiB, %.0f bytes per connection", n, before>>10, after>>10, per)
	return per
}

// openSubscribed connects with keep-alive 0 and subscribes to one topic.
func openSubscribed(addr, id, filter string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	var buf []byte
	buf, _ = (&packet.Connect{ClientID: id, CleanStart: true}).Encode(buf, packet.V311)
	buf, _ = (&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: filter, QoS: 1}}}).Encode(buf, packet.V311)
	if _, err := c.Write(buf); err != nil {
		c.Close()
		return nil, err
	}
	r := bufio.NewReaderSize(c, 64)
	for _, want := range []packet.Type{packet.CONNACK, packet.SUBACK} {
		p, err := packet.Read(r, packet.V311, 0)
		if err != nil || p.Type() != want {
			c.Close()
			return nil, fmt.Errorf("%s: want %s, got %v (%v)", id, want, p, err)
		}
	}
	c.SetDeadline(time.Time{})
	return c, nil
}

// settledRSS polls the process's resident set size until two readings a
// quarter second apart agree within 0.5% (or five seconds pass).
func settledRSS(b *testing.B, pid int) int64 {
	b.Helper()
	prev := rss(b, pid)
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		time.Sleep(250 * time.Millisecond)
		cur := rss(b, pid)
		if d := cur - prev; d < prev/200 && -d < prev/200 {
			return cur
		}
		prev = cur
	}
	return prev
}

func rss(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatalf("read RSS: %v", err)
	}
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte("VmRSS:")); ok {
			f := strings.Fields(string(rest))
			kb, _ := strconv.ParseInt(f[0], 10, 64)
			return kb << 10
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
