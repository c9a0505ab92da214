package packet_test

import (
	"bufio"
	"bytes"
	"fmt"
	"strings"
	"testing"
	"unsafe"

	"github.com/mqttd/mqttd/internal/packettest"
	"github.com/mqttd/mqttd/packet"
)

// TestDecodeAliasesBody checks the zero-copy contract: a decoded PUBLISH's
// topic and payload point into the body, and the payload's capacity ends at
// its length so appending cannot overwrite the body.
func TestDecodeAliasesBody(t *testing.T) {
	raw := bytes.Clone(packettest.PublishV5.Bytes)
	fh, err := packet.ReadFixedHeader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	body := raw[len(raw)-fh.Remaining:]
	p, err := packet.Decode(fh, body, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	pub := p.(*packet.Publish)
	if unsafe.StringData(pub.Topic) != &body[2] {
		t.Error("topic does not alias the body")
	}
	if &pub.Payload[0] != &body[len(body)-2] || cap(pub.Payload) != len(pub.Payload) {
		t.Errorf("payload does not alias the body or is not capped (cap %d)", cap(pub.Payload))
	}
	if cd := pub.Props.CorrelationData; cap(cd) != len(cd) {
		t.Error("correlation data not capped")
	}
}

// TestReadOwnsBody checks that Read copies: reusing the reader's buffer
// leaves the packet intact.
func TestReadOwnsBody(t *testing.T) {
	buf := bytes.Clone(packettest.PublishV311QoS0.Bytes)
	p, err := packet.Read(bufio.NewReader(bytes.NewReader(buf)), packet.V311, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := range buf {
		buf[i] = 0
	}
	if pub := p.(*packet.Publish); pub.Topic != "a/b" || string(pub.Payload) != "hello" {
		t.Fatalf("packet changed with the input buffer: %v", pub)
	}
}

func TestString(t *testing.T) {
	for _, tc := range []struct {
		p       packet.Packet
		want    []string
		notWant []string
	}{
		{&packet.Publish{QoS: 1, PacketID: 12, Topic: "a/b", Retain: true, Dup: true, Payload: []byte("SECRET")},
			[]string{"PUBLISH", "id=12", `"a/b"`, "qos=1", "retain", "dup", "len=6"}, []string{"SECRET"}},
		{packettest.ConnectV311Full.Packet, []string{"CONNECT", `"c1"`, `user="user"`, "clean", `will="will/t"`},
			[]string{`"pass"`, "bye"}},
		{&packet.Connack{SessionPresent: true, ReasonCode: packet.NotAuthorized}, []string{"CONNACK", "0x87", "session-present"}, nil},
		{&packet.Puback{PacketID: 3, ReasonCode: packet.QuotaExceeded}, []string{"PUBACK", "id=3", "0x97"}, nil},
		{&packet.Pubrec{PacketID: 4}, []string{"PUBREC", "id=4"}, nil},
		{&packet.Pubrel{PacketID: 5}, []string{"PUBREL", "id=5"}, nil},
		{&packet.Pubcomp{PacketID: 6}, []string{"PUBCOMP", "id=6"}, nil},
		{packettest.SubscribeV5.Packet, []string{"SUBSCRIBE", "id=9", `"a/+":qos1,nl,rap,rh2`, `"$share/g/t":qos0`}, nil},
		{packettest.SubackV5.Packet, []string{"SUBACK", "id=9", "0x01,0x9E"}, nil},
		{packettest.UnsubscribeV5.Packet, []string{"UNSUBSCRIBE", "id=10", `"a/+"`}, nil},
		{packettest.UnsubackV5.Packet, []string{"UNSUBACK", "id=10"}, nil},
		{&packet.Pingreq{}, []string{"PINGREQ"}, nil},
		{&packet.Pingresp{}, []string{"PINGRESP"}, nil},
		{&packet.Disconnect{ReasonCode: packet.SessionTakenOver}, []string{"DISCONNECT", "0x8E"}, nil},
		{packettest.AuthV5.Packet, []string{"AUTH", "0x18", `"SCRAM"`}, []string{"\x01\x02\x03"}},
	} {
		s := fmt.Sprint(tc.p)
		for _, w := range tc.want {
			if !strings.Contains(s, w) {
				t.Errorf("%s: missing %q", s, w)
			}
		}
		for _, w := range tc.notWant {
			if strings.Contains(s, w) {
				t.Errorf("%s: shows %q", s, w)
			}
		}
	}
}

func TestPropertyTables(t *testing.T) {
	if !packet.PropAllowed(packet.PropTopicAlias, packet.PUBLISH) || packet.PropAllowed(packet.PropTopicAlias, packet.CONNECT) {
		t.Error("Topic Alias placement")
	}
	if !packet.PropAllowed(packet.PropUser, packet.AUTH) || packet.PropAllowed(packet.PropUser, packet.PINGREQ) {
		t.Error("User Property placement")
	}
	if packet.PropName(packet.PropServerReference) != "Server Reference" || packet.PropName(0x04) != "property 0x04" {
		t.Error("PropName")
	}
	if !packet.ValidReason(packet.PUBACK, packet.NoMatchingSubscribers) || packet.ValidReason(packet.PUBREL, packet.NoMatchingSubscribers) {
		t.Error("ValidReason")
	}
	var nilProps *packet.Properties
	if nilProps.Len() != 0 || !nilProps.IsEmpty() || !(&packet.Properties{}).IsEmpty() {
		t.Error("empty properties")
	}
	// Len matches the encoded size for every property.
	p := fullProps(packet.CONNACK, false)
	c := &packet.Connack{Props: p}
	enc := encode(t, c, packet.V5)
	if want := len(enc) - 2 - 2 - packet.VarintLen(uint32(p.Len())); p.Len() != want {
		t.Errorf("Len %d, encoded %d", p.Len(), want)
	}
	if packet.Size(p.Len()+2+1) != len(enc) {
		t.Errorf("Size")
	}
}
