package packet_test

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/mqttd/mqttd/packet"
)

var allVersions = []packet.Version{packet.V31, packet.V311, packet.V5}

// fullProps returns properties valid in packet type t (with will=true, valid
// in a will), with every allowed property set.
func fullProps(t packet.Type, will bool) *packet.Properties {
	p := &packet.Properties{User: []packet.UserProperty{{Key: "k1", Value: "v1"}, {Key: "k1", Value: "v2"}, {Key: "", Value: ""}}}
	switch {
	case will:
		p.PayloadFormat = packet.Ptr[byte](0)
		p.MessageExpiry = packet.Ptr[uint32](0xFFFFFFFF)
		p.ContentType = "application/json"
		p.ResponseTopic = "resp/τ"
		p.CorrelationData = []byte{0, 1, 2}
		p.WillDelay = packet.Ptr[uint32](10)
	case t == packet.CONNECT:
		p.SessionExpiry = packet.Ptr[uint32](0xFFFFFFFF)
		p.AuthMethod = "SCRAM-SHA-1"
		p.AuthData = []byte("client-first")
		p.RequestProblemInfo = packet.Ptr[byte](0)
		p.RequestResponseInfo = packet.Ptr[byte](1)
		p.ReceiveMaximum = packet.Ptr[uint16](65535)
		p.TopicAliasMaximum = packet.Ptr[uint16](0)
		p.MaximumPacketSize = packet.Ptr[uint32](268435460)
	case t == packet.CONNACK:
		p.SessionExpiry = packet.Ptr[uint32](7200)
		p.AssignedClientID = "auto-XYZ"
		p.ServerKeepAlive = packet.Ptr[uint16](0)
		p.AuthMethod = "SCRAM-SHA-1"
		p.AuthData = []byte{9}
		p.ResponseInfo = "resp/"
		p.ServerReference = "other:1883"
		p.ReasonString = "fine"
		p.ReceiveMaximum = packet.Ptr[uint16](1)
		p.TopicAliasMaximum = packet.Ptr[uint16](65535)
		p.MaximumQoS = packet.Ptr[byte](0)
		p.RetainAvailable = packet.Ptr[byte](1)
		p.MaximumPacketSize = packet.Ptr[uint32](1)
		p.WildcardSubAvailable = packet.Ptr[byte](0)
		p.SubIDAvailable = packet.Ptr[byte](1)
		p.SharedSubAvailable = packet.Ptr[byte](0)
	case t == packet.PUBLISH:
		p.PayloadFormat = packet.Ptr[byte](1)
		p.MessageExpiry = packet.Ptr[uint32](1)
		p.ContentType = "text/plain"
		p.ResponseTopic = "r/1"
		p.CorrelationData = bytes.Repeat([]byte{0xFF}, 300)
		p.SubscriptionIDs = []uint32{1, 127, 128, 16383, 16384, 2097151, 2097152, packet.MaxRemainingLength}
		p.TopicAlias = packet.Ptr[uint16](65535)
	case t == packet.SUBSCRIBE:
		p.SubscriptionIDs = []uint32{packet.MaxRemainingLength}
	case t == packet.DISCONNECT:
		p.SessionExpiry = packet.Ptr[uint32](30)
		p.ServerReference = "srv"
		p.ReasonString = "bye"
	case t == packet.AUTH:
		p.AuthMethod = "GS2-KRB5"
		p.AuthData = []byte{1}
		p.ReasonString = "go on"
	case t == packet.UNSUBSCRIBE:
	default: // acks, SUBACK, UNSUBACK
		p.ReasonString = "why"
	}
	return p
}

type rtCase struct {
	name string
	v    []packet.Version // nil: all versions
	p    packet.Packet
}

