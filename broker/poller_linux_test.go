//go:build linux && !386

package broker

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// startPolled starts a server with its poller on 127.0.0.1, port 0, and
// returns its address; it skips when the poller is not available.
func startPolled(t *testing.T) (*Server, string) {
	t.Helper()
	return startPolledWith(t, Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
}

// startPolledWith is startPolled with the server's options o.
func startPolledWith(t *testing.T, o Options) (*Server, string) {
	t.Helper()
	srv := New(o)
	if srv.poller == nil {
		t.Skip("no poller")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})
	return srv, l.Addr().String()
}

// TestPoller_MoreReadyThanOneHarvest: more connections become readable at
// once than one epoll_wait returns (256): the dispatcher, parked in the
// runtime's poller, must harvest them all, round after round, without
// losing a readiness (a lost one leaves its client without an answer for
// good). Each client sends PINGREQ, all at once, and must get PINGRESP
// [MQTT-3.12.4-1].
func TestPoller_MoreReadyThanOneHarvest_MQTT_3_12_4_1(t *testing.T) {
	_, addr := startPolled(t)
	const clients, rounds = 600, 5
	conns := make([]net.Conn, clients)
	readers := make([]*bufio.Reader, clients)
	for i := range conns {
		nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { nc.Close() })
		nc.SetDeadline(time.Now().Add(60 * time.Second))
		conns[i], readers[i] = nc, bufio.NewReader(nc)
		if err := packet.Write(nc, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311,
			ClientID: fmt.Sprintf("harvest-%d", i), CleanStart: true, KeepAlive: 60}, packet.V311); err != nil {
			t.Fatal(err)
		}
	}
	for i, r := range readers {
		if p, err := packet.Read(r, packet.V311, 0); err != nil || p.Type() != packet.CONNACK {
			t.Fatalf("client %d: CONNACK: %v %v", i, p, err)
		}
	}
	var ping bytes.Buffer
	if err := packet.Write(&ping, &packet.Pingreq{}, packet.V311); err != nil {
		t.Fatal(err)
	}
	for round := range rounds {
		for i, nc := range conns {
			if _, err := nc.Write(ping.Bytes()); err != nil {
				t.Fatalf("round %d, client %d: %v", round, i, err)
			}
		}
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for i, r := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				conns[i].SetReadDeadline(time.Now().Add(20 * time.Second))
				if p, err := packet.Read(r, packet.V311, 0); err != nil || p.Type() != packet.PINGRESP {
					errs <- fmt.Errorf("round %d, client %d: want PINGRESP, got %v %v", round, i, p, err)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if t.Failed() {
			return
		}
	}
}

// TestPoller_DispatcherParksInRuntimePoller: while nothing is ready, the
// dispatcher waits in Go's network poller ("IO wait"), not in a blocking
// epoll_wait that holds an OS thread ("syscall"), whose return must win a
// P back before any burst can start.
func TestPoller_DispatcherParksInRuntimePoller(t *testing.T) {
	startPolled(t)
	deadline := time.Now().Add(10 * time.Second)
	var state string
	for {
		state = pollerRunState()
		if state == "IO wait" || time.Now().After(deadline) {
			break
		}
		runtime.Gosched() // the dispatcher is starting, or has just dispatched
	}
	if state != "IO wait" {
		t.Fatalf("poller.run is in state %q, want \"IO wait\"", state)
	}
}

// pollerRunState returns the scheduling state of a goroutine running
// poller.run ("IO wait", "syscall", "runnable"), or "" when none is found.
func pollerRunState() string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		if !bytes.Contains(g, []byte("broker.(*poller).run(")) {
			continue
		}
		// "goroutine 7 [IO wait]:" or "goroutine 7 [IO wait, 2 minutes]:"
		head, _, _ := bytes.Cut(g, []byte("\n"))
		_, s, ok := bytes.Cut(head, []byte("["))
		if !ok {
			continue
		}
		s, _, _ = bytes.Cut(s, []byte("]"))
		s, _, _ = bytes.Cut(s, []byte(","))
		return string(s)
	}
	return ""
}

// TestPoller_StopReleasesEpoll: stop ends the dispatcher through the
// eventfd, closes the epoll descriptor through its *os.File (so that the
// runtime's poller forgets it before its number can be reused), and a
// poller that stopped refuses new connections; a second stop does nothing.
func TestPoller_StopReleasesEpoll(t *testing.T) {
	p := newPoller(0, 0, nil)
	if p == nil {
		t.Skip("no poller")
	}
	p.stop()
	select {
	case <-p.done:
	default:
		t.Fatal("stop returned before the dispatcher ended")
	}
	rc, err := p.epfile.SyscallConn()
	if err == nil {
		err = rc.Control(func(uintptr) {})
	}
	if err == nil {
		t.Fatal("the epoll file is still open after stop")
	}
	p.stop() // a second Shutdown

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	nc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if p.add(&conn{nc: nc}) {
		t.Fatal("a stopped poller accepted a connection")
	}
}
