package broker_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

// authnHook answers Authenticate from a table of user names; users not in
// it are deferred to the next hook.
type authnHook struct {
	mu    sync.Mutex
	users map[string]error
	asked []string
}

func (h *authnHook) Authenticate(c *broker.ClientInfo) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.asked = append(h.asked, c.Username)
	if err, ok := h.users[c.Username]; ok {
		return err
	}
	return broker.ErrDefer
}

func (h *authnHook) askedFor() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.asked)
}

func connectAs(t *testing.T, addr string, v packet.Version, id, user string) (*brokertest.Conn, *packet.Connack) {
	t.Helper()
	c := brokertest.Dial(t, addr, v)
	name := "MQTT"
	if v == packet.V31 {
		name = "MQIsdp"
	}
	cp := &packet.Connect{ProtocolName: name, Version: v, ClientID: id, CleanStart: true, KeepAlive: 30,
		Username: user, HasUsername: user != ""}
	if user != "" {
		cp.Password, cp.HasPassword = []byte("pw"), true
	}
	c.Send(cp)
	ack, ok := c.Recv().(*packet.Connack)
	if !ok {
		t.Fatalf("expected CONNACK")
	}
	return c, ack
}

func TestHooks_AuthenticatorChain(t *testing.T) {
	first := &authnHook{users: map[string]error{
		"alice": nil,
		"bob":   fmt.Errorf("%w: bob is banned", packet.Banned),
	}}
	second := &authnHook{users: map[string]error{
		"carol": nil,
		"bob":   nil, // never asked: the first hook decided
	}}
	var legacyAsked []string
	var mu sync.Mutex
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Hooks = []any{first, second}
		o.AuthFailureDelay = -1
		o.Authenticate = func(c *broker.ClientInfo) error { // the files come last
			mu.Lock()
			legacyAsked = append(legacyAsked, c.Username)
			mu.Unlock()
			if c.Username == "dave" {
				return nil
			}
			return broker.ErrDefer
		}
	})
	forVersions(t, bothVersions, func(t *testing.T, v packet.Version) {
		for _, tc := range []struct {
			user string
			v5   packet.ReasonCode
			v3   packet.ReasonCode
		}{
			{"alice", packet.Success, packet.Success},
			{"bob", packet.Banned, packet.NotAuthorized},        // a hook's reason code; 3.x: 5, not authorised
			{"carol", packet.Success, packet.Success},           // first defers, second accepts
			{"dave", packet.Success, packet.Success},            // both defer, Options.Authenticate accepts
			{"eve", packet.NotAuthorized, packet.NotAuthorized}, // everyone defers, anonymous not allowed
			{"", packet.NotAuthorized, packet.NotAuthorized},    // anonymous
		} {
			c, ack := connectAs(t, srv.Addr, v, "id-"+tc.user, tc.user)
			want := tc.v5
			if v != packet.V5 {
				want = tc.v3
			}
			if ack.ReasonCode != want {
				t.Errorf("%q: CONNACK %#x, want %#x", tc.user, byte(ack.ReasonCode), byte(want))
			}
			c.NC.Close()
		}
	})
	if slices.Contains(second.askedFor(), "alice") || slices.Contains(second.askedFor(), "bob") {
		t.Errorf("the second hook was asked after the first decided: %v", second.askedFor())
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(legacyAsked, "carol") || !slices.Contains(legacyAsked, "dave") {
		t.Errorf("Options.Authenticate asked for %v: want dave, not carol", legacyAsked)
	}
}

// aclHook refuses listed (access, topic) pairs and defers the rest.
type aclHook struct {
	deny map[string]bool // "publish:a/b"
}

func (h *aclHook) Authorize(c *broker.ClientInfo, a broker.Access, topic string) error {
	if h.deny[a.String()+":"+topic] {
		return errors.New("denied by the test")
	}
	return broker.ErrDefer
}

