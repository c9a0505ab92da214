package packet

import (
	"bytes"
	"errors"
	"testing"
)

// The 3.x bridge bit: protocol level 0x83 (MQIsdp) or 0x84 (MQTT), as
// Mosquitto's bridges send with try_private; 0x85 is not a level.
func TestConnectBridgeBit(t *testing.T) {
	for _, tc := range []struct {
		name  string
		proto string
		level byte
		want  Version
		ok    bool
	}{
		{"3.1.1 bridge", "MQTT", 0x84, V311, true},
		{"3.1 bridge", "MQIsdp", 0x83, V31, true},
		{"5.0 with the bit", "MQTT", 0x85, 0, false},
		{"bit with the wrong name", "MQIsdp", 0x84, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body := appendString(nil, tc.proto)
			body = append(body, tc.level, 0x02, 0, 60)
			body = appendString(body, "edge")
			p, err := decodeConnect(body)
			if !tc.ok {
				if !errors.Is(err, UnsupportedProtocolVersion) {
					t.Fatalf("err %v, want unsupported protocol version", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cp := p.(*Connect)
			if !cp.Bridge || cp.Version != tc.want {
				t.Fatalf("Bridge %v Version %v, want true %v", cp.Bridge, cp.Version, tc.want)
			}
			enc, err := cp.Encode(nil, cp.Version)
			if err != nil {
				t.Fatal(err)
			}
			// Fixed header (2 bytes) then the same body.
			if !bytes.Equal(enc[2:], body) {
				t.Fatalf("encode % x, want % x", enc[2:], body)
			}
		})
	}
}
