package broker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// takeShared is a SharedRouteHook that records its calls and takes the
// messages while take is set.
type takeShared struct {
	mu    sync.Mutex
	take  bool
	calls []string // group "|" filter "|" topic
}

func (h *takeShared) RouteShared(m *broker.Message, group, filter string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.calls = append(h.calls, group+"|"+filter+"|"+m.Topic)
	return h.take
}

func (h *takeShared) set(take bool) []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.take = take
	c := h.calls
	h.calls = nil
	return c
}

// TestSharedRouteHook: with a SharedRouteHook the router offers each
// message once per matching (group, filter) and gives it to no local
// member when the hook takes it, to one (as without the hook) when it
// declines; ordinary subscribers are not affected. DeliverShared gives a
// message to one local member at the lower of published and granted QoS
// [MQTT-3.8.4-8] [MQTT-4.8.2-3], and reports false without a member.
func TestSharedRouteHook(t *testing.T) {
	h := &takeShared{take: true}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = append(o.Hooks, h) })
	conn := func(id string) *brokertest.Conn {
		c, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: id, CleanStart: true})
		return c
	}
	m1, m2, ord := conn("m1"), conn("m2"), conn("ord")
	m1.Subscribe(1, 0, "$share/g/h/#")
	m2.Subscribe(1, 0, "$share/g/h/#", "$share/k/h/+")
	ord.Subscribe(1, 1, "h/#")
	pub := conn("pub")

	if rc := pub.Publish(&packet.Publish{Topic: "h/1", QoS: 1, PacketID: 1, Payload: []byte("a")}); rc != packet.Success {
		t.Fatalf("publish: %v", rc)
	}
	if got := ord.ExpectPublish(); string(got.Payload) != "a" {
		t.Fatalf("ordinary subscriber got %s", brokertest.Describe(got))
	} else {
		ord.Ack(got)
	}
	calls := h.set(false)
	if len(calls) != 2 || !(calls[0] == "g|h/#|h/1" && calls[1] == "k|h/+|h/1" ||
		calls[1] == "g|h/#|h/1" && calls[0] == "k|h/+|h/1") {
		t.Fatalf("hook calls %q, want one per group", calls)
	}
	m1.ExpectNothing(100 * time.Millisecond) // taken by the hook
	m2.ExpectNothing(10 * time.Millisecond)

	// Declined: the router picks a member of each group itself.
	pub.Publish(&packet.Publish{Topic: "h/2", Payload: []byte("b")})
	got := 0
	for _, c := range []*brokertest.Conn{m1, m2} {
		for {
			p, err := c.RecvTimeout(200 * time.Millisecond)
			if err != nil {
				break
			}
			if pp, ok := p.(*packet.Publish); !ok || string(pp.Payload) != "b" {
				t.Fatalf("member got %s", brokertest.Describe(p))
			}
			got++
		}
	}
	if got != 2 {
		t.Fatalf("declined by the hook: %d deliveries to the members, want 2 (one per group)", got)
	}

	// DeliverShared: QoS 1 published, granted 0 → QoS 0, to the only
	// member of k; and false for a group or filter with no member here.
	msg := &broker.Message{Topic: "h/3", QoS: 1, Payload: []byte("c")}
	if ok, err := srv.DeliverShared(msg, "k", "h/+"); !ok || err != nil {
		t.Fatalf("DeliverShared to group k: %v, %v", ok, err)
	}
	if p := m2.ExpectPublish(); p.QoS != 0 || p.Retain || string(p.Payload) != "c" {
		t.Fatalf("DeliverShared delivered %s, want QoS 0", brokertest.Describe(p))
	}
	if ok, _ := srv.DeliverShared(&broker.Message{Topic: "h/3"}, "none", "h/+"); ok {
		t.Fatal("DeliverShared to a group with no member: true")
	}
	if ok, _ := srv.DeliverShared(&broker.Message{Topic: "x/3"}, "k", "h/+"); ok {
		t.Fatal("DeliverShared with no matching member: true")
	}
	if c := h.set(false); len(c) != 2 {
		t.Fatalf("hook calls %q: DeliverShared must not offer messages to it", c)
	}
}

// offerShared is a SharedRouteHook and SharedOfferHook that declines
// routing and records the offers.
type offerShared struct {
	mu     sync.Mutex
	offers []string // group "|" filter "|" payload
}

func (h *offerShared) RouteShared(*broker.Message, string, string) bool { return false }

func (h *offerShared) OfferShared(m *broker.Message, group, filter string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.offers = append(h.offers, group+"|"+filter+"|"+string(m.Payload))
	return true
}

// TestSharedOfferHook: the QoS 1 messages the last member of a group here
// had not acknowledged when its session ended are offered to the
// SharedOfferHook (members elsewhere), each once.
func TestSharedOfferHook(t *testing.T) {
	h := &offerShared{}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = append(o.Hooks, h) })
	m, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "m", CleanStart: true})
	m.Subscribe(1, 1, "$share/g/o/#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "p", CleanStart: true})
	for i, p := range []string{"a", "b"} {
		pub.Publish(&packet.Publish{Topic: "o/1", QoS: 1, PacketID: uint16(i + 1), Payload: []byte(p)})
	}
	m.RecvPublishes(2) // not acknowledged
	m.Send(&packet.Disconnect{})
	brokertest.Eventually(t, 5*time.Second, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.offers) >= 2
	}, "offers of the unacknowledged messages")
	h.mu.Lock()
	got := append([]string(nil), h.offers...)
	h.mu.Unlock()
	if len(got) != 2 || got[0] != "g|o/#|a" || got[1] != "g|o/#|b" {
		t.Fatalf("offers %q, want g|o/#|a and g|o/#|b", got)
	}
}
