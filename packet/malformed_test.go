package packet_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"

	"github.com/mqttd/mqttd/packet"
)

// raw builds a packet from its first byte and body parts, filling in the
// remaining length.
func raw(first byte, parts ...[]byte) []byte {
	body := bytes.Join(parts, nil)
	return append(packet.AppendFixedHeader(nil, packet.Type(first>>4), first&0x0F, len(body)), body...)
}

// str is a length-prefixed UTF-8 string (or any bytes).
func str(s string) []byte { return append([]byte{byte(len(s) >> 8), byte(len(s))}, s...) }

func b(x ...byte) []byte { return x }

var (
	mqtt   = str("MQTT")
	mqisdp = str("MQIsdp")
	cid    = str("c")
)

type badCase struct {
	name string // names the spec rule
	v    packet.Version
	raw  []byte
	want packet.ReasonCode
}

func malformedCases() []badCase {
	const (
		M  = packet.MalformedPacket
		P  = packet.ProtocolError
		v3 = packet.V31
		v4 = packet.V311
		v5 = packet.V5
	)
	return []badCase{
		// Fixed header flags.
		{"[MQTT-2.2.2-1] PUBACK flags 0001", v4, raw(0x41, b(0, 1)), M},
		{"[MQTT-2.1.3-1] PUBACK flags 1000 v5", v5, raw(0x48, b(0, 1)), M},
		{"[MQTT-3.6.1-1] PUBREL flags 0000", v4, raw(0x60, b(0, 1)), M},
		{"[MQTT-3.6.1-1] PUBREL flags 0000 v5", v5, raw(0x60, b(0, 1)), M},
		{"[MQTT-3.8.1-1] SUBSCRIBE flags 0000", v4, raw(0x80, b(0, 1), str("a"), b(0)), M},
		{"[MQTT-3.10.1-1] UNSUBSCRIBE flags 0011", v5, raw(0xA3, b(0, 1, 0), str("a")), M},
		{"[MQTT-2.2.2-2] CONNECT flags 0001", v4, raw(0x11, mqtt, b(4, 2, 0, 0), cid), M},
		{"[MQTT-2.2.2-1] CONNACK flags 0100", v4, raw(0x24, b(0, 0)), M},
		{"[MQTT-2.2.2-1] PINGREQ flags 1000", v4, raw(0xC8), M},
		{"[MQTT-2.2.2-1] DISCONNECT flags 0010", v5, raw(0xE2), M},
		{"[MQTT-2.2.2-1] SUBACK flags 0010", v4, raw(0x92, b(0, 1, 0)), M},
		{"reserved packet type 0", v4, raw(0x00), M},
		{"AUTH is reserved before v5", v4, raw(0xF0), M},

		// PUBLISH.
		{"[MQTT-3.3.1-4] PUBLISH QoS 3", v4, raw(0x36, str("a"), b(0, 1)), M},
		{"[MQTT-3.3.1-4] PUBLISH QoS 3 v5", v5, raw(0x36, str("a"), b(0, 1, 0)), M},
		{"[MQTT-3.3.1-2] PUBLISH DUP with QoS 0", v4, raw(0x38, str("a")), M},
		{"[MQTT-3.3.1-2] PUBLISH DUP with QoS 0 v3.1", v3, raw(0x38, str("a")), M},
		{"[MQTT-2.3.1-1] PUBLISH QoS 1 packet id 0", v4, raw(0x32, str("a"), b(0, 0)), P},
		{"[MQTT-2.2.1-3] PUBLISH QoS 2 packet id 0 v5", v5, raw(0x34, str("a"), b(0, 0, 0)), P},
		{"[MQTT-3.3.2-1] [MQTT-1.5.4-1] PUBLISH topic invalid UTF-8", v4, raw(0x30, str("a\xC3\x28")), M},
		{"[MQTT-1.5.4-1] PUBLISH topic with surrogate", v5, raw(0x30, str("\xED\xA0\x80"), b(0)), M},
		{"[MQTT-1.5.4-2] PUBLISH topic with U+0000", v4, raw(0x30, str("a\x00b")), M},
		{"[MQTT-1.5.4-1] PUBLISH topic overlong encoding", v4, raw(0x30, str("\xC0\xAF")), M},
		{"[MQTT-4.7.3-1] PUBLISH empty topic v3.1.1", v4, raw(0x30, str(""), b('x')), M},
		{"PUBLISH empty topic without Topic Alias v5 (3.3.2.1)", v5, raw(0x30, str(""), b(0)), P},
		{"PUBLISH empty topic with other properties but no alias v5", v5, raw(0x30, str(""), b(2, 0x01, 0)), P},
		{"PUBLISH topic length past end", v4, raw(0x30, b(0, 5, 'a')), M},
		{"PUBLISH missing topic", v4, raw(0x30), M},
		{"PUBLISH truncated packet id", v4, raw(0x32, str("a"), b(0)), M},
		{"PUBLISH missing property length v5", v5, raw(0x30, str("a")), M},
		{"PUBLISH property length past end v5", v5, raw(0x30, str("a"), b(9, 0x01, 0)), M},
		{"PUBLISH property value past property length v5", v5, raw(0x30, str("a"), b(2, 0x02, 0, 0, 0, 1)), M},
		{"PUBLISH property not allowed: Reason String v5", v5, raw(0x30, str("a"), b(4, 0x1F), str("x")), M},
		{"PUBLISH property not allowed: Session Expiry v5", v5, raw(0x30, str("a"), b(5, 0x11, 0, 0, 0, 1)), M},
		{"PUBLISH unknown property 0x04 v5", v5, raw(0x30, str("a"), b(2, 0x04, 0)), M},
		{"[MQTT-1.5.5-1] PUBLISH property id not minimally encoded v5", v5, raw(0x30, str("a"), b(3, 0x81, 0x00, 0)), M},
		{"PUBLISH Topic Alias twice v5", v5, raw(0x30, str("a"), b(6, 0x23, 0, 1, 0x23, 0, 2)), P},
		{"PUBLISH Payload Format twice v5", v5, raw(0x30, str("a"), b(4, 0x01, 0, 0x01, 0)), P},
		{"PUBLISH Content Type twice v5", v5, raw(0x30, str("a"), b(8, 0x03), str("a"), b(0x03), str("b")), P},
		{"[MQTT-3.3.2-8] PUBLISH Topic Alias 0 v5 (0x94)", v5, raw(0x30, str("a"), b(3, 0x23, 0, 0)), packet.TopicAliasInvalid},
		{"PUBLISH Payload Format 2 v5 (3.3.2.3.2)", v5, raw(0x30, str("a"), b(2, 0x01, 2)), P},
		{"PUBLISH Subscription Identifier 0 v5 (3.3.2.3.8)", v5, raw(0x30, str("a"), b(2, 0x0B, 0)), P},
		{"PUBLISH Subscription Identifier not minimal v5", v5, raw(0x30, str("a"), b(3, 0x0B, 0x81, 0x00)), M},
		{"[MQTT-1.5.4-1] PUBLISH User Property invalid UTF-8 v5", v5, raw(0x30, str("a"), b(7, 0x26), str("\xFF"), str("v")), M},
		{"[MQTT-1.5.4-2] PUBLISH Response Topic with U+0000 v5", v5, raw(0x30, str("a"), b(5, 0x08), str("a\x00")), M},

		// CONNECT.
		{"[MQTT-3.1.2-1] CONNECT protocol name MQTX", v4, raw(0x10, str("MQTX"), b(4, 2, 0, 0), cid), P},
		{"[MQTT-3.1.2-1] CONNECT protocol name mqtt", v4, raw(0x10, str("mqtt"), b(4, 2, 0, 0), cid), P},
		{"CONNECT protocol name invalid UTF-8", v4, raw(0x10, str("\xFF"), b(4, 2, 0, 0), cid), M},
		{"CONNECT truncated protocol level", v4, raw(0x10, mqtt), M},
		{"[MQTT-3.1.2-2] CONNECT level 6", v4, raw(0x10, mqtt, b(6, 2, 0, 0), cid), packet.UnsupportedProtocolVersion},
		{"[MQTT-3.1.2-2] CONNECT MQTT level 3", v4, raw(0x10, mqtt, b(3, 2, 0, 0), cid), packet.UnsupportedProtocolVersion},
		{"[MQTT-3.1.2-2] CONNECT MQIsdp level 4", v4, raw(0x10, mqisdp, b(4, 2, 0, 0), cid), packet.UnsupportedProtocolVersion},
		{"[MQTT-3.1.2-3] CONNECT reserved flag", v4, raw(0x10, mqtt, b(4, 3, 0, 0), cid), M},
		{"[MQTT-3.1.2-3] CONNECT reserved flag v5", v5, raw(0x10, mqtt, b(5, 3, 0, 0, 0), cid), M},
		{"[MQTT-3.1.2-13] CONNECT will QoS 1 without will flag", v4, raw(0x10, mqtt, b(4, 0x0A, 0, 0), cid), M},
		{"[MQTT-3.1.2-11] CONNECT will QoS 2 without will flag v5", v5, raw(0x10, mqtt, b(5, 0x12, 0, 0, 0), cid), M},
		{"[MQTT-3.1.2-15] CONNECT will retain without will flag", v4, raw(0x10, mqtt, b(4, 0x22, 0, 0), cid), M},
		{"[MQTT-3.1.2-13] CONNECT will retain without will flag v5", v5, raw(0x10, mqtt, b(5, 0x22, 0, 0, 0), cid), M},
		{"[MQTT-3.1.2-14] CONNECT will QoS 3", v4, raw(0x10, mqtt, b(4, 0x1E, 0, 0), cid, str("w"), str("p")), M},
		{"[MQTT-3.1.2-12] CONNECT will QoS 3 v5", v5, raw(0x10, mqtt, b(5, 0x1E, 0, 0, 0), cid, b(0), str("w"), str("p")), M},
		{"[MQTT-3.1.2-22] CONNECT password without user name", v4, raw(0x10, mqtt, b(4, 0x42, 0, 0), cid, str("p")), M},
		{"[MQTT-3.1.2-22] CONNECT password without user name v3.1", v3, raw(0x10, mqisdp, b(3, 0x42, 0, 0), cid, str("p")), M},
		{"[MQTT-3.1.3-4] CONNECT client id invalid UTF-8", v4, raw(0x10, mqtt, b(4, 2, 0, 0), str("\xC3")), M},
		{"[MQTT-3.1.3-4] CONNECT client id with U+0000", v4, raw(0x10, mqtt, b(4, 2, 0, 0), str("a\x00")), M},
		{"[MQTT-3.1.3-10] CONNECT will topic invalid UTF-8", v4, raw(0x10, mqtt, b(4, 0x06, 0, 0), cid, str("\xED\xBF\xBF"), str("p")), M},
		{"[MQTT-3.1.3-11] CONNECT user name with U+0000", v4, raw(0x10, mqtt, b(4, 0x82, 0, 0), cid, str("\x00")), M},
		{"[MQTT-3.1.3-12] CONNECT user name invalid UTF-8 v5", v5, raw(0x10, mqtt, b(5, 0x82, 0, 0, 0), cid, str("\x80")), M},
		{"CONNECT missing client id", v4, raw(0x10, mqtt, b(4, 2, 0, 0)), M},
		{"CONNECT missing will payload", v4, raw(0x10, mqtt, b(4, 0x06, 0, 0), cid, str("w")), M},
		{"CONNECT missing password", v4, raw(0x10, mqtt, b(4, 0xC2, 0, 0), cid, str("u")), M},
		{"CONNECT trailing bytes", v4, raw(0x10, mqtt, b(4, 2, 0, 0), cid, b(0)), M},
		{"CONNECT Receive Maximum 0 v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 3, 0x21, 0, 0), cid), P},
		{"CONNECT Maximum Packet Size 0 v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 5, 0x27, 0, 0, 0, 0), cid), P},
		{"CONNECT Request Problem Information 2 v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 2, 0x17, 2), cid), P},
		{"CONNECT Request Response Information 2 v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 2, 0x19, 2), cid), P},
		{"CONNECT Session Expiry twice v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1), cid), P},
		{"CONNECT Authentication Method twice v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 8, 0x15), str("a"), b(0x15), str("a"), cid), P},
		{"CONNECT property not allowed: Topic Alias v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 3, 0x23, 0, 1), cid), M},
		{"CONNECT property not allowed: Will Delay v5", v5, raw(0x10, mqtt, b(5, 2, 0, 0, 5, 0x18, 0, 0, 0, 1), cid), M},
		{"CONNECT will property not allowed: Session Expiry v5", v5, raw(0x10, mqtt, b(5, 0x06, 0, 0, 0), cid, b(5, 0x11, 0, 0, 0, 1), str("w"), str("p")), M},
		{"CONNECT will Payload Format 3 v5", v5, raw(0x10, mqtt, b(5, 0x06, 0, 0, 0), cid, b(2, 0x01, 3), str("w"), str("p")), P},
		{"CONNECT will property length past end v5", v5, raw(0x10, mqtt, b(5, 0x06, 0, 0, 0), cid, b(40)), M},

		// CONNACK.
		{"CONNACK reserved acknowledge flags (3.2.2.1)", v4, raw(0x20, b(0x02, 0)), M},
		{"CONNACK reserved acknowledge flags v5", v5, raw(0x20, b(0x80, 0, 0)), M},
		{"CONNACK reserved return code 6", v4, raw(0x20, b(0, 6)), M},
		{"CONNACK reserved return code 0x80 v3.1", v3, raw(0x20, b(0, 0x80)), M},
		{"CONNACK reason code 0x01 v5", v5, raw(0x20, b(0, 0x01, 0)), P},
		{"CONNACK reason code 0x8E v5", v5, raw(0x20, b(0, 0x8E, 0)), P},
		{"CONNACK truncated", v4, raw(0x20, b(0)), M},
		{"CONNACK trailing byte", v4, raw(0x20, b(0, 0, 0)), M},
		{"CONNACK missing property length v5", v5, raw(0x20, b(0, 0)), M},
		{"CONNACK Maximum QoS 2 v5", v5, raw(0x20, b(0, 0, 2, 0x24, 2)), P},
		{"CONNACK Retain Available 2 v5", v5, raw(0x20, b(0, 0, 2, 0x25, 2)), P},
		{"CONNACK Wildcard Subscription Available 2 v5", v5, raw(0x20, b(0, 0, 2, 0x28, 2)), P},
		{"CONNACK Subscription Identifiers Available 2 v5", v5, raw(0x20, b(0, 0, 2, 0x29, 2)), P},
		{"CONNACK Shared Subscription Available 2 v5", v5, raw(0x20, b(0, 0, 2, 0x2A, 2)), P},
		{"CONNACK Receive Maximum 0 v5", v5, raw(0x20, b(0, 0, 3, 0x21, 0, 0)), P},
		{"CONNACK Maximum Packet Size 0 v5", v5, raw(0x20, b(0, 0, 5, 0x27, 0, 0, 0, 0)), P},
		{"CONNACK property not allowed: Will Delay v5", v5, raw(0x20, b(0, 0, 5, 0x18, 0, 0, 0, 0)), M},

		// SUBSCRIBE.
		{"[MQTT-3.8.3-3] SUBSCRIBE without filters", v4, raw(0x82, b(0, 1)), P},
		{"[MQTT-3.8.3-2] SUBSCRIBE without filters v5", v5, raw(0x82, b(0, 1, 0)), P},
		{"[MQTT-2.3.1-1] SUBSCRIBE packet id 0", v4, raw(0x82, b(0, 0), str("a"), b(0)), P},
		{"[MQTT-3-8.3-4] SUBSCRIBE QoS byte reserved bits", v4, raw(0x82, b(0, 1), str("a"), b(0x04)), M},
		{"[MQTT-3-8.3-4] SUBSCRIBE QoS 3", v4, raw(0x82, b(0, 1), str("a"), b(3)), M},
		{"[MQTT-3-8.3-4] SUBSCRIBE QoS byte reserved bits v3.1", v3, raw(0x82, b(0, 1), str("a"), b(0x80)), M},
		{"[MQTT-3.8.3-5] SUBSCRIBE options reserved bit 6 v5", v5, raw(0x82, b(0, 1, 0), str("a"), b(0x40)), M},
		{"[MQTT-3.8.3-5] SUBSCRIBE options reserved bit 7 v5", v5, raw(0x82, b(0, 1, 0), str("a"), b(0x81)), M},
		{"SUBSCRIBE QoS 3 v5 (3.8.3.1)", v5, raw(0x82, b(0, 1, 0), str("a"), b(3)), P},
		{"SUBSCRIBE Retain Handling 3 v5 (3.8.3.1)", v5, raw(0x82, b(0, 1, 0), str("a"), b(0x30)), P},
		{"SUBSCRIBE Subscription Identifier 0 v5 (3.8.2.1.2)", v5, raw(0x82, b(0, 1, 2, 0x0B, 0), str("a"), b(0)), P},
		{"SUBSCRIBE two Subscription Identifiers v5", v5, raw(0x82, b(0, 1, 4, 0x0B, 1, 0x0B, 2), str("a"), b(0)), P},
		{"SUBSCRIBE property not allowed: Topic Alias v5", v5, raw(0x82, b(0, 1, 3, 0x23, 0, 1), str("a"), b(0)), M},
		{"SUBSCRIBE missing options byte", v4, raw(0x82, b(0, 1), str("a")), M},
		{"SUBSCRIBE filter length past end", v4, raw(0x82, b(0, 1, 0, 9, 'a')), M},
		{"[MQTT-3.8.3-1] SUBSCRIBE filter invalid UTF-8", v4, raw(0x82, b(0, 1), str("\xFE"), b(0)), M},

		// SUBACK.
		{"[MQTT-3.9.3-1] SUBACK without codes", v4, raw(0x90, b(0, 1)), P},
		{"[MQTT-3.9.3-1] SUBACK without codes v5", v5, raw(0x90, b(0, 1, 0)), P},
		{"[MQTT-3.9.3-2] SUBACK reserved return code 3", v4, raw(0x90, b(0, 1, 3)), M},
		{"[MQTT-3.9.3-2] SUBACK reserved return code 0x81", v4, raw(0x90, b(0, 1, 0x81)), M},
		{"SUBACK reason code 0x03 v5", v5, raw(0x90, b(0, 1, 0, 3)), P},
		{"SUBACK packet id 0", v4, raw(0x90, b(0, 0, 0)), P},
		{"SUBACK property not allowed: User missing value v5", v5, raw(0x90, b(0, 1, 4, 0x26), str("k"), b(0)), M},

		// UNSUBSCRIBE and UNSUBACK.
		{"[MQTT-3.10.3-2] UNSUBSCRIBE without filters", v4, raw(0xA2, b(0, 1)), P},
		{"[MQTT-3.10.3-2] UNSUBSCRIBE without filters v5", v5, raw(0xA2, b(0, 1, 0)), P},
		{"[MQTT-2.3.1-1] UNSUBSCRIBE packet id 0", v4, raw(0xA2, b(0, 0), str("a")), P},
		{"[MQTT-3.10.3-1] UNSUBSCRIBE filter with U+0000", v4, raw(0xA2, b(0, 1), str("\x00")), M},
		{"UNSUBSCRIBE truncated filter", v4, raw(0xA2, b(0, 1, 0)), M},
		{"UNSUBSCRIBE property not allowed: Subscription Identifier v5", v5, raw(0xA2, b(0, 1, 2, 0x0B, 1), str("a")), M},
		{"UNSUBACK trailing byte before v5", v4, raw(0xB0, b(0, 1, 0)), M},
		{"UNSUBACK packet id 0", v4, raw(0xB0, b(0, 0)), P},
		{"UNSUBACK without codes v5", v5, raw(0xB0, b(0, 1, 0)), P},
		{"UNSUBACK missing property length v5", v5, raw(0xB0, b(0, 1)), M},
		{"UNSUBACK reason code 0x01 v5", v5, raw(0xB0, b(0, 1, 0, 1)), P},

		// PUBACK, PUBREC, PUBREL, PUBCOMP.
		{"PUBACK packet id 0", v4, raw(0x40, b(0, 0)), P},
		{"PUBCOMP packet id 0 v5", v5, raw(0x70, b(0, 0)), P},
		{"PUBACK truncated", v4, raw(0x40, b(0)), M},
		{"PUBACK truncated v5", v5, raw(0x40, b(0)), M},
		{"PUBACK trailing byte before v5", v4, raw(0x40, b(0, 1, 0)), M},
		{"PUBREC trailing byte v3.1", v3, raw(0x50, b(0, 1, 0)), M},
		{"PUBACK reason code 0x01 v5", v5, raw(0x40, b(0, 1, 0x01)), P},
		{"PUBREL reason code 0x10 v5", v5, raw(0x62, b(0, 1, 0x10)), P},
		{"PUBCOMP reason code 0x80 v5", v5, raw(0x70, b(0, 1, 0x80)), P},
		{"PUBREC property length past end v5", v5, raw(0x50, b(0, 1, 0, 5)), M},
		{"PUBACK property not allowed: Topic Alias v5", v5, raw(0x40, b(0, 1, 0, 3, 0x23, 0, 1)), M},
		{"PUBACK Reason String twice v5", v5, raw(0x40, b(0, 1, 0, 8, 0x1F), str("a"), b(0x1F), str("b")), P},
		{"PUBACK trailing byte after properties v5", v5, raw(0x40, b(0, 1, 0, 0, 0)), M},

		// PINGREQ, PINGRESP, DISCONNECT, AUTH.
		{"PINGREQ with body", v4, raw(0xC0, b(0)), M},
		{"PINGRESP with body v5", v5, raw(0xD0, b(0)), M},
		{"DISCONNECT with body before v5", v4, raw(0xE0, b(0)), M},
		{"DISCONNECT reason code 0x05 v5", v5, raw(0xE0, b(0x05)), P},
		{"DISCONNECT property not allowed: Topic Alias v5", v5, raw(0xE0, b(0, 3, 0x23, 0, 1)), M},
		{"DISCONNECT Session Expiry twice v5", v5, raw(0xE0, b(0, 10, 0x11, 0, 0, 0, 0, 0x11, 0, 0, 0, 0)), P},
		{"AUTH reason code 0x01 v5", v5, raw(0xF0, b(0x01, 0)), P},
		{"AUTH property not allowed: Session Expiry v5", v5, raw(0xF0, b(0x18, 5, 0x11, 0, 0, 0, 0)), M},
		{"AUTH Authentication Data twice v5", v5, raw(0xF0, b(0x18, 8, 0x16, 0, 1, 1, 0x16, 0, 1, 1)), P},
	}
}

func TestDecodeMalformed(t *testing.T) {
	for _, tc := range malformedCases() {
		t.Run(tc.name, func(t *testing.T) {
			p, err := packet.Read(bufio.NewReader(bytes.NewReader(tc.raw)), tc.v, 0)
			if err == nil {
				t.Fatalf("decoded % X as %v, want error", tc.raw, p)
			}
			var rc packet.ReasonCode
			if !errors.As(err, &rc) {
				t.Fatalf("error %q wraps no ReasonCode", err)
			}
			if rc != tc.want {
				t.Fatalf("error %q: reason code %#x, want %#x (%v)", err, byte(rc), byte(tc.want), tc.want)
			}
			if !strings.HasPrefix(err.Error(), "packet: ") {
				t.Fatalf("error %q does not name the package", err)
			}
			if tc.want != packet.UnsupportedProtocolVersion && p != nil {
				t.Fatalf("got packet %v with error", p)
			}
		})
	}
}

// TestErrorMessage pins the documented wording.
func TestErrorMessage(t *testing.T) {
	_, err := packet.Decode(packet.FixedHeader{Type: packet.PUBLISH, Flags: 0x06, Remaining: 3}, []byte{0, 1, 'a'}, packet.V311)
	if err == nil || err.Error() != "packet: PUBLISH: QoS 3: malformed packet" {
		t.Fatalf("got %v", err)
	}
}

// TestConnectUnsupportedLevel checks that the partly decoded CONNECT comes
// back with the error so the broker can answer with CONNACK 0x01 / 0x84
// [MQTT-3.1.2-2].
func TestConnectUnsupportedLevel(t *testing.T) {
	for _, tc := range []struct {
		name  string
		level byte
	}{{"MQTT", 6}, {"MQTT", 3}, {"MQTT", 0}, {"MQIsdp", 4}, {"MQIsdp", 5}} {
		_, err := packet.Read(bufio.NewReader(bytes.NewReader(raw(0x10, str(tc.name), b(tc.level, 2, 0, 0), cid))), 0, 0)
		body := bytes.Join([][]byte{str(tc.name), b(tc.level, 2, 0, 0), cid}, nil)
		p, err2 := packet.Decode(packet.FixedHeader{Type: packet.CONNECT, Remaining: len(body)}, body, 0)
		for _, e := range []error{err, err2} {
			if !errors.Is(e, packet.UnsupportedProtocolVersion) {
				t.Fatalf("%s level %d: error %v", tc.name, tc.level, e)
			}
		}
		c, ok := p.(*packet.Connect)
		if !ok || c.ProtocolName != tc.name || c.Version != packet.Version(tc.level) {
			t.Fatalf("%s level %d: partial packet %#v", tc.name, tc.level, p)
		}
	}
}

// TestV31Lenient: MQTT 3.1 has no reserved-flag rule (its PUBREL, SUBSCRIBE
// and UNSUBSCRIBE may carry DUP) and no session present flag.
func TestV31Lenient(t *testing.T) {
	for _, tc := range []struct {
		raw  []byte
		want packet.Packet
	}{
		{raw(0x6A, b(0, 1)), &packet.Pubrel{PacketID: 1}},
		{raw(0x8A, b(0, 1), str("a"), b(1)), &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a", QoS: 1}}}},
		{raw(0xAA, b(0, 1), str("a")), &packet.Unsubscribe{PacketID: 1, Filters: []string{"a"}}},
		{raw(0x20, b(0xFF, 0)), &packet.Connack{}},
	} {
		got := readAll(t, tc.raw, packet.V31)
		if !equalPacket(got, tc.want) {
			t.Errorf("% X: got %#v, want %#v", tc.raw, got, tc.want)
		}
	}
}

func TestDecodeBodyLengthMismatch(t *testing.T) {
	_, err := packet.Decode(packet.FixedHeader{Type: packet.PUBACK, Remaining: 3}, []byte{0, 1}, packet.V311)
	if !errors.Is(err, packet.MalformedPacket) {
		t.Fatalf("got %v", err)
	}
	_, err = packet.Decode(packet.FixedHeader{Type: packet.PUBACK, Remaining: 2}, []byte{0, 1}, 0)
	if !errors.Is(err, packet.ProtocolError) {
		t.Fatalf("unknown connection version: got %v", err)
	}
}

func TestVarint(t *testing.T) {
	for _, tc := range []struct {
		v    uint32
		want []byte
	}{
		{0, b(0x00)}, {127, b(0x7F)}, {128, b(0x80, 0x01)}, {16383, b(0xFF, 0x7F)},
		{16384, b(0x80, 0x80, 0x01)}, {2097151, b(0xFF, 0xFF, 0x7F)},
		{2097152, b(0x80, 0x80, 0x80, 0x01)}, {packet.MaxRemainingLength, b(0xFF, 0xFF, 0xFF, 0x7F)},
	} {
		got := packet.AppendVarint(nil, tc.v)
		if !bytes.Equal(got, tc.want) || packet.VarintLen(tc.v) != len(tc.want) {
			t.Errorf("AppendVarint(%d) = % X (len %d), want % X", tc.v, got, packet.VarintLen(tc.v), tc.want)
		}
		v, err := packet.ReadVarint(bytes.NewReader(tc.want))
		if err != nil || v != tc.v {
			t.Errorf("ReadVarint(% X) = %d, %v", tc.want, v, err)
		}
	}
	if packet.VarintLen(packet.MaxRemainingLength+1) != 0 {
		t.Error("VarintLen accepts a value above the maximum")
	}
	for _, bad := range [][]byte{
		b(0x80, 0x00),                   // [MQTT-1.5.5-1] not minimal
		b(0xFF, 0x80, 0x00),             // [MQTT-1.5.5-1] not minimal
		b(0x80, 0x80, 0x80, 0x00),       // [MQTT-1.5.5-1] not minimal
		b(0xFF, 0xFF, 0xFF, 0xFF, 0x7F), // five bytes
	} {
		if _, err := packet.ReadVarint(bytes.NewReader(bad)); !errors.Is(err, packet.MalformedPacket) {
			t.Errorf("ReadVarint(% X): %v, want MalformedPacket", bad, err)
		}
	}
}

func TestReadFixedHeader(t *testing.T) {
	fh, err := packet.ReadFixedHeader(bytes.NewReader(b(0x3B, 0x80, 0x01)))
	if err != nil || fh != (packet.FixedHeader{Type: packet.PUBLISH, Flags: 0x0B, Remaining: 128}) {
		t.Fatalf("got %+v, %v", fh, err)
	}
	if _, err := packet.ReadFixedHeader(bytes.NewReader(nil)); err != io.EOF {
		t.Fatalf("EOF at byte 0: got %v, want io.EOF untouched", err)
	}
	for _, in := range [][]byte{b(0x30), b(0x30, 0x80), b(0x30, 0xFF, 0xFF, 0xFF)} {
		if _, err := packet.ReadFixedHeader(bytes.NewReader(in)); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("% X: got %v, want io.ErrUnexpectedEOF", in, err)
		}
	}
	for _, in := range [][]byte{b(0x30, 0x80, 0x00), b(0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01)} {
		if _, err := packet.ReadFixedHeader(bytes.NewReader(in)); !errors.Is(err, packet.MalformedPacket) {
			t.Errorf("% X: got %v, want MalformedPacket", in, err)
		}
	}
	if got := packet.AppendFixedHeader(nil, packet.SUBSCRIBE, 2, 321); !bytes.Equal(got, b(0x82, 0xC1, 0x02)) {
		t.Errorf("AppendFixedHeader: % X", got)
	}
}

func TestReadMaxSize(t *testing.T) {
	pkt := raw(0x30, str("t"), bytes.Repeat([]byte{'x'}, 200)) // 3 + 203 bytes
	// A reader that fails if the body is read: the size check comes first.
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(pkt[:3]), failReader{t}), 16)
	_, err := packet.Read(r, packet.V311, len(pkt)-1)
	if !errors.Is(err, packet.PacketTooLarge) {
		t.Fatalf("got %v, want PacketTooLarge", err)
	}
	if _, err := packet.Read(bufio.NewReader(bytes.NewReader(pkt)), packet.V311, len(pkt)); err != nil {
		t.Fatalf("packet of exactly maxSize: %v", err)
	}
	// A huge announced length is refused without allocating it.
	huge := b(0x30, 0xFF, 0xFF, 0xFF, 0x7F)
	// Counted in bytes, not allocations: the race detector and parallel
	// tests add small allocations of their own.
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range 10 {
		_, err = packet.Read(bufio.NewReaderSize(bytes.NewReader(huge), 16), packet.V311, 1024)
	}
	runtime.ReadMemStats(&after)
	if !errors.Is(err, packet.PacketTooLarge) {
		t.Fatalf("got %v", err)
	}
	if grew := after.TotalAlloc - before.TotalAlloc; grew > 1<<20 {
		t.Fatalf("%d bytes allocated rejecting a huge packet 10 times", grew)
	}
}

type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("body read before the size check")
	return 0, io.EOF
}

func TestReadTruncatedBody(t *testing.T) {
	pkt := raw(0x30, str("t"), b('x', 'y'))
	_, err := packet.Read(bufio.NewReader(bytes.NewReader(pkt[:len(pkt)-1])), packet.V311, 0)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("got %v, want io.ErrUnexpectedEOF", err)
	}
	if _, err := packet.Read(bufio.NewReader(bytes.NewReader(nil)), packet.V311, 0); err != io.EOF {
		t.Fatalf("empty stream: got %v, want io.EOF", err)
	}
}

func TestValidUTF8(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"", true}, {"a/b", true}, {"é€𝄞", true}, {"\uFEFFbom", true}, {"\u007F\u0001", true},
		{"a\x00", false},                  // [MQTT-1.5.4-2]
		{"é\x00", false},                  // [MQTT-1.5.4-2] after a multi-byte rune
		{"\xED\xA0\x80", false},           // [MQTT-1.5.4-1] surrogate U+D800
		{"a\xED\xBF\xBF", false},          // [MQTT-1.5.4-1] surrogate U+DFFF
		{"\xC0\x80", false},               // overlong U+0000
		{"\xF4\x90\x80\x80", false},       // above U+10FFFF
		{"\xFF", false}, {"é\xC3", false}, // truncated
	} {
		if got := packet.ValidUTF8(tc.s); got != tc.want {
			t.Errorf("ValidUTF8(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}
