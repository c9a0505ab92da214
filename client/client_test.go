package client

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/internal/brokertest"
	"github.com/mqttd/mqttd/packet"
)

func TestConnectVersions(t *testing.T) {
	srv := startBroker(t)
	for _, v := range allVersions {
		t.Run(v.String(), func(t *testing.T) {
			c := dial(t, srv.URL(), Options{Version: v})
			ack := c.Connack()
			if ack == nil || ack.ReasonCode != packet.Success {
				t.Fatalf("Connack() = %+v", ack)
			}
			if c.ClientID() == "" {
				t.Fatal("no client id: 3.x generates one, v5 takes the assigned one")
			}
			if v == packet.V31 && len(c.ClientID()) > 23 {
				t.Fatalf("3.1 client id %q longer than 23", c.ClientID())
			}
			if !c.IsConnected() {
				t.Fatal("IsConnected() = false")
			}
			if err := c.Disconnect(testCtx(t)); err != nil {
				t.Fatalf("Disconnect: %v", err)
			}
			select {
			case <-c.Done():
			default:
				t.Fatal("Done not closed after Disconnect")
			}
			if !errors.Is(c.Err(), ErrClosed) {
				t.Fatalf("Err() = %v, want ErrClosed", c.Err())
			}
			if err := c.Publish(testCtx(t), "a", nil, PublishOptions{}); !errors.Is(err, ErrClosed) {
				t.Fatalf("Publish after Disconnect: %v, want ErrClosed", err)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	srv := startBroker(t)
	for _, v := range allVersions {
		for qos := byte(0); qos <= 2; qos++ {
			t.Run(fmt.Sprintf("%s/QoS%d", v, qos), func(t *testing.T) {
				var col collector
				sub := dial(t, srv.URL(), Options{Version: v})
				topic := fmt.Sprintf("rt/%s/%d", v, qos)
				subscribe(t, sub, topic, 2, col.handle)
				pub := dial(t, srv.URL(), Options{Version: v})
				props := &packet.Properties{ContentType: "text/plain", User: []packet.UserProperty{{Key: "k", Value: "v"}}}
				const n = 50
				for i := range n {
					err := pub.Publish(testCtx(t), topic, []byte(fmt.Sprint(i)), PublishOptions{QoS: qos, Props: props})
					if err != nil {
						t.Fatalf("Publish %d: %v", i, err)
					}
				}
				if pub.Pending() != 0 {
					t.Fatalf("Pending() = %d after acknowledged publishes", pub.Pending())
				}
				msgs := col.wait(t, n)
				for i, m := range msgs[:n] {
					if string(m.Payload) != fmt.Sprint(i) || m.Topic != topic || m.QoS != qos {
						t.Fatalf("message %d = %q on %q QoS %d", i, m.Payload, m.Topic, m.QoS)
					}
					if v == packet.V5 && (m.Props == nil || m.Props.ContentType != "text/plain" || len(m.Props.User) != 1) {
						t.Fatalf("message %d: v5 properties not carried: %+v", i, m.Props)
					}
				}
			})
		}
	}
}

func TestPublishAsyncPipelines(t *testing.T) {
	srv := startBroker(t)
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			var col collector
			sub := dial(t, srv.URL(), Options{Version: v})
			subscribe(t, sub, "async/#", 2, col.handle)
			pub := dial(t, srv.URL(), Options{Version: v, MaxInflight: 8})
			const n = 500
			var wg sync.WaitGroup
			var mu sync.Mutex
			var errs []error
			for i := range n {
				wg.Add(1)
				err := pub.PublishAsync(testCtx(t), "async/t", []byte(fmt.Sprint(i)), PublishOptions{QoS: byte(1 + i%2)}, func(err error) {
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
					wg.Done()
				})
				if err != nil {
					t.Fatalf("PublishAsync: %v", err)
				}
				if p := pub.Pending(); p > 8 {
					t.Fatalf("Pending() = %d, above MaxInflight 8", p)
				}
			}
			wg.Wait()
			if len(errs) > 0 {
				t.Fatalf("%d publishes failed, first: %v", len(errs), errs[0])
			}
			// Order holds per QoS (a broker may release a QoS 2 message
			// only at PUBREL, after later QoS 1 ones).
			next := map[byte]int{1: 0, 2: 1}
			for _, m := range col.wait(t, n) {
				if string(m.Payload) != fmt.Sprint(next[m.QoS]) {
					t.Fatalf("QoS %d message %q, want %d: order not kept", m.QoS, m.Payload, next[m.QoS])
				}
				next[m.QoS] += 2
			}
		})
	}
}

func TestRetained(t *testing.T) {
	srv := startBroker(t)
	for _, v := range allVersions {
		t.Run(v.String(), func(t *testing.T) {
			topic := "retained/" + v.String()
			pub := dial(t, srv.URL(), Options{Version: v})
			if err := pub.Publish(testCtx(t), topic, []byte("kept"), PublishOptions{QoS: 1, Retain: true}); err != nil {
				t.Fatal(err)
			}
			var col collector
			sub := dial(t, srv.URL(), Options{Version: v})
			subscribe(t, sub, topic, 1, col.handle)
			m := col.wait(t, 1)[0]
			if !m.Retain || string(m.Payload) != "kept" {
				t.Fatalf("got %+v, want retained \"kept\"", m)
			}
		})
	}
}

func TestWill(t *testing.T) {
	srv := startBroker(t)
	cases := []struct {
		name string
		v    packet.Version
		end  func(*Client) error
	}{
		{"3.1.1/Close", packet.V311, (*Client).Close},
		{"5.0/Close", packet.V5, (*Client).Close},
		{"5.0/DisconnectWithWill", packet.V5, func(c *Client) error {
			return c.DisconnectWith(testCtx(t), &packet.Disconnect{ReasonCode: packet.DisconnectWithWill})
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			topic := "will/" + tc.name
			var col collector
			sub := dial(t, srv.URL(), Options{Version: tc.v})
			subscribe(t, sub, topic, 1, col.handle)
			c := dial(t, srv.URL(), Options{Version: tc.v, Will: &packet.Will{Topic: topic, Payload: []byte("gone"), QoS: 1}})
			if err := tc.end(c); err != nil {
				t.Fatal(err)
			}
			if m := col.wait(t, 1)[0]; string(m.Payload) != "gone" {
				t.Fatalf("will payload %q", m.Payload)
			}
		})
	}
}

func TestDisconnectDiscardsWill(t *testing.T) {
	srv := startBroker(t)
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			topic := "nowill/" + v.String()
			var col collector
			sub := dial(t, srv.URL(), Options{Version: v})
			subscribe(t, sub, topic, 1, col.handle)
			c := dial(t, srv.URL(), Options{Version: v, Will: &packet.Will{Topic: topic, Payload: []byte("will")}})
			if err := c.Disconnect(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			// The will would be published when the server handles the
			// disconnection, before it answers a new connection's traffic
			// with the same id: a marker from that id arrives alone.
			marker := dial(t, srv.URL(), Options{Version: v, ClientID: c.ClientID()})
			if err := marker.Publish(testCtx(t), topic, []byte("marker"), PublishOptions{QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if msgs := col.wait(t, 1); string(msgs[0].Payload) != "marker" {
				t.Fatalf("first message %q: the will was published after DISCONNECT [MQTT-3.1.2-10]", msgs[0].Payload)
			}
		})
	}
}

func TestPersistentSessionResumed(t *testing.T) {
	srv := startBroker(t)
	for _, v := range allVersions {
		t.Run(v.String(), func(t *testing.T) {
			id := "persist-" + strings.ReplaceAll(v.String(), ".", "")
			topic := "persist/" + v.String()
			o := Options{Version: v, ClientID: id, PersistentSession: true}
			c := dial(t, srv.URL(), o)
			if c.Connack().SessionPresent {
				// Clear what an earlier run left: a clean session first.
				t.Fatalf("session present on first connection")
			}
			subscribe(t, c, topic, 1, func(*Message) {})
			if err := c.Disconnect(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			pub := dial(t, srv.URL(), Options{Version: v})
			for i := range 3 {
				if err := pub.Publish(testCtx(t), topic, []byte(fmt.Sprint(i)), PublishOptions{QoS: 1}); err != nil {
					t.Fatal(err)
				}
			}
			var col collector
			// The default handler is in place before the queued messages arrive.
			c2, err := dialWithDefault(t, srv.URL(), o, col.handle)
			if err != nil {
				t.Fatal(err)
			}
			// 3.1 has no session present flag in CONNACK.
			if v != packet.V31 && !c2.Connack().SessionPresent {
				t.Fatal("session not present on reconnection")
			}
			msgs := col.wait(t, 3)
			for i, m := range msgs {
				if string(m.Payload) != fmt.Sprint(i) || m.QoS != 1 {
					t.Fatalf("queued message %d: %q QoS %d", i, m.Payload, m.QoS)
				}
			}
		})
	}
}

// dialWithDefault dials with h installed as default handler from the start.
func dialWithDefault(t *testing.T, url string, o Options, h Handler) (*Client, error) {
	t.Helper()
	o.DefaultHandler = h
	c, err := Dial(testCtx(t), url, o)
	if err == nil {
		t.Cleanup(func() { _ = c.Close() })
	}
	return c, err
}

func TestConnectRefused(t *testing.T) {
	srv := startBroker(t, func(o *broker.Options) {
		o.AllowAnonymous = false
		o.Authenticate = func(c *broker.ClientInfo) error {
			if c.Username == "banned" {
				return packet.NotAuthorized
			}
			if c.Username != "good" || string(c.Password) != "secret" {
				return packet.BadUserNameOrPassword
			}
			return nil
		}
	})
	cases := []struct {
		user, pass string
		want       packet.ReasonCode
		text       string
	}{
		{"banned", "x", packet.NotAuthorized, "client: connection refused: not authorized"},
		{"good", "wrong", packet.BadUserNameOrPassword, "client: connection refused: bad user name or password"},
		{"good", "secret", packet.Success, ""},
	}
	for _, v := range allVersions {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%s/%s", v, tc.user, tc.pass), func(t *testing.T) {
				c, err := Dial(testCtx(t), srv.URL(), Options{Version: v, Username: tc.user, Password: []byte(tc.pass)})
				if tc.want == packet.Success {
					if err != nil {
						t.Fatalf("Dial: %v", err)
					}
					c.Close()
					return
				}
				if err == nil {
					c.Close()
					t.Fatal("Dial succeeded")
				}
				var rc packet.ReasonCode
				if !errors.As(err, &rc) || rc != tc.want {
					t.Fatalf("errors.As reason code = %v (%v), want %v", rc, err, tc.want)
				}
				var ce *ConnectError
				if !errors.As(err, &ce) || !strings.HasPrefix(err.Error(), tc.text) {
					t.Fatalf("error %q, want a *ConnectError starting %q", err, tc.text)
				}
			})
		}
	}
}

