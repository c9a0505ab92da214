package packet

import "fmt"

// propWill is the property context of the will properties in CONNECT; it
// reuses the reserved packet type number 0.
const propWill Type = 0

// propInfo describes one property identifier.
type propInfo struct {
	name    string
	allowed uint32 // bit t set: allowed in packet type t (bit 0: will properties)
}

func types(ts ...Type) uint32 {
	var m uint32
	for _, t := range ts {
		m |= 1 << t
	}
	return m
}

// allWithProps is every context that has properties.
var allWithProps = types(propWill, CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP,
	SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH)

// propTable lists the MQTT 5 properties and where each may appear
// (MQTT 5.0 section 2.2.2.2, table 2-4). It is never modified.
var propTable = [PropSharedSubAvailable + 1]propInfo{
	PropPayloadFormat:        {"Payload Format Indicator", types(PUBLISH, propWill)},
	PropMessageExpiry:        {"Message Expiry Interval", types(PUBLISH, propWill)},
	PropContentType:          {"Content Type", types(PUBLISH, propWill)},
	PropResponseTopic:        {"Response Topic", types(PUBLISH, propWill)},
	PropCorrelationData:      {"Correlation Data", types(PUBLISH, propWill)},
	PropSubscriptionID:       {"Subscription Identifier", types(PUBLISH, SUBSCRIBE)},
	PropSessionExpiry:        {"Session Expiry Interval", types(CONNECT, CONNACK, DISCONNECT)},
	PropAssignedClientID:     {"Assigned Client Identifier", types(CONNACK)},
	PropServerKeepAlive:      {"Server Keep Alive", types(CONNACK)},
	PropAuthMethod:           {"Authentication Method", types(CONNECT, CONNACK, AUTH)},
	PropAuthData:             {"Authentication Data", types(CONNECT, CONNACK, AUTH)},
	PropRequestProblemInfo:   {"Request Problem Information", types(CONNECT)},
	PropWillDelay:            {"Will Delay Interval", types(propWill)},
	PropRequestResponseInfo:  {"Request Response Information", types(CONNECT)},
	PropResponseInfo:         {"Response Information", types(CONNACK)},
	PropServerReference:      {"Server Reference", types(CONNACK, DISCONNECT)},
	PropReasonString:         {"Reason String", types(CONNACK, PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK, DISCONNECT, AUTH)},
	PropReceiveMaximum:       {"Receive Maximum", types(CONNECT, CONNACK)},
	PropTopicAliasMaximum:    {"Topic Alias Maximum", types(CONNECT, CONNACK)},
	PropTopicAlias:           {"Topic Alias", types(PUBLISH)},
	PropMaximumQoS:           {"Maximum QoS", types(CONNACK)},
	PropRetainAvailable:      {"Retain Available", types(CONNACK)},
	PropUser:                 {"User Property", allWithProps},
	PropMaximumPacketSize:    {"Maximum Packet Size", types(CONNECT, CONNACK)},
	PropWildcardSubAvailable: {"Wildcard Subscription Available", types(CONNACK)},
	PropSubIDAvailable:       {"Subscription Identifier Available", types(CONNACK)},
	PropSharedSubAvailable:   {"Shared Subscription Available", types(CONNACK)},
}

// PropName returns the spec's name of a property identifier.
func PropName(id byte) string {
	if int(id) < len(propTable) && propTable[id].name != "" {
		return propTable[id].name
	}
	return fmt.Sprintf("property 0x%02X", id)
}

// PropAllowed reports whether property id may appear in packets of type t
// (MQTT 5.0 table 2-4). Will properties are checked with CONNECT's rules by
// the decoder itself.
func PropAllowed(id byte, t Type) bool {
	return int(id) < len(propTable) && propTable[id].allowed&(1<<t) != 0
}

func ctxName(t Type) string {
	if t == propWill {
		return "will properties"
	}
	return "properties"
}

// propsBlock holds a decoded Properties together with the storage its pointer
// fields point into, so decoding the scalar properties of a packet costs one
// allocation.
type propsBlock struct {
	Properties
	u32 [4]uint32
	u16 [4]uint16
	u8  [8]byte
}

// properties reads a property length and the properties of context ctx. It
// returns nil when the length is 0.
func (d *decoder) properties(ctx Type) *Properties {
	n := d.varint("property length")
	if d.err != nil || n == 0 {
		return nil
	}
	blk := new(propsBlock)
	d.fillProperties(ctx, n, blk)
	if d.err != nil || blk.IsEmpty() {
		// Properties whose values are all empty (a zero-length string, say)
		// encode as nothing, so they decode as none.
		return nil
	}
	return &blk.Properties
}

