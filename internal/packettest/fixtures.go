// Package packettest holds annotated golden byte fixtures of MQTT 3.1, 3.1.1
// and 5.0 control packets, shared by the packet, broker and client tests.
//
// Every fixture is the canonical encoding of its packet: decoding Bytes as
// Version gives Packet, and encoding Packet as Version gives Bytes.
//
// The fixtures are read-only. packet.Decode aliases the body it is given, so
// decode a copy (bytes.Clone) or use packet.Read, which copies.
package packettest

import "github.com/mqttd/mqttd/packet"

// Fixture is one packet on the wire and its decoded form.
type Fixture struct {
	Name    string
	Version packet.Version
	Bytes   []byte        // the whole packet, fixed header included
	Packet  packet.Packet // what Decode returns for Bytes
}

// MQTT 3.1 (protocol name MQIsdp, level 3).
var (
	ConnectV31 = Fixture{"CONNECT 3.1", packet.V31, []byte{
		0x10, 0x11, // CONNECT, remaining length 17
		0x00, 0x06, 'M', 'Q', 'I', 's', 'd', 'p', // protocol name "MQIsdp"
		0x03,       // protocol level 3
		0x02,       // connect flags: clean session
		0x00, 0x3C, // keep alive 60
		0x00, 0x03, 'c', '3', '1', // client id "c31"
	}, &packet.Connect{ProtocolName: "MQIsdp", Version: packet.V31, CleanStart: true, KeepAlive: 60, ClientID: "c31"}}

	ConnackV31 = Fixture{"CONNACK 3.1 accepted", packet.V31, []byte{
		0x20, 0x02, // CONNACK, remaining length 2
		0x00, // unused in 3.1 (no session present flag)
		0x00, // return code 0: accepted
	}, &packet.Connack{ReasonCode: packet.Success}}

	ConnackV31Rejected = Fixture{"CONNACK 3.1 identifier rejected", packet.V31, []byte{
		0x20, 0x02, // CONNACK, remaining length 2
		0x00, // unused
		0x02, // return code 2: identifier rejected
	}, &packet.Connack{ReasonCode: packet.ClientIdentifierNotValid}}

	PublishV31QoS1 = Fixture{"PUBLISH 3.1 QoS 1", packet.V31, []byte{
		0x32, 0x09, // PUBLISH QoS 1, remaining length 9
		0x00, 0x03, 'a', '/', 'b', // topic "a/b"
		0x00, 0x01, // packet id 1
		'h', 'i', // payload "hi"
	}, &packet.Publish{QoS: 1, Topic: "a/b", PacketID: 1, Payload: []byte("hi")}}

	PubackV31 = Fixture{"PUBACK 3.1", packet.V31, []byte{
		0x40, 0x02, // PUBACK, remaining length 2
		0x00, 0x01, // packet id 1
	}, &packet.Puback{PacketID: 1}}

	PubrecV31 = Fixture{"PUBREC 3.1", packet.V31, []byte{
		0x50, 0x02, // PUBREC, remaining length 2
		0x00, 0x02, // packet id 2
	}, &packet.Pubrec{PacketID: 2}}

	PubrelV31 = Fixture{"PUBREL 3.1", packet.V31, []byte{
		0x62, 0x02, // PUBREL (flags 0010), remaining length 2
		0x00, 0x02, // packet id 2
	}, &packet.Pubrel{PacketID: 2}}

	PubcompV31 = Fixture{"PUBCOMP 3.1", packet.V31, []byte{
		0x70, 0x02, // PUBCOMP, remaining length 2
		0x00, 0x02, // packet id 2
	}, &packet.Pubcomp{PacketID: 2}}

	SubscribeV31 = Fixture{"SUBSCRIBE 3.1", packet.V31, []byte{
		0x82, 0x08, // SUBSCRIBE (flags 0010), remaining length 8
		0x00, 0x03, // packet id 3
		0x00, 0x03, 'a', '/', '#', // topic filter "a/#"
		0x01, // requested QoS 1
	}, &packet.Subscribe{PacketID: 3, Subscriptions: []packet.Subscription{{Filter: "a/#", QoS: 1}}}}

	SubackV31 = Fixture{"SUBACK 3.1", packet.V31, []byte{
		0x90, 0x03, // SUBACK, remaining length 3
		0x00, 0x03, // packet id 3
		0x01, // granted QoS 1
	}, &packet.Suback{PacketID: 3, ReasonCodes: []packet.ReasonCode{packet.GrantedQoS1}}}

	UnsubscribeV31 = Fixture{"UNSUBSCRIBE 3.1", packet.V31, []byte{
		0xA2, 0x07, // UNSUBSCRIBE (flags 0010), remaining length 7
		0x00, 0x04, // packet id 4
		0x00, 0x03, 'a', '/', '#', // topic filter "a/#"
	}, &packet.Unsubscribe{PacketID: 4, Filters: []string{"a/#"}}}

	UnsubackV31 = Fixture{"UNSUBACK 3.1", packet.V31, []byte{
		0xB0, 0x02, // UNSUBACK, remaining length 2
		0x00, 0x04, // packet id 4
	}, &packet.Unsuback{PacketID: 4}}

	PingreqV31    = Fixture{"PINGREQ 3.1", packet.V31, []byte{0xC0, 0x00}, &packet.Pingreq{}}
	PingrespV31   = Fixture{"PINGRESP 3.1", packet.V31, []byte{0xD0, 0x00}, &packet.Pingresp{}}
	DisconnectV31 = Fixture{"DISCONNECT 3.1", packet.V31, []byte{0xE0, 0x00}, &packet.Disconnect{}}
)

