package packet

import "fmt"

// PUBLISH fixed header flags.
const (
	pubRetain = 0x01
	pubQoS    = 0x06
	pubDup    = 0x08
)

// Type returns PUBLISH.
func (p *Publish) Type() Type { return PUBLISH }

// publishBlock lets a v5 PUBLISH with properties be decoded in one allocation.
type publishBlock struct {
	Publish
	props propsBlock
}

func decodePublish(d *decoder, flags byte, v Version) (Packet, error) {
	qos := flags & pubQoS >> 1
	if qos == 3 { // [MQTT-3.3.1-4]
		return nil, d.malformed("QoS 3")
	}
	if qos == 0 && flags&pubDup != 0 { // [MQTT-3.3.1-2]
		return nil, d.malformed("DUP set with QoS 0")
	}
	topic := d.string("topic name") // [MQTT-3.3.2-1]
	var id uint16
	if qos > 0 {
		id = d.packetID() // [MQTT-2.3.1-1] (v5 [MQTT-2.2.1-3])
	}
	if d.err != nil {
		return nil, d.err
	}
	var p *Publish
	if v == V5 {
		n := d.varint("property length")
		if d.err != nil {
			return nil, d.err
		}
		if n == 0 {
			p = new(Publish)
		} else {
			blk := new(publishBlock)
			d.fillProperties(PUBLISH, n, &blk.props)
			if d.err != nil {
				return nil, d.err
			}
			p = &blk.Publish
			if !blk.props.IsEmpty() {
				p.Props = &blk.props.Properties
			}
		}
		// A zero-length topic is allowed only with a Topic Alias (MQTT 5.0
		// 3.3.2.1); the broker resolves the alias.
		if topic == "" && (p.Props == nil || p.Props.TopicAlias == nil) {
			return nil, d.protocol("zero-length topic name without Topic Alias")
		}
	} else {
		if topic == "" { // [MQTT-4.7.3-1] topic names are at least one character long
			return nil, d.malformed("zero-length topic name")
		}
		p = new(Publish)
	}
	p.Dup = flags&pubDup != 0
	p.QoS = qos
	p.Retain = flags&pubRetain != 0
	p.Topic = topic
	p.PacketID = id
	p.Payload = d.rest()
	return p, nil
}

// headerLen validates p and returns the remaining length and the property
// length.
func (p *Publish) headerLen(v Version) (remaining, pn int, err error) {
	if err := checkVersion(PUBLISH, v); err != nil {
		return 0, 0, err
	}
	if p.QoS > 2 {
		return 0, 0, encodeErr(PUBLISH, "QoS %d", p.QoS)
	}
	if err := checkString(PUBLISH, "topic name", len(p.Topic)); err != nil {
		return 0, 0, err
	}
	n := 2 + len(p.Topic) + len(p.Payload)
	if p.QoS > 0 {
		n += 2
	}
	if v == V5 {
		var size int
		if pn, size, err = propsSize(p.Props, PUBLISH, PUBLISH); err != nil {
			return 0, 0, err
		}
		n += size
	}
	if err := checkRemaining(PUBLISH, n); err != nil {
		return 0, 0, err
	}
	return n, pn, nil
}

func (p *Publish) flags() byte {
	f := p.QoS << 1
	if p.Dup {
		f |= pubDup
	}
	if p.Retain {
		f |= pubRetain
	}
	return f
}

// AppendHeader appends everything of the PUBLISH except the payload: the fixed
// header with the full remaining length (payload included), the topic, the
// packet identifier when QoS > 0 and, in v5, the properties. A broker sends
// the one shared payload after a per-subscriber header.
func (p *Publish) AppendHeader(dst []byte, v Version) ([]byte, error) {
	n, pn, err := p.headerLen(v)
	if err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, PUBLISH, p.flags(), n)
	dst = appendString(dst, p.Topic)
	if p.QoS > 0 {
		dst = appendUint16(dst, p.PacketID)
	}
	if v == V5 {
		dst = p.Props.appendProperties(dst, pn)
	}
	return dst, nil
}

// Encode appends the whole PUBLISH packet.
func (p *Publish) Encode(dst []byte, v Version) ([]byte, error) {
	dst, err := p.AppendHeader(dst, v)
	if err != nil {
		return dst, err
	}
	return append(dst, p.Payload...), nil
}

