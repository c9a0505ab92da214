package packet

import "fmt"

// ReasonCode is an MQTT 5 reason code. It implements error, so handlers can
// return one and a single dispatcher turns it into the right ack, CONNACK or
// DISCONNECT. MQTT 3.x return codes are mapped onto these (see V3Connack).
type ReasonCode byte

// MQTT 5 reason codes (MQTT 5.0 section 2.4).
const (
	Success                           ReasonCode = 0x00 // also Normal disconnection, Granted QoS 0
	GrantedQoS1                       ReasonCode = 0x01
	GrantedQoS2                       ReasonCode = 0x02
	DisconnectWithWill                ReasonCode = 0x04
	NoMatchingSubscribers             ReasonCode = 0x10
	NoSubscriptionExisted             ReasonCode = 0x11
	ContinueAuthentication            ReasonCode = 0x18
	ReAuthenticate                    ReasonCode = 0x19
	UnspecifiedError                  ReasonCode = 0x80
	MalformedPacket                   ReasonCode = 0x81
	ProtocolError                     ReasonCode = 0x82
	ImplementationSpecificError       ReasonCode = 0x83
	UnsupportedProtocolVersion        ReasonCode = 0x84
	ClientIdentifierNotValid          ReasonCode = 0x85
	BadUserNameOrPassword             ReasonCode = 0x86
	NotAuthorized                     ReasonCode = 0x87
	ServerUnavailable                 ReasonCode = 0x88
	ServerBusy                        ReasonCode = 0x89
	Banned                            ReasonCode = 0x8A
	ServerShuttingDown                ReasonCode = 0x8B
	BadAuthenticationMethod           ReasonCode = 0x8C
	KeepAliveTimeout                  ReasonCode = 0x8D
	SessionTakenOver                  ReasonCode = 0x8E
	TopicFilterInvalid                ReasonCode = 0x8F
	TopicNameInvalid                  ReasonCode = 0x90
	PacketIdentifierInUse             ReasonCode = 0x91
	PacketIdentifierNotFound          ReasonCode = 0x92
	ReceiveMaximumExceeded            ReasonCode = 0x93
	TopicAliasInvalid                 ReasonCode = 0x94
	PacketTooLarge                    ReasonCode = 0x95
	MessageRateTooHigh                ReasonCode = 0x96
	QuotaExceeded                     ReasonCode = 0x97
	AdministrativeAction              ReasonCode = 0x98
	PayloadFormatInvalid              ReasonCode = 0x99
	RetainNotSupported                ReasonCode = 0x9A
	QoSNotSupported                   ReasonCode = 0x9B
	UseAnotherServer                  ReasonCode = 0x9C
	ServerMoved                       ReasonCode = 0x9D
	SharedSubscriptionsNotSupported   ReasonCode = 0x9E
	ConnectionRateExceeded            ReasonCode = 0x9F
	MaximumConnectTime                ReasonCode = 0xA0
	SubscriptionIDsNotSupported       ReasonCode = 0xA1
	WildcardSubscriptionsNotSupported ReasonCode = 0xA2
)

var reasonText = map[ReasonCode]string{
	Success: "success", GrantedQoS1: "granted QoS 1", GrantedQoS2: "granted QoS 2",
	DisconnectWithWill: "disconnect with will message", NoMatchingSubscribers: "no matching subscribers",
	NoSubscriptionExisted: "no subscription existed", ContinueAuthentication: "continue authentication",
	ReAuthenticate: "re-authenticate", UnspecifiedError: "unspecified error", MalformedPacket: "malformed packet",
	ProtocolError: "protocol error", ImplementationSpecificError: "implementation specific error",
	UnsupportedProtocolVersion: "unsupported protocol version", ClientIdentifierNotValid: "client identifier not valid",
	BadUserNameOrPassword: "bad user name or password", NotAuthorized: "not authorized",
	ServerUnavailable: "server unavailable", ServerBusy: "server busy", Banned: "banned",
	ServerShuttingDown: "server shutting down", BadAuthenticationMethod: "bad authentication method",
	KeepAliveTimeout: "keep alive timeout", SessionTakenOver: "session taken over",
	TopicFilterInvalid: "topic filter invalid", TopicNameInvalid: "topic name invalid",
	PacketIdentifierInUse: "packet identifier in use", PacketIdentifierNotFound: "packet identifier not found",
	ReceiveMaximumExceeded: "receive maximum exceeded", TopicAliasInvalid: "topic alias invalid",
	PacketTooLarge: "packet too large", MessageRateTooHigh: "message rate too high", QuotaExceeded: "quota exceeded",
	AdministrativeAction: "administrative action", PayloadFormatInvalid: "payload format invalid",
	RetainNotSupported: "retain not supported", QoSNotSupported: "QoS not supported",
	UseAnotherServer: "use another server", ServerMoved: "server moved",
	SharedSubscriptionsNotSupported: "shared subscriptions not supported",
	ConnectionRateExceeded:          "connection rate exceeded", MaximumConnectTime: "maximum connect time",
	SubscriptionIDsNotSupported:       "subscription identifiers not supported",
	WildcardSubscriptionsNotSupported: "wildcard subscriptions not supported",
}

// Error returns the reason code's name as the spec words it.
func (rc ReasonCode) Error() string {
	if s, ok := reasonText[rc]; ok {
		return s
	}
	return fmt.Sprintf("reason code 0x%02X", byte(rc))
}

// IsError reports whether the code signals failure (0x80 and above).
func (rc ReasonCode) IsError() bool { return rc >= 0x80 }

// MQTT 3.x CONNACK return codes.
const (
	V3Accepted              byte = 0
	V3UnacceptableProtocol  byte = 1
	V3IdentifierRejected    byte = 2
	V3ServerUnavailable     byte = 3
	V3BadUsernameOrPassword byte = 4
	V3NotAuthorized         byte = 5
)

// V3Connack maps a v5 CONNACK reason code onto the nearest MQTT 3.x return
// code [MQTT-3.2.2-4..5].
func (rc ReasonCode) V3Connack() byte {
	switch rc {
	case Success:
		return V3Accepted
	case UnsupportedProtocolVersion:
		return V3UnacceptableProtocol
	case ClientIdentifierNotValid:
		return V3IdentifierRejected
	case BadUserNameOrPassword, BadAuthenticationMethod:
		return V3BadUsernameOrPassword
	case NotAuthorized, Banned:
		return V3NotAuthorized
	}
	return V3ServerUnavailable
}

// FromV3Connack maps an MQTT 3.x CONNACK return code onto a v5 reason code.
func FromV3Connack(b byte) ReasonCode {
	switch b {
	case V3Accepted:
		return Success
	case V3UnacceptableProtocol:
		return UnsupportedProtocolVersion
	case V3IdentifierRejected:
		return ClientIdentifierNotValid
	case V3ServerUnavailable:
		return ServerUnavailable
	case V3BadUsernameOrPassword:
		return BadUserNameOrPassword
	case V3NotAuthorized:
		return NotAuthorized
	}
	return UnspecifiedError
}
