package broker

import (
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Message is one application message as the broker routes it. It is built
// once per PUBLISH and shared by pointer with every subscriber: nothing
// changes it after routing begins.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte // as published
	Retain  bool // as published
	Props   *packet.Properties
	From    string    // publisher's client id ("" for the broker itself)
	Created time.Time // when the broker received it (for message expiry)

	id   atomic.Uint64 // store id, given when first persisted
	gate atomic.Uint64 // HoldAck's largest token; 0: the publisher's acknowledgement waits for no AckGate
}

// HoldAck makes the acknowledgement of m to the client that published it
// (its PUBACK or PUBREC) wait for the AckGates (hooks.go), which are asked
// about token, a number of the hook's own (> 0; the largest given is
// kept). A hook that hands m on (a cluster forwarding it to other nodes)
// calls it while m is routed, on the publisher's goroutine. Messages the
// server publishes itself (wills, Publish) have no acknowledgement to hold.
func (m *Message) HoldAck(token uint64) {
	for {
		old := m.gate.Load()
		if token <= old || m.gate.CompareAndSwap(old, token) {
			return
		}
	}
}

// expired reports whether the v5 message expiry interval has passed
// [MQTT-3.3.2-5].
func (m *Message) expired(now time.Time) bool {
	if m.Props == nil || m.Props.MessageExpiry == nil {
		return false
	}
	return now.Sub(m.Created) >= time.Duration(*m.Props.MessageExpiry)*time.Second
}

// size is what the message counts against the queue byte limits
// (max_queued_bytes, max_queued_bytes_total): its payload, as Mosquitto
// counts them; the topic does not count.
func (m *Message) size() int64 { return int64(len(m.Payload)) }

// subOptions are what the broker keeps per subscription in the topic index.
type subOptions struct {
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	SubID             uint32
}
