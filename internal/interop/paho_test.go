package interop

import (
	"fmt"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/mqttd/mqttd/internal/brokertest"
)

// received collects messages delivered to a Paho client.
type received struct {
	mu   sync.Mutex
	msgs []paho.Message
}

func (r *received) handler(_ paho.Client, m paho.Message) {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
}

func (r *received) snapshot() []paho.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]paho.Message(nil), r.msgs...)
}

func (r *received) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.msgs)
}

func pahoClient(t *testing.T, url, id string, clean bool, version uint, h paho.MessageHandler) paho.Client {
	t.Helper()
	o := paho.NewClientOptions().AddBroker(url).SetClientID(id).SetCleanSession(clean).
		SetProtocolVersion(version).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).
		SetOrderMatters(true)
	if h != nil {
		o.SetDefaultPublishHandler(h)
	}
	c := paho.NewClient(o)
	tok := c.Connect()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho %s: connect: %v", id, tok.Error())
	}
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c
}

func wait(t *testing.T, tok paho.Token, what string) {
	t.Helper()
	if !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("paho: %s: %v", what, tok.Error())
	}
}

// TestPahoWildcardsAndQoS: Paho 3.1 and 3.1.1 clients subscribe with
// wildcards and exchange QoS 0/1/2 messages; the delivered QoS is the
// minimum of published and granted [MQTT-3.8.4-6].
func TestPahoWildcardsAndQoS(t *testing.T) {
	srv := brokertest.Start(t)
	for _, version := range []uint{3, 4} {
		t.Run(fmt.Sprintf("protocol-%d", version), func(t *testing.T) {
			var got received
			sub := pahoClient(t, srv.URL(), fmt.Sprintf("sub-%d", version), true, version, nil)
			wait(t, sub.SubscribeMultiple(map[string]byte{
				fmt.Sprintf("v%d/sensors/+/temp", version): 2,
				fmt.Sprintf("v%d/alerts/#", version):       1,
			}, got.handler), "subscribe")
			pub := pahoClient(t, srv.URL(), fmt.Sprintf("pub-%d", version), true, version, nil)
			type sent struct {
				topic   string
				qos     byte
				wantQoS byte
			}
			cases := []sent{
				{fmt.Sprintf("v%d/sensors/a/temp", version), 0, 0},
				{fmt.Sprintf("v%d/sensors/b/temp", version), 1, 1},
				{fmt.Sprintf("v%d/sensors/c/temp", version), 2, 2},
				{fmt.Sprintf("v%d/alerts/x/y", version), 2, 1},
				{fmt.Sprintf("v%d/alerts", version), 1, 1},
				{fmt.Sprintf("v%d/sensors/a/humidity", version), 1, 255}, // not matched
			}
			want := 0
			for i, c := range cases {
				wait(t, pub.Publish(c.topic, c.qos, false, fmt.Sprintf("m%d", i)), "publish")
				if c.wantQoS != 255 {
					want++
				}
			}
			brokertest.Eventually(t, 5*time.Second, func() bool { return got.len() >= want }, "want %d messages", want)
			msgs := got.snapshot()
			if len(msgs) != want {
				t.Fatalf("got %d messages, want %d", len(msgs), want)
			}
			for i, m := range msgs {
				c := cases[i]
				if m.Topic() != c.topic || m.Qos() != c.wantQoS || string(m.Payload()) != fmt.Sprintf("m%d", i) {
					t.Errorf("message %d: got %s qos %d %q, want %s qos %d", i, m.Topic(), m.Qos(), m.Payload(), c.topic, c.wantQoS)
				}
			}
		})
	}
}

// TestPahoPersistentSessionResumed: a Paho client with clean session false
// disconnects, messages are published at QoS 1 and 2 while it is away, and
// it receives them after reconnecting [MQTT-3.1.2-4], [MQTT-3.2.2-2].
func TestPahoPersistentSessionResumed(t *testing.T) {
	srv := brokertest.Start(t)
	var got received
	sub := pahoClient(t, srv.URL(), "persistent-sub", false, 4, got.handler)
	wait(t, sub.Subscribe("fleet/+/status", 2, nil), "subscribe")
	sub.Disconnect(100)

	pub := pahoClient(t, srv.URL(), "publisher", true, 4, nil)
	for i := range 10 {
		wait(t, pub.Publish(fmt.Sprintf("fleet/v%d/status", i), byte(1+i%2), false, fmt.Sprintf("s%d", i)), "publish")
	}

	// The default handler gets the queued messages: the subscription lives
	// in the broker's session, not in this new client object.
	pahoClient(t, srv.URL(), "persistent-sub", false, 4, got.handler)
	brokertest.Eventually(t, 5*time.Second, func() bool { return got.len() >= 10 }, "queued messages")
	for i, m := range got.snapshot() {
		if m.Topic() != fmt.Sprintf("fleet/v%d/status", i) || string(m.Payload()) != fmt.Sprintf("s%d", i) {
			t.Errorf("message %d: %s %q", i, m.Topic(), m.Payload())
		}
	}
}

// TestPahoRetainedAndWill: retained messages reach a late subscriber and a
// Paho client's will is published when its connection drops.
func TestPahoRetainedAndWill(t *testing.T) {
	srv := brokertest.Start(t)
	pub := pahoClient(t, srv.URL(), "retainer", true, 4, nil)
	wait(t, pub.Publish("home/lights", 1, true, "on"), "publish retained")

	var got received
	sub := pahoClient(t, srv.URL(), "late", true, 4, nil)
	wait(t, sub.Subscribe("home/#", 1, got.handler), "subscribe")
	brokertest.Eventually(t, 5*time.Second, func() bool { return got.len() >= 1 }, "retained message")
	if m := got.snapshot()[0]; m.Topic() != "home/lights" || string(m.Payload()) != "on" || !m.Retained() {
		t.Fatalf("retained: got %s %q retained=%v", m.Topic(), m.Payload(), m.Retained())
	}

	o := paho.NewClientOptions().AddBroker(srv.URL()).SetClientID("dying").SetWill("home/dying/status", "gone", 1, false).
		SetAutoReconnect(false)
	dying := paho.NewClient(o)
	wait(t, dying.Connect(), "connect dying")
	// Drop the network connection without DISCONNECT: taking over the
	// client id closes it on the server side and fires the will.
	pahoClient(t, srv.URL(), "dying", true, 4, nil)
	brokertest.Eventually(t, 5*time.Second, func() bool { return got.len() >= 2 }, "will message")
	if m := got.snapshot()[1]; m.Topic() != "home/dying/status" || string(m.Payload()) != "gone" {
		t.Fatalf("will: got %s %q", m.Topic(), m.Payload())
	}
}
