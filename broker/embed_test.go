package broker_test

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

func TestEmbed_PublishReachesSocketSubscribers(t *testing.T) {
	st := mem.New()
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
	sub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "sub", CleanStart: true})
	sub.Subscribe(1, 2, "app/#")
	if err := srv.Publish(&broker.Message{Topic: "app/state", Payload: []byte("on"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	got := sub.ExpectPublish()
	if got.Topic != "app/state" || string(got.Payload) != "on" || got.QoS != 1 {
		t.Fatalf("got %s", brokertest.Describe(got))
	}
	sub.Ack(got)
	// Retained, and in the store when Publish returned.
	late, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "late", CleanStart: true})
	late.Subscribe(1, 0, "app/state")
	if got := late.ExpectPublish(); !got.Retain || string(got.Payload) != "on" {
		t.Fatalf("retained: got %s", brokertest.Describe(got))
	}
	state, err := st.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Retained) != 1 || state.Retained[0].Publish.Topic != "app/state" {
		t.Fatalf("store holds retained %v, want app/state", state.Retained)
	}
	for _, bad := range []*broker.Message{{Topic: "a/+"}, {Topic: "$SYS/x"}, {Topic: ""}, {Topic: "a", QoS: 3}} {
		if err := srv.Publish(bad); err == nil {
			t.Errorf("Publish(%q, QoS %d) = nil, want an error", bad.Topic, bad.QoS)
		}
	}
	if !errors.Is(srv.Publish(&broker.Message{Topic: "$SYS/x"}), broker.ErrSysTopic) {
		t.Error("Publish to $SYS: want ErrSysTopic")
	}
}

func TestEmbed_InlineSubscription_MQTT_4_7_2_1(t *testing.T) {
	srv := brokertest.Start(t)
	var mu sync.Mutex
	var got []string
	cancel, err := srv.Subscribe("sensors/#", 1, func(m *broker.Message) {
		mu.Lock()
		got = append(got, m.Topic+"="+string(m.Payload)+"@"+string('0'+m.QoS))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	var sys int
	cancelAll, err := srv.Subscribe("#", 0, func(m *broker.Message) {
		if m.Topic[0] == '$' {
			mu.Lock()
			sys++ // [MQTT-4.7.2-1] # never matches a $-topic
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cancelAll()
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "sensors/t", QoS: 2, PacketID: 1, Payload: []byte("21")}); rc != packet.Success {
		t.Fatalf("PUBREC %v: an inline subscriber is a matching subscriber", rc)
	}
	pub.Publish(&packet.Publish{Topic: "$dollar/t", QoS: 0, Payload: []byte("x")})
	brokertest.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 1
	}, "inline subscriber got nothing")
	mu.Lock()
	if got[0] != "sensors/t=21@1" {
		t.Errorf("got %q, want the message at the subscription's QoS 1", got[0])
	}
	mu.Unlock()
	cancel()
	cancel() // idempotent
	pub.Publish(&packet.Publish{Topic: "sensors/t", QoS: 1, PacketID: 2, Payload: []byte("22")})
	pub.Ping()
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || sys != 0 {
		t.Errorf("after cancel: %v, $-topics seen by #: %d", got, sys)
	}
	for _, bad := range []string{"a/#/b", "$share/g/a", ""} {
		if _, err := srv.Subscribe(bad, 0, func(*broker.Message) {}); err == nil {
			t.Errorf("Subscribe(%q) accepted", bad)
		}
	}
}

// TestEmbed_SubscribeAll: SubscribeAll sees every topic, the $-topics that
// "#" does not match [MQTT-4.7.2-1] included, at the lower QoS; a QoS 1
// publisher to a topic only it wants is told there was a subscriber; cancel
// ends it.
func TestEmbed_SubscribeAll(t *testing.T) {
	srv := brokertest.Start(t)
	var mu sync.Mutex
	var got []string
	cancel, err := srv.SubscribeAll(1, func(m *broker.Message) {
		mu.Lock()
		got = append(got, m.Topic+"@"+string('0'+m.QoS))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.SubscribeAll(3, func(*broker.Message) {}); err == nil {
		t.Error("SubscribeAll at QoS 3 accepted")
	}
	pub, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "pub", CleanStart: true})
	if rc := pub.Publish(&packet.Publish{Topic: "$app/x", QoS: 2, PacketID: 1, Payload: []byte("d")}); rc != packet.Success {
		t.Fatalf("PUBREC %v: the subscription to every topic matches $app/x", rc)
	}
	pub.Publish(&packet.Publish{Topic: "plain/x", QoS: 0, Payload: []byte("p")})
	brokertest.Eventually(t, 5*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) == 2
	}, "SubscribeAll did not get both messages") // got is read under mu only
	mu.Lock()
	if got[0] != "$app/x@1" || got[1] != "plain/x@0" {
		t.Errorf("got %v, want $app/x at QoS 1 and plain/x at QoS 0", got)
	}
	mu.Unlock()
	cancel()
	cancel() // idempotent
	if rc := pub.Publish(&packet.Publish{Topic: "$app/x", QoS: 1, PacketID: 2, Payload: []byte("e")}); rc != packet.NoMatchingSubscribers {
		t.Errorf("after cancel: PUBACK %v, want no matching subscribers", rc)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Errorf("after cancel: %v", got)
	}
}

