// Package packet is the MQTT 3.1, 3.1.1 and 5.0 wire codec: one struct per
// control packet, encode and decode, properties and reason codes. It holds no
// broker state and imports only the standard library.
package packet

// Type is the MQTT control packet type (the high nibble of the first byte).
type Type byte

// Control packet types.
const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

var typeNames = [...]string{"RESERVED", "CONNECT", "CONNACK", "PUBLISH", "PUBACK", "PUBREC", "PUBREL",
	"PUBCOMP", "SUBSCRIBE", "SUBACK", "UNSUBSCRIBE", "UNSUBACK", "PINGREQ", "PINGRESP", "DISCONNECT", "AUTH"}

func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	return "INVALID"
}

// Version is the protocol level carried in CONNECT.
type Version byte

// Protocol levels.
const (
	V31  Version = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 Version = 4 // MQTT 3.1.1, protocol name "MQTT"
	V5   Version = 5 // MQTT 5.0, protocol name "MQTT"
)

func (v Version) String() string {
	switch v {
	case V31:
		return "3.1"
	case V311:
		return "3.1.1"
	case V5:
		return "5.0"
	}
	return "unknown"
}

// MaxRemainingLength is the largest value a 4-byte variable byte integer holds.
const MaxRemainingLength = 268435455

// FixedHeader is the first byte of a packet split into type and flags, and the
// remaining length.
type FixedHeader struct {
	Type      Type
	Flags     byte // low nibble of the first byte
	Remaining int  // remaining length: bytes after the fixed header
}

// Packet is implemented by every control packet struct.
type Packet interface {
	Type() Type
	// Encode appends the complete encoded packet, as protocol version v
	// defines it, to dst. Fields that v does not have (properties and reason
	// codes before v5) are left out; an error is returned only for values
	// that cannot be encoded (too long, QoS out of range).
	Encode(dst []byte, v Version) ([]byte, error)
}

// Will is the last-will message carried in CONNECT.
type Will struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Props   *Properties // v5 will properties; nil when there are none
}

// Connect is the CONNECT packet. Decode fills ProtocolName and Version from
// the packet itself, whatever version the caller passes.
type Connect struct {
	ProtocolName string // "MQTT" (3.1.1, 5.0) or "MQIsdp" (3.1)
	Version      Version
	CleanStart   bool // clean session (3.x) / clean start (5.0)
	KeepAlive    uint16
	ClientID     string
	Will         *Will
	Username     string
	HasUsername  bool
	Password     []byte
	HasPassword  bool
	Props        *Properties
	// Bridge is the bridge bit of 3.1 and 3.1.1: 0x80 in the protocol
	// level (0x83, 0x84), which Mosquitto's bridges set with try_private.
	// It is not defined for 5.0 (0x85 is an unsupported level).
	Bridge bool
}

// Connack is the CONNACK packet. ReasonCode always uses v5 numbering; for
// 3.x it is mapped to and from the 3.x return codes (see ReasonCode.V3Connack).
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Props          *Properties
}

// Publish is the PUBLISH packet. A decoded Publish owns Topic and Payload (they
// alias the body slice handed to Decode, which must not be reused).
type Publish struct {
	Dup      bool
	QoS      byte
	Retain   bool
	Topic    string
	PacketID uint16 // only for QoS 1 and 2
	Props    *Properties
	Payload  []byte
}

// Puback is the PUBACK packet (QoS 1 acknowledgement).
type Puback struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Props      *Properties
}

// Pubrec is the PUBREC packet (QoS 2, part 1).
type Pubrec struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Props      *Properties
}

// Pubrel is the PUBREL packet (QoS 2, part 2).
type Pubrel struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Props      *Properties
}

// Pubcomp is the PUBCOMP packet (QoS 2, part 3).
type Pubcomp struct {
	PacketID   uint16
	ReasonCode ReasonCode
	Props      *Properties
}

// Subscription is one topic filter of a SUBSCRIBE with its options. Before v5
// only QoS is on the wire.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte // 0, 1 or 2
}

// Subscribe is the SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Subscriptions []Subscription
	Props         *Properties
}

// Suback is the SUBACK packet: one code per requested filter (granted QoS 0-2
// or a failure code >= 0x80).
type Suback struct {
	PacketID    uint16
	ReasonCodes []ReasonCode
	Props       *Properties
}

// Unsubscribe is the UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID uint16
	Filters  []string
	Props    *Properties
}