func TestSubscribeUnsubscribeAndHandlers(t *testing.T) {
	srv := startBroker(t)
	for _, v := range []packet.Version{packet.V311, packet.V5} {
		t.Run(v.String(), func(t *testing.T) {
			var a, b, def collector
			c := dial(t, srv.URL(), Options{Version: v})
			c.SetDefaultHandler(def.handle)
			// One handler for two overlapping filters gets each message once.
			ack, err := c.Subscribe(testCtx(t), []packet.Subscription{{Filter: "h/a/+", QoS: 1}, {Filter: "h/a/#", QoS: 0}}, a.handle)
			if err != nil {
				t.Fatal(err)
			}
			if len(ack.ReasonCodes) != 2 || ack.ReasonCodes[0] != packet.GrantedQoS1 || ack.ReasonCodes[1] != packet.Success {
				t.Fatalf("SUBACK codes %v", ack.ReasonCodes)
			}
			subscribe(t, c, "h/b", 0, b.handle)
			pub := dial(t, srv.URL(), Options{Version: v})
			for _, topic := range []string{"h/a/1", "h/b"} {
				if err := pub.Publish(testCtx(t), topic, []byte(topic), PublishOptions{QoS: 1}); err != nil {
					t.Fatal(err)
				}
			}
			b.wait(t, 1)
			msgs := a.wait(t, 1)
			if msgs[0].Topic != "h/a/1" {
				t.Fatalf("handler a got %q", msgs[0].Topic)
			}
			if _, err := c.Unsubscribe(testCtx(t), "h/b"); err != nil {
				t.Fatal(err)
			}
			// After unsubscribing, h/b no longer arrives; h/a/1 (published
			// after it) does, and only once per subscription the server sends.
			if err := pub.Publish(testCtx(t), "h/b", []byte("late"), PublishOptions{QoS: 1}); err != nil {
				t.Fatal(err)
			}
			if err := pub.Publish(testCtx(t), "h/a/1", []byte("after"), PublishOptions{QoS: 1}); err != nil {
				t.Fatal(err)
			}
			brokertest.Eventually(t, 5*time.Second, func() bool {
				for _, m := range a.get() {
					if string(m.Payload) == "after" {
						return true
					}
				}
				return false
			})
			if n := len(b.get()); n != 1 {
				t.Fatalf("handler b got %d messages after unsubscribing", n)
			}
			for _, m := range append(def.get(), b.get()...) {
				if string(m.Payload) == "late" {
					t.Fatal("message for an unsubscribed filter was delivered")
				}
			}
		})
	}
}

