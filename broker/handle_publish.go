package broker

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// isSysTopic reports whether name is under $SYS, which only the broker
// publishes to.
func isSysTopic(name string) bool {
	return name == "$SYS" || strings.HasPrefix(name, "$SYS/")
}

// bridgeStateTopic is where bridges publish their connection state
// (notifications): the one part of $SYS clients may publish to, subject to
// the ACL, as in Mosquitto.
const bridgeStateTopic = "$SYS/broker/connection/"

// handlePublish does the publisher's side of a PUBLISH: validation, topic
// alias, authorization, routing, and the QoS 1/2 acknowledgement.
func (c *conn) handlePublish(p *packet.Publish) error {
	c.stats.pubIn[p.QoS].Add(1) // QoS 3 never decodes [MQTT-3.3.1-4]
	c.stats.pubBytesIn.Add(int64(len(p.Payload)))
	opts := &c.srv.opts
	if p.QoS > 0 && c.version == packet.V5 {
		if err := c.checkReceiveMax(p); err != nil {
			return err
		}
	}
	if p.QoS > opts.maxQoS() {
		// Above the Maximum QoS of CONNACK [MQTT-3.2.2-11]: DISCONNECT 0x9B
		// (MQTT 5.0 section 3.2.2.3.4); 3.x: close.
		return errors.Join(packet.QoSNotSupported, fmt.Errorf("QoS %d above the maximum QoS %d", p.QoS, opts.maxQoS()))
	}
	if p.Retain && !opts.retainAvailable() {
		// Retain Available 0 [MQTT-3.2.2-14]: DISCONNECT 0x9A (section 3.2.2.3.5).
		return errors.Join(packet.RetainNotSupported, errors.New("retained messages are not supported"))
	}
	if c.version == packet.V5 && p.Props != nil && len(p.Props.SubscriptionIDs) > 0 {
		// A PUBLISH from a client carries no Subscription Identifier
		// [MQTT-3.3.4-6]: DISCONNECT 0x82. The codec cannot tell (the server
		// sends the property), so the broker checks.
		return errors.Join(packet.ProtocolError, errors.New("PUBLISH from a client carries a Subscription Identifier"))
	}
	if c.version == packet.V5 && p.Props != nil && p.Props.TopicAlias != nil {
		alias := *p.Props.TopicAlias
		if alias == 0 || int(alias) > opts.MaxTopicAlias {
			// [MQTT-3.3.2-8] (the codec answers 0 with 0x94 already),
			// [MQTT-3.3.2-9]; accepted up to our maximum [MQTT-3.3.2-12].
			return errors.Join(packet.TopicAliasInvalid, fmt.Errorf("topic alias %d not in 1..%d", alias, opts.MaxTopicAlias))
		}
		if p.Topic == "" {
			t, ok := c.rx.alias(alias)
			if !ok {
				// An alias never set on this connection (mappings do not
				// carry over [MQTT-3.3.2-7]): protocol error.
				return errors.Join(packet.ProtocolError, fmt.Errorf("topic alias %d is not set", alias))
			}
			p.Topic = t
		} else {
			x := c.extras()
			if x.aliases == nil {
				x.aliases = make(map[uint16]string)
			}
			x.aliases[alias] = p.Topic
		}
	}
	if err := topic.ValidateName(p.Topic); err != nil {
		// [MQTT-3.3.2-2] no wildcards in a topic name: close (3.x) or
		// DISCONNECT 0x90 (5.0).
		return errors.Join(packet.TopicNameInvalid, err)
	}
	p.Topic = c.mountTopic(p.Topic) // mount_point (listener_opts.go)

	rc := packet.Success
	why := ""
	switch {
	case isSysTopic(p.Topic) && !strings.HasPrefix(p.Topic, bridgeStateTopic):
		rc, why = packet.NotAuthorized, "clients may not publish to $SYS" // clients cannot publish to $SYS
	case opts.MessageSizeLimit > 0 && len(p.Payload) > opts.MessageSizeLimit:
		rc, why = packet.PacketTooLarge, "payload above the message size limit"
	case opts.StrictPayloadFormat && p.Props != nil && p.Props.PayloadFormat != nil && *p.Props.PayloadFormat == 1 &&
		!utf8.Valid(p.Payload):
		// Payload Format Indicator 1 says UTF-8; a payload that is not is
		// refused with 0x99 (MQTT 5.0 section 3.3.2.3.2); QoS 0 has no ack:
		// DISCONNECT 0x99.
		if p.QoS == 0 {
			return errors.Join(packet.PayloadFormatInvalid, errors.New("payload is not valid UTF-8"))
		}
		rc, why = packet.PayloadFormatInvalid, "payload is not valid UTF-8"
	case c.srv.hasAuthz() && !c.srv.allowed(&c.info, AccessPublish, p.Topic):
		rc, why = packet.NotAuthorized, "not authorized to publish to "+p.Topic
	}
	route := true // false: a PublishHook consumed the message (ErrHandled)
	if rc == packet.Success && len(c.srv.hooks.publish) > 0 {
		rc, why, route = c.runPublishHooks(p)
	}

	if rc == packet.Success {
		// Past memory_limit (memlimit.go), or a store that cannot take the
		// message (diskfull.go).
		r, w, drop, err := c.overload(p)
		if err != nil || drop {
			return err
		}
		rc, why = r, w
	}
	b := c.batch()
	switch p.QoS {
	case 0:
		if rc == packet.Success && route {
			c.srv.publish(c.newMessage(p), c.sess, b)
		}
	case 1:
		if rc == packet.Success && route {
			m := c.newMessage(p)
			n, routed := c.srv.publish(m, c.sess, b)
			c.noteGate(m)
			if !routed {
				// The server is closing and the message went nowhere: no
				// PUBACK, the client sends it again to the next server
				// [MQTT-4.3.2-2] (a PUBACK is ownership taken).
				return errShuttingDown
			}
			if n == 0 && c.version == packet.V5 {
				rc = packet.NoMatchingSubscribers
			}
		}
		ack := &packet.Puback{PacketID: p.PacketID, ReasonCode: c.ackCode(rc)} // [MQTT-4.3.2-2]
		if ack.ReasonCode.IsError() {
			ack.Props = c.reasonProps(why)
		}
		c.sendAck(ack)
	case 2:
		// Method B: route on PUBLISH, remember the id until PUBREL so a
		// re-sent PUBLISH is not routed twice [MQTT-4.3.3-2].
		s := c.sess
		s.mu.Lock()
		_, dup := s.inbound[p.PacketID]
		if !dup && rc == packet.Success {
			if s.inbound == nil {
				s.inbound = make(map[uint16]struct{})
			}
			s.inbound[p.PacketID] = struct{}{}
			s.inboundN.Add(1)
			if b != nil && s.stored() {
				b.PutInbound(s.id, p.PacketID)
			}
		}
		s.mu.Unlock()
		if !dup && rc == packet.Success && route {
			m := c.newMessage(p)
			n, routed := c.srv.publish(m, s, b)
			c.noteGate(m)
			if !routed {
				// Closing, and the message went nowhere: forget the packet
				// id (a re-sent PUBLISH must be routed, not taken for a
				// duplicate) and send no PUBREC, so the client sends it
				// again to the next server [MQTT-4.3.3-2].
				s.mu.Lock()
				if _, ok := s.inbound[p.PacketID]; ok {
					delete(s.inbound, p.PacketID)
					s.inboundN.Add(-1)
					if b != nil && s.stored() {
						b.DeleteInbound(s.id, p.PacketID)
					}
				}
				s.mu.Unlock()
				return errShuttingDown
			}
			if n == 0 && c.version == packet.V5 {
				rc = packet.NoMatchingSubscribers
			}
		}
		ack := &packet.Pubrec{PacketID: p.PacketID, ReasonCode: c.ackCode(rc)}
		if ack.ReasonCode.IsError() {
			ack.Props = c.reasonProps(why)
		}
		c.sendAck(ack)
	}
	return nil
}

