//go:build linux && !386

package broker

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/mem"
)

// TestSpinner_Measure: the dispatcher spins only while the process's CPU
// time, less what spinning wasted, was at least hotLoad of a core over the
// last sample; the first sample after a long park starts cold.
func TestSpinner_Measure(t *testing.T) {
	var cpu time.Duration
	s := &spinner{max: time.Millisecond, hotLoad: 0.3, cpu: func() time.Duration { return cpu }}
	at := time.Unix(1000, 0)
	step := func(d, used, waste time.Duration, want bool, what string) {
		t.Helper()
		at = at.Add(d)
		cpu += used
		s.waste += waste
		s.measure(at)
		if s.hot != want {
			t.Errorf("%s: hot = %v, want %v", what, s.hot, want)
		}
	}
	step(0, 0, 0, false, "first sample")
	step(spinSample, 2*time.Millisecond, 0, true, "40% of a core")
	step(spinSample, time.Millisecond, 0, false, "20% of a core")
	step(spinSample, 4*time.Millisecond, 0, true, "80% of a core")
	step(spinSample, 4*time.Millisecond, 3*time.Millisecond, false, "80%, three quarters of it spinning")
	step(spinSample, 4*time.Millisecond, 0, true, "busy again")
	step(spinSample/2, 0, 0, true, "within a sample: unchanged")
	step(time.Second, 3*time.Millisecond, 0, false, "after a long park")

	var syncs uint64
	s.syncs = func() uint64 { return syncs }
	step(spinSample, 4*time.Millisecond, 0, true, "busy, the store not syncing")
	syncs++
	step(spinSample, 4*time.Millisecond, 0, false, "busy, the store synced a write")
	step(spinSample, 4*time.Millisecond, 0, true, "busy, no sync since")

	// Spins that mostly give up: the spinner rests spinCool samples, then
	// tries again. Too few spins to judge, or enough hits, change nothing.
	judge := func(tried, found int, want bool, what string) {
		t.Helper()
		s.tried, s.found = tried, found
		step(spinSample, 4*time.Millisecond, 0, want, what)
	}
	judge(spinJudged-1, 0, true, "too few spins to judge")
	judge(100, 80, true, "80 spins in 100 found an event")
	judge(100, 79, false, "79 in 100 found one")
	for i := range spinCool {
		judge(0, 0, false, fmt.Sprintf("resting, sample %d", i+1))
	}
	judge(0, 0, true, "rested: spins again")
	judge(spinJudged, 0, false, "none of its spins found an event")

	off := &spinner{max: 0, hotLoad: -1, cpu: func() time.Duration { return 0 }}
	if n, err := off.wait(-1, nil); n != 0 || err != nil || off.spins.Load() != 0 {
		t.Errorf("max 0: wait = %d, %v, %d spins; want no spin", n, err, off.spins.Load())
	}
}

// startSpinning is startPolled with the dispatcher's spin set: spin as
// Options.PollSpin, and hot whatever the load when always.
func startSpinning(t *testing.T, spin time.Duration, always bool) (*Server, string) {
	t.Helper()
	o := Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler), PollSpin: spin}
	if always {
		o.pollSpinLoad = -1
	}
	return startPolledWith(t, o)
}

// pingUntil connects to addr and exchanges PINGREQ/PINGRESP [MQTT-3.12.4-1]
// until done reports true or the deadline passes.
func pingUntil(t *testing.T, addr string, done func() bool) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	nc.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(nc)
	if err := packet.Write(nc, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, ClientID: "spin", CleanStart: true, KeepAlive: 60}, packet.V311); err != nil {
		t.Fatal(err)
	}
	if p, err := packet.Read(r, packet.V311, 0); err != nil || p.Type() != packet.CONNACK {
		t.Fatalf("CONNACK: %v %v", p, err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for !done() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 20s")
		}
		if err := packet.Write(nc, &packet.Pingreq{}, packet.V311); err != nil {
			t.Fatal(err)
		}
		if p, err := packet.Read(r, packet.V311, 0); err != nil || p.Type() != packet.PINGRESP {
			t.Fatalf("want PINGRESP, got %v %v", p, err)
		}
	}
}

// TestPoller_SpinsWhileHot_MQTT_3_12_4_1: a hot dispatcher polls for the
// next event instead of parking, finds the next PINGREQ while polling,
// answers every one, and gives up once nothing comes for its spin time.
func TestPoller_SpinsWhileHot_MQTT_3_12_4_1(t *testing.T) {
	srv, addr := startSpinning(t, 20*time.Millisecond, true)
	sp := srv.poller.spin
	pingUntil(t, addr, func() bool { return sp.hits.Load() >= 20 })
	deadline := time.Now().Add(20 * time.Second)
	for sp.spins.Load() <= sp.hits.Load() { // the last spin, with no more pings, gives up
		if time.Now().After(deadline) {
			t.Fatalf("no spin gave up: %d spins, %d found an event", sp.spins.Load(), sp.hits.Load())
		}
		time.Sleep(time.Millisecond)
	}
	if st := srv.Stats(); st.PollSpinHits < 20 || st.PollSpins <= st.PollSpinHits {
		t.Errorf("Stats: %d spins, %d hits; want at least 20 hits and a spin that gave up", st.PollSpins, st.PollSpinHits)
	}
}

// TestPoller_NoSpinWhenOff: with PollSpin negative (poll_spin 0) the
// dispatcher parks at once, however busy.
func TestPoller_NoSpinWhenOff(t *testing.T) {
	srv, addr := startSpinning(t, -1, true)
	n := 0
	pingUntil(t, addr, func() bool { n++; return n > 200 })
	if s := srv.poller.spin.spins.Load(); s != 0 {
		t.Errorf("%d spins with PollSpin < 0, want 0", s)
	}
}

// syncCountingStore is a store that counts synced writes (store.SyncCounter).
type syncCountingStore struct {
	store.Store
	n atomic.Uint64
}

func (c *syncCountingStore) SyncedWrites() uint64 { return c.n.Load() }

// TestPoller_SpinWatchesStoreSyncs: a server whose store counts its synced
// writes gives the count to the poller's spinner, which stays cold while it
// moves (TestSpinner_Measure).
func TestPoller_SpinWatchesStoreSyncs(t *testing.T) {
	st := &syncCountingStore{Store: mem.New()}
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler), Store: st})
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	if srv.poller == nil {
		t.Skip("no poller")
	}
	if srv.poller.spin.syncs == nil {
		t.Fatal("the spinner does not watch the store's syncs")
	}
	st.n.Store(41)
	if got := srv.poller.spin.syncs(); got != 41 {
		t.Errorf("spinner sees %d synced writes, the store %d", got, 41)
	}
}