// MQTT 3.1.1 (protocol name MQTT, level 4).
var (
	ConnectV311Clean = Fixture{"CONNECT 3.1.1 clean session", packet.V311, []byte{
		0x10, 0x13, // CONNECT, remaining length 19
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x04,       // protocol level 4
		0x02,       // connect flags: clean session
		0x00, 0x3C, // keep alive 60
		0x00, 0x07, 'c', 'l', 'i', 'e', 'n', 't', '1', // client id "client1"
	}, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, KeepAlive: 60, ClientID: "client1"}}

	ConnectV311Full = Fixture{"CONNECT 3.1.1 will, user name, password", packet.V311, []byte{
		0x10, 0x27, // CONNECT, remaining length 39
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x04,       // protocol level 4
		0xEE,       // flags: user name, password, will retain, will QoS 1, will, clean session
		0x00, 0x1E, // keep alive 30
		0x00, 0x02, 'c', '1', // client id "c1"
		0x00, 0x06, 'w', 'i', 'l', 'l', '/', 't', // will topic "will/t"
		0x00, 0x03, 'b', 'y', 'e', // will payload "bye"
		0x00, 0x04, 'u', 's', 'e', 'r', // user name "user"
		0x00, 0x04, 'p', 'a', 's', 's', // password "pass"
	}, &packet.Connect{ProtocolName: "MQTT", Version: packet.V311, CleanStart: true, KeepAlive: 30, ClientID: "c1",
		Will:     &packet.Will{Topic: "will/t", Payload: []byte("bye"), QoS: 1, Retain: true},
		Username: "user", HasUsername: true, Password: []byte("pass"), HasPassword: true}}

	ConnackV311SessionPresent = Fixture{"CONNACK 3.1.1 session present", packet.V311, []byte{
		0x20, 0x02, // CONNACK, remaining length 2
		0x01, // acknowledge flags: session present
		0x00, // return code 0: accepted
	}, &packet.Connack{SessionPresent: true, ReasonCode: packet.Success}}

	ConnackV311NotAuthorized = Fixture{"CONNACK 3.1.1 not authorized", packet.V311, []byte{
		0x20, 0x02, // CONNACK, remaining length 2
		0x00, // acknowledge flags
		0x05, // return code 5: not authorized
	}, &packet.Connack{ReasonCode: packet.NotAuthorized}}

	PublishV311QoS0 = Fixture{"PUBLISH 3.1.1 QoS 0", packet.V311, []byte{
		0x30, 0x0A, // PUBLISH QoS 0, remaining length 10
		0x00, 0x03, 'a', '/', 'b', // topic "a/b"
		'h', 'e', 'l', 'l', 'o', // payload "hello"
	}, &packet.Publish{Topic: "a/b", Payload: []byte("hello")}}

	PublishV311QoS2DupRetain = Fixture{"PUBLISH 3.1.1 QoS 2 DUP retain", packet.V311, []byte{
		0x3D, 0x07, // PUBLISH DUP, QoS 2, retain; remaining length 7
		0x00, 0x01, 'x', // topic "x"
		0x12, 0x34, // packet id 0x1234
		0x01, 0x02, // payload
	}, &packet.Publish{Dup: true, QoS: 2, Retain: true, Topic: "x", PacketID: 0x1234, Payload: []byte{1, 2}}}

	PublishV311RetainEmpty = Fixture{"PUBLISH 3.1.1 retained, empty payload", packet.V311, []byte{
		0x31, 0x03, // PUBLISH QoS 0 retain, remaining length 3
		0x00, 0x01, 'x', // topic "x"; no payload (clears the retained message)
	}, &packet.Publish{Retain: true, Topic: "x"}}

	PubackV311 = Fixture{"PUBACK 3.1.1", packet.V311, []byte{
		0x40, 0x02, // PUBACK, remaining length 2
		0x12, 0x34, // packet id 0x1234
	}, &packet.Puback{PacketID: 0x1234}}

	PubrecV311 = Fixture{"PUBREC 3.1.1", packet.V311, []byte{
		0x50, 0x02, // PUBREC, remaining length 2
		0x12, 0x34, // packet id 0x1234
	}, &packet.Pubrec{PacketID: 0x1234}}

	PubrelV311 = Fixture{"PUBREL 3.1.1", packet.V311, []byte{
		0x62, 0x02, // PUBREL (flags 0010), remaining length 2
		0x12, 0x34, // packet id 0x1234
	}, &packet.Pubrel{PacketID: 0x1234}}

	PubcompV311 = Fixture{"PUBCOMP 3.1.1", packet.V311, []byte{
		0x70, 0x02, // PUBCOMP, remaining length 2
		0x12, 0x34, // packet id 0x1234
	}, &packet.Pubcomp{PacketID: 0x1234}}

	SubscribeV311 = Fixture{"SUBSCRIBE 3.1.1 two filters", packet.V311, []byte{
		0x82, 0x0E, // SUBSCRIBE (flags 0010), remaining length 14
		0x00, 0x0A, // packet id 10
		0x00, 0x03, 'a', '/', '+', // topic filter "a/+"
		0x00,                      // requested QoS 0
		0x00, 0x03, 'b', '/', '#', // topic filter "b/#"
		0x02, // requested QoS 2
	}, &packet.Subscribe{PacketID: 10, Subscriptions: []packet.Subscription{{Filter: "a/+"}, {Filter: "b/#", QoS: 2}}}}

	SubackV311 = Fixture{"SUBACK 3.1.1 granted and failure", packet.V311, []byte{
		0x90, 0x04, // SUBACK, remaining length 4
		0x00, 0x0A, // packet id 10
		0x00, // granted QoS 0
		0x80, // failure
	}, &packet.Suback{PacketID: 10, ReasonCodes: []packet.ReasonCode{packet.Success, packet.UnspecifiedError}}}

	UnsubscribeV311 = Fixture{"UNSUBSCRIBE 3.1.1 two filters", packet.V311, []byte{
		0xA2, 0x0C, // UNSUBSCRIBE (flags 0010), remaining length 12
		0x00, 0x0B, // packet id 11
		0x00, 0x03, 'a', '/', '+', // topic filter "a/+"
		0x00, 0x03, 'b', '/', '#', // topic filter "b/#"
	}, &packet.Unsubscribe{PacketID: 11, Filters: []string{"a/+", "b/#"}}}

	UnsubackV311 = Fixture{"UNSUBACK 3.1.1", packet.V311, []byte{
		0xB0, 0x02, // UNSUBACK, remaining length 2
		0x00, 0x0B, // packet id 11
	}, &packet.Unsuback{PacketID: 11}}

	PingreqV311    = Fixture{"PINGREQ 3.1.1", packet.V311, []byte{0xC0, 0x00}, &packet.Pingreq{}}
	PingrespV311   = Fixture{"PINGRESP 3.1.1", packet.V311, []byte{0xD0, 0x00}, &packet.Pingresp{}}
	DisconnectV311 = Fixture{"DISCONNECT 3.1.1", packet.V311, []byte{0xE0, 0x00}, &packet.Disconnect{}}
)

