package cluster

import (
	"bytes"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// TestSubjectsFollowMQTTMatching: a node's subscription subjects for a
// filter match a topic's subject exactly when the MQTT filter matches the
// topic [MQTT-4.7.1-2] [MQTT-4.7.1-3], and never for $-topics under '#' or
// '+' [MQTT-4.7.2-1].
func TestSubjectsFollowMQTTMatching(t *testing.T) {
	topics := []string{"a", "a/b", "a/b/c", "a//b", "/a", "a/", "/", "a.b", "a.b/c", "*", ">", "a/*", "a/>",
		"sp ace", "a/ /b", "$app/x", "$app", "$SYS/x", "ü/ñ", "~", "~/a", "a-b_c/D9", "YQ"}
	filters := []string{"#", "+", "a/#", "a/+", "+/b", "+/+", "a/+/c", "/#", "+/#", "a.b/#", "*", ">", "a/*",
		"$app/#", "$app/+", "+/x", "a//b", "a/", "~", "YQ", "~/+", "$SYS/#"}
	for _, f := range filters {
		subs, err := filterSubjects(f)
		if err != nil {
			t.Fatalf("%q: %v", f, err)
		}
		for _, tp := range topics {
			want := topic.Match(f, tp) && !isSys(tp)
			subj := topicSubject(tp)
			got := false
			for _, s := range subs {
				got = got || server.SubjectMatchesFilter(subj, s)
			}
			if got != want {
				t.Errorf("filter %q (%v) topic %q (%s): match %v, want %v", f, subs, tp, subj, got, want)
			}
		}
	}
	if _, err := filterSubjects("a/#/b"); err == nil {
		t.Error("an invalid filter was accepted")
	}
}

func TestEncodeLevelOneToOne(t *testing.T) {
	seen := map[string]string{}
	for _, l := range []string{"", "~", "a", "YQ", "a.b", "a b", "*", ">", "$x", "é", "-_", "a~"} {
		e := encodeLevel(l)
		if prev, ok := seen[e]; ok {
			t.Errorf("%q and %q both encode to %q", prev, l, e)
		}
		seen[e] = l
		for i := 0; i < len(e); i++ {
			if c := e[i]; c == '.' || c == '*' || c == '>' || c <= ' ' || c > '~' {
				t.Errorf("%q encodes to %q, not a NATS token", l, e)
			}
		}
	}
}

// TestMessageRoundTrip: topic, payload, QoS, retain and the application
// properties cross unchanged; the expiry interval is what is left of it
// [MQTT-3.3.2-6].
func TestMessageRoundTrip(t *testing.T) {
	props := &packet.Properties{PayloadFormat: packet.Ptr(byte(1)), MessageExpiry: packet.Ptr(uint32(100)),
		ContentType: "c/t", ResponseTopic: "r/t", CorrelationData: []byte{0, 1},
		User: []packet.UserProperty{{Key: "a", Value: "1"}, {Key: "a", Value: "2"}}, SubscriptionIDs: []uint32{7}}
	now := time.Now()
	m := &broker.Message{Topic: "a.b/ c/*/>", Payload: bytes.Repeat([]byte{0xFF}, 70000), QoS: 2, Retain: true,
		Props: props, Created: now.Add(-30 * time.Second)}
	b, err := encodeMessage(m, now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != m.Topic || !bytes.Equal(got.Payload, m.Payload) || got.QoS != 2 || !got.Retain {
		t.Fatalf("got %q QoS %d retain %v", got.Topic, got.QoS, got.Retain)
	}
	want := *props
	want.MessageExpiry = packet.Ptr(uint32(70))
	want.SubscriptionIDs = nil
	if !reflect.DeepEqual(got.Props, &want) {
		t.Fatalf("props %+v, want %+v", got.Props, &want)
	}
	m.Created = now.Add(-100 * time.Second)
	if _, err := encodeMessage(m, now); err != errExpired {
		t.Fatalf("expired message: %v", err)
	}
	for _, bad := range [][]byte{nil, {0x30}, {0x30, 5, 0, 1}, {0x20, 2, 0, 0}, append(b[:len(b)-1:len(b)-1], 0, 0)} {
		if _, err := decodeMessage(bad); err == nil {
			t.Errorf("% x decoded", bad)
		}
	}
}

func TestConfigChecked(t *testing.T) {
	good := Config{Name: "c", Node: "n", Listen: "127.0.0.1:7501", Peers: []string{"127.0.0.1:7502"}, Dir: t.TempDir()}
	if _, err := New(good); err != nil {
		t.Fatal(err)
	}
	for _, mut := range []func(*Config){
		func(c *Config) { c.Name = "" },
		func(c *Config) { c.Name = "a b" },
		func(c *Config) { c.Node = "n*" },
		func(c *Config) { c.Listen = "nowhere" },
		func(c *Config) { c.Peers = []string{"127.0.0.1:99999"} },
		func(c *Config) { c.Dir = "" },
		func(c *Config) { c.CAFile = "/nonexistent" },
	} {
		c := good
		mut(&c)
		if _, err := New(c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}
