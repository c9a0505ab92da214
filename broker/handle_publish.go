package broker

import (
	"errors"
	"strings"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// isSysTopic reports whether name is under $SYS, which only the broker
// publishes to.
func isSysTopic(name string) bool {
	return name == "$SYS" || strings.HasPrefix(name, "$SYS/")
}

// handlePublish does the publisher's side of a PUBLISH: validation, topic
// alias, authorization, routing, and the QoS 1/2 acknowledgement.
func (c *conn) handlePublish(p *packet.Publish) error {
	c.stats.pubIn.Add(1)
	c.stats.pubBytesIn.Add(int64(len(p.Payload)))
	if c.version == packet.V5 && p.Props != nil && p.Props.TopicAlias != nil {
		alias := *p.Props.TopicAlias
		if alias == 0 || alias > serverTopicAliasMax {
			return packet.TopicAliasInvalid // [MQTT-3.3.2-8], [MQTT-3.3.2-9]
		}
		if p.Topic == "" {
			t, ok := c.aliases[alias]
			if !ok {
				return packet.ProtocolError // unknown alias [MQTT-3.3.4-?]
			}
			p.Topic = t
		} else {
			if c.aliases == nil {
				c.aliases = make(map[uint16]string)
			}
			c.aliases[alias] = p.Topic
		}
	}
	if err := topic.ValidateName(p.Topic); err != nil {
		// [MQTT-3.3.2-2] no wildcards in a topic name: close (3.x) or
		// DISCONNECT 0x90 (5.0).
		return errors.Join(packet.TopicNameInvalid, err)
	}
	p.Topic = c.mountTopic(p.Topic) // mount_point (listener_opts.go)

	rc := packet.Success
	opts := &c.srv.opts
	switch {
	case isSysTopic(p.Topic):
		rc = packet.NotAuthorized // clients cannot publish to $SYS
	case opts.MessageSizeLimit > 0 && len(p.Payload) > opts.MessageSizeLimit:
		rc = packet.PacketTooLarge
	case opts.Authorize != nil && !opts.Authorize(&c.info, p.Topic, true):
		rc = packet.NotAuthorized
	}

	b := c.batch()
	switch p.QoS {
	case 0:
		if rc == packet.Success {
			c.srv.publish(c.newMessage(p), c.sess, b)
		}
	case 1:
		if rc == packet.Success {
			if c.srv.publish(c.newMessage(p), c.sess, b) == 0 && c.version == packet.V5 {
				rc = packet.NoMatchingSubscribers
			}
		}
		c.sendAck(&packet.Puback{PacketID: p.PacketID, ReasonCode: c.ackCode(rc)}) // [MQTT-4.3.2-2]
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
			if b != nil && s.stored() {
				b.PutInbound(s.id, p.PacketID)
			}
		}
		s.mu.Unlock()
		if !dup && rc == packet.Success {
			if c.srv.publish(c.newMessage(p), s, b) == 0 && c.version == packet.V5 {
				rc = packet.NoMatchingSubscribers
			}
		}
		c.sendAck(&packet.Pubrec{PacketID: p.PacketID, ReasonCode: c.ackCode(rc)})
	}
	return nil
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

// handlePubrel completes an inbound QoS 2 flow with PUBCOMP [MQTT-4.3.3-?].
func (c *conn) handlePubrel(p *packet.Pubrel) {
	s := c.sess
	s.mu.Lock()
	_, ok := s.inbound[p.PacketID]
	delete(s.inbound, p.PacketID)
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

// handleDisconnect ends the connection without publishing the will
// [MQTT-3.14.4-3]; 5.0 may ask for the will (0x04) and change the session
// expiry [MQTT-3.14.2-?].
func (c *conn) handleDisconnect(p *packet.Disconnect) error {
	if c.version == packet.V5 {
		if p.Props != nil && p.Props.SessionExpiry != nil {
			s := c.sess
			s.mu.Lock()
			was := s.expiry
			se := *p.Props.SessionExpiry
			if was == 0 && se != 0 {
				s.mu.Unlock()
				return packet.ProtocolError // [MQTT-3.14.2-2]
			}
			switch se {
			case 0:
				s.expiry, s.persistent = 0, false
			case 0xFFFFFFFF:
				s.expiry, s.persistent = -1, true
			default:
				s.expiry, s.persistent = time.Duration(se)*time.Second, true
			}
			s.mu.Unlock()
		}
		if p.ReasonCode == packet.DisconnectWithWill {
			return errDisconnectWithWill
		}
	}
	c.cleanExit = true
	c.will = nil // [MQTT-3.1.2-10]
	return errClientDisconnected
}

var (
	errClientDisconnected = errors.New("broker: client disconnected")
	errDisconnectWithWill = errors.New("broker: client disconnected with will")
)
