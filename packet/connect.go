package packet

import (
	"fmt"
	"strings"
)

// Protocol names carried in CONNECT.
const (
	ProtocolMQTT   = "MQTT"   // 3.1.1 and 5.0
	ProtocolMQIsdp = "MQIsdp" // 3.1
)

// ProtocolName returns the protocol name that goes with protocol level v.
func ProtocolName(v Version) string {
	if v == V31 {
		return ProtocolMQIsdp
	}
	return ProtocolMQTT
}

// CONNECT flag bits (MQTT 3.1.2.3).
const (
	connReserved   = 0x01
	connClean      = 0x02
	connWill       = 0x04
	connWillQoS    = 0x18
	connWillRetain = 0x20
	connPassword   = 0x40
	connUsername   = 0x80
)

// Type returns CONNECT.
func (p *Connect) Type() Type { return CONNECT }

func decodeConnect(body []byte) (Packet, error) {
	d := decoder{b: body, t: CONNECT}
	p := new(Connect)
	p.ProtocolName = d.string("protocol name")
	level := d.byte("protocol level")
	if d.err != nil {
		return nil, d.err
	}
	if lv := level &^ 0x80; level&0x80 != 0 && (lv == byte(V31) || lv == byte(V311)) {
		// The bridge bit (try_private): a 3.x bridge announcing itself.
		p.Bridge = true
		level = lv
	}
	p.Version = Version(level)
	if p.ProtocolName != ProtocolMQTT && p.ProtocolName != ProtocolMQIsdp {
		// [MQTT-3.1.2-1]: not MQTT at all; the server closes without CONNACK.
		return nil, d.protocol("protocol name %q", p.ProtocolName)
	}
	// [MQTT-3.1.2-2]: an unsupported level gets CONNACK 0x01 (v5 0x84). MQIsdp
	// goes only with level 3, MQTT with 4 and 5.
	if (p.ProtocolName == ProtocolMQIsdp) != (p.Version == V31) || p.Version < V31 || p.Version > V5 {
		return p, d.fail(UnsupportedProtocolVersion, "protocol %q level %d", p.ProtocolName, level)
	}
	v := p.Version
	flags := d.byte("connect flags")
	if flags&connReserved != 0 { // [MQTT-3.1.2-3]
		return nil, d.malformed("reserved connect flag set")
	}
	willQoS := flags & connWillQoS >> 3
	if flags&connWill == 0 {
		if willQoS != 0 { // [MQTT-3.1.2-13] (v5 [MQTT-3.1.2-11])
			return nil, d.malformed("will QoS %d without will flag", willQoS)
		}
		if flags&connWillRetain != 0 { // [MQTT-3.1.2-15] (v5 [MQTT-3.1.2-13])
			return nil, d.malformed("will retain without will flag")
		}
	} else if willQoS == 3 { // [MQTT-3.1.2-14] (v5 [MQTT-3.1.2-12])
		return nil, d.malformed("will QoS 3")
	}
	if v != V5 && flags&connPassword != 0 && flags&connUsername == 0 {
		return nil, d.malformed("password flag without user name flag") // [MQTT-3.1.2-22] (3.x only)
	}
	p.CleanStart = flags&connClean != 0
	p.KeepAlive = d.uint16("keep alive")
	if v == V5 {
		p.Props = d.properties(CONNECT)
	}
	p.ClientID = d.string("client identifier") // [MQTT-3.1.3-4]
	if flags&connWill != 0 {
		w := &Will{QoS: willQoS, Retain: flags&connWillRetain != 0}
		if v == V5 {
			w.Props = d.properties(propWill)
		}
		w.Topic = d.string("will topic") // [MQTT-3.1.3-10] (v5 [MQTT-3.1.3-11])
		w.Payload = d.binary("will payload")
		p.Will = w
	}
	if flags&connUsername != 0 {
		p.HasUsername = true
		p.Username = d.string("user name") // [MQTT-3.1.3-11] (v5 [MQTT-3.1.3-12])
	}
	if flags&connPassword != 0 {
		p.HasPassword = true
		p.Password = d.binary("password")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// Encode appends the CONNECT packet. The wire layout follows v; the protocol
// level byte is p.Version when set (else v) and the protocol name is
// p.ProtocolName when set (else the one that goes with the level), so tests
// can build CONNECTs with odd names or levels. The user name and password are
// written when their Has flag is set or they are non-empty.
func (p *Connect) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(CONNECT, v); err != nil {
		return dst, err
	}
	level := p.Version
	if level == 0 {
		level = v
	}
	name := p.ProtocolName
	if name == "" {
		name = ProtocolName(level)
	}
	hasUser := p.HasUsername || p.Username != ""
	hasPass := p.HasPassword || len(p.Password) > 0
	if v != V5 && hasPass && !hasUser {
		return dst, encodeErr(CONNECT, "password without user name before MQTT 5") // [MQTT-3.1.2-22]
	}
	for _, f := range [...]struct {
		name string
		n    int
	}{{"protocol name", len(name)}, {"client identifier", len(p.ClientID)}, {"user name", len(p.Username)}, {"password", len(p.Password)}} {
		if err := checkString(CONNECT, f.name, f.n); err != nil {
			return dst, err
		}
	}
	flags := byte(0)
	if p.CleanStart {
		flags |= connClean
	}
	if hasUser {
		flags |= connUsername
	}
	if hasPass {
		flags |= connPassword
	}
	n := 2 + len(name) + 1 + 1 + 2 + 2 + len(p.ClientID)
	var pn, wpn int
	if v == V5 {
		var size int
		var err error
		if pn, size, err = propsSize(p.Props, CONNECT, CONNECT); err != nil {
			return dst, err
		}
		n += size
	}
	if w := p.Will; w != nil {
		if w.QoS > 2 {
			return dst, encodeErr(CONNECT, "will QoS %d", w.QoS)
		}
		if err := checkString(CONNECT, "will topic", len(w.Topic)); err != nil {
			return dst, err
		}
		if err := checkString(CONNECT, "will payload", len(w.Payload)); err != nil {
			return dst, err
		}
		flags |= connWill | w.QoS<<3
		if w.Retain {
			flags |= connWillRetain
		}
		n += 4 + len(w.Topic) + len(w.Payload)
		if v == V5 {
			var size int
			var err error
			if wpn, size, err = propsSize(w.Props, CONNECT, propWill); err != nil {
				return dst, err
			}
			n += size
		}
	}
	if hasUser {
		n += 2 + len(p.Username)
	}
	if hasPass {
		n += 2 + len(p.Password)
	}
	if err := checkRemaining(CONNECT, n); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, CONNECT, 0, n)
	dst = appendString(dst, name)
	lb := byte(level)
	if p.Bridge && level != V5 {
		lb |= 0x80 // the 3.x bridge bit (try_private)
	}
	dst = append(dst, lb, flags)
	dst = appendUint16(dst, p.KeepAlive)
	if v == V5 {
		dst = p.Props.appendProperties(dst, pn)
	}
	dst = appendString(dst, p.ClientID)
	if w := p.Will; w != nil {
		if v == V5 {
			dst = w.Props.appendProperties(dst, wpn)
		}
		dst = appendString(dst, w.Topic)
		dst = appendBinary(dst, w.Payload)
	}
	if hasUser {
		dst = appendString(dst, p.Username)
	}
	if hasPass {
		dst = appendBinary(dst, p.Password)
	}
	return dst, nil
}

