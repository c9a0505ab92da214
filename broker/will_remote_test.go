package broker_test

import (
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// willSeer records what Server.ConnectionWill says on each session event
// of a CONNECT.
type willSeer struct {
	srv  *broker.Server
	mu   sync.Mutex
	seen map[string]seenWill
}

type seenWill struct {
	will           *packet.Will
	persistent, ok bool
}

func (h *willSeer) Attach(s *broker.Server) error { h.srv = s; return nil }

func (h *willSeer) OnSession(c *broker.ClientInfo, e broker.SessionEvent) {
	if e == broker.SessionEnded {
		return
	}
	w, persistent, ok := h.srv.ConnectionWill(c)
	h.mu.Lock()
	h.seen[c.ClientID] = seenWill{w, persistent, ok}
	h.mu.Unlock()
}

func (h *willSeer) get(id string) (seenWill, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s, ok := h.seen[id]
	return s, ok
}

// TestConnectionWill: a SessionHook learns the will of the connection
// that created or resumed a session, and whether the session is
// persistent; a ClientInfo that is not a connection's own gets nothing.
func TestConnectionWill(t *testing.T) {
	h := &willSeer{seen: map[string]seenWill{}}
	s := brokertest.Start(t, func(o *broker.Options) { o.Hooks = []any{h} })

	brokertest.DialConnect(t, s.Addr, &packet.Connect{Version: packet.V5, ClientID: "clean", CleanStart: true,
		Will: &packet.Will{Topic: "w/clean", Payload: []byte("x"), QoS: 1}})
	brokertest.DialConnect(t, s.Addr, &packet.Connect{Version: packet.V5, ClientID: "kept", CleanStart: true,
		Will:  &packet.Will{Topic: "w/kept", Payload: []byte("y")},
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](60)}})
	brokertest.DialConnect(t, s.Addr, &packet.Connect{Version: packet.V311, ClientID: "none", CleanStart: true})

	for _, tc := range []struct {
		id         string
		topic      string
		persistent bool
	}{{"clean", "w/clean", false}, {"kept", "w/kept", true}, {"none", "", false}} {
		// The hook runs once the CONNACK is sent.
		brokertest.Eventually(t, 5*time.Second, func() bool { _, ok := h.get(tc.id); return ok }, "%s seen", tc.id)
		got, _ := h.get(tc.id)
		if !got.ok {
			t.Fatalf("%s: ConnectionWill not answered: %+v", tc.id, got)
		}
		if got.persistent != tc.persistent {
			t.Fatalf("%s: persistent %v, want %v", tc.id, got.persistent, tc.persistent)
		}
		switch {
		case tc.topic == "" && got.will != nil:
			t.Fatalf("%s: will %+v, want none", tc.id, got.will)
		case tc.topic != "" && (got.will == nil || got.will.Topic != tc.topic):
			t.Fatalf("%s: will %+v, want one to %s", tc.id, got.will, tc.topic)
		}
	}
	if _, _, ok := s.Server.ConnectionWill(&broker.ClientInfo{ClientID: "clean"}); ok {
		t.Fatal("ConnectionWill answered for a ClientInfo that is not the connection's")
	}
	if _, _, ok := s.Server.ConnectionWill(nil); ok {
		t.Fatal("ConnectionWill answered for nil")
	}
}

// TestPublishWill: a will owed by a client of another server is published
// with its QoS and retain flag [MQTT-3.1.2-8]; a will to a topic that is
// not a valid topic name is refused with an error.
func TestPublishWill(t *testing.T) {
	s := brokertest.Start(t)
	sub, _ := brokertest.DialConnect(t, s.Addr, &packet.Connect{Version: packet.V5, ClientID: "sub", CleanStart: true})
	sub.Subscribe(1, 1, "pw/#")
	info := &broker.ClientInfo{ClientID: "elsewhere", Listener: "other"}
	if err := s.Server.PublishWill(&packet.Will{Topic: "pw/gone", Payload: []byte("bye"), QoS: 1, Retain: true},
		info); err != nil {
		t.Fatal(err)
	}
	p := sub.ExpectPublish()
	if p.Topic != "pw/gone" || string(p.Payload) != "bye" || p.QoS != 1 {
		t.Fatalf("got %s", brokertest.Describe(p))
	}
	sub.Ack(p)
	late, _ := brokertest.DialConnect(t, s.Addr, &packet.Connect{Version: packet.V5, ClientID: "late", CleanStart: true})
	late.Subscribe(1, 0, "pw/gone")
	if r := late.ExpectPublish(); !r.Retain || string(r.Payload) != "bye" {
		t.Fatalf("retained will: %s", brokertest.Describe(r))
	}
	for _, bad := range []string{"pw/+", ""} {
		if err := s.Server.PublishWill(&packet.Will{Topic: bad, Payload: []byte("x")}, info); err == nil {
			t.Fatalf("will to %q published", bad)
		}
	}
	if err := s.Server.PublishWill(nil, info); err == nil {
		t.Fatal("nil will published")
	}
	sub.ExpectNothing(200 * time.Millisecond)
}