// Unsuback is the UNSUBACK packet. ReasonCodes are on the wire only in v5.
type Unsuback struct {
	PacketID    uint16
	ReasonCodes []ReasonCode
	Props       *Properties
}

// Pingreq is the PINGREQ packet.
type Pingreq struct{}

// Pingresp is the PINGRESP packet.
type Pingresp struct{}

// Disconnect is the DISCONNECT packet. Reason code and properties exist on the
// wire only in v5.
type Disconnect struct {
	ReasonCode ReasonCode
	Props      *Properties
}

// Auth is the v5 AUTH packet.
type Auth struct {
	ReasonCode ReasonCode
	Props      *Properties
}

// UserProperty is one v5 user property (a UTF-8 string pair).
type UserProperty struct {
	Key, Value string
}

// Properties holds the MQTT 5 properties of any packet. Pointer fields are
// those whose absence means something other than their zero value; strings and
// byte slices are absent when empty. Which properties a packet may carry is
// checked by Decode (a property not allowed in a packet is a malformed packet).
type Properties struct {
	PayloadFormat        *byte          // 0x01 PUBLISH, Will
	MessageExpiry        *uint32        // 0x02 PUBLISH, Will
	ContentType          string         // 0x03 PUBLISH, Will
	ResponseTopic        string         // 0x08 PUBLISH, Will
	CorrelationData      []byte         // 0x09 PUBLISH, Will
	SubscriptionIDs      []uint32       // 0x0B PUBLISH (several), SUBSCRIBE (one)
	SessionExpiry        *uint32        // 0x11 CONNECT, CONNACK, DISCONNECT
	AssignedClientID     string         // 0x12 CONNACK
	ServerKeepAlive      *uint16        // 0x13 CONNACK
	AuthMethod           string         // 0x15 CONNECT, CONNACK, AUTH
	AuthData             []byte         // 0x16 CONNECT, CONNACK, AUTH
	RequestProblemInfo   *byte          // 0x17 CONNECT
	WillDelay            *uint32        // 0x18 Will
	RequestResponseInfo  *byte          // 0x19 CONNECT
	ResponseInfo         string         // 0x1A CONNACK
	ServerReference      string         // 0x1C CONNACK, DISCONNECT
	ReasonString         string         // 0x1F CONNACK, PUBACK..PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH
	ReceiveMaximum       *uint16        // 0x21 CONNECT, CONNACK
	TopicAliasMaximum    *uint16        // 0x22 CONNECT, CONNACK
	TopicAlias           *uint16        // 0x23 PUBLISH
	MaximumQoS           *byte          // 0x24 CONNACK
	RetainAvailable      *byte          // 0x25 CONNACK
	User                 []UserProperty // 0x26 every packet with properties (several)
	MaximumPacketSize    *uint32        // 0x27 CONNECT, CONNACK
	WildcardSubAvailable *byte          // 0x28 CONNACK
	SubIDAvailable       *byte          // 0x29 CONNACK
	SharedSubAvailable   *byte          // 0x2A CONNACK
}

// Property identifiers.
const (
	PropPayloadFormat        byte = 0x01
	PropMessageExpiry        byte = 0x02
	PropContentType          byte = 0x03
	PropResponseTopic        byte = 0x08
	PropCorrelationData      byte = 0x09
	PropSubscriptionID       byte = 0x0B
	PropSessionExpiry        byte = 0x11
	PropAssignedClientID     byte = 0x12
	PropServerKeepAlive      byte = 0x13
	PropAuthMethod           byte = 0x15
	PropAuthData             byte = 0x16
	PropRequestProblemInfo   byte = 0x17
	PropWillDelay            byte = 0x18
	PropRequestResponseInfo  byte = 0x19
	PropResponseInfo         byte = 0x1A
	PropServerReference      byte = 0x1C
	PropReasonString         byte = 0x1F
	PropReceiveMaximum       byte = 0x21
	PropTopicAliasMaximum    byte = 0x22
	PropTopicAlias           byte = 0x23
	PropMaximumQoS           byte = 0x24
	PropRetainAvailable      byte = 0x25
	PropUser                 byte = 0x26
	PropMaximumPacketSize    byte = 0x27
	PropWildcardSubAvailable byte = 0x28
	PropSubIDAvailable       byte = 0x29
	PropSharedSubAvailable   byte = 0x2A
)

// Ptr returns a pointer to v; a convenience for filling Properties.
func Ptr[T any](v T) *T { return &v }
