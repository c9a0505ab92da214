package packet

import (
	"fmt"
	"strings"
)

// Subscription options bits (MQTT 5.0 3.8.3.1).
const (
	subQoS            = 0x03
	subNoLocal        = 0x04
	subRetainAsPub    = 0x08
	subRetainHandling = 0x30
	subReserved       = 0xC0
)

// Type returns SUBSCRIBE.
func (p *Subscribe) Type() Type { return SUBSCRIBE }

func decodeSubscribe(d *decoder, v Version) (Packet, error) {
	p := &Subscribe{PacketID: d.packetID()} // [MQTT-2.3.1-1]
	if v == V5 {
		p.Props = d.properties(SUBSCRIBE)
	}
	for d.err == nil && d.remaining() > 0 {
		s := Subscription{Filter: d.string("topic filter")} // [MQTT-3.8.3-1]
		opts := d.byte("subscription options")
		if d.err != nil {
			break
		}
		s.QoS = opts & subQoS
		if v == V5 {
			switch {
			case opts&subReserved != 0: // [MQTT-3.8.3-5]
				return nil, d.malformed("reserved subscription option bits %08b", opts)
			case s.QoS == 3: // Maximum QoS 3 is a Protocol Error (3.8.3.1)
				return nil, d.protocol("filter %q: QoS 3", s.Filter)
			case opts&subRetainHandling == subRetainHandling: // Retain Handling 3 is a Protocol Error (3.8.3.1)
				return nil, d.protocol("filter %q: Retain Handling 3", s.Filter)
			}
			s.NoLocal = opts&subNoLocal != 0
			s.RetainAsPublished = opts&subRetainAsPub != 0
			s.RetainHandling = opts & subRetainHandling >> 4
		} else if opts > 2 { // [MQTT-3-8.3-4]: upper 6 bits reserved, QoS 0-2
			return nil, d.malformed("filter %q: requested QoS byte %08b", s.Filter, opts)
		}
		p.Subscriptions = append(p.Subscriptions, s)
	}
	if d.err == nil && len(p.Subscriptions) == 0 {
		// [MQTT-3.8.3-3] (v5 [MQTT-3.8.3-2])
		return nil, d.protocol("no topic filter")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// Encode appends the SUBSCRIBE (fixed header flags 0010 [MQTT-3.8.1-1]).
// Before v5 only each filter's QoS is written.
func (p *Subscribe) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(SUBSCRIBE, v); err != nil {
		return dst, err
	}
	n := 2
	var pn int
	if v == V5 {
		var size int
		var err error
		if pn, size, err = propsSize(p.Props, SUBSCRIBE, SUBSCRIBE); err != nil {
			return dst, err
		}
		n += size
	}
	for _, s := range p.Subscriptions {
		if s.QoS > 2 {
			return dst, encodeErr(SUBSCRIBE, "filter %q: QoS %d", s.Filter, s.QoS)
		}
		if s.RetainHandling > 2 {
			return dst, encodeErr(SUBSCRIBE, "filter %q: Retain Handling %d", s.Filter, s.RetainHandling)
		}
		if err := checkString(SUBSCRIBE, "topic filter", len(s.Filter)); err != nil {
			return dst, err
		}
		n += 3 + len(s.Filter)
	}
	if err := checkRemaining(SUBSCRIBE, n); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, SUBSCRIBE, 0b0010, n)
	dst = appendUint16(dst, p.PacketID)
	if v == V5 {
		dst = p.Props.appendProperties(dst, pn)
	}
	for _, s := range p.Subscriptions {
		dst = appendString(dst, s.Filter)
		opts := s.QoS
		if v == V5 {
			if s.NoLocal {
				opts |= subNoLocal
			}
			if s.RetainAsPublished {
				opts |= subRetainAsPub
			}
			opts |= s.RetainHandling << 4
		}
		dst = append(dst, opts)
	}
	return dst, nil
}

// String describes the SUBSCRIBE for logs.
func (p *Subscribe) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "SUBSCRIBE id=%d", p.PacketID)
	for _, s := range p.Subscriptions {
		fmt.Fprintf(&b, " %q:qos%d", s.Filter, s.QoS)
		if s.NoLocal {
			b.WriteString(",nl")
		}
		if s.RetainAsPublished {
			b.WriteString(",rap")
		}
		if s.RetainHandling != 0 {
			fmt.Fprintf(&b, ",rh%d", s.RetainHandling)
		}
	}
	return b.String()
}

// Type returns SUBACK.
func (p *Suback) Type() Type { return SUBACK }

func decodeSuback(d *decoder, v Version) (Packet, error) {
	p := &Suback{PacketID: d.packetID()}
	if v == V5 {
		p.Props = d.properties(SUBACK)
	}
	if d.err == nil && d.remaining() == 0 {
		// [MQTT-3.9.3-1]: one code per filter, and a SUBSCRIBE has at least one.
		return nil, d.protocol("no reason codes")
	}
	codes := d.rest()
	if d.err != nil {
		return nil, d.err
	}
	p.ReasonCodes = make([]ReasonCode, len(codes))
	for i, c := range codes {
		rc := ReasonCode(c)
		if v == V5 && !validReason(SUBACK, rc) {
			return nil, d.protocol("reason code 0x%02X", c)
		}
		if v != V5 && c > 2 && c != 0x80 { // [MQTT-3.9.3-2]
			return nil, d.malformed("reserved return code 0x%02X", c)
		}
		p.ReasonCodes[i] = rc
	}
	return p, nil
}

