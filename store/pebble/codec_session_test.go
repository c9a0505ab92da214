package pebble

import (
	"testing"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// TestSessionListenerCodec: the listener round-trips, and a record written
// before the listener was stored (no flag in the version byte) still
// decodes, with the listener unknown ("").
func TestSessionListenerCodec(t *testing.T) {
	in := &store.Session{ClientID: "c", Username: "u", Listener: "127.0.0.1:1883", Version: packet.V311,
		ExpiryInterval: 60, Will: &packet.Will{Topic: "w", Payload: []byte("x"), QoS: 1}}
	b, err := appendSession(nil, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := decodeSession("c", b)
	if err != nil {
		t.Fatal(err)
	}
	if out.Listener != in.Listener || out.Username != "u" || out.Version != packet.V311 || out.Will == nil || out.Will.Topic != "w" {
		t.Fatalf("round trip: %+v", out)
	}

	// The layout of older records: version, expiry 60, not disconnected,
	// user name "u", no will.
	old := []byte{byte(packet.V5), 60, 0, 1, 'u', 0}
	out, err = decodeSession("c", old)
	if err != nil {
		t.Fatalf("old record: %v", err)
	}
	if out.Listener != "" || out.Username != "u" || out.Version != packet.V5 || out.ExpiryInterval != 60 {
		t.Fatalf("old record: %+v", out)
	}
	if _, err := appendSession(nil, &store.Session{ClientID: "c", Version: packet.Version(0x85)}); err == nil {
		t.Fatal("a version with the listener bit set was encoded")
	}
}