func TestEmbed_DisconnectKicksWithAdministrativeAction(t *testing.T) {
	srv := brokertest.Start(t)
	watcher, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V311, ClientID: "w", CleanStart: true})
	watcher.Subscribe(1, 0, "wills/#")
	c, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "victim", CleanStart: true,
		Will: &packet.Will{Topic: "wills/victim", Payload: []byte("gone")}})
	if srv.Disconnect("nobody", packet.AdministrativeAction) {
		t.Error("Disconnect of an unknown client reported true")
	}
	if !srv.Disconnect("victim", packet.AdministrativeAction) {
		t.Fatal("Disconnect reported false")
	}
	ps := c.ExpectClosed()
	if len(ps) != 1 {
		t.Fatalf("before the close: %v, want one DISCONNECT", ps)
	}
	if d, ok := ps[0].(*packet.Disconnect); !ok || d.ReasonCode != packet.AdministrativeAction {
		t.Fatalf("got %s, want DISCONNECT 0x98", brokertest.Describe(ps[0]))
	}
	if got := watcher.ExpectPublish(); got.Topic != "wills/victim" {
		t.Fatalf("got %s, want the will", brokertest.Describe(got))
	}
	brokertest.Eventually(t, 5*time.Second, func() bool {
		return srv.DisconnectsByReason()["administrative"] == 1
	}, "close not counted as administrative")
}

func TestEmbed_DialLocalIsTrusted(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Authenticate = func(*broker.ClientInfo) error { return packet.NotAuthorized }
		o.Authorize = func(*broker.ClientInfo, string, bool) bool { return false }
	})
	nc, err := srv.DialLocal()
	if err != nil {
		t.Fatal(err)
	}
	local := brokertest.NewConn(t, nc, packet.V5)
	t.Cleanup(func() { nc.Close() })
	local.Connect(&packet.Connect{ClientID: "bridge-local", CleanStart: true})
	local.Subscribe(1, 1, "in/#")
	nc2, err := srv.DialLocal()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc2.Close() })
	other := brokertest.NewConn(t, nc2, packet.V311)
	other.Connect(&packet.Connect{ClientID: "other", CleanStart: true})
	if rc := other.Publish(&packet.Publish{Topic: "in/x", QoS: 1, PacketID: 1, Payload: []byte("p")}); rc != packet.Success {
		t.Fatalf("PUBACK %v", rc)
	}
	if got := local.ExpectPublish(); got.Topic != "in/x" {
		t.Fatalf("got %s", brokertest.Describe(got))
	}
	// A TCP client of the same server is still refused.
	tcp := brokertest.Dial(t, srv.Addr, packet.V5)
	tcp.Send(&packet.Connect{ProtocolName: "MQTT", Version: packet.V5, ClientID: "x", CleanStart: true})
	if ack, ok := tcp.Recv().(*packet.Connack); !ok || ack.ReasonCode != packet.NotAuthorized {
		t.Fatalf("TCP client: %v, want CONNACK 0x87", ack)
	}
}