// MQTT 5.0 (protocol name MQTT, level 5).
var (
	ConnectV5 = Fixture{"CONNECT 5.0 with properties", packet.V5, []byte{
		0x10, 0x21, // CONNECT, remaining length 33
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x05,       // protocol level 5
		0x02,       // connect flags: clean start
		0x00, 0x3C, // keep alive 60
		0x12,                         // property length 18
		0x11, 0x00, 0x00, 0x0E, 0x10, // Session Expiry Interval 3600
		0x21, 0x00, 0x64, // Receive Maximum 100
		0x22, 0x00, 0x0A, // Topic Alias Maximum 10
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property k=v
		0x00, 0x02, 'c', '5', // client id "c5"
	}, &packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: true, KeepAlive: 60, ClientID: "c5",
		Props: &packet.Properties{SessionExpiry: packet.Ptr[uint32](3600), ReceiveMaximum: packet.Ptr[uint16](100),
			TopicAliasMaximum: packet.Ptr[uint16](10), User: []packet.UserProperty{{Key: "k", Value: "v"}}}}}

	ConnectV5Will = Fixture{"CONNECT 5.0 will properties, empty client id", packet.V5, []byte{
		0x10, 0x25, // CONNECT, remaining length 37
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x05,       // protocol level 5
		0xCE,       // flags: user name, password, will QoS 1, will, clean start
		0x00, 0x00, // keep alive 0
		0x00,       // property length 0
		0x00, 0x00, // client id "" (the server assigns one)
		0x0B,       // will property length 11
		0x01, 0x01, // Payload Format Indicator 1 (UTF-8)
		0x03, 0x00, 0x01, 't', // Content Type "t"
		0x18, 0x00, 0x00, 0x00, 0x05, // Will Delay Interval 5
		0x00, 0x01, 'w', // will topic "w"
		0x00, 0x01, 'x', // will payload "x"
		0x00, 0x01, 'u', // user name "u"
		0x00, 0x01, 'p', // password "p"
	}, &packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: true,
		Will: &packet.Will{Topic: "w", Payload: []byte("x"), QoS: 1,
			Props: &packet.Properties{PayloadFormat: packet.Ptr[byte](1), ContentType: "t", WillDelay: packet.Ptr[uint32](5)}},
		Username: "u", HasUsername: true, Password: []byte("p"), HasPassword: true}}

	ConnectV5PasswordOnly = Fixture{"CONNECT 5.0 password without user name", packet.V5, []byte{
		0x10, 0x16, // CONNECT, remaining length 22
		0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name "MQTT"
		0x05,       // protocol level 5
		0x42,       // flags: password, clean start (allowed in v5)
		0x00, 0x0A, // keep alive 10
		0x00,            // property length 0
		0x00, 0x01, 'a', // client id "a"
		0x00, 0x06, 's', 'e', 'c', 'r', 'e', 't', // password "secret"
	}, &packet.Connect{ProtocolName: "MQTT", Version: packet.V5, CleanStart: true, KeepAlive: 10, ClientID: "a",
		Password: []byte("secret"), HasPassword: true}}

	ConnackV5 = Fixture{"CONNACK 5.0 with server properties", packet.V5, []byte{
		0x20, 0x24, // CONNACK, remaining length 36
		0x00,                                           // acknowledge flags
		0x00,                                           // reason code Success
		0x21,                                           // property length 33
		0x12, 0x00, 0x06, 'a', 'u', 't', 'o', '-', '1', // Assigned Client Identifier "auto-1"
		0x13, 0x00, 0x1E, // Server Keep Alive 30
		0x21, 0x00, 0x14, // Receive Maximum 20
		0x22, 0x00, 0x05, // Topic Alias Maximum 5
		0x24, 0x01, // Maximum QoS 1
		0x25, 0x00, // Retain Available 0
		0x27, 0x00, 0x00, 0x04, 0x00, // Maximum Packet Size 1024
		0x28, 0x01, // Wildcard Subscription Available 1
		0x29, 0x00, // Subscription Identifiers Available 0
		0x2A, 0x01, // Shared Subscription Available 1
	}, &packet.Connack{ReasonCode: packet.Success, Props: &packet.Properties{
		AssignedClientID: "auto-1", ServerKeepAlive: packet.Ptr[uint16](30), ReceiveMaximum: packet.Ptr[uint16](20),
		TopicAliasMaximum: packet.Ptr[uint16](5), MaximumQoS: packet.Ptr[byte](1), RetainAvailable: packet.Ptr[byte](0),
		MaximumPacketSize: packet.Ptr[uint32](1024), WildcardSubAvailable: packet.Ptr[byte](1),
		SubIDAvailable: packet.Ptr[byte](0), SharedSubAvailable: packet.Ptr[byte](1)}}}

	ConnackV5Refused = Fixture{"CONNACK 5.0 bad user name or password", packet.V5, []byte{
		0x20, 0x09, // CONNACK, remaining length 9
		0x00,                            // acknowledge flags
		0x86,                            // reason code Bad User Name or Password
		0x06,                            // property length 6
		0x1F, 0x00, 0x03, 'b', 'a', 'd', // Reason String "bad"
	}, &packet.Connack{ReasonCode: packet.BadUserNameOrPassword, Props: &packet.Properties{ReasonString: "bad"}}}

	PublishV5 = Fixture{"PUBLISH 5.0 QoS 1 with properties", packet.V5, []byte{
		0x32, 0x2B, // PUBLISH QoS 1, remaining length 43
		0x00, 0x03, 'a', '/', 'b', // topic "a/b"
		0x00, 0x07, // packet id 7
		0x21,       // property length 33
		0x01, 0x01, // Payload Format Indicator 1
		0x02, 0x00, 0x00, 0x00, 0x3C, // Message Expiry Interval 60
		0x03, 0x00, 0x04, 't', 'e', 'x', 't', // Content Type "text"
		0x08, 0x00, 0x01, 'r', // Response Topic "r"
		0x09, 0x00, 0x02, 0x01, 0x02, // Correlation Data 01 02
		0x23, 0x00, 0x03, // Topic Alias 3
		0x26, 0x00, 0x01, 'a', 0x00, 0x01, 'b', // User Property a=b
		'h', 'i', // payload "hi"
	}, &packet.Publish{QoS: 1, Topic: "a/b", PacketID: 7, Payload: []byte("hi"), Props: &packet.Properties{
		PayloadFormat: packet.Ptr[byte](1), MessageExpiry: packet.Ptr[uint32](60), ContentType: "text",
		ResponseTopic: "r", CorrelationData: []byte{1, 2}, TopicAlias: packet.Ptr[uint16](3),
		User: []packet.UserProperty{{Key: "a", Value: "b"}}}}}

	PublishV5SubIDs = Fixture{"PUBLISH 5.0 with two subscription identifiers", packet.V5, []byte{
		0x30, 0x09, // PUBLISH QoS 0, remaining length 9
		0x00, 0x01, 't', // topic "t"
		0x05,       // property length 5
		0x0B, 0x01, // Subscription Identifier 1
		0x0B, 0xC8, 0x01, // Subscription Identifier 200 (two-byte variable byte integer)
		// empty payload
	}, &packet.Publish{Topic: "t", Props: &packet.Properties{SubscriptionIDs: []uint32{1, 200}}}}

	PublishV5AliasOnly = Fixture{"PUBLISH 5.0 empty topic with Topic Alias", packet.V5, []byte{
		0x30, 0x07, // PUBLISH QoS 0, remaining length 7
		0x00, 0x00, // topic "" (resolved through the alias)
		0x03,             // property length 3
		0x23, 0x00, 0x03, // Topic Alias 3
		'x', // payload "x"
	}, &packet.Publish{Props: &packet.Properties{TopicAlias: packet.Ptr[uint16](3)}, Payload: []byte("x")}}

	PubackV5 = Fixture{"PUBACK 5.0 short form", packet.V5, []byte{
		0x40, 0x02, // PUBACK, remaining length 2: reason code Success and no properties omitted
		0x00, 0x07, // packet id 7
	}, &packet.Puback{PacketID: 7}}

	PubackV5Code = Fixture{"PUBACK 5.0 reason code, no properties", packet.V5, []byte{
		0x40, 0x03, // PUBACK, remaining length 3
		0x00, 0x07, // packet id 7
		0x10, // reason code No matching subscribers; property length omitted
	}, &packet.Puback{PacketID: 7, ReasonCode: packet.NoMatchingSubscribers}}

	PubrecV5 = Fixture{"PUBREC 5.0 reason code and reason string", packet.V5, []byte{
		0x50, 0x08, // PUBREC, remaining length 8
		0x00, 0x08, // packet id 8
		0x97,                  // reason code Quota exceeded
		0x04,                  // property length 4
		0x1F, 0x00, 0x01, 'q', // Reason String "q"
	}, &packet.Pubrec{PacketID: 8, ReasonCode: packet.QuotaExceeded, Props: &packet.Properties{ReasonString: "q"}}}

	PubrelV5 = Fixture{"PUBREL 5.0 short form", packet.V5, []byte{
		0x62, 0x02, // PUBREL (flags 0010), remaining length 2
		0x00, 0x08, // packet id 8
	}, &packet.Pubrel{PacketID: 8}}

	PubrelV5NotFound = Fixture{"PUBREL 5.0 packet identifier not found", packet.V5, []byte{
		0x62, 0x03, // PUBREL (flags 0010), remaining length 3
		0x00, 0x08, // packet id 8
		0x92, // reason code Packet Identifier not found
	}, &packet.Pubrel{PacketID: 8, ReasonCode: packet.PacketIdentifierNotFound}}

	PubcompV5 = Fixture{"PUBCOMP 5.0 short form", packet.V5, []byte{
		0x70, 0x02, // PUBCOMP, remaining length 2
		0x00, 0x08, // packet id 8
	}, &packet.Pubcomp{PacketID: 8}}

	SubscribeV5 = Fixture{"SUBSCRIBE 5.0 options and subscription identifier", packet.V5, []byte{
		0x82, 0x1F, // SUBSCRIBE (flags 0010), remaining length 31
		0x00, 0x09, // packet id 9
		0x09,       // property length 9
		0x0B, 0x05, // Subscription Identifier 5
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property k=v
		0x00, 0x03, 'a', '/', '+', // topic filter "a/+"
		0x2D,                                                         // options: Retain Handling 2, Retain As Published, No Local, QoS 1
		0x00, 0x0A, '$', 's', 'h', 'a', 'r', 'e', '/', 'g', '/', 't', // topic filter "$share/g/t"
		0x00, // options: QoS 0
	}, &packet.Subscribe{PacketID: 9, Props: &packet.Properties{SubscriptionIDs: []uint32{5},
		User: []packet.UserProperty{{Key: "k", Value: "v"}}}, Subscriptions: []packet.Subscription{
		{Filter: "a/+", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2}, {Filter: "$share/g/t"}}}}

	SubackV5 = Fixture{"SUBACK 5.0", packet.V5, []byte{
		0x90, 0x05, // SUBACK, remaining length 5
		0x00, 0x09, // packet id 9
		0x00, // property length 0
		0x01, // Granted QoS 1
		0x9E, // Shared Subscriptions not supported
	}, &packet.Suback{PacketID: 9, ReasonCodes: []packet.ReasonCode{packet.GrantedQoS1, packet.SharedSubscriptionsNotSupported}}}

	UnsubscribeV5 = Fixture{"UNSUBSCRIBE 5.0 with user property", packet.V5, []byte{
		0xA2, 0x0F, // UNSUBSCRIBE (flags 0010), remaining length 15
		0x00, 0x0A, // packet id 10
		0x07,                                   // property length 7
		0x26, 0x00, 0x01, 'k', 0x00, 0x01, 'v', // User Property k=v
		0x00, 0x03, 'a', '/', '+', // topic filter "a/+"
	}, &packet.Unsubscribe{PacketID: 10, Filters: []string{"a/+"},
		Props: &packet.Properties{User: []packet.UserProperty{{Key: "k", Value: "v"}}}}}

	UnsubackV5 = Fixture{"UNSUBACK 5.0", packet.V5, []byte{
		0xB0, 0x05, // UNSUBACK, remaining length 5
		0x00, 0x0A, // packet id 10
		0x00, // property length 0
		0x00, // Success
		0x11, // No subscription existed
	}, &packet.Unsuback{PacketID: 10, ReasonCodes: []packet.ReasonCode{packet.Success, packet.NoSubscriptionExisted}}}

	PingreqV5  = Fixture{"PINGREQ 5.0", packet.V5, []byte{0xC0, 0x00}, &packet.Pingreq{}}
	PingrespV5 = Fixture{"PINGRESP 5.0", packet.V5, []byte{0xD0, 0x00}, &packet.Pingresp{}}

	DisconnectV5 = Fixture{"DISCONNECT 5.0 normal, short form", packet.V5, []byte{
		0xE0, 0x00, // DISCONNECT, remaining length 0: Normal disconnection
	}, &packet.Disconnect{}}

	DisconnectV5WithWill = Fixture{"DISCONNECT 5.0 with will message", packet.V5, []byte{
		0xE0, 0x01, // DISCONNECT, remaining length 1
		0x04, // reason code Disconnect with Will Message; property length omitted
	}, &packet.Disconnect{ReasonCode: packet.DisconnectWithWill}}

	DisconnectV5UseAnotherServer = Fixture{"DISCONNECT 5.0 use another server with properties", packet.V5, []byte{
		0xE0, 0x15, // DISCONNECT, remaining length 21
		0x9C,                         // reason code Use another server
		0x13,                         // property length 19
		0x11, 0x00, 0x00, 0x00, 0x00, // Session Expiry Interval 0
		0x1C, 0x00, 0x03, 's', 'r', 'v', // Server Reference "srv"
		0x1F, 0x00, 0x05, 'm', 'o', 'v', 'e', 'd', // Reason String "moved"
	}, &packet.Disconnect{ReasonCode: packet.UseAnotherServer, Props: &packet.Properties{
		SessionExpiry: packet.Ptr[uint32](0), ServerReference: "srv", ReasonString: "moved"}}}

	AuthV5 = Fixture{"AUTH 5.0 continue authentication", packet.V5, []byte{
		0xF0, 0x10, // AUTH, remaining length 16
		0x18,                                      // reason code Continue authentication
		0x0E,                                      // property length 14
		0x15, 0x00, 0x05, 'S', 'C', 'R', 'A', 'M', // Authentication Method "SCRAM"
		0x16, 0x00, 0x03, 0x01, 0x02, 0x03, // Authentication Data 01 02 03
	}, &packet.Auth{ReasonCode: packet.ContinueAuthentication, Props: &packet.Properties{
		AuthMethod: "SCRAM", AuthData: []byte{1, 2, 3}}}}

	AuthV5Success = Fixture{"AUTH 5.0 success, short form", packet.V5, []byte{
		0xF0, 0x00, // AUTH, remaining length 0: Success, no properties
	}, &packet.Auth{}}
)

