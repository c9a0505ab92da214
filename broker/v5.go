package broker

import (
	"errors"
	"strings"

	"github.com/mqttd/mqttd/packet"
)

// MQTT 5 capabilities: what CONNACK advertises (MQTT 5.0 section 3.2.2.3),
// reason strings, and the outbound topic alias table.

// TopicAliasPolicy decides which topic aliases the server assigns on the
// PUBLISH packets it sends to v5 clients.
type TopicAliasPolicy int

const (
	// TopicAliasLRU (the default) gives each topic an alias, up to the
	// client's Topic Alias Maximum; when they are all taken, the least
	// recently used alias is given to the new topic. A client that allows
	// no aliases (no Topic Alias Maximum in CONNECT) gets none.
	TopicAliasLRU TopicAliasPolicy = iota
	// TopicAliasOff never sends a topic alias (topic_alias_out false).
	TopicAliasOff
)

// SharedSubPolicy picks the member of a shared subscription group that gets
// a message.
type SharedSubPolicy int

const (
	// SharedRoundRobin takes the members in turn (the default).
	SharedRoundRobin SharedSubPolicy = iota
	// SharedRandom takes a member at random.
	SharedRandom
	// SharedHashClientID takes the member chosen by a hash of the
	// publisher's client id: one publisher's messages go to one member while
	// the group does not change.
	SharedHashClientID
)

// EnhancedAuthenticator handles one v5 Authentication Method (MQTT 5.0
// section 4.12). Options.EnhancedAuth maps method names to them.
type EnhancedAuthenticator interface {
	// Start begins an exchange with the Authentication Data of a CONNECT or
	// of a re-authentication AUTH. It may set info.Username (during CONNECT
	// only). It returns the exchange, the data to send back, and done once
	// the client is authenticated. An error refuses the client with the
	// packet.ReasonCode it wraps (default 0x87 not authorized).
	Start(info *ClientInfo, data []byte) (ex AuthExchange, out []byte, done bool, err error)
}

// AuthExchange is one client's authentication exchange in progress.
type AuthExchange interface {
	// Continue takes the client's next Authentication Data (AUTH 0x18).
	Continue(data []byte) (out []byte, done bool, err error)
}

// errRedirect makes a connected client use another server (Server.Redirect).
type errRedirect struct {
	ref   string
	moved bool
}

func (e *errRedirect) Error() string { return "broker: use another server: " + e.ref }

func (e *errRedirect) code() packet.ReasonCode {
	if e.moved {
		return packet.ServerMoved
	}
	return packet.UseAnotherServer
}

// Redirect tells every connected v5 client to use the server ref with
// DISCONNECT 0x9C (use another server) or, when moved, 0x9D (server moved),
// carrying ref as Server Reference (MQTT 5.0 section 4.11), and closes every
// connection (3.x clients cannot be told).
func (s *Server) Redirect(ref string, moved bool) {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.disconnect(&errRedirect{ref: ref, moved: moved})
	}
}

func optBool(p *bool) bool { return p == nil || *p }

func (o *Options) retainAvailable() bool { return optBool(o.RetainAvailable) }

// maxQoS is the highest QoS the server accepts and grants.
func (o *Options) maxQoS() byte {
	if o.MaxQoS == nil || *o.MaxQoS > 2 {
		return 2
	}
	return *o.MaxQoS
}

// capabilityProps fills the CONNACK properties that advertise what the
// server supports. Each is sent only when it differs from the value its
// absence means, so a default server's CONNACK carries none of them.
func (o *Options) capabilityProps(p *packet.Properties) {
	if o.MaxTopicAlias > 0 {
		p.TopicAliasMaximum = packet.Ptr(uint16(o.MaxTopicAlias)) // [MQTT-3.2.2-17]
	}
	if o.ReceiveMaximum < 65535 {
		// The inbound window, enforced by checkReceiveMax [MQTT-3.3.4-7]:
		// max_inflight_messages by default, as Mosquitto advertises it.
		p.ReceiveMaximum = packet.Ptr(uint16(o.ReceiveMaximum)) // MQTT 5.0 section 3.2.2.3.3
	}
	if q := o.maxQoS(); q < 2 {
		p.MaximumQoS = packet.Ptr(q) // [MQTT-3.2.2-9]
	}
	if !o.retainAvailable() {
		p.RetainAvailable = packet.Ptr[byte](0)
	}
	if !optBool(o.WildcardSubAvailable) {
		p.WildcardSubAvailable = packet.Ptr[byte](0)
	}
	if !optBool(o.SubIDAvailable) {
		p.SubIDAvailable = packet.Ptr[byte](0)
	}
	if !optBool(o.SharedSubAvailable) {
		p.SharedSubAvailable = packet.Ptr[byte](0)
	}
	if o.MaxPacketSize < maxPacketSize {
		p.MaximumPacketSize = packet.Ptr(uint32(o.MaxPacketSize))
	}
}

