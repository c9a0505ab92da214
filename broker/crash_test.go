package broker_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/pebble"
)

// TestMain lets the test binary run as a broker subprocess for the crash
// test (MQTTD_CRASH_BROKER=DIR): it serves on 127.0.0.1:0 with the pebble
// store in DIR and prints its address.
func TestMain(m *testing.M) {
	if dir := os.Getenv("MQTTD_CRASH_BROKER"); dir != "" {
		runCrashBroker(dir)
		return
	}
	os.Exit(m.Run())
}

func runCrashBroker(dir string) {
	st, err := pebble.Open(dir, pebble.Options{Sync: store.SyncAlways})
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	queued := -1 // unlimited; MQTTD_CRASH_DEFAULTS keeps the default queue settings
	if os.Getenv("MQTTD_CRASH_DEFAULTS") != "" {
		queued = 0
	}
	logger := slog.New(slog.DiscardHandler)
	if os.Getenv("MQTTD_TEST_LOG") != "" {
		logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	srv := broker.New(broker.Options{AllowAnonymous: true, Store: st, SysInterval: -1, MaxQueuedMessages: queued,
		Logger: logger})
	if err := srv.Restore(); err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("ERROR", err)
		os.Exit(1)
	}
	fmt.Println("ADDR", l.Addr().String())
	srv.Serve(l)
}

type crashBroker struct {
	cmd  *exec.Cmd
	addr string
}

func startCrashBroker(t *testing.T, dir string) *crashBroker {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MQTTD_CRASH_BROKER="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ADDR ") {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("crash broker: %q %v", line, err)
	}
	b := &crashBroker{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "ADDR "))}
	t.Cleanup(func() { b.kill() })
	return b
}

func (b *crashBroker) kill() {
	if b.cmd.ProcessState == nil {
		b.cmd.Process.Signal(syscall.SIGKILL)
		b.cmd.Wait()
	}
}

// TestCrashNoAcknowledgedLoss: publishers stream QoS 1 and QoS 2 messages
// into a persistent session while the broker is killed with SIGKILL at
// random moments. After each restart, every message whose PUBACK / PUBCOMP
// the publisher received must reach the subscriber.
func TestCrashNoAcknowledgedLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: not in -short")
	}
	dir := t.TempDir()
	rng := rand.New(rand.NewPCG(42, 7))
	acked := map[string]bool{}
	var mu sync.Mutex
	runs := 4 // MQTTD_CRASH_RUNS raises it outside CI
	if n, err := strconv.Atoi(os.Getenv("MQTTD_CRASH_RUNS")); err == nil && n > 0 {
		runs = n
	}
	total := 0
	for run := range runs {
		b := startCrashBroker(t, dir)
		if run == 0 {
			// The persistent subscriber's session and subscription.
			sub := brokertest.Dial(t, b.addr, packet.V311)
			sub.Connect(&packet.Connect{ClientID: "durable-sub", CleanStart: false})
			sub.Subscribe(1, 2, "crash/#")
			sub.Send(&packet.Disconnect{})
			sub.ExpectClosed()
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for p := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				streamUntilKilled(ctx, b.addr, fmt.Sprintf("r%dp%d", run, p), byte(1+p%2), func(id string) {
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				})
			}()
		}
		time.Sleep(time.Duration(100+rng.IntN(400)) * time.Millisecond) // the kill moment, not a wait for a condition
		b.kill()
		cancel()
		wg.Wait()
	}
	mu.Lock()
	total = len(acked)
	mu.Unlock()
	if total == 0 {
		t.Fatal("no message was acknowledged before the kills")
	}

	// Restart and drain the persistent session.
	b := startCrashBroker(t, dir)
	sub := brokertest.Dial(t, b.addr, packet.V311)
	sub.Connect(&packet.Connect{ClientID: "durable-sub", CleanStart: false})
	got := map[string]int{}
	for {
		p, err := sub.RecvTimeout(3 * time.Second)
		if err != nil {
			break // drained
		}
		switch p := p.(type) {
		case *packet.Publish:
			got[string(p.Payload)]++
			if p.QoS == 1 {
				sub.Send(&packet.Puback{PacketID: p.PacketID})
			} else {
				sub.Send(&packet.Pubrec{PacketID: p.PacketID})
			}
		case *packet.Pubrel:
			sub.Send(&packet.Pubcomp{PacketID: p.PacketID})
		}
	}
	lost := 0
	for id := range acked {
		if got[id] == 0 {
			lost++
		}
	}
	t.Logf("kill -9 runs: %d, messages acknowledged: %d, delivered after restart: %d, lost: %d", runs, total, len(got), lost)
	if lost > 0 {
		t.Fatalf("%d acknowledged messages lost", lost)
	}
}

// streamUntilKilled publishes numbered messages at qos over one connection,
// one at a time, calling acked for each completed acknowledgement, until the
// connection breaks or ctx ends.
func streamUntilKilled(ctx context.Context, addr, prefix string, qos byte, acked func(string)) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	defer nc.Close()
	r := bufio.NewReader(nc)
	if packet.Write(nc, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: prefix, CleanStart: true}, packet.V311) != nil {
		return
	}
	if p, err := packet.Read(r, packet.V311, 0); err != nil || p.Type() != packet.CONNACK {
		return
	}
	for i := 1; ctx.Err() == nil; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		pid := uint16(i%65535 + 1)
		if packet.Write(nc, &packet.Publish{Topic: "crash/" + prefix, QoS: qos, PacketID: pid, Payload: []byte(id)}, packet.V311) != nil {
			return
		}
		p, err := packet.Read(r, packet.V311, 0)
		if err != nil {
			return
		}
		if qos == 2 {
			if p.Type() != packet.PUBREC || packet.Write(nc, &packet.Pubrel{PacketID: pid}, packet.V311) != nil {
				return
			}
			if p, err = packet.Read(r, packet.V311, 0); err != nil || p.Type() != packet.PUBCOMP {
				return
			}
		} else if p.Type() != packet.PUBACK {
			return
		}
		acked(id)
	}
}

// TestCrashWillOwed: a client with a will is connected when the broker is
// killed; the will is stored with its session, so after the restart it is
// published [MQTT-3.1.2-8] and reaches a persistent subscriber.
func TestCrashWillOwed(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: not in -short")
	}
	dir := t.TempDir()
	b := startCrashBroker(t, dir)
	watcher := brokertest.Dial(t, b.addr, packet.V311)
	watcher.Connect(&packet.Connect{ClientID: "watcher", CleanStart: false})
	watcher.Subscribe(1, 1, "wills/#")
	watcher.Send(&packet.Disconnect{})
	watcher.ExpectClosed()
	dying := brokertest.Dial(t, b.addr, packet.V311)
	dying.Connect(&packet.Connect{ClientID: "dying", CleanStart: false,
		Will: &packet.Will{Topic: "wills/dying", Payload: []byte("lost"), QoS: 1}})
	b.kill()

	b = startCrashBroker(t, dir)
	watcher = brokertest.Dial(t, b.addr, packet.V311)
	watcher.Connect(&packet.Connect{ClientID: "watcher", CleanStart: false})
	if p := watcher.ExpectPublish(); p.Topic != "wills/dying" || string(p.Payload) != "lost" {
		t.Fatalf("got %v", p)
	}
}
