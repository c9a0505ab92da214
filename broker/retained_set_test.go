package broker_test

import (
	"errors"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store/mem"
)

// TestSetRetained_NotRouted_MQTT_3_3_1_6: SetRetained changes the retained
// message of a topic without delivering it: a live subscriber gets nothing,
// an inline subscription neither, a new SUBSCRIBE gets the message set
// [MQTT-3.3.1-6] (replacing the one before [MQTT-3.3.1-5]), and after a
// clear none [MQTT-3.3.1-10]; the store follows.
func TestSetRetained_NotRouted_MQTT_3_3_1_6(t *testing.T) {
	st := mem.New()
	srv := brokertest.Start(t, func(o *broker.Options) { o.Store = st })
	inline := make(chan *broker.Message, 8)
	cancel, err := srv.Subscribe("rs/#", 1, func(m *broker.Message) { inline <- m })
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	live, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "live", CleanStart: true})
	live.Subscribe(1, 1, "rs/#")

	// A routed retained message first: the live subscriber gets it once.
	if err := srv.Publish(&broker.Message{Topic: "rs/a", Payload: []byte("old"), QoS: 1, Retain: true}); err != nil {
		t.Fatal(err)
	}
	if p := live.ExpectPublish(); string(p.Payload) != "old" {
		t.Fatalf("live got %s", brokertest.Describe(p))
	} else {
		live.Ack(p)
	}
	<-inline

	exp := uint32(3600)
	m := &broker.Message{Topic: "rs/a", Payload: []byte("new"), QoS: 1,
		Props: &packet.Properties{ContentType: "text/plain", MessageExpiry: &exp}}
	if err := srv.SetRetained(m); err != nil {
		t.Fatal(err)
	}
	m.Payload = []byte("changed by the caller") // SetRetained copied m
	got, ok := srv.RetainedMessage("rs/a")
	if !ok || string(got.Payload) != "new" || !got.Retain {
		t.Fatalf("RetainedMessage after SetRetained: %v %v", got, ok)
	}
	late, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "late", CleanStart: true})
	late.Subscribe(1, 1, "rs/#")
	p := late.ExpectPublish()
	if !p.Retain || p.Topic != "rs/a" || string(p.Payload) != "new" || p.Props == nil ||
		p.Props.ContentType != "text/plain" || p.Props.MessageExpiry == nil || *p.Props.MessageExpiry > exp {
		t.Fatalf("new subscription got %s", brokertest.Describe(p))
	}
	late.Ack(p)
	late.ExpectNothing(100 * time.Millisecond)
	state, err := st.Load(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(state.Retained) != 1 || string(state.Retained[0].Publish.Payload) != "new" {
		t.Fatalf("store holds %v, want rs/a = new", state.Retained)
	}

	// A clear.
	if err := srv.SetRetained(&broker.Message{Topic: "rs/a"}); err != nil {
		t.Fatal(err)
	}
	if _, ok := srv.RetainedMessage("rs/a"); ok {
		t.Fatal("rs/a still retained after a clear")
	}
	again, _ := brokertest.DialConnect(t, srv.Addr, &packet.Connect{Version: packet.V5, ClientID: "again", CleanStart: true})
	again.Subscribe(1, 1, "rs/#")
	again.ExpectNothing(100 * time.Millisecond)
	if state, err = st.Load(time.Now()); err != nil {
		t.Fatal(err)
	}
	if len(state.Retained) != 0 {
		t.Fatalf("store holds %v after the clear", state.Retained)
	}

	// Neither change reached the live subscriber or the inline one: a
	// routed message now is the next thing both see.
	if err := srv.Publish(&broker.Message{Topic: "rs/b", Payload: []byte("marker"), QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if p := live.ExpectPublish(); p.Topic != "rs/b" {
		t.Fatalf("live subscriber got %s, want only the marker", brokertest.Describe(p))
	} else {
		live.Ack(p)
	}
	if im := <-inline; im.Topic != "rs/b" {
		t.Fatalf("inline subscription got %s, want only the marker", im.Topic)
	}

	// Bad input: a clear error, no change.
	for _, bad := range []*broker.Message{nil, {Topic: "rs/+", Payload: []byte("x")}, {Topic: "", Payload: []byte("x")},
		{Topic: "rs/q", Payload: []byte("x"), QoS: 3}} {
		if err := srv.SetRetained(bad); err == nil {
			t.Fatalf("SetRetained(%v) accepted", bad)
		}
	}
	if err := srv.SetRetained(&broker.Message{Topic: "$SYS/x", Payload: []byte("x")}); !errors.Is(err, broker.ErrSysTopic) {
		t.Fatalf("SetRetained($SYS/x) = %v, want ErrSysTopic", err)
	}
	if _, ok := srv.RetainedMessage("rs/q"); ok {
		t.Fatal("refused message stored")
	}
}
