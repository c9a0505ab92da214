package main

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// TestSecurity_PreAuthHeaderRoundsRSS is the review's attack on a broker
// subprocess: rounds of sockets that each send the 5 bytes 10 FF FF FF 7F
// (a CONNECT declaring 256 MiB) and nothing more, then the same declaration
// in a PUBLISH after CONNACK with max_packet_size at the protocol maximum.
// The broker's RSS must stay near where it started. Before the fix, five
// rounds of four sockets took it from about 20 MB to 2 GB.
func TestSecurity_PreAuthHeaderRoundsRSS(t *testing.T) {
	if _, err := os.Stat("/proc/self/status"); err != nil {
		t.Skip("needs /proc")
	}
	dir := t.TempDir()
	port := freePort(t)
	conf := filepath.Join(dir, "mqttd.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\npersistence false\nmax_packet_size 268435460\n", port)), 0o600)
	cmd, _ := startConf(t, conf, port)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	pid := cmd.Process.Pid
	start := procRSS(t, pid)

	round := func(prefix []byte, connectFirst bool) {
		var conns []net.Conn
		for range 4 {
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, nc)
			if connectFirst {
				c := brokertest.NewConn(t, nc, packet.V311)
				c.Connect(&packet.Connect{CleanStart: true, ClientID: fmt.Sprintf("r%p", nc)})
			}
			nc.Write(prefix)
			if connectFirst {
				// The broker meets EOF in the middle of the body, after it
				// has taken whatever memory it takes for the packet.
				nc.(*net.TCPConn).CloseWrite()
			}
		}
		// Each socket is closed by the broker: refused at the CONNECT's
		// header, or cut by EOF mid-packet. Past that point the broker has
		// done all its allocating for it.
		for _, nc := range conns {
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 64)
			for {
				_, err := nc.Read(buf)
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("the broker kept a socket open 5s after it sent %x", prefix)
				}
				if err != nil {
					break
				}
			}
			nc.Close()
		}
	}
	for range 5 {
		round([]byte{0x10, 0xFF, 0xFF, 0xFF, 0x7F}, false)
	}
	pre := procRSS(t, pid)
	for range 5 {
		round([]byte{0x30, 0xFF, 0xFF, 0xFF, 0x7F, 0x00, 0x01, 't'}, true)
	}
	post := procRSS(t, pid)
	t.Logf("RSS: start %d KiB, after 5 rounds of pre-CONNACK headers %d KiB, after 5 rounds of post-CONNACK headers %d KiB",
		start>>10, pre>>10, post>>10)
	if grown := post - start; grown > 48<<20 {
		t.Fatalf("RSS grew by %d MiB under 40 declared-but-unsent 256 MiB packets", grown>>20)
	}
}

func procRSS(t *testing.T, pid int) int64 {
	t.Helper()
	return procStatusKB(t, pid, "VmRSS:")
}

// procAnonRSS is the anonymous part of a process's RSS: the memory it
// allocated, without the pages of its binary and the files it maps.
func procAnonRSS(t *testing.T, pid int) int64 {
	t.Helper()
	return procStatusKB(t, pid, "RssAnon:")
}

// procStatusKB reads one "Name: N kB" line of /proc/PID/status, in bytes.
func procStatusKB(t *testing.T, pid int, name string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("read %s: %v", name, err)
	}
	for line := range bytes.Lines(data) {
		if rest, ok := bytes.CutPrefix(line, []byte(name)); ok {
			kb, _ := strconv.ParseInt(strings.Fields(string(rest))[0], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no " + name)
	return 0
}
