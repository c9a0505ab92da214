package packet

import (
	"errors"
	"testing"
)

// singleProp returns Properties holding only property id, with a valid value.
func singleProp(id byte) *Properties {
	p := new(Properties)
	switch id {
	case PropPayloadFormat:
		p.PayloadFormat = Ptr[byte](1)
	case PropMessageExpiry:
		p.MessageExpiry = Ptr[uint32](5)
	case PropContentType:
		p.ContentType = "c"
	case PropResponseTopic:
		p.ResponseTopic = "r"
	case PropCorrelationData:
		p.CorrelationData = []byte{1}
	case PropSubscriptionID:
		p.SubscriptionIDs = []uint32{300}
	case PropSessionExpiry:
		p.SessionExpiry = Ptr[uint32](6)
	case PropAssignedClientID:
		p.AssignedClientID = "a"
	case PropServerKeepAlive:
		p.ServerKeepAlive = Ptr[uint16](7)
	case PropAuthMethod:
		p.AuthMethod = "m"
	case PropAuthData:
		p.AuthData = []byte{2}
	case PropRequestProblemInfo:
		p.RequestProblemInfo = Ptr[byte](1)
	case PropWillDelay:
		p.WillDelay = Ptr[uint32](8)
	case PropRequestResponseInfo:
		p.RequestResponseInfo = Ptr[byte](0)
	case PropResponseInfo:
		p.ResponseInfo = "i"
	case PropServerReference:
		p.ServerReference = "s"
	case PropReasonString:
		p.ReasonString = "why"
	case PropReceiveMaximum:
		p.ReceiveMaximum = Ptr[uint16](9)
	case PropTopicAliasMaximum:
		p.TopicAliasMaximum = Ptr[uint16](10)
	case PropTopicAlias:
		p.TopicAlias = Ptr[uint16](11)
	case PropMaximumQoS:
		p.MaximumQoS = Ptr[byte](1)
	case PropRetainAvailable:
		p.RetainAvailable = Ptr[byte](0)
	case PropUser:
		p.User = []UserProperty{{"k", "v"}}
	case PropMaximumPacketSize:
		p.MaximumPacketSize = Ptr[uint32](12)
	case PropWildcardSubAvailable:
		p.WildcardSubAvailable = Ptr[byte](1)
	case PropSubIDAvailable:
		p.SubIDAvailable = Ptr[byte](0)
	case PropSharedSubAvailable:
		p.SharedSubAvailable = Ptr[byte](1)
	default:
		return nil
	}
	return p
}

// withProps returns a v5 packet of context ctx carrying props (raw bytes,
// property length included) and the decoded properties' location.
func withProps(ctx Type, props []byte) (FixedHeader, []byte, func(Packet) *Properties) {
	cat := func(parts ...[]byte) []byte {
		var b []byte
		for _, p := range parts {
			b = append(b, p...)
		}
		return b
	}
	s := func(x string) []byte { return appendString(nil, x) }
	var body []byte
	var get func(Packet) *Properties
	t := ctx
	switch ctx {
	case propWill:
		t = CONNECT
		body = cat(s("MQTT"), []byte{5, 0x06, 0, 0, 0}, s("c"), props, s("w"), s("p"))
		get = func(p Packet) *Properties { return p.(*Connect).Will.Props }
	case CONNECT:
		body = cat(s("MQTT"), []byte{5, 0x02, 0, 0}, props, s("c"))
		get = func(p Packet) *Properties { return p.(*Connect).Props }
	case CONNACK:
		body = cat([]byte{0, 0}, props)
		get = func(p Packet) *Properties { return p.(*Connack).Props }
	case PUBLISH:
		body = cat(s("t"), props)
		get = func(p Packet) *Properties { return p.(*Publish).Props }
	case PUBACK, PUBREC, PUBREL, PUBCOMP:
		body = cat([]byte{0, 1, 0}, props)
		get = func(p Packet) *Properties {
			switch q := p.(type) {
			case *Puback:
				return q.Props
			case *Pubrec:
				return q.Props
			case *Pubrel:
				return q.Props
			}
			return p.(*Pubcomp).Props
		}
	case SUBSCRIBE:
		body = cat([]byte{0, 1}, props, s("a"), []byte{0})
		get = func(p Packet) *Properties { return p.(*Subscribe).Props }
	case SUBACK:
		body = cat([]byte{0, 1}, props, []byte{0})
		get = func(p Packet) *Properties { return p.(*Suback).Props }
	case UNSUBSCRIBE:
		body = cat([]byte{0, 1}, props, s("a"))
		get = func(p Packet) *Properties { return p.(*Unsubscribe).Props }
	case UNSUBACK:
		body = cat([]byte{0, 1}, props, []byte{0})
		get = func(p Packet) *Properties { return p.(*Unsuback).Props }
	case DISCONNECT:
		body = cat([]byte{0}, props)
		get = func(p Packet) *Properties { return p.(*Disconnect).Props }
	case AUTH:
		body = cat([]byte{0}, props)
		get = func(p Packet) *Properties { return p.(*Auth).Props }
	}
	return FixedHeader{Type: t, Flags: requiredFlags[t], Remaining: len(body)}, body, get
}

// TestPropertyPlacement decodes every property in every packet type: where
// MQTT 5 table 2-4 allows it, it decodes to the same value; elsewhere it is a
// Malformed Packet. Encoding it there is refused.
func TestPropertyPlacement(t *testing.T) {
	contexts := []Type{propWill, CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP,
		SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, DISCONNECT, AUTH}
	n := 0
	for id := byte(0); id < 0x30; id++ {
		want := singleProp(id)
		if want == nil {
			continue
		}
		n++
		raw := want.appendProperties(nil, want.Len())
		for _, ctx := range contexts {
			fh, body, get := withProps(ctx, raw)
			p, err := Decode(fh, body, V5)
			if PropAllowed(id, ctx) {
				if err != nil {
					t.Errorf("%s in %s %s: %v", PropName(id), ctx, ctxName(ctx), err)
					continue
				}
				if got := get(p); got.Len() != want.Len() || string(got.appendProperties(nil, got.Len())) != string(raw) {
					t.Errorf("%s in %s: decoded %+v", PropName(id), ctx, got)
				}
			} else if !errors.Is(err, MalformedPacket) {
				t.Errorf("%s in %s %s: got %v, want malformed packet", PropName(id), ctx, ctxName(ctx), err)
			}
			if err := want.check(fh.Type, ctx); (err == nil) != PropAllowed(id, ctx) {
				t.Errorf("encoding %s in %s %s: %v", PropName(id), ctx, ctxName(ctx), err)
			}
		}
	}
	if n != 27 {
		t.Fatalf("%d properties tested, want 27", n)
	}
}
