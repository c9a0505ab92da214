package broker

import (
	"fmt"
	"time"

	"github.com/mqttd/mqttd/topic"
)

// SetRetained makes m the retained message of m.Topic, or clears the
// topic's retained message when m.Payload is empty, WITHOUT routing m: no
// subscriber, inline subscription or hook sees it. It is a change of the
// retained state, not a new message: a cluster applies with it the
// retained messages its key-value store orders, whose live copies its
// subscribers already got. It replaces the topic's retained message
// [MQTT-3.3.1-5]; the next SUBSCRIBE matching the topic gets the
// new message [MQTT-3.3.1-6]; a clear makes it get none [MQTT-3.3.1-10],
// [MQTT-3.3.1-11]. m.Topic must be a valid topic name outside $SYS (as
// the broker routes it: after a listener's mount point). With a store the
// change is in it when SetRetained returns. m is copied: the caller may
// reuse it.
func (s *Server) SetRetained(m *Message) error {
	if m == nil {
		return fmt.Errorf("broker: set retained: no message")
	}
	if err := topic.ValidateName(m.Topic); err != nil {
		return fmt.Errorf("broker: set retained: %w", err)
	}
	if isSysTopic(m.Topic) {
		return ErrSysTopic
	}
	if m.QoS > 2 {
		return fmt.Errorf("broker: set retained: QoS %d", m.QoS)
	}
	if !s.opts.retainAvailable() {
		return fmt.Errorf("broker: retained messages are not available")
	}
	if s.isClosing() {
		return ErrServerClosed
	}
	rm := &Message{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: true, Props: m.Props, Created: m.Created}
	if rm.Props != nil && rm.Props.MessageExpiry != nil && rm.Created.IsZero() {
		rm.Created = time.Now() // the expiry interval counts from now [MQTT-3.3.2-5]
	}
	b := s.heldBatch()
	s.setRetained(rm, b)
	if err := s.applyHeld(b); err != nil {
		return fmt.Errorf("broker: set retained: %w", err)
	}
	return nil
}