// reasonProps returns properties carrying a Reason String for a v5 client
// that did not set Request Problem Information to 0 [MQTT-3.1.2-29], and
// only when it keeps the packet within the client's Maximum Packet Size
// [MQTT-3.4.2-2] (a reason string never makes an ack larger than 64 bytes
// plus the text).
func (c *conn) reasonProps(text string) *packet.Properties {
	if text == "" || c.version != packet.V5 || !c.problemInfo {
		return nil
	}
	if c.maxOutSize > 0 && len(text)+16 > c.maxOutSize {
		return nil
	}
	return &packet.Properties{ReasonString: text}
}

// reasonText is the human explanation of err beyond its reason code, or ""
// for the broker's own self-explanatory errors (take-over, keep alive,
// shutdown) and bare reason codes.
func reasonText(err error, rc packet.ReasonCode) string {
	if err == nil || errors.Is(err, errTakenOver) || errors.Is(err, errKeepAlive) || errors.Is(err, errShuttingDown) {
		return ""
	}
	var parts []string
	for line := range strings.SplitSeq(err.Error(), "\n") {
		if line != "" && line != rc.Error() {
			parts = append(parts, line)
		}
	}
	return strings.Join(parts, ": ")
}

// aliasTable is the server's outbound topic alias map of one connection
// (TopicAliasLRU): alias -> topic and topic -> alias, with the aliases in a
// doubly linked list from most to least recently used. Guarded by conn.outMu.
type aliasTable struct {
	max        uint16
	byTopic    map[string]uint16
	topic      []string // index: alias; [0] unused
	prev, next []uint16 // LRU list links; 0 = none
	head, tail uint16   // most / least recently used
	used       uint16

	// The properties of the PUBLISH being encoded with an alias: scratch
	// kept here so that connections without aliases do not carry it.
	props packet.Properties
	val   uint16
}

func newAliasTable(max uint16) *aliasTable {
	return &aliasTable{max: max, byTopic: make(map[string]uint16),
		topic: make([]string, max+1), prev: make([]uint16, max+1), next: make([]uint16, max+1)}
}

// pick returns the alias for name: known says it is already mapped (send an
// empty topic); otherwise alias is the one name would take, a free one or
// the least recently used. Nothing changes until commit.
func (a *aliasTable) pick(name string) (alias uint16, known bool) {
	if al, ok := a.byTopic[name]; ok {
		return al, true
	}
	if a.used < a.max {
		return a.used + 1, false
	}
	return a.tail, false
}

// commit records that alias now stands for name and was used last.
func (a *aliasTable) commit(name string, alias uint16, known bool) {
	if !known {
		if alias > a.used {
			a.used = alias
		} else {
			delete(a.byTopic, a.topic[alias])
			a.unlink(alias)
		}
		a.topic[alias] = name
		a.byTopic[name] = alias
	} else if a.head == alias {
		return
	} else {
		a.unlink(alias)
	}
	// push front
	a.prev[alias], a.next[alias] = 0, a.head
	if a.head != 0 {
		a.prev[a.head] = alias
	}
	a.head = alias
	if a.tail == 0 {
		a.tail = alias
	}
}

func (a *aliasTable) unlink(al uint16) {
	p, n := a.prev[al], a.next[al]
	if p != 0 {
		a.next[p] = n
	} else {
		a.head = n
	}
	if n != 0 {
		a.prev[n] = p
	} else {
		a.tail = p
	}
	a.prev[al], a.next[al] = 0, 0
}