func roundTripCases() []rtCase {
	long := strings.Repeat("x", 65535)
	big := bytes.Repeat([]byte{0xAB}, 2_100_000) // 4-byte remaining length
	return []rtCase{
		{"CONNECT minimal", nil, &packet.Connect{}},
		{"CONNECT clean keepalive", nil, &packet.Connect{CleanStart: true, KeepAlive: 65535, ClientID: "id-ü"}},
		{"CONNECT will QoS 2 retain user password", nil, &packet.Connect{ClientID: "c", KeepAlive: 1,
			Will:     &packet.Will{Topic: "w/t", Payload: []byte{0, 1}, QoS: 2, Retain: true},
			Username: "u", HasUsername: true, Password: []byte{0, 0xFF}, HasPassword: true}},
		{"CONNECT will QoS 0 empty payload", nil, &packet.Connect{Will: &packet.Will{Topic: "w"}}},
		{"CONNECT empty user name and password", nil, &packet.Connect{ClientID: "c", HasUsername: true, HasPassword: true}},
		{"CONNECT 65535-byte client id", nil, &packet.Connect{ClientID: long}},
		{"CONNECT v5 all properties", []packet.Version{packet.V5}, &packet.Connect{ClientID: "c", CleanStart: true,
			Props: fullProps(packet.CONNECT, false),
			Will:  &packet.Will{Topic: "w", Payload: []byte("p"), QoS: 1, Props: fullProps(0, true)}}},
		{"CONNECT v5 password only", []packet.Version{packet.V5}, &packet.Connect{Password: []byte("x"), HasPassword: true}},

		{"CONNACK accepted", nil, &packet.Connack{}},
		{"CONNACK session present", []packet.Version{packet.V311, packet.V5}, &packet.Connack{SessionPresent: true}},
		{"CONNACK unsupported protocol", nil, &packet.Connack{ReasonCode: packet.UnsupportedProtocolVersion}},
		{"CONNACK server unavailable", nil, &packet.Connack{ReasonCode: packet.ServerUnavailable}},
		{"CONNACK bad user name", nil, &packet.Connack{ReasonCode: packet.BadUserNameOrPassword}},
		{"CONNACK v5 all properties", []packet.Version{packet.V5}, &packet.Connack{ReasonCode: packet.Success,
			SessionPresent: true, Props: fullProps(packet.CONNACK, false)}},
		{"CONNACK v5 quota exceeded", []packet.Version{packet.V5}, &packet.Connack{ReasonCode: packet.QuotaExceeded}},

		{"PUBLISH QoS 0 empty payload", nil, &packet.Publish{Topic: "t"}},
		{"PUBLISH QoS 1", nil, &packet.Publish{QoS: 1, PacketID: 1, Topic: "a/b/c", Payload: []byte("x")}},
		{"PUBLISH QoS 2 dup retain", nil, &packet.Publish{QoS: 2, Dup: true, Retain: true, PacketID: 65535, Topic: "€/𝄞", Payload: []byte{0}}},
		{"PUBLISH 127-byte body", nil, &packet.Publish{Topic: "t", Payload: make([]byte, 124)}},
		{"PUBLISH 128-byte body", nil, &packet.Publish{Topic: "t", Payload: make([]byte, 125)}},
		{"PUBLISH 16384-byte body", nil, &packet.Publish{Topic: "t", Payload: make([]byte, 16381)}},
		{"PUBLISH 4-byte remaining length", nil, &packet.Publish{QoS: 1, PacketID: 9, Topic: long, Payload: big}},
		{"PUBLISH v5 all properties", []packet.Version{packet.V5}, &packet.Publish{QoS: 1, PacketID: 2, Topic: "t",
			Payload: []byte("p"), Props: fullProps(packet.PUBLISH, false)}},
		{"PUBLISH v5 alias only", []packet.Version{packet.V5}, &packet.Publish{Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](1)}}},

		{"PUBACK", nil, &packet.Puback{PacketID: 1}},
		{"PUBREC", nil, &packet.Pubrec{PacketID: 65535}},
		{"PUBREL", nil, &packet.Pubrel{PacketID: 2}},
		{"PUBCOMP", nil, &packet.Pubcomp{PacketID: 3}},
		{"PUBACK v5 code", []packet.Version{packet.V5}, &packet.Puback{PacketID: 1, ReasonCode: packet.NotAuthorized}},
		{"PUBACK v5 success with properties", []packet.Version{packet.V5}, &packet.Puback{PacketID: 1, Props: fullProps(packet.PUBACK, false)}},
		{"PUBREC v5 code and properties", []packet.Version{packet.V5}, &packet.Pubrec{PacketID: 1, ReasonCode: packet.PayloadFormatInvalid, Props: fullProps(packet.PUBREC, false)}},
		{"PUBREL v5 not found", []packet.Version{packet.V5}, &packet.Pubrel{PacketID: 1, ReasonCode: packet.PacketIdentifierNotFound, Props: fullProps(packet.PUBREL, false)}},
		{"PUBCOMP v5 properties", []packet.Version{packet.V5}, &packet.Pubcomp{PacketID: 1, Props: fullProps(packet.PUBCOMP, false)}},

		{"SUBSCRIBE one", nil, &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "#"}}}},
		{"SUBSCRIBE many", nil, &packet.Subscribe{PacketID: 2, Subscriptions: []packet.Subscription{
			{Filter: "a", QoS: 0}, {Filter: "b/+", QoS: 1}, {Filter: "c/#", QoS: 2}, {Filter: long}}}},
		{"SUBSCRIBE v5 options", []packet.Version{packet.V5}, &packet.Subscribe{PacketID: 3, Props: fullProps(packet.SUBSCRIBE, false),
			Subscriptions: []packet.Subscription{
				{Filter: "a", QoS: 2, NoLocal: true}, {Filter: "b", RetainAsPublished: true, RetainHandling: 1},
				{Filter: "c", RetainHandling: 2}}}},
		{"SUBACK", nil, &packet.Suback{PacketID: 1, ReasonCodes: []packet.ReasonCode{0, 1, 2, 0x80}}},
		{"SUBACK v5", []packet.Version{packet.V5}, &packet.Suback{PacketID: 1, Props: fullProps(packet.SUBACK, false),
			ReasonCodes: []packet.ReasonCode{packet.GrantedQoS2, packet.NotAuthorized, packet.TopicFilterInvalid,
				packet.SubscriptionIDsNotSupported, packet.WildcardSubscriptionsNotSupported}}},
		{"UNSUBSCRIBE", nil, &packet.Unsubscribe{PacketID: 1, Filters: []string{"a", "b/#", "$share/g/+"}}},
		{"UNSUBSCRIBE v5", []packet.Version{packet.V5}, &packet.Unsubscribe{PacketID: 1, Filters: []string{"a"}, Props: fullProps(packet.UNSUBSCRIBE, false)}},
		{"UNSUBACK 3.x", []packet.Version{packet.V31, packet.V311}, &packet.Unsuback{PacketID: 7}},
		{"UNSUBACK v5", []packet.Version{packet.V5}, &packet.Unsuback{PacketID: 7, Props: fullProps(packet.UNSUBACK, false),
			ReasonCodes: []packet.ReasonCode{packet.Success, packet.NoSubscriptionExisted, packet.NotAuthorized}}},
		{"PINGREQ", nil, &packet.Pingreq{}},
		{"PINGRESP", nil, &packet.Pingresp{}},
		{"DISCONNECT", nil, &packet.Disconnect{}},
		{"DISCONNECT v5 code", []packet.Version{packet.V5}, &packet.Disconnect{ReasonCode: packet.KeepAliveTimeout}},
		{"DISCONNECT v5 success with properties", []packet.Version{packet.V5}, &packet.Disconnect{Props: fullProps(packet.DISCONNECT, false)}},
		{"AUTH success", []packet.Version{packet.V5}, &packet.Auth{}},
		{"AUTH re-authenticate no properties", []packet.Version{packet.V5}, &packet.Auth{ReasonCode: packet.ReAuthenticate}},
		{"AUTH continue with properties", []packet.Version{packet.V5}, &packet.Auth{ReasonCode: packet.ContinueAuthentication, Props: fullProps(packet.AUTH, false)}},
	}
}