// runPublishHooks runs the PublishHooks (hooks.go) on an accepted PUBLISH:
// route is false when one consumed it (ErrHandled); an error refuses it
// with the reason code it wraps, 0x83 by default. A topic a hook changed
// must still be a valid topic name [MQTT-3.3.2-2] outside $SYS.
func (c *conn) runPublishHooks(p *packet.Publish) (rc packet.ReasonCode, why string, route bool) {
	err := c.srv.onPublish(&c.info, p)
	switch {
	case errors.Is(err, ErrHandled):
		return packet.Success, "", false
	case err != nil:
		rc = packet.ImplementationSpecificError
		if errors.As(err, &rc); !rc.IsError() {
			rc = packet.ImplementationSpecificError
		}
		return rc, err.Error(), true
	}
	if topic.ValidateName(p.Topic) != nil || isSysTopic(p.Topic) {
		return packet.ImplementationSpecificError, "a hook set an invalid topic", true
	}
	return packet.Success, "", true
}

// ackCode is the reason code a PUBACK/PUBREC carries: 5.0 clients hear
// refusals, 3.x clients get a plain acknowledgement (their protocol has no
// way to say no; the message is dropped, as Mosquitto does).
func (c *conn) ackCode(rc packet.ReasonCode) packet.ReasonCode {
	if c.version != packet.V5 {
		return packet.Success
	}
	if rc == packet.PacketTooLarge {
		return packet.QuotaExceeded
	}
	return rc
}