// String describes the CONNECT for logs; it never shows the password or the
// will payload.
func (p *Connect) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "CONNECT %s v%s client=%q keepalive=%d", p.ProtocolName, p.Version, p.ClientID, p.KeepAlive)
	if p.CleanStart {
		b.WriteString(" clean")
	}
	if p.HasUsername {
		fmt.Fprintf(&b, " user=%q", p.Username)
	}
	if p.HasPassword {
		b.WriteString(" password=*")
	}
	if w := p.Will; w != nil {
		fmt.Fprintf(&b, " will=%q qos=%d", w.Topic, w.QoS)
		if w.Retain {
			b.WriteString(" retain")
		}
	}
	return b.String()
}

// Type returns CONNACK.
func (p *Connack) Type() Type { return CONNACK }

func decodeConnack(d *decoder, v Version) (Packet, error) {
	p := new(Connack)
	flags := d.byte("acknowledge flags")
	code := d.byte("return code")
	if d.err != nil {
		return nil, d.err
	}
	switch v {
	case V31:
		// 3.1 has no session-present flag: the first byte is unused and ignored.
	default:
		if flags&^1 != 0 { // bits 7-1 are reserved and MUST be 0 (3.2.2.1)
			return nil, d.malformed("reserved acknowledge flags %08b", flags)
		}
		p.SessionPresent = flags == 1
	}
	if v == V5 {
		p.ReasonCode = ReasonCode(code)
		if !validReason(CONNACK, p.ReasonCode) {
			return nil, d.protocol("reason code 0x%02X", code)
		}
		p.Props = d.properties(CONNACK)
	} else {
		if code > V3NotAuthorized { // 6-255 are reserved (3.1.1 table 3.1)
			return nil, d.malformed("reserved return code %d", code)
		}
		p.ReasonCode = FromV3Connack(code)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// Encode appends the CONNACK. Before v5 the reason code is mapped to a 3.x
// return code (see ReasonCode.V3Connack), and 3.1 has no session-present flag.
func (p *Connack) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(CONNACK, v); err != nil {
		return dst, err
	}
	flags := byte(0)
	if p.SessionPresent && v != V31 {
		flags = 1
	}
	if v != V5 {
		dst = AppendFixedHeader(dst, CONNACK, 0, 2)
		return append(dst, flags, p.ReasonCode.V3Connack()), nil
	}
	pn, size, err := propsSize(p.Props, CONNACK, CONNACK)
	if err != nil {
		return dst, err
	}
	n := 2 + size
	if err := checkRemaining(CONNACK, n); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, CONNACK, 0, n)
	dst = append(dst, flags, byte(p.ReasonCode))
	return p.Props.appendProperties(dst, pn), nil
}

// String describes the CONNACK for logs.
func (p *Connack) String() string {
	s := fmt.Sprintf("CONNACK rc=0x%02X (%s)", byte(p.ReasonCode), p.ReasonCode.Error())
	if p.SessionPresent {
		s += " session-present"
	}
	return s
}