// normalize sets the fields Decode fills from the wire: a CONNECT's
// protocol name and level.
func normalize(p packet.Packet, v packet.Version) packet.Packet {
	if c, ok := p.(*packet.Connect); ok {
		cc := *c
		cc.Version = v
		cc.ProtocolName = packet.ProtocolName(v)
		return &cc
	}
	return p
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range roundTripCases() {
		vs := tc.v
		if vs == nil {
			vs = allVersions
		}
		for _, v := range vs {
			t.Run(tc.name+"/"+v.String(), func(t *testing.T) {
				want := normalize(tc.p, v)
				b := encode(t, want, v)
				got := readAll(t, b, v)
				if !reflect.DeepEqual(got, want) {
					t.Fatalf("round trip\n got %#v\nwant %#v", got, want)
				}
				// Encoding the decoded packet gives the same bytes.
				if b2 := encode(t, got, v); !bytes.Equal(b, b2) {
					t.Fatalf("re-encoding differs")
				}
			})
		}
	}
}

// TestPublishAppendHeader checks that the header plus the payload is the
// whole packet, for every version.
func TestPublishAppendHeader(t *testing.T) {
	p := &packet.Publish{QoS: 1, PacketID: 5, Topic: "a/b", Payload: []byte("payload"),
		Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](2), SubscriptionIDs: []uint32{3}}}
	for _, v := range allVersions {
		whole := encode(t, p, v)
		hdr, err := p.AppendHeader([]byte("prefix"), v)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasPrefix(hdr, []byte("prefix")) {
			t.Fatalf("%s: AppendHeader dropped dst", v)
		}
		if got := append(hdr[len("prefix"):], p.Payload...); !bytes.Equal(got, whole) {
			t.Fatalf("%s: header+payload % X, want % X", v, got, whole)
		}
	}
}