func TestPublishRefusedCarriesReasonCode(t *testing.T) {
	srv := startBroker(t, func(o *broker.Options) {
		o.Authorize = func(_ *broker.ClientInfo, topic string, write bool) bool {
			return !(write && strings.HasPrefix(topic, "denied/"))
		}
	})
	c := dial(t, srv.URL(), Options{Version: packet.V5})
	err := c.Publish(testCtx(t), "denied/x", []byte("x"), PublishOptions{QoS: 1})
	var rc packet.ReasonCode
	var ae *AckError
	if !errors.As(err, &ae) || !errors.As(err, &rc) || rc != packet.NotAuthorized || ae.Type != packet.PUBACK {
		t.Fatalf("Publish to a denied topic: %v, want an *AckError wrapping not authorized", err)
	}
	if c.Pending() != 0 {
		t.Fatalf("Pending() = %d", c.Pending())
	}
}

func TestPublishValidation(t *testing.T) {
	srv := startBroker(t)
	c := dial(t, srv.URL(), Options{Version: packet.V311})
	cases := []struct {
		name  string
		topic string
		qos   byte
		want  error
	}{
		{"empty topic [MQTT-4.7.3-1]", "", 0, ErrInvalidTopic},
		{"plus wildcard [MQTT-3.3.2-2]", "a/+/b", 1, ErrInvalidTopic},
		{"hash wildcard [MQTT-3.3.2-2]", "a/#", 0, ErrInvalidTopic},
		{"NUL [MQTT-1.5.4-2]", "a\x00b", 0, ErrInvalidTopic},
		{"bad UTF-8 [MQTT-1.5.4-1]", "a\xffb", 0, ErrInvalidTopic},
		{"QoS 3", "a", 3, ErrInvalidQoS},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := c.Publish(testCtx(t), tc.topic, nil, PublishOptions{QoS: tc.qos})
			if !errors.Is(err, tc.want) {
				t.Fatalf("Publish(%q, QoS %d) = %v, want %v", tc.topic, tc.qos, err, tc.want)
			}
		})
	}
}

func TestLargePayload(t *testing.T) {
	srv := startBroker(t)
	var col collector
	sub := dial(t, srv.URL(), Options{Version: packet.V5})
	subscribe(t, sub, "big", 1, col.handle)
	pub := dial(t, srv.URL(), Options{Version: packet.V5})
	payload := bytes.Repeat([]byte("0123456789"), 100_000) // 1 MB, larger than the write buffer
	if err := pub.Publish(testCtx(t), "big", payload, PublishOptions{QoS: 1}); err != nil {
		t.Fatal(err)
	}
	if m := col.wait(t, 1)[0]; !bytes.Equal(m.Payload, payload) {
		t.Fatalf("payload of %d bytes arrived as %d bytes", len(payload), len(m.Payload))
	}
}
