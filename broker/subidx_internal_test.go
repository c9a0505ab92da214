package broker

import (
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"github.com/mqttd/mqttd/packet"
)

// TestManySubscriptionsOneSession: a session with more than subIndexFrom
// subscriptions finds them through its index, which follows every
// SUBSCRIBE, replacement [MQTT-3.8.4-3] and UNSUBSCRIBE [MQTT-3.10.4-1]
// over the socket: each is delivered at the QoS last granted, a removed
// one no longer, and UNSUBACK says 0x11 for a filter already removed
// [MQTT-3.11.3-1].
func TestManySubscriptionsOneSession(t *testing.T) {
	srv := New(Options{AllowAnonymous: true, SysInterval: -1, Logger: slog.New(slog.DiscardHandler)})
	addr := wbServe(t, srv)
	sub := wbDial(t, addr, packet.V5)
	sub.connect("many", true, 0)
	const n = 3 * subIndexFrom
	for i := range n {
		sub.subscribe(1, fmt.Sprintf("m/%d", i))
	}
	check := func(what string) {
		t.Helper()
		srv.sessMu.Lock()
		s := srv.sessions["many"]
		srv.sessMu.Unlock()
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.subIdx == nil || len(s.subIdx) != len(s.subs) {
			t.Fatalf("%s: index of %d for %d subscriptions", what, len(s.subIdx), len(s.subs))
		}
		for i, e := range s.subs {
			if j, ok := s.subIdx[subKey{e.group, e.filter}]; !ok || j != i {
				t.Fatalf("%s: %s at %d, index says %d (%v)", what, e.filter, i, j, ok)
			}
		}
	}
	check("subscribed")

	// Every odd one goes; the even ones stay in their order.
	var odd []string
	for i := 1; i < n; i += 2 {
		odd = append(odd, fmt.Sprintf("m/%d", i))
	}
	sub.send(&packet.Unsubscribe{PacketID: 2, Filters: odd})
	if ack := sub.expect(packet.UNSUBACK).(*packet.Unsuback); slices.ContainsFunc(ack.ReasonCodes, func(rc packet.ReasonCode) bool { return rc != packet.Success }) {
		t.Fatalf("UNSUBACK %v", ack.ReasonCodes)
	}
	check("unsubscribed")
	sub.send(&packet.Unsubscribe{PacketID: 3, Filters: []string{"m/1"}})
	if ack := sub.expect(packet.UNSUBACK).(*packet.Unsuback); ack.ReasonCodes[0] != packet.NoSubscriptionExisted {
		t.Fatalf("UNSUBACK for a removed filter: %v", ack.ReasonCodes)
	}
	// A replacement (m/2 at QoS 0) and one added again (m/3 at QoS 2).
	sub.subscribe(0, "m/2")
	sub.subscribe(2, "m/3")
	check("replaced")

	pub := wbDial(t, addr, packet.V5)
	pub.connect("many-pub", true, 0)
	for i := range n {
		pub.send(&packet.Publish{Topic: fmt.Sprintf("m/%d", i), QoS: 2, PacketID: uint16(i + 1), Payload: []byte("x")})
		pub.expect(packet.PUBREC)
		pub.send(&packet.Pubrel{PacketID: uint16(i + 1)})
		pub.expect(packet.PUBCOMP)
	}
	got := map[string]byte{}
	released := false // the QoS 2 delivery's PUBREL
	for len(got) < n/2+1 || !released {
		switch p := sub.recv().(type) {
		case *packet.Publish:
			got[p.Topic] = p.QoS
			switch p.QoS {
			case 1:
				sub.send(&packet.Puback{PacketID: p.PacketID})
			case 2:
				sub.send(&packet.Pubrec{PacketID: p.PacketID})
			}
		case *packet.Pubrel:
			sub.send(&packet.Pubcomp{PacketID: p.PacketID})
			released = true
		default:
			t.Fatalf("got %s", p.Type())
		}
	}
	sub.ping() // nothing else came before the PINGRESP
	for i := range n {
		topic := fmt.Sprintf("m/%d", i)
		want, ok := byte(1), i%2 == 0
		switch i {
		case 2:
			want = 0
		case 3:
			want, ok = 2, true
		}
		if q, had := got[topic]; had != ok || had && q != want {
			t.Fatalf("%s: delivered %v at QoS %d, want %v at QoS %d", topic, had, q, ok, want)
		}
	}
}