// fillProperties decodes n bytes of properties of context ctx into blk.
func (d *decoder) fillProperties(ctx Type, n uint32, blk *propsBlock) {
	if d.err != nil {
		return
	}
	if uint32(d.remaining()) < n {
		d.malformed("%s: length %d runs past the end of the packet", ctxName(ctx), n)
		return
	}
	// Read the properties with a decoder limited to their length, so a value
	// running past the property length is malformed.
	pd := decoder{b: d.b[:d.off+int(n)], off: d.off, t: d.t}
	d.off += int(n)
	p := &blk.Properties
	var seen uint64
	for pd.err == nil && pd.off < len(pd.b) {
		id32 := pd.varint("property identifier")
		if pd.err != nil {
			break
		}
		if id32 >= uint32(len(propTable)) || propTable[id32].name == "" {
			pd.malformed("%s: unknown property identifier 0x%02X", ctxName(ctx), id32)
			break
		}
		id := byte(id32)
		name := propTable[id].name
		if propTable[id].allowed&(1<<ctx) == 0 {
			pd.malformed("%s: %s not allowed", ctxName(ctx), name)
			break
		}
		// Every property except User Property, and Subscription Identifier in
		// PUBLISH, may appear at most once: "It is a Protocol Error to include
		// the <property> more than once" (MQTT 5.0 section 3.x.2.x).
		multi := id == PropUser || (id == PropSubscriptionID && ctx == PUBLISH)
		if !multi && seen&(1<<id) != 0 {
			pd.protocol("%s: %s more than once", ctxName(ctx), name)
			break
		}
		seen |= 1 << id
		switch id {
		case PropPayloadFormat:
			p.PayloadFormat = pd.flagProp(name, &blk.u8[0])
		case PropMessageExpiry:
			blk.u32[0] = pd.uint32(name)
			p.MessageExpiry = &blk.u32[0]
		case PropContentType:
			p.ContentType = pd.string(name)
		case PropResponseTopic:
			p.ResponseTopic = pd.string(name)
		case PropCorrelationData:
			p.CorrelationData = pd.binary(name)
		case PropSubscriptionID:
			sid := pd.varint(name)
			if pd.err == nil && sid == 0 { // 1 to 268,435,455 (MQTT 5.0 3.3.2.3.8, 3.8.2.1.2)
				pd.protocol("%s: Subscription Identifier 0", ctxName(ctx))
			}
			p.SubscriptionIDs = append(p.SubscriptionIDs, sid)
		case PropSessionExpiry:
			blk.u32[1] = pd.uint32(name)
			p.SessionExpiry = &blk.u32[1]
		case PropAssignedClientID:
			p.AssignedClientID = pd.string(name)
		case PropServerKeepAlive:
			blk.u16[0] = pd.uint16(name)
			p.ServerKeepAlive = &blk.u16[0]
		case PropAuthMethod:
			p.AuthMethod = pd.string(name)
		case PropAuthData:
			p.AuthData = pd.binary(name)
		case PropRequestProblemInfo:
			p.RequestProblemInfo = pd.flagProp(name, &blk.u8[1])
		case PropWillDelay:
			blk.u32[2] = pd.uint32(name)
			p.WillDelay = &blk.u32[2]
		case PropRequestResponseInfo:
			p.RequestResponseInfo = pd.flagProp(name, &blk.u8[2])
		case PropResponseInfo:
			p.ResponseInfo = pd.string(name)
		case PropServerReference:
			p.ServerReference = pd.string(name)
		case PropReasonString:
			p.ReasonString = pd.string(name)
		case PropReceiveMaximum:
			p.ReceiveMaximum = pd.nonZero16(name, &blk.u16[1]) // 0 is a Protocol Error (3.1.2.11.3, 3.2.2.3.3)
		case PropTopicAliasMaximum:
			blk.u16[2] = pd.uint16(name)
			p.TopicAliasMaximum = &blk.u16[2]
		case PropTopicAlias:
			blk.u16[3] = pd.uint16(name)
			if pd.err == nil && blk.u16[3] == 0 {
				// [MQTT-3.3.2-8]: a Topic Alias of 0 is a Protocol Error the
				// specification names 0x94 Topic Alias Invalid (section
				// 3.3.2.3.4), as Mosquitto answers.
				pd.fail(TopicAliasInvalid, "%s 0", name)
			}
			p.TopicAlias = &blk.u16[3]
		case PropMaximumQoS:
			p.MaximumQoS = pd.flagProp(name, &blk.u8[3])
		case PropRetainAvailable:
			p.RetainAvailable = pd.flagProp(name, &blk.u8[4])
		case PropUser:
			k := pd.string("User Property key")
			v := pd.string("User Property value")
			p.User = append(p.User, UserProperty{Key: k, Value: v})
		case PropMaximumPacketSize:
			blk.u32[3] = pd.uint32(name)
			if pd.err == nil && blk.u32[3] == 0 { // 0 is a Protocol Error (3.1.2.11.4, 3.2.2.3.6)
				pd.protocol("%s: %s 0", ctxName(ctx), name)
			}
			p.MaximumPacketSize = &blk.u32[3]
		case PropWildcardSubAvailable:
			p.WildcardSubAvailable = pd.flagProp(name, &blk.u8[5])
		case PropSubIDAvailable:
			p.SubIDAvailable = pd.flagProp(name, &blk.u8[6])
		case PropSharedSubAvailable:
			p.SharedSubAvailable = pd.flagProp(name, &blk.u8[7])
		}
	}
	if pd.err != nil && d.err == nil {
		d.err = pd.err
	}
}