// Encode appends the SUBACK. Before v5 any failure code (>= 0x80) is written
// as 0x80 [MQTT-3.9.3-2].
func (p *Suback) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(SUBACK, v); err != nil {
		return dst, err
	}
	n := 2 + len(p.ReasonCodes)
	var pn int
	if v == V5 {
		var size int
		var err error
		if pn, size, err = propsSize(p.Props, SUBACK, SUBACK); err != nil {
			return dst, err
		}
		n += size
	} else {
		for _, rc := range p.ReasonCodes {
			if rc > GrantedQoS2 && rc < 0x80 {
				return dst, encodeErr(SUBACK, "reason code 0x%02X has no 3.x return code", byte(rc))
			}
		}
	}
	if err := checkRemaining(SUBACK, n); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, SUBACK, 0, n)
	dst = appendUint16(dst, p.PacketID)
	if v == V5 {
		dst = p.Props.appendProperties(dst, pn)
	}
	for _, rc := range p.ReasonCodes {
		if v != V5 && rc >= 0x80 {
			rc = 0x80
		}
		dst = append(dst, byte(rc))
	}
	return dst, nil
}

// String describes the SUBACK for logs.
func (p *Suback) String() string { return codesString(SUBACK, p.PacketID, p.ReasonCodes) }

func codesString(t Type, id uint16, codes []ReasonCode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s id=%d", t, id)
	if len(codes) > 0 {
		b.WriteString(" codes=")
		for i, rc := range codes {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, "0x%02X", byte(rc))
		}
	}
	return b.String()
}

// Type returns UNSUBSCRIBE.
func (p *Unsubscribe) Type() Type { return UNSUBSCRIBE }

func decodeUnsubscribe(d *decoder, v Version) (Packet, error) {
	p := &Unsubscribe{PacketID: d.packetID()} // [MQTT-2.3.1-1]
	if v == V5 {
		p.Props = d.properties(UNSUBSCRIBE)
	}
	for d.err == nil && d.remaining() > 0 {
		p.Filters = append(p.Filters, d.string("topic filter")) // [MQTT-3.10.3-1]
	}
	if d.err == nil && len(p.Filters) == 0 { // [MQTT-3.10.3-2]
		return nil, d.protocol("no topic filter")
	}
	if err := d.end(); err != nil {
		return nil, err
	}
	return p, nil
}

// Encode appends the UNSUBSCRIBE (fixed header flags 0010 [MQTT-3.10.1-1]).
func (p *Unsubscribe) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(UNSUBSCRIBE, v); err != nil {
		return dst, err
	}
	n := 2
	var pn int
	if v == V5 {
		var size int
		var err error
		if pn, size, err = propsSize(p.Props, UNSUBSCRIBE, UNSUBSCRIBE); err != nil {
			return dst, err
		}
		n += size
	}
	for _, f := range p.Filters {
		if err := checkString(UNSUBSCRIBE, "topic filter", len(f)); err != nil {
			return dst, err
		}
		n += 2 + len(f)
	}
	if err := checkRemaining(UNSUBSCRIBE, n); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, UNSUBSCRIBE, 0b0010, n)
	dst = appendUint16(dst, p.PacketID)
	if v == V5 {
		dst = p.Props.appendProperties(dst, pn)
	}
	for _, f := range p.Filters {
		dst = appendString(dst, f)
	}
	return dst, nil
}

// String describes the UNSUBSCRIBE for logs.
func (p *Unsubscribe) String() string {
	return fmt.Sprintf("UNSUBSCRIBE id=%d filters=%q", p.PacketID, p.Filters)
}

// Type returns UNSUBACK.
func (p *Unsuback) Type() Type { return UNSUBACK }

func decodeUnsuback(d *decoder, v Version) (Packet, error) {
	p := &Unsuback{PacketID: d.packetID()}
	if v != V5 {
		if err := d.end(); err != nil { // 3.x: the packet id alone
			return nil, err
		}
		return p, nil
	}
	p.Props = d.properties(UNSUBACK)
	if d.err == nil && d.remaining() == 0 {
		// One reason code per filter (MQTT 5.0 3.11.3), at least one filter.
		return nil, d.protocol("no reason codes")
	}
	codes := d.rest()
	if d.err != nil {
		return nil, d.err
	}
	p.ReasonCodes = make([]ReasonCode, len(codes))
	for i, c := range codes {
		if !validReason(UNSUBACK, ReasonCode(c)) {
			return nil, d.protocol("reason code 0x%02X", c)
		}
		p.ReasonCodes[i] = ReasonCode(c)
	}
	return p, nil
}

// Encode appends the UNSUBACK; reason codes and properties exist only in v5.
func (p *Unsuback) Encode(dst []byte, v Version) ([]byte, error) {
	if err := checkVersion(UNSUBACK, v); err != nil {
		return dst, err
	}
	if v != V5 {
		dst = AppendFixedHeader(dst, UNSUBACK, 0, 2)
		return appendUint16(dst, p.PacketID), nil
	}
	pn, size, err := propsSize(p.Props, UNSUBACK, UNSUBACK)
	if err != nil {
		return dst, err
	}
	n := 2 + size + len(p.ReasonCodes)
	if err := checkRemaining(UNSUBACK, n); err != nil {
		return dst, err
	}
	dst = AppendFixedHeader(dst, UNSUBACK, 0, n)
	dst = appendUint16(dst, p.PacketID)
	dst = p.Props.appendProperties(dst, pn)
	for _, rc := range p.ReasonCodes {
		dst = append(dst, byte(rc))
	}
	return dst, nil
}

// String describes the UNSUBACK for logs.
func (p *Unsuback) String() string { return codesString(UNSUBACK, p.PacketID, p.ReasonCodes) }