// TestV3DropsV5Fields checks that fields which 3.x lacks are left out.
func TestV3DropsV5Fields(t *testing.T) {
	props := &packet.Properties{ReasonString: "x"}
	for _, tc := range []struct {
		p    packet.Packet
		want []byte
	}{
		{&packet.Puback{PacketID: 1, ReasonCode: packet.QuotaExceeded, Props: props}, []byte{0x40, 2, 0, 1}},
		{&packet.Disconnect{ReasonCode: packet.ServerBusy, Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](1)}}, []byte{0xE0, 0}},
		{&packet.Unsuback{PacketID: 2, ReasonCodes: []packet.ReasonCode{packet.NoSubscriptionExisted}, Props: props}, []byte{0xB0, 2, 0, 2}},
		{&packet.Suback{PacketID: 3, ReasonCodes: []packet.ReasonCode{packet.NotAuthorized, 1}, Props: props}, []byte{0x90, 4, 0, 3, 0x80, 1}},
		{&packet.Connack{SessionPresent: true, ReasonCode: packet.Banned, Props: props}, []byte{0x20, 2, 1, 5}},
		{&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a", QoS: 1, NoLocal: true, RetainHandling: 2}}},
			[]byte{0x82, 6, 0, 1, 0, 1, 'a', 1}},
		{&packet.Publish{Topic: "a", Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](1)}}, []byte{0x30, 3, 0, 1, 'a'}},
	} {
		if got := encode(t, tc.p, packet.V311); !bytes.Equal(got, tc.want) {
			t.Errorf("%v as 3.1.1: % X, want % X", tc.p, got, tc.want)
		}
	}
	// 3.1 has no session present flag.
	if got := encode(t, &packet.Connack{SessionPresent: true}, packet.V31); !bytes.Equal(got, []byte{0x20, 2, 0, 0}) {
		t.Errorf("CONNACK 3.1: % X", got)
	}
}

