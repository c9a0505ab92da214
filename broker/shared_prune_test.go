package broker

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// sharedEntries counts the shared subscription groups the server keeps.
func sharedEntries(srv *Server) int {
	n := 0
	srv.shared.Range(func(_, _ any) bool { n++; return true })
	return n
}

// sharedFilters returns n distinct shared subscription filters of one
// topic, "$share/g<i>/s/t".
func sharedFilters(n int) []string {
	fs := make([]string, n)
	for i := range fs {
		fs[i] = fmt.Sprintf("$share/g%d/s/t", i)
	}
	return fs
}

// 10,000 shared groups subscribed, each given a message (round-robin),
// then unsubscribed leave no entry behind; a group created again still
// delivers [MQTT-4.8.2-3] (MQTT 5.0 section 4.8.2).
func TestSharedGroups_PrunedOnUnsubscribe_MQTT_4_8_2_3(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	addr := wbServe(t, srv)
	fs := sharedFilters(10000)
	sub := wbDial(t, addr, packet.V5)
	// One PUBLISH reaches 10,000 groups: under the race detector, on a
	// machine busy with other packages' tests, the first delivery came
	// after more than the default 5 s.
	sub.wait = 30 * time.Second
	sub.connect("sub", true, 0)
	for i := 0; i < len(fs); i += 1000 {
		sub.subscribe(0, fs[i:i+1000]...)
	}
	pub := wbDial(t, addr, packet.V5)
	pub.connect("pub", true, 0)
	pub.send(&packet.Publish{Topic: "s/t", Payload: []byte("x")})
	for range len(fs) { // one per group
		if p := sub.expect(packet.PUBLISH).(*packet.Publish); p.Topic != "s/t" {
			t.Fatalf("topic %q", p.Topic)
		}
	}
	if n := sharedEntries(srv); n != len(fs) {
		t.Fatalf("%d group entries with %d groups", n, len(fs))
	}
	for i := 0; i < len(fs); i += 1000 {
		sub.unsubscribe(fs[i : i+1000]...)
	}
	if n := sharedEntries(srv); n != 0 {
		t.Fatalf("%d group entries left after every group was unsubscribed", n)
	}

	// Re-created, a group delivers again, by round-robin over its members.
	sub.subscribe(1, "$share/g7/s/t")
	sub2 := wbDial(t, addr, packet.V5)
	sub2.connect("sub2", true, 0)
	sub2.subscribe(1, "$share/g7/s/t")
	if n := sharedEntries(srv); n != 1 {
		t.Fatalf("%d group entries for one group", n)
	}
	for range 2 {
		pub.publish1("s/t", []byte("y"), nil)
	}
	for _, c := range []*wbClient{sub, sub2} {
		if got := c.drain(); len(got) != 1 {
			t.Fatalf("a member of the re-created group got %v, want one message each", got)
		}
	}
	sub2.unsubscribe("$share/g7/s/t")
	if n := sharedEntries(srv); n != 1 {
		t.Fatalf("%d group entries with one member left", n)
	}
}

// Groups whose members' sessions end (disconnect of a clean session,
// expiry of a persistent one) are freed as well.
func TestSharedGroups_PrunedOnSessionEnd_MQTT_4_8_2_3(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	addr := wbServe(t, srv)
	fs := sharedFilters(10000)
	a := wbDial(t, addr, packet.V5)
	a.connect("a", true, 0) // clean: ends with its connection
	b := wbDial(t, addr, packet.V5)
	b.connect("b", false, 1) // persistent, expires 1 s after it disconnects
	for i := 0; i < len(fs); i += 1000 {
		a.subscribe(0, fs[i:i+1000]...)
		b.subscribe(0, fs[i:i+500]...)
	}
	pub := wbDial(t, addr, packet.V5)
	pub.connect("pub", true, 0)
	pub.send(&packet.Publish{Topic: "s/t", Payload: []byte("x")}) // one per group
	wbEventually(t, 5*time.Second, func() bool { return sharedEntries(srv) == len(fs) }, "%d group entries with %d groups", sharedEntries(srv), len(fs))
	a.disconnect()
	wbEventually(t, 5*time.Second, func() bool { return sharedEntries(srv) == len(fs)/2 }, "a's groups to go (%d left)", sharedEntries(srv))
	b.disconnect()
	wbEventually(t, 10*time.Second, func() bool { return sharedEntries(srv) == 0 }, "b's groups to go with its session (%d left)", sharedEntries(srv))

	c := wbDial(t, addr, packet.V5)
	c.connect("c", true, 0)
	c.subscribe(1, fs[3])
	pub.publish1("s/t", []byte("z"), nil)
	if got := c.drain(); len(got) != 1 {
		t.Fatalf("re-created group delivered %v", got)
	}
}