func TestHooks_AuthorizerDecidesEachAccess(t *testing.T) {
	h := &aclHook{deny: map[string]bool{
		"publish:no/pub":     true,
		"subscribe:no/sub/#": true,
		"receive:no/read":    true,
		"unsubscribe:keep/#": true,
	}}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = []any{h} })
	sub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "sub", CleanStart: true})
	ack := sub.Subscribe(1, 1, "no/#", "no/sub/#", "keep/#")
	if want := []packet.ReasonCode{1, packet.NotAuthorized, 1}; !slices.Equal(ack.ReasonCodes, want) {
		t.Fatalf("SUBACK %v, want %v", ack.ReasonCodes, want)
	}
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "no/pub", QoS: 1, PacketID: 1, Payload: []byte("x")}); rc != packet.NotAuthorized {
		t.Errorf("PUBACK %v for a refused publish, want 0x87", rc)
	}
	pub.Publish(&packet.Publish{Topic: "no/read", QoS: 1, PacketID: 2, Payload: []byte("hidden")})
	pub.Publish(&packet.Publish{Topic: "no/ok", QoS: 1, PacketID: 3, Payload: []byte("seen")})
	got := sub.ExpectPublish()
	if got.Topic != "no/ok" {
		t.Fatalf("subscriber got %q first: a refused receive was delivered", got.Topic)
	}
	sub.Ack(got)
	sub.Send(&packet.Unsubscribe{PacketID: 5, Filters: []string{"keep/#", "no/#"}})
	ua, ok := sub.Recv().(*packet.Unsuback)
	if !ok || !slices.Equal(ua.ReasonCodes, []packet.ReasonCode{packet.NotAuthorized, packet.Success}) {
		t.Fatalf("UNSUBACK %v, want [0x87 0]", ua)
	}
	// The refused unsubscribe left keep/# in place.
	pub.Publish(&packet.Publish{Topic: "keep/x", QoS: 0, Payload: []byte("k")})
	if got := sub.ExpectPublish(); got.Topic != "keep/x" {
		t.Fatalf("got %q, want keep/x", got.Topic)
	}
}

// rewriteHook changes, refuses or consumes PUBLISH packets by topic.
type rewriteHook struct{ consumed chan string }

func (h *rewriteHook) OnPublish(c *broker.ClientInfo, p *packet.Publish) error {
	switch {
	case p.Topic == "rewrite/me":
		p.Payload = []byte(strings.ToUpper(string(p.Payload)) + " from " + c.ClientID)
		p.Topic = "rewritten"
	case p.Topic == "quota":
		return fmt.Errorf("%w: over quota", packet.QuotaExceeded)
	case p.Topic == "control":
		h.consumed <- string(p.Payload)
		return broker.ErrHandled
	case p.Topic == "bad/topic":
		p.Topic = "a/+"
	}
	return nil
}

func TestHooks_PublishHookChangesRefusesConsumes(t *testing.T) {
	h := &rewriteHook{consumed: make(chan string, 1)}
	srv := brokertest.Start(t, func(o *broker.Options) { o.Hooks = []any{h} })
	sub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "sub", CleanStart: true})
	sub.Subscribe(1, 1, "#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "rewrite/me", QoS: 1, PacketID: 1, Payload: []byte("hi")}); rc != packet.Success {
		t.Fatalf("PUBACK %v", rc)
	}
	got := sub.ExpectPublish()
	if got.Topic != "rewritten" || string(got.Payload) != "HI from pub" {
		t.Fatalf("got %q %q, want the hook's rewrite", got.Topic, got.Payload)
	}
	sub.Ack(got)
	if rc := pub.Publish(&packet.Publish{Topic: "quota", QoS: 1, PacketID: 2, Payload: []byte("x")}); rc != packet.QuotaExceeded {
		t.Errorf("PUBACK %v, want the hook's 0x97", rc)
	}
	if rc := pub.Publish(&packet.Publish{Topic: "bad/topic", QoS: 2, PacketID: 3, Payload: []byte("x")}); rc != packet.ImplementationSpecificError {
		t.Errorf("PUBREC %v for a hook that set a wildcard topic, want 0x83", rc)
	}
	// Consumed: acknowledged as success (not 0x10: the hook took it), never routed.
	if rc := pub.Publish(&packet.Publish{Topic: "control", QoS: 1, PacketID: 4, Payload: []byte("cmd")}); rc != packet.Success {
		t.Errorf("PUBACK %v for a consumed message, want 0", rc)
	}
	select {
	case s := <-h.consumed:
		if s != "cmd" {
			t.Errorf("hook saw %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the hook never saw the message")
	}
	pub.Publish(&packet.Publish{Topic: "after", QoS: 1, PacketID: 5, Payload: []byte("z")})
	if got := sub.ExpectPublish(); got.Topic != "after" {
		t.Fatalf("subscriber got %q: a refused or consumed message was routed", got.Topic)
	}
}

