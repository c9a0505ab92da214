package bridge_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/mqttd/mqttd/config"
)

// TestConfigFile: `connection` sections in a mosquitto.conf: the options
// after a connection line belong to it, other options keep their scope,
// and errors name the file and line.
func TestConfigFile(t *testing.T) {
	conf := `listener 1883
allow_anonymous true
connection first
address 10.0.0.1:1884 10.0.0.2
topic sensors/# out 1 edge/ site/
topic cmd/# in 2
remote_username u
remote_password p
listener 1884
connection second
address remote.example
topic # both 0
bridge_protocol_version mqttv50
cleansession true
`
	c, err := config.Parse(strings.NewReader(conf), "m.conf")
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Bridges) != 2 || len(c.Listeners) != 2 {
		t.Fatalf("%d bridges, %d listeners", len(c.Bridges), len(c.Listeners))
	}
	a, b := c.Bridges[0], c.Bridges[1]
	if a.Name != "first" || len(a.Addresses) != 2 || len(a.Topics) != 2 || a.RemoteUser != "u" || a.Line != "m.conf:3" {
		t.Errorf("first: %+v", a)
	}
	if b.Name != "second" || !b.CleanSession || b.Topics[0].Direction.String() != "both" || a.LocalID == b.LocalID {
		t.Errorf("second: %+v", b)
	}
	for _, k := range []struct{ in, want string }{
		{"topic a/#\n", "m.conf:1: topic: a bridge option needs a connection line before it"},
		{"connection x\naddress h\ntopic a\nconnection x\n", "m.conf:4: duplicate bridge name"},
		{"connection x\naddress h\ntopic a out 5\n", "m.conf:3: topic: invalid bridge QoS level"},
		{"connection x\naddress h\n", "m.conf:1: connection x: no topic"},
		{"connection x\naddress h\ntopic a\nbridge_psk 01\n", "m.conf:4: bridge_psk: TLS-PSK is not supported"},
		{"connection x\naddress h\ntopic a\nbridge_unknown 1\n", "m.conf:4: bridge_unknown: unknown bridge option"},
		{"connection\n", "m.conf:1: connection needs one name"},
	} {
		_, err := config.Parse(strings.NewReader(k.in), "m.conf")
		if err == nil || !strings.Contains(err.Error(), k.want) || !errors.Is(err, config.ErrInvalid) {
			t.Errorf("%q: got %v, want %q", k.in, err, k.want)
		}
	}
}