// String describes the PUBLISH for logs; it never shows the payload.
func (p *Publish) String() string {
	s := fmt.Sprintf("PUBLISH topic=%q qos=%d", p.Topic, p.QoS)
	if p.QoS > 0 {
		s += fmt.Sprintf(" id=%d", p.PacketID)
	}
	if p.Retain {
		s += " retain"
	}
	if p.Dup {
		s += " dup"
	}
	if p.Props != nil && p.Props.TopicAlias != nil {
		s += fmt.Sprintf(" alias=%d", *p.Props.TopicAlias)
	}
	return s + fmt.Sprintf(" len=%d", len(p.Payload))
}

// Type returns PUBACK.
func (p *Puback) Type() Type { return PUBACK }

// Type returns PUBREC.
func (p *Pubrec) Type() Type { return PUBREC }

// Type returns PUBREL.
func (p *Pubrel) Type() Type { return PUBREL }

// Type returns PUBCOMP.
func (p *Pubcomp) Type() Type { return PUBCOMP }

// Encode appends the PUBACK; see appendAck for the v5 short forms.
func (p *Puback) Encode(dst []byte, v Version) ([]byte, error) {
	return appendAck(dst, PUBACK, 0, v, p.PacketID, p.ReasonCode, p.Props)
}

// Encode appends the PUBREC.
func (p *Pubrec) Encode(dst []byte, v Version) ([]byte, error) {
	return appendAck(dst, PUBREC, 0, v, p.PacketID, p.ReasonCode, p.Props)
}

// Encode appends the PUBREL (fixed header flags 0010 [MQTT-3.6.1-1]).
func (p *Pubrel) Encode(dst []byte, v Version) ([]byte, error) {
	return appendAck(dst, PUBREL, 0b0010, v, p.PacketID, p.ReasonCode, p.Props)
}

// Encode appends the PUBCOMP.
func (p *Pubcomp) Encode(dst []byte, v Version) ([]byte, error) {
	return appendAck(dst, PUBCOMP, 0, v, p.PacketID, p.ReasonCode, p.Props)
}

func (p *Puback) String() string  { return ackString(PUBACK, p.PacketID, p.ReasonCode) }
func (p *Pubrec) String() string  { return ackString(PUBREC, p.PacketID, p.ReasonCode) }
func (p *Pubrel) String() string  { return ackString(PUBREL, p.PacketID, p.ReasonCode) }
func (p *Pubcomp) String() string { return ackString(PUBCOMP, p.PacketID, p.ReasonCode) }

func ackString(t Type, id uint16, rc ReasonCode) string {
	s := fmt.Sprintf("%s id=%d", t, id)
	if rc != Success {
		s += fmt.Sprintf(" rc=0x%02X (%s)", byte(rc), rc.Error())
	}
	return s
}

// appendAck encodes PUBACK, PUBREC, PUBREL and PUBCOMP. In v5 the reason code
// and the properties are left out when the code is Success and there are no
// properties, and the property length is left out when there are no
// properties [MQTT-3.4.2-1]; before v5 the packet is the packet id alone.
func appendAck(dst []byte, t Type, flags byte, v Version, id uint16, rc ReasonCode, props *Properties) ([]byte, error) {
	if err := checkVersion(t, v); err != nil {
		return dst, err
	}
	if v != V5 {
		dst = AppendFixedHeader(dst, t, flags, 2)
		return appendUint16(dst, id), nil
	}
	pn, size, err := propsSize(props, t, t)
	if err != nil {
		return dst, err
	}
	switch {
	case pn == 0 && rc == Success:
		dst = AppendFixedHeader(dst, t, flags, 2)
		return appendUint16(dst, id), nil
	case pn == 0:
		dst = AppendFixedHeader(dst, t, flags, 3)
		return append(appendUint16(dst, id), byte(rc)), nil
	}
	if err := checkRemaining(t, 3+size); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, t, flags, 3+size)
	dst = append(appendUint16(dst, id), byte(rc))
	return props.appendProperties(dst, pn), nil
}