// recorder keeps every event the observing hooks are told.
type recorder struct {
	mu  sync.Mutex
	evs []string
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.evs = append(r.evs, s)
	r.mu.Unlock()
}

func (r *recorder) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Contains(r.evs, s)
}

func (r *recorder) OnSession(c *broker.ClientInfo, e broker.SessionEvent) {
	r.add("session " + c.ClientID + " " + e.String())
}

func (r *recorder) OnSubscription(c *broker.ClientInfo, e broker.SubscriptionEvent) {
	if e.Removed {
		r.add("unsubscribe " + c.ClientID + " " + e.Filter)
		return
	}
	r.add(fmt.Sprintf("subscribe %s %s %d", c.ClientID, e.Filter, e.QoS))
}

func (r *recorder) OnDelivery(id string, m *broker.Message, why broker.DropReason) {
	r.add("delivery " + id + " " + m.Topic + " " + why.String())
}

func (r *recorder) OnDisconnect(c *broker.ClientInfo, cause broker.Cause, err error) {
	r.add("disconnect " + c.ClientID + " " + cause.String())
}

func TestHooks_ObserversAreTold(t *testing.T) {
	r := &recorder{}
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.Hooks = []any{r}
		o.MaxQueuedMessages = 1
	})
	sub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "s", CleanStart: false,
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](60)}})
	sub.Subscribe(1, 1, "t/#")
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "p", CleanStart: true})
	pub.Publish(&packet.Publish{Topic: "t/1", QoS: 1, PacketID: 1, Payload: []byte("a")})
	sub.Ack(sub.ExpectPublish())
	sub.Send(&packet.Unsubscribe{PacketID: 2, Filters: []string{"t/#"}})
	sub.Recv()
	sub.Subscribe(3, 1, "t/#")
	sub.Send(&packet.Disconnect{})
	sub.ExpectClosed()
	// Offline with a queue of one: the second message is dropped.
	pub.Publish(&packet.Publish{Topic: "t/2", QoS: 1, PacketID: 2, Payload: []byte("b")})
	pub.Publish(&packet.Publish{Topic: "t/3", QoS: 1, PacketID: 3, Payload: []byte("c")})
	sub2, ack := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "s", CleanStart: false,
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](60)}})
	if !ack.SessionPresent {
		t.Fatal("session not present")
	}
	sub2.Ack(sub2.ExpectPublish())
	if !srv.Disconnect("s", 0) {
		t.Fatal("Disconnect: s not connected")
	}
	want := []string{
		"session s created", "subscribe s t/# 1", "delivery s t/1 delivered", "unsubscribe s t/#",
		"disconnect s client_disconnect", "delivery s t/3 queue_full", "session s resumed",
		"delivery s t/2 delivered", "disconnect s administrative", "session p created",
	}
	brokertest.Eventually(t, 5*time.Second, func() bool {
		for _, w := range want {
			if !r.has(w) {
				return false
			}
		}
		return true
	}, "events missing")
	pub.Send(&packet.Disconnect{})
	pub.ExpectClosed()
	brokertest.Eventually(t, 5*time.Second, func() bool { return r.has("session p ended") }, "clean session end not reported")
}

func TestHooks_AddHookRefusesValueWithoutHook(t *testing.T) {
	srv := broker.New(broker.Options{SysInterval: -1, Hooks: []any{struct{}{}}})
	if err := srv.Serve(nil); err == nil || !strings.Contains(err.Error(), "no hook interface") {
		t.Fatalf("Serve = %v, want the hook error", err)
	}
}

// failingAttach is a hook whose Attach fails: the server must not serve
// without it (an access-control hook that is missing would let everyone in).
type failingAttach struct{}

func (failingAttach) Attach(*broker.Server) error { return errors.New("backend unreachable") }
func (failingAttach) Authenticate(*broker.ClientInfo) error {
	return nil
}

func TestHooks_FailedAttachStopsServe(t *testing.T) {
	srv := broker.New(broker.Options{SysInterval: -1, Hooks: []any{failingAttach{}}})
	if err := srv.Serve(nil); err == nil || !strings.Contains(err.Error(), "backend unreachable") {
		t.Fatalf("Serve = %v, want the Attach error", err)
	}
	if _, err := srv.DialLocal(); err == nil {
		t.Fatal("DialLocal works on a server whose hook failed")
	}
}