// flagProp reads a one-byte property whose only valid values are 0 and 1;
// anything else is a Protocol Error (MQTT 5.0 3.1.2.11.6-7, 3.2.2.3.4-5,
// 3.2.2.3.11-13, 3.3.2.3.2).
func (d *decoder) flagProp(name string, dst *byte) *byte {
	*dst = d.byte(name)
	if d.err == nil && *dst > 1 {
		d.protocol("%s %d", name, *dst)
	}
	return dst
}

// nonZero16 reads a two-byte property that must not be 0 (Protocol Error).
func (d *decoder) nonZero16(name string, dst *uint16) *uint16 {
	*dst = d.uint16(name)
	if d.err == nil && *dst == 0 {
		d.protocol("%s 0", name)
	}
	return dst
}

// Len returns the encoded length of the properties, without the property
// length prefix. A nil *Properties has length 0.
func (p *Properties) Len() int {
	if p == nil {
		return 0
	}
	n := 0
	if p.PayloadFormat != nil {
		n += 2
	}
	if p.MessageExpiry != nil {
		n += 5
	}
	if p.ContentType != "" {
		n += 3 + len(p.ContentType)
	}
	if p.ResponseTopic != "" {
		n += 3 + len(p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		n += 3 + len(p.CorrelationData)
	}
	for _, id := range p.SubscriptionIDs {
		n += 1 + max(VarintLen(id), 1)
	}
	if p.SessionExpiry != nil {
		n += 5
	}
	if p.AssignedClientID != "" {
		n += 3 + len(p.AssignedClientID)
	}
	if p.ServerKeepAlive != nil {
		n += 3
	}
	if p.AuthMethod != "" {
		n += 3 + len(p.AuthMethod)
	}
	if len(p.AuthData) > 0 {
		n += 3 + len(p.AuthData)
	}
	if p.RequestProblemInfo != nil {
		n += 2
	}
	if p.WillDelay != nil {
		n += 5
	}
	if p.RequestResponseInfo != nil {
		n += 2
	}
	if p.ResponseInfo != "" {
		n += 3 + len(p.ResponseInfo)
	}
	if p.ServerReference != "" {
		n += 3 + len(p.ServerReference)
	}
	if p.ReasonString != "" {
		n += 3 + len(p.ReasonString)
	}
	if p.ReceiveMaximum != nil {
		n += 3
	}
	if p.TopicAliasMaximum != nil {
		n += 3
	}
	if p.TopicAlias != nil {
		n += 3
	}
	if p.MaximumQoS != nil {
		n += 2
	}
	if p.RetainAvailable != nil {
		n += 2
	}
	for _, u := range p.User {
		n += 5 + len(u.Key) + len(u.Value)
	}
	if p.MaximumPacketSize != nil {
		n += 5
	}
	if p.WildcardSubAvailable != nil {
		n += 2
	}
	if p.SubIDAvailable != nil {
		n += 2
	}
	if p.SharedSubAvailable != nil {
		n += 2
	}
	return n
}

// IsEmpty reports whether p (possibly nil) holds no property.
func (p *Properties) IsEmpty() bool { return p.Len() == 0 }

// check returns an error if p holds a property that packet type ctx may not
// carry, or a value that cannot be encoded.
func (p *Properties) check(t, ctx Type) error {
	if p == nil {
		return nil
	}
	bad := func(id byte) error {
		return encodeErr(t, "%s: %s not allowed", ctxName(ctx), propTable[id].name)
	}
	has := func(id byte, present bool) bool { return present && !PropAllowed(id, ctx) }
	switch {
	case has(PropPayloadFormat, p.PayloadFormat != nil):
		return bad(PropPayloadFormat)
	case has(PropMessageExpiry, p.MessageExpiry != nil):
		return bad(PropMessageExpiry)
	case has(PropContentType, p.ContentType != ""):
		return bad(PropContentType)
	case has(PropResponseTopic, p.ResponseTopic != ""):
		return bad(PropResponseTopic)
	case has(PropCorrelationData, len(p.CorrelationData) > 0):
		return bad(PropCorrelationData)
	case has(PropSubscriptionID, len(p.SubscriptionIDs) > 0):
		return bad(PropSubscriptionID)
	case has(PropSessionExpiry, p.SessionExpiry != nil):
		return bad(PropSessionExpiry)
	case has(PropAssignedClientID, p.AssignedClientID != ""):
		return bad(PropAssignedClientID)
	case has(PropServerKeepAlive, p.ServerKeepAlive != nil):
		return bad(PropServerKeepAlive)
	case has(PropAuthMethod, p.AuthMethod != ""):
		return bad(PropAuthMethod)
	case has(PropAuthData, len(p.AuthData) > 0):
		return bad(PropAuthData)
	case has(PropRequestProblemInfo, p.RequestProblemInfo != nil):
		return bad(PropRequestProblemInfo)
	case has(PropWillDelay, p.WillDelay != nil):
		return bad(PropWillDelay)
	case has(PropRequestResponseInfo, p.RequestResponseInfo != nil):
		return bad(PropRequestResponseInfo)
	case has(PropResponseInfo, p.ResponseInfo != ""):
		return bad(PropResponseInfo)
	case has(PropServerReference, p.ServerReference != ""):
		return bad(PropServerReference)
	case has(PropReasonString, p.ReasonString != ""):
		return bad(PropReasonString)
	case has(PropReceiveMaximum, p.ReceiveMaximum != nil):
		return bad(PropReceiveMaximum)
	case has(PropTopicAliasMaximum, p.TopicAliasMaximum != nil):
		return bad(PropTopicAliasMaximum)
	case has(PropTopicAlias, p.TopicAlias != nil):
		return bad(PropTopicAlias)
	case has(PropMaximumQoS, p.MaximumQoS != nil):
		return bad(PropMaximumQoS)
	case has(PropRetainAvailable, p.RetainAvailable != nil):
		return bad(PropRetainAvailable)
	case has(PropUser, len(p.User) > 0):
		return bad(PropUser)
	case has(PropMaximumPacketSize, p.MaximumPacketSize != nil):
		return bad(PropMaximumPacketSize)
	case has(PropWildcardSubAvailable, p.WildcardSubAvailable != nil):
		return bad(PropWildcardSubAvailable)
	case has(PropSubIDAvailable, p.SubIDAvailable != nil):
		return bad(PropSubIDAvailable)
	case has(PropSharedSubAvailable, p.SharedSubAvailable != nil):
		return bad(PropSharedSubAvailable)
	}
	for _, s := range [...]string{p.ContentType, p.ResponseTopic, p.AssignedClientID, p.AuthMethod,
		p.ResponseInfo, p.ServerReference, p.ReasonString} {
		if err := checkString(t, ctxName(ctx), len(s)); err != nil {
			return err
		}
	}
	if err := checkString(t, "Correlation Data", len(p.CorrelationData)); err != nil {
		return err
	}
	if err := checkString(t, "Authentication Data", len(p.AuthData)); err != nil {
		return err
	}
	for _, u := range p.User {
		if err := checkString(t, "User Property", max(len(u.Key), len(u.Value))); err != nil {
			return err
		}
	}
	for _, id := range p.SubscriptionIDs {
		if id == 0 || id > MaxRemainingLength {
			return encodeErr(t, "Subscription Identifier %d out of range", id)
		}
	}
	if ctx == SUBSCRIBE && len(p.SubscriptionIDs) > 1 {
		return encodeErr(t, "more than one Subscription Identifier")
	}
	return nil
}

// appendProperties appends the property length and the properties, in
// identifier order. n is p.Len().
func (p *Properties) appendProperties(dst []byte, n int) []byte {
	dst = AppendVarint(dst, uint32(n))
	if n == 0 {
		return dst
	}
	if p.PayloadFormat != nil {
		dst = append(dst, PropPayloadFormat, *p.PayloadFormat)
	}
	if p.MessageExpiry != nil {
		dst = appendUint32(append(dst, PropMessageExpiry), *p.MessageExpiry)
	}
	if p.ContentType != "" {
		dst = appendString(append(dst, PropContentType), p.ContentType)
	}
	if p.ResponseTopic != "" {
		dst = appendString(append(dst, PropResponseTopic), p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 {
		dst = appendBinary(append(dst, PropCorrelationData), p.CorrelationData)
	}
	for _, id := range p.SubscriptionIDs {
		dst = AppendVarint(append(dst, PropSubscriptionID), id)
	}
	if p.SessionExpiry != nil {
		dst = appendUint32(append(dst, PropSessionExpiry), *p.SessionExpiry)
	}
	if p.AssignedClientID != "" {
		dst = appendString(append(dst, PropAssignedClientID), p.AssignedClientID)
	}
	if p.ServerKeepAlive != nil {
		dst = appendUint16(append(dst, PropServerKeepAlive), *p.ServerKeepAlive)
	}
	if p.AuthMethod != "" {
		dst = appendString(append(dst, PropAuthMethod), p.AuthMethod)
	}
	if len(p.AuthData) > 0 {
		dst = appendBinary(append(dst, PropAuthData), p.AuthData)
	}
	if p.RequestProblemInfo != nil {
		dst = append(dst, PropRequestProblemInfo, *p.RequestProblemInfo)
	}
	if p.WillDelay != nil {
		dst = appendUint32(append(dst, PropWillDelay), *p.WillDelay)
	}
	if p.RequestResponseInfo != nil {
		dst = append(dst, PropRequestResponseInfo, *p.RequestResponseInfo)
	}
	if p.ResponseInfo != "" {
		dst = appendString(append(dst, PropResponseInfo), p.ResponseInfo)
	}
	if p.ServerReference != "" {
		dst = appendString(append(dst, PropServerReference), p.ServerReference)
	}
	if p.ReasonString != "" {
		dst = appendString(append(dst, PropReasonString), p.ReasonString)
	}
	if p.ReceiveMaximum != nil {
		dst = appendUint16(append(dst, PropReceiveMaximum), *p.ReceiveMaximum)
	}
	if p.TopicAliasMaximum != nil {
		dst = appendUint16(append(dst, PropTopicAliasMaximum), *p.TopicAliasMaximum)
	}
	if p.TopicAlias != nil {
		dst = appendUint16(append(dst, PropTopicAlias), *p.TopicAlias)
	}
	if p.MaximumQoS != nil {
		dst = append(dst, PropMaximumQoS, *p.MaximumQoS)
	}
	if p.RetainAvailable != nil {
		dst = append(dst, PropRetainAvailable, *p.RetainAvailable)
	}
	for _, u := range p.User {
		dst = appendString(appendString(append(dst, PropUser), u.Key), u.Value)
	}
	if p.MaximumPacketSize != nil {
		dst = appendUint32(append(dst, PropMaximumPacketSize), *p.MaximumPacketSize)
	}
	if p.WildcardSubAvailable != nil {
		dst = append(dst, PropWildcardSubAvailable, *p.WildcardSubAvailable)
	}
	if p.SubIDAvailable != nil {
		dst = append(dst, PropSubIDAvailable, *p.SubIDAvailable)
	}
	if p.SharedSubAvailable != nil {
		dst = append(dst, PropSharedSubAvailable, *p.SharedSubAvailable)
	}
	return dst
}

// propsSize returns the bytes properties take in a v5 packet (length prefix
// included) after checking them against context ctx of packet type t.
func propsSize(p *Properties, t, ctx Type) (n, size int, err error) {
	if err := p.check(t, ctx); err != nil {
		return 0, 0, err
	}
	n = p.Len()
	if n > MaxRemainingLength {
		return 0, 0, checkRemaining(t, n)
	}
	return n, VarintLen(uint32(n)) + n, nil
}