func TestEncodeErrors(t *testing.T) {
	long := strings.Repeat("x", 65536)
	max := strings.Repeat("y", 65535)
	// Over 268435455 bytes in all, without allocating them: the same long
	// string many times over.
	manyFilters := make([]packet.Subscription, 4100)
	manyUsers := make([]packet.UserProperty, 2100)
	for i := range manyFilters {
		manyFilters[i].Filter = max
	}
	for i := range manyUsers {
		manyUsers[i] = packet.UserProperty{Key: max, Value: max}
	}
	cases := []struct {
		name     string
		p        packet.Packet
		v        packet.Version
		tooLarge bool
	}{
		{"PUBLISH QoS 3", &packet.Publish{QoS: 3, Topic: "a"}, packet.V311, false},
		{"PUBLISH topic over 65535 bytes", &packet.Publish{Topic: long}, packet.V311, false},
		{"PUBLISH remaining length over maximum", &packet.Publish{Topic: "a", Props: &packet.Properties{User: manyUsers}}, packet.V5, true},
		{"PUBLISH property not allowed", &packet.Publish{Topic: "a", Props: &packet.Properties{ReasonString: "x"}}, packet.V5, false},
		{"PUBLISH subscription id 0", &packet.Publish{Topic: "a", Props: &packet.Properties{SubscriptionIDs: []uint32{0}}}, packet.V5, false},
		{"PUBLISH subscription id too large", &packet.Publish{Topic: "a", Props: &packet.Properties{SubscriptionIDs: []uint32{1 << 28}}}, packet.V5, false},
		{"PUBLISH unknown version", &packet.Publish{Topic: "a"}, 6, false},
		{"CONNECT will QoS 3", &packet.Connect{Will: &packet.Will{Topic: "w", QoS: 3}}, packet.V311, false},
		{"CONNECT client id over 65535 bytes", &packet.Connect{ClientID: long}, packet.V311, false},
		{"CONNECT password over 65535 bytes", &packet.Connect{HasUsername: true, Password: []byte(long)}, packet.V311, false},
		{"CONNECT will payload over 65535 bytes", &packet.Connect{Will: &packet.Will{Topic: "w", Payload: []byte(long)}}, packet.V311, false},
		{"CONNECT password without user name in 3.1.1 [MQTT-3.1.2-22]", &packet.Connect{HasPassword: true}, packet.V311, false},
		{"CONNECT will property not allowed", &packet.Connect{Will: &packet.Will{Topic: "w", Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](1)}}}, packet.V5, false},
		{"CONNECT property not allowed", &packet.Connect{Props: &packet.Properties{WillDelay: packet.Ptr[uint32](1)}}, packet.V5, false},
		{"SUBSCRIBE QoS 3", &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a", QoS: 3}}}, packet.V5, false},
		{"SUBSCRIBE retain handling 3", &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a", RetainHandling: 3}}}, packet.V5, false},
		{"SUBSCRIBE remaining length over maximum", &packet.Subscribe{PacketID: 1, Subscriptions: manyFilters}, packet.V311, true},
		{"SUBSCRIBE two subscription ids", &packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: "a"}},
			Props: &packet.Properties{SubscriptionIDs: []uint32{1, 2}}}, packet.V5, false},
		{"SUBACK code without 3.x equivalent", &packet.Suback{PacketID: 1, ReasonCodes: []packet.ReasonCode{0x10}}, packet.V311, false},
		{"PUBACK property not allowed", &packet.Puback{PacketID: 1, Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](1)}}, packet.V5, false},
		{"DISCONNECT property string over 65535 bytes", &packet.Disconnect{Props: &packet.Properties{ReasonString: long}}, packet.V5, false},
		{"AUTH before v5", &packet.Auth{}, packet.V311, false},
		{"UNSUBSCRIBE filter over 65535 bytes", &packet.Unsubscribe{PacketID: 1, Filters: []string{long}}, packet.V311, false},
		{"PINGREQ unknown version", &packet.Pingreq{}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dst := []byte("keep")
			out, err := tc.p.Encode(dst, tc.v)
			if err == nil {
				t.Fatalf("Encode succeeded: % X", out)
			}
			if !errors.Is(err, packet.ErrEncode) {
				t.Fatalf("error %v does not wrap ErrEncode", err)
			}
			if tc.tooLarge != errors.Is(err, packet.PacketTooLarge) {
				t.Fatalf("error %v: wraps PacketTooLarge = %v, want %v", err, !tc.tooLarge, tc.tooLarge)
			}
			if string(out) != "keep" {
				t.Fatalf("dst changed on error: %q", out)
			}
		})
	}
}

// TestConnectEncodeOddNameAndLevel checks that a CONNECT's own protocol name
// and level are written, so tests can send unsupported ones.
func TestConnectEncodeOddNameAndLevel(t *testing.T) {
	b := encode(t, &packet.Connect{ProtocolName: "MQTT", Version: 6, ClientID: "c"}, packet.V311)
	want := []byte{0x10, 13, 0, 4, 'M', 'Q', 'T', 'T', 6, 0, 0, 0, 0, 1, 'c'}
	if !bytes.Equal(b, want) {
		t.Fatalf("% X, want % X", b, want)
	}
}
