package broker

import (
	"github.com/mqttd/mqttd/packet"
)

// Outbound topic aliases (MQTT 5.0 section 3.3.2.3.4): the policy and the
// per-connection table the server assigns them from.

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
