package interop

// Eclipse Paho's MQTT 5 Go client (github.com/eclipse/paho.golang) against
// mqttd: properties, topic aliases both ways, shared subscriptions, session
// expiry and resume.

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
)

// inbox collects the messages a Paho v5 client receives, resolving
// server-assigned topic aliases (Paho hands them over unresolved).
type inbox struct {
	mu      sync.Mutex
	msgs    []*paho.Publish
	aliases map[uint16]string
}

func (b *inbox) add(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.Properties != nil && p.Properties.TopicAlias != nil {
		if b.aliases == nil {
			b.aliases = make(map[uint16]string)
		}
		if p.Topic != "" {
			b.aliases[*p.Properties.TopicAlias] = p.Topic
		} else {
			p.Topic = b.aliases[*p.Properties.TopicAlias]
		}
	}
	b.msgs = append(b.msgs, p)
	return true, nil
}

func (b *inbox) all() []*paho.Publish {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.msgs)
}

// waitFor polls until the inbox holds n messages.
func (b *inbox) waitFor(t *testing.T, n int) []*paho.Publish {
	t.Helper()
	brokertest.Eventually(t, 5*time.Second, func() bool { return len(b.all()) >= n },
		"want %d messages, have %d", n, len(b.all()))
	return b.all()
}

// paho5 connects a Paho v5 client whose messages go to an inbox.
func paho5(t *testing.T, addr string, cp *paho.Connect) (*paho.Client, *inbox, *paho.Connack) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	in := &inbox{}
	c := paho.NewClient(paho.ClientConfig{Conn: nc, OnPublishReceived: []func(paho.PublishReceived) (bool, error){in.add}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	cp.KeepAlive = 30
	ack, err := c.Connect(ctx, cp)
	if err != nil {
		t.Fatalf("paho5 %s: connect: %v", cp.ClientID, err)
	}
	t.Cleanup(func() { c.Disconnect(&paho.Disconnect{}) })
	return c, in, ack
}

func ctx5(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func sub5(t *testing.T, c *paho.Client, qos byte, filters ...string) {
	t.Helper()
	s := &paho.Subscribe{}
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, paho.SubscribeOptions{Topic: f, QoS: qos})
	}
	ack, err := c.Subscribe(ctx5(t), s)
	if err != nil {
		t.Fatalf("subscribe %v: %v", filters, err)
	}
	for i, rc := range ack.Reasons {
		if rc != qos {
			t.Fatalf("SUBACK %d for %s, want %d", rc, filters[i], qos)
		}
	}
}

func pub5(t *testing.T, c *paho.Client, p *paho.Publish) {
	t.Helper()
	if _, err := c.Publish(ctx5(t), p); err != nil {
		t.Fatalf("publish %s: %v", p.Topic, err)
	}
}

// Request/response properties and user properties arrive unaltered.
func TestPaho5Properties(t *testing.T) {
	srv := brokertest.Start(t)
	sub, in, _ := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-sub", CleanStart: true})
	sub5(t, sub, 1, "p5/props")
	pubc, _, _ := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-pub", CleanStart: true})
	pf := byte(1)
	props := &paho.PublishProperties{ContentType: "application/json", ResponseTopic: "p5/reply",
		CorrelationData: []byte("c-1"), PayloadFormat: &pf,
		User: paho.UserProperties{{Key: "trace", Value: "abc"}, {Key: "hop", Value: "1"}}}
	pub5(t, pubc, &paho.Publish{Topic: "p5/props", QoS: 1, Payload: []byte(`{"a":1}`), Properties: props})
	got := in.waitFor(t, 1)[0]
	gp := got.Properties
	if gp == nil || gp.ContentType != props.ContentType || gp.ResponseTopic != props.ResponseTopic ||
		string(gp.CorrelationData) != "c-1" || gp.PayloadFormat == nil || *gp.PayloadFormat != 1 ||
		!slices.Equal(gp.User, props.User) {
		t.Fatalf("properties %+v, want %+v", gp, props)
	}
}

