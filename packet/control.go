package packet

import "fmt"

// Type returns PINGREQ.
func (p *Pingreq) Type() Type { return PINGREQ }

// Encode appends the PINGREQ (two bytes).
func (p *Pingreq) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(PINGREQ, v); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGREQ)<<4, 0), nil
}

func (p *Pingreq) String() string { return "PINGREQ" }

// Type returns PINGRESP.
func (p *Pingresp) Type() Type { return PINGRESP }

// Encode appends the PINGRESP (two bytes).
func (p *Pingresp) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(PINGRESP, v); err != nil {
		return dst, err
	}
	return append(dst, byte(PINGRESP)<<4, 0), nil
}

func (p *Pingresp) String() string { return "PINGRESP" }

// Type returns DISCONNECT.
func (p *Disconnect) Type() Type { return DISCONNECT }

func decodeDisconnect(d *decoder, v Version) (Packet, error) {
	p := new(Disconnect)
	if v == V5 {
		// Remaining length 0 means Normal disconnection; below 2, no
		// properties (MQTT 5.0 3.14.2.1, 3.14.2.2.1).
		if d.remaining() > 0 {
			p.ReasonCode = ReasonCode(d.byte("reason code"))
			if !validReason(DISCONNECT, p.ReasonCode) {
				return nil, d.protocol("reason code 0x%02X", byte(p.ReasonCode))
			}
		}
		if d.remaining() > 0 {
			p.Props = d.properties(DISCONNECT)
		}
	}
	if err := d.end(); err != nil { // 3.x: remaining length 0
		return nil, err
	}
	return p, nil
}

// Encode appends the DISCONNECT. In v5 it is two bytes when the code is
// Success and there are no properties, three with a code and no properties;
// before v5 it is always two bytes.
func (p *Disconnect) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(DISCONNECT, v); err != nil {
		return dst, err
	}
	if v != V5 {
		return append(dst, byte(DISCONNECT)<<4, 0), nil
	}
	return appendReasonProps(dst, DISCONNECT, p.ReasonCode, p.Props, true)
}

func (p *Disconnect) String() string {
	if p.ReasonCode == Success {
		return "DISCONNECT"
	}
	return fmt.Sprintf("DISCONNECT rc=0x%02X (%s)", byte(p.ReasonCode), p.ReasonCode.Error())
}

// Type returns AUTH.
func (p *Auth) Type() Type { return AUTH }

func decodeAuth(d *decoder) (Packet, error) {
	p := new(Auth)
	// Remaining length 0 means Success with no properties (MQTT 5.0 3.15.2.1).
	if d.remaining() > 0 {
		p.ReasonCode = ReasonCode(d.byte("reason code"))
		if !validReason(AUTH, p.ReasonCode) {
			return nil, d.protocol("reason code 0x%02X", byte(p.ReasonCode))
		}
	}
	if d.remaining() > 0 {
		p.Props = d.properties(AUTH)
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// Encode appends the AUTH packet, which exists only in v5. It is two bytes
// when the code is Success and there are no properties; otherwise it carries
// the reason code and the property length.
func (p *Auth) Encode(dst []byte, v Version) ([]byte, error) {
	if v != V5 {
		return dst, encodeErr(AUTH, "AUTH needs MQTT 5, not version %d", byte(v))
	}
	return appendReasonProps(dst, AUTH, p.ReasonCode, p.Props, false)
}

func (p *Auth) String() string {
	s := fmt.Sprintf("AUTH rc=0x%02X (%s)", byte(p.ReasonCode), p.ReasonCode.Error())
	if p.Props != nil && p.Props.AuthMethod != "" {
		s += fmt.Sprintf(" method=%q", p.Props.AuthMethod)
	}
	return s
}

// appendReasonProps encodes the v5 DISCONNECT and AUTH bodies: nothing for
// Success without properties, else the reason code, then the properties
// (whose length is left out when empty and omitEmptyProps is set).
func appendReasonProps(dst []byte, t Type, rc ReasonCode, props *Properties, omitEmptyProps bool) ([]byte, error) {
	pn, size, err := propsSize(props, t, t)
	if err != nil {
		return dst, err
	}
	switch {
	case pn == 0 && rc == Success:
		return append(dst, byte(t)<<4, 0), nil
	case pn == 0 && omitEmptyProps:
		return append(dst, byte(t)<<4, 1, byte(rc)), nil
	}
	if err := checkRemaining(t, 1+size); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, t, 0, 1+size)
	dst = append(dst, byte(rc))
	return props.appendProperties(dst, pn), nil
}
