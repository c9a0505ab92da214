package cluster

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// Subjects on the embedded NATS server (one account, private to the
// cluster). An MQTT topic's levels become NATS tokens (encodeLevel), under
// subjNormal, or subjDollar for topics whose first level starts with '$'
// (so that a '#' or '+' filter, which never matches those [MQTT-4.7.2-1],
// draws no traffic for them). Retained messages go to every node on
// subjRetained. The MQTT topic itself travels in the message body, so the
// subject only routes: the receiving broker matches the real topic again.
const (
	subjNormal   = "m"
	subjDollar   = "d"
	subjRetained = "r"
	subjControl  = "ctl" // ctl.<node>.takeover: request to disconnect a client
)

// encodeLevel maps one MQTT topic level to a NATS subject token. Levels made
// only of letters, digits, '-' and '_' are kept as they are; the empty level
// is "~"; any other level (with '.', '*', '>', spaces, '$', non-ASCII...) is
// "~" followed by its unpadded base64url form. '~' is never in a kept level,
// so the mapping is one to one.
func encodeLevel(l string) string {
	if l == "" {
		return "~"
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return "~" + base64.RawURLEncoding.EncodeToString([]byte(l))
		}
	}
	return l
}

// isSys reports whether name (a topic or filter) is under $SYS, which stays
// per node.
func isSys(name string) bool { return name == "$SYS" || strings.HasPrefix(name, "$SYS/") }

// topicSubject is the subject a message on the topic name t is published to.
func topicSubject(t string) string {
	prefix := subjNormal
	if strings.HasPrefix(t, "$") {
		prefix = subjDollar
	}
	var b strings.Builder
	b.Grow(len(prefix) + len(t) + 8)
	b.WriteString(prefix)
	for l := range strings.SplitSeq(t, "/") {
		b.WriteByte('.')
		b.WriteString(encodeLevel(l))
	}
	return b.String()
}

// filterSubjects returns the subjects a node subscribes to for the MQTT
// filter f (without $share/group/): '+' becomes '*', a trailing '#' becomes
// '>' plus the parent subject itself, since "a/#" also matches "a"
// [MQTT-4.7.1-2]. $SYS filters give none (per node).
func filterSubjects(f string) ([]string, error) {
	if err := topic.ValidateFilter(f); err != nil {
		return nil, err
	}
	if isSys(f) {
		return nil, nil
	}
	levels := strings.Split(f, "/")
	prefix := subjNormal
	if strings.HasPrefix(levels[0], "$") {
		prefix = subjDollar
	}
	toks := []string{prefix}
	for i, l := range levels {
		switch l {
		case "+":
			toks = append(toks, "*")
		case "#":
			if i == 0 {
				return []string{prefix + ".>"}, nil
			}
			parent := strings.Join(toks, ".")
			return []string{parent, parent + ".>"}, nil
		default:
			toks = append(toks, encodeLevel(l))
		}
	}
	return []string{strings.Join(toks, ".")}, nil
}

// encodeMessage writes m as an MQTT 5 PUBLISH (fixed header included): the
// codec already carries every property a message has, and any topic and
// payload. Only the properties of an application message are kept (not the
// subscription ids or topic alias of one delivery); the message expiry
// interval becomes what is left of it [MQTT-3.3.2-6].
func encodeMessage(m *broker.Message, now time.Time) ([]byte, error) {
	p := &packet.Publish{Topic: m.Topic, QoS: m.QoS, Retain: m.Retain, Payload: m.Payload}
	if m.QoS > 0 {
		p.PacketID = 1
	}
	if pr := m.Props; pr != nil {
		np := &packet.Properties{PayloadFormat: pr.PayloadFormat, ContentType: pr.ContentType,
			ResponseTopic: pr.ResponseTopic, CorrelationData: pr.CorrelationData, User: pr.User}
		if pr.MessageExpiry != nil {
			left := int64(*pr.MessageExpiry)
			if !m.Created.IsZero() {
				left -= int64(now.Sub(m.Created) / time.Second)
			}
			if left <= 0 {
				return nil, errExpired
			}
			np.MessageExpiry = packet.Ptr(uint32(left))
		}
		p.Props = np
	}
	return p.Encode(nil, packet.V5)
}

// errExpired: the message's expiry interval passed before it was forwarded.
var errExpired = errors.New("cluster: message expired")

// decodeMessage reads what encodeMessage wrote.
func decodeMessage(b []byte) (*broker.Message, error) {
	r := bytes.NewReader(b)
	fh, err := packet.ReadFixedHeader(r)
	if err != nil {
		return nil, fmt.Errorf("cluster: message header: %w", err)
	}
	if fh.Type != packet.PUBLISH {
		return nil, fmt.Errorf("cluster: message is a %s, not a PUBLISH", fh.Type)
	}
	hl := len(b) - r.Len()
	if hl < 0 || len(b)-hl != fh.Remaining {
		return nil, fmt.Errorf("cluster: message body is %d bytes, header says %d", len(b)-hl, fh.Remaining)
	}
	pk, err := packet.Decode(fh, b[hl:], packet.V5)
	if err != nil {
		return nil, fmt.Errorf("cluster: message: %w", err)
	}
	p, ok := pk.(*packet.Publish)
	if !ok {
		return nil, fmt.Errorf("cluster: message is a %T", pk)
	}
	m := &broker.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Props: p.Props}
	if m.Props != nil && m.Props.IsEmpty() {
		m.Props = nil
	}
	return m, nil
}