// Topic aliases: the client's aliases are resolved by the broker; with the
// LRU policy the broker assigns aliases that Paho resolves.
func TestPaho5TopicAliases(t *testing.T) {
	srv := brokertest.Start(t, func(o *broker.Options) { o.TopicAliasPolicy = broker.TopicAliasLRU })
	tam := uint16(2)
	sub, in, _ := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-alias-sub", CleanStart: true,
		Properties: &paho.ConnectProperties{TopicAliasMaximum: &tam}})
	sub5(t, sub, 0, "p5/alias/#")
	pubc, _, ack := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-alias-pub", CleanStart: true})
	if ack.Properties == nil || ack.Properties.TopicAliasMaximum == nil || *ack.Properties.TopicAliasMaximum != 10 {
		t.Fatalf("CONNACK Topic Alias Maximum %+v, want 10", ack.Properties)
	}
	one := uint16(1)
	pub5(t, pubc, &paho.Publish{Topic: "p5/alias/a", Payload: []byte("0"), Properties: &paho.PublishProperties{TopicAlias: &one}})
	pub5(t, pubc, &paho.Publish{Topic: "", Payload: []byte("1"), Properties: &paho.PublishProperties{TopicAlias: &one}})
	for i, topic := range []string{"p5/alias/b", "p5/alias/a", "p5/alias/c", "p5/alias/b"} {
		pub5(t, pubc, &paho.Publish{Topic: topic, Payload: []byte{byte('2' + i)}})
	}
	msgs := in.waitFor(t, 6)
	var topics []string
	for _, m := range msgs {
		topics = append(topics, m.Topic)
	}
	want := []string{"p5/alias/a", "p5/alias/a", "p5/alias/b", "p5/alias/a", "p5/alias/c", "p5/alias/b"}
	if !slices.Equal(topics, want) {
		t.Fatalf("topics %v, want %v", topics, want)
	}
	if msgs[1].Properties == nil || msgs[1].Properties.TopicAlias == nil {
		t.Fatalf("second message came without a server-assigned alias")
	}
}

// A shared subscription splits messages between Paho clients.
func TestPaho5SharedSubscription(t *testing.T) {
	srv := brokertest.Start(t)
	a, inA, _ := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-sh-a", CleanStart: true})
	b, inB, _ := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-sh-b", CleanStart: true})
	sub5(t, a, 1, "$share/workers/p5/jobs")
	sub5(t, b, 1, "$share/workers/p5/jobs")
	pubc, _, _ := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-sh-pub", CleanStart: true})
	for i := range 6 {
		pub5(t, pubc, &paho.Publish{Topic: "p5/jobs", QoS: 1, Payload: []byte{byte('0' + i)}})
	}
	brokertest.Eventually(t, 5*time.Second, func() bool { return len(inA.all())+len(inB.all()) == 6 })
	if len(inA.all()) != 3 || len(inB.all()) != 3 {
		t.Fatalf("split %d/%d, want 3/3", len(inA.all()), len(inB.all()))
	}
}

// A session with an expiry interval outlives its connection: messages
// published meanwhile arrive when the client resumes with clean start 0.
func TestPaho5SessionExpiryResume(t *testing.T) {
	srv := brokertest.Start(t)
	exp := uint32(60)
	cp := func() *paho.Connect {
		return &paho.Connect{ClientID: "p5-sess", CleanStart: false,
			Properties: &paho.ConnectProperties{SessionExpiryInterval: &exp}}
	}
	c, _, ack := paho5(t, srv.Addr, cp())
	if ack.SessionPresent {
		t.Fatal("session present on first connect")
	}
	sub5(t, c, 1, "p5/sess")
	if err := c.Disconnect(&paho.Disconnect{}); err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 5*time.Second, func() bool { return srv.Stats().ClientsDisconnected == 1 })
	pubc, _, _ := paho5(t, srv.Addr, &paho.Connect{ClientID: "p5-sess-pub", CleanStart: true})
	pub5(t, pubc, &paho.Publish{Topic: "p5/sess", QoS: 1, Payload: []byte("while away")})
	_, in, ack := paho5(t, srv.Addr, cp())
	if !ack.SessionPresent {
		t.Fatal("session not present on resume")
	}
	if got := in.waitFor(t, 1)[0]; string(got.Payload) != "while away" {
		t.Fatalf("got %q", got.Payload)
	}
}