// Fixtures lists every fixture above, by version.
var Fixtures = []Fixture{
	ConnectV31, ConnackV31, ConnackV31Rejected, PublishV31QoS1, PubackV31, PubrecV31, PubrelV31, PubcompV31,
	SubscribeV31, SubackV31, UnsubscribeV31, UnsubackV31, PingreqV31, PingrespV31, DisconnectV31,

	ConnectV311Clean, ConnectV311Full, ConnackV311SessionPresent, ConnackV311NotAuthorized,
	PublishV311QoS0, PublishV311QoS2DupRetain, PublishV311RetainEmpty,
	PubackV311, PubrecV311, PubrelV311, PubcompV311, SubscribeV311, SubackV311, UnsubscribeV311, UnsubackV311,
	PingreqV311, PingrespV311, DisconnectV311,

	ConnectV5, ConnectV5Will, ConnectV5PasswordOnly, ConnackV5, ConnackV5Refused,
	PublishV5, PublishV5SubIDs, PublishV5AliasOnly, PubackV5, PubackV5Code, PubrecV5, PubrelV5, PubrelV5NotFound,
	PubcompV5, SubscribeV5, SubackV5, UnsubscribeV5, UnsubackV5, PingreqV5, PingrespV5,
	DisconnectV5, DisconnectV5WithWill, DisconnectV5UseAnotherServer, AuthV5, AuthV5Success,
}