// newMessage builds the one immutable message shared by every subscriber.
func (c *conn) newMessage(p *packet.Publish) *Message {
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, From: c.info.ClientID}
	if p.Props != nil {
		m.Props = p.Props
		if p.Props.MessageExpiry != nil {
			m.Created = time.Now()
		}
	}
	return m
}

// handlePubrel completes an inbound QoS 2 flow with PUBCOMP [MQTT-4.3.3-2].
func (c *conn) handlePubrel(p *packet.Pubrel) {
	s := c.sess
	s.mu.Lock()
	_, ok := s.inbound[p.PacketID]
	if ok {
		delete(s.inbound, p.PacketID)
		s.inboundN.Add(-1)
	}
	if b := c.batch(); ok && b != nil && s.stored() {
		b.DeleteInbound(s.id, p.PacketID)
	}
	s.mu.Unlock()
	rc := packet.Success
	if !ok {
		rc = packet.PacketIdentifierNotFound
	}
	c.sendAck(&packet.Pubcomp{PacketID: p.PacketID, ReasonCode: rc})
}

// checkReceiveMax enforces the server's Receive Maximum on a v5 client: a
// QoS 1/2 PUBLISH beyond it, counting those not yet acknowledged with PUBACK
// or PUBCOMP (acks held back for the burst's store writes count too), ends
// the connection with DISCONNECT 0x93 [MQTT-3.3.4-7] (MQTT 5.0 section 3.3.4).
// A re-sent QoS 2 PUBLISH whose id is already held does not count again.
func (c *conn) checkReceiveMax(p *packet.Publish) error {
	max := c.srv.opts.ReceiveMaximum
	n := int(c.inAcks) + int(c.asyncAcks.Load()) + int(c.sess.inboundN.Load())
	if n < max {
		return nil
	}
	if p.QoS == 2 && c.sess.holdsInbound(p.PacketID) {
		return nil
	}
	return errors.Join(packet.ReceiveMaximumExceeded,
		fmt.Errorf("more than %d QoS 1/2 PUBLISH unacknowledged", max))
}

// holdsInbound reports whether the inbound QoS 2 packet id is held (its
// PUBLISH was routed, PUBREL not yet received): a PUBLISH re-sent with it is
// not a new message.
func (s *session) holdsInbound(id uint16) bool {
	s.mu.Lock()
	_, ok := s.inbound[id]
	s.mu.Unlock()
	return ok
}