func decodeAck(d *decoder, v Version) (Packet, error) {
	id := d.packetID()
	rc := Success
	var props *Properties
	if v == V5 {
		// The reason code and the properties may be omitted: remaining length 2
		// means Success, below 4 means no properties [MQTT-3.4.2-1].
		if d.remaining() > 0 {
			rc = ReasonCode(d.byte("reason code"))
			if d.err == nil && !validReason(d.t, rc) {
				d.protocol("reason code 0x%02X", byte(rc))
			}
		}
		if d.remaining() > 0 {
			props = d.properties(d.t)
		}
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	switch d.t {
	case PUBACK:
		return &Puback{PacketID: id, ReasonCode: rc, Props: props}, nil
	case PUBREC:
		return &Pubrec{PacketID: id, ReasonCode: rc, Props: props}, nil
	case PUBREL:
		return &Pubrel{PacketID: id, ReasonCode: rc, Props: props}, nil
	default:
		return &Pubcomp{PacketID: id, ReasonCode: rc, Props: props}, nil
	}
}

// validReasons lists, per packet type, the MQTT 5 reason codes it may carry
// (MQTT 5.0 section 2.4 table 2-6 and each packet's reason code table).
var validReasons = func() (m [16][4]uint64) {
	add := func(t Type, codes ...ReasonCode) {
		for _, c := range codes {
			m[t][c>>6] |= 1 << (c & 63)
		}
	}
	add(CONNACK, Success, UnspecifiedError, MalformedPacket, ProtocolError, ImplementationSpecificError,
		UnsupportedProtocolVersion, ClientIdentifierNotValid, BadUserNameOrPassword, NotAuthorized,
		ServerUnavailable, ServerBusy, Banned, BadAuthenticationMethod, TopicNameInvalid, PacketTooLarge,
		QuotaExceeded, PayloadFormatInvalid, RetainNotSupported, QoSNotSupported, UseAnotherServer,
		ServerMoved, ConnectionRateExceeded)
	pub := []ReasonCode{Success, NoMatchingSubscribers, UnspecifiedError, ImplementationSpecificError,
		NotAuthorized, TopicNameInvalid, PacketIdentifierInUse, QuotaExceeded, PayloadFormatInvalid}
	add(PUBACK, pub...)
	add(PUBREC, pub...)
	add(PUBREL, Success, PacketIdentifierNotFound)
	add(PUBCOMP, Success, PacketIdentifierNotFound)
	add(SUBACK, Success, GrantedQoS1, GrantedQoS2, UnspecifiedError, ImplementationSpecificError,
		NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse, QuotaExceeded,
		SharedSubscriptionsNotSupported, SubscriptionIDsNotSupported, WildcardSubscriptionsNotSupported)
	add(UNSUBACK, Success, NoSubscriptionExisted, UnspecifiedError, ImplementationSpecificError,
		NotAuthorized, TopicFilterInvalid, PacketIdentifierInUse)
	add(DISCONNECT, Success, DisconnectWithWill, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecificError, NotAuthorized, ServerBusy, ServerShuttingDown, KeepAliveTimeout,
		SessionTakenOver, TopicFilterInvalid, TopicNameInvalid, ReceiveMaximumExceeded, TopicAliasInvalid,
		PacketTooLarge, MessageRateTooHigh, QuotaExceeded, AdministrativeAction, PayloadFormatInvalid,
		RetainNotSupported, QoSNotSupported, UseAnotherServer, ServerMoved, SharedSubscriptionsNotSupported,
		ConnectionRateExceeded, MaximumConnectTime, SubscriptionIDsNotSupported,
		WildcardSubscriptionsNotSupported)
	add(AUTH, Success, ContinueAuthentication, ReAuthenticate)
	return m
}()

// validReason reports whether MQTT 5 allows reason code rc in packet type t.
func validReason(t Type, rc ReasonCode) bool {
	return validReasons[t&15][rc>>6]&(1<<(rc&63)) != 0
}

// ValidReason reports whether MQTT 5 allows reason code rc in a packet of
// type t (CONNACK, PUBACK..PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH).
// Decode rejects a v5 packet carrying any other code as a Protocol Error.
func ValidReason(t Type, rc ReasonCode) bool { return validReason(t, rc) }
