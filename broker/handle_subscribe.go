package broker

import (
	"errors"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/topic"
)

// handleSubscribe adds the subscriptions, answers SUBACK with one code per
// filter in order [MQTT-3.8.4-1], [MQTT-3.9.3-1], then sends the matching
// retained messages [MQTT-3.3.1-6].
func (c *conn) handleSubscribe(p *packet.Subscribe) error {
	v5 := c.version == packet.V5
	codes := make([]packet.ReasonCode, len(p.Subscriptions))
	type retainedFor struct {
		filter string
		qos    byte
		rap    bool
		subIDs []uint32
	}
	var toSend []retainedFor
	var subID uint32
	opts := &c.srv.opts
	if v5 && p.Props != nil && len(p.Props.SubscriptionIDs) > 0 {
		subID = p.Props.SubscriptionIDs[0]
		if !optBool(opts.SubIDAvailable) {
			// Subscription Identifier Available 0: DISCONNECT 0xA1
			// (MQTT 5.0 section 3.2.2.3.12).
			return errors.Join(packet.SubscriptionIDsNotSupported, errors.New("subscription identifiers are not supported"))
		}
	}
	var why string
	s := c.sess
	for i, sub := range p.Subscriptions {
		group, filter, shared, err := topic.ParseShare(sub.Filter)
		if err == nil && !shared {
			filter = sub.Filter
			err = topic.ValidateFilter(filter)
		}
		if err != nil {
			if !v5 {
				// 3.x: an invalid filter is a protocol violation: close
				// [MQTT-4.8.0-1], as Mosquitto does.
				return errors.Join(packet.TopicFilterInvalid, err)
			}
			codes[i] = packet.TopicFilterInvalid
			continue
		}
		if shared && sub.NoLocal {
			return errors.Join(packet.ProtocolError, errors.New("no local on a shared subscription")) // [MQTT-3.8.3-4]
		}
		if shared && !optBool(opts.SharedSubAvailable) {
			codes[i], why = refusedCode(v5, packet.SharedSubscriptionsNotSupported), "shared subscriptions are not supported"
			continue
		}
		if topic.HasWildcard(filter) && !optBool(opts.WildcardSubAvailable) {
			codes[i], why = refusedCode(v5, packet.WildcardSubscriptionsNotSupported), "wildcard subscriptions are not supported"
			continue
		}
		filter = c.mountTopic(filter) // mount_point (listener_opts.go)
		if !c.srv.subscribeAllowed(&c.info, filter) {
			codes[i], why = refusedCode(v5, packet.NotAuthorized), "not authorized to subscribe to "+sub.Filter
			continue
		}
		// Granted at most the server's Maximum QoS [MQTT-3.2.2-10].
		o := subOptions{QoS: min(sub.QoS, opts.maxQoS()), NoLocal: sub.NoLocal, RetainAsPublished: sub.RetainAsPublished,
			RetainHandling: sub.RetainHandling, SubID: subID}
		if c.bridge && !shared {
			// A 3.x bridge (the bridge bit of its CONNECT) gets back nothing it
			// published and sees retain flags as published, as Mosquitto
			// treats bridges: no loop through a 3.x bridge.
			o.NoLocal, o.RetainAsPublished = true, true
		}
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return errClosedByServer
		}
		existed := s.addSubLocked(group, filter, o)
		if b := c.batch(); b != nil && s.stored() {
			b.PutSubscription(&store.Subscription{ClientID: s.id, Group: group, SubID: subID,
				Sub: packet.Subscription{Filter: filter, QoS: o.QoS, NoLocal: o.NoLocal,
					RetainAsPublished: o.RetainAsPublished, RetainHandling: o.RetainHandling}})
		}
		s.mu.Unlock()
		c.srv.subs.Add(filter, group, s, o)
		s.mu.Lock()
		ended := s.ended
		s.mu.Unlock()
		if ended { // ended (taken over) while we added: do not leave it behind
			c.srv.subs.Remove(filter, group, s)
			return errClosedByServer
		}
		codes[i] = packet.ReasonCode(o.QoS) // granted QoS
		if len(c.srv.hooks.subs) > 0 {
			c.srv.noteSubscription(&c.info, SubscriptionEvent{Filter: sub.Filter, Routed: filter, QoS: o.QoS})
		}
		// Retained messages: not for shared subscriptions (5.0 section 4.8.2);
		// retain handling 1 only for a new subscription, 2 never [MQTT-3.3.1-9..11].
		if !shared && (o.RetainHandling == 0 || o.RetainHandling == 1 && !existed) {
			var ids []uint32
			if subID != 0 {
				ids = []uint32{subID}
			}
			toSend = append(toSend, retainedFor{filter, o.QoS, o.RetainAsPublished, ids})
		}
	}
	// The retained messages are those of the moment before the SUBACK: a
	// client that publishes on a matching topic once it has its SUBACK (or
	// whose action makes a will go) gets that message once, live, not a
	// second time as retained.
	matched := make([][]*Message, len(toSend))
	for i, r := range toSend {
		matched[i] = c.srv.retained.match(r.filter)
	}
	ack := &packet.Suback{PacketID: p.PacketID, ReasonCodes: codes}
	ack.Props = c.reasonProps(why)
	c.sendAck(ack)
	for i, r := range toSend {
		for _, m := range matched[i] {
			if c.srv.hasAuthz() && !c.srv.allowed(&c.info, AccessReceive, m.Topic) {
				continue
			}
			// Sent with RETAIN set [MQTT-3.3.1-8].
			s.deliver(m, min(m.QoS, r.qos), true, r.subIDs, c.batch())
		}
	}
	return nil
}

// refusedCode is a SUBACK failure code: 3.x knows only 0x80 [MQTT-3.9.3-2].
func refusedCode(v5 bool, rc packet.ReasonCode) packet.ReasonCode {
	if !v5 {
		return packet.UnspecifiedError
	}
	return rc
}

// canEverRead is the hook for refusing a subscription the ACL would never
// deliver; with a per-topic Authorize only, a wildcard filter is accepted and
// each message is checked at delivery (Mosquitto's behaviour).
func (s *Server) canEverRead(info *ClientInfo, filter string) bool {
	return topic.HasWildcard(filter)
}

// handleUnsubscribe removes subscriptions and answers UNSUBACK
// [MQTT-3.10.4-4]; 5.0 says per filter whether one existed.
func (c *conn) handleUnsubscribe(p *packet.Unsubscribe) error {
	codes := make([]packet.ReasonCode, len(p.Filters))
	s := c.sess
	for i, f := range p.Filters {
		group, filter, shared, err := topic.ParseShare(f)
		if !shared {
			filter = f
		}
		if err != nil {
			if c.version != packet.V5 {
				return errors.Join(packet.TopicFilterInvalid, err)
			}
			codes[i] = packet.TopicFilterInvalid
			continue
		}
		filter = c.mountTopic(filter)
		if len(c.srv.hooks.authz) > 0 && !c.srv.allowed(&c.info, AccessUnsubscribe, filter) {
			// A hook refused (dynamic security's unsubscribe ACLs); 3.x
			// UNSUBACK has no code: the subscription stays.
			codes[i] = packet.NotAuthorized
			continue
		}
		s.mu.Lock()
		existed := s.removeSubLocked(group, filter)
		if existed {
			if b := c.batch(); b != nil && s.stored() {
				b.DeleteSubscription(s.id, group, filter)
			}
		}
		s.mu.Unlock()
		if existed {
			c.srv.subs.Remove(filter, group, s) // [MQTT-3.10.4-1]
			// Lowered only once the index no longer holds it: while the
			// count says >1, the router merges this session's matches.
			s.nsubs.Add(-1)
			if len(c.srv.hooks.subs) > 0 {
				c.srv.noteSubscription(&c.info, SubscriptionEvent{Filter: f, Routed: filter, Removed: true})
			}
		} else {
			codes[i] = packet.NoSubscriptionExisted
		}
	}
	c.sendAck(&packet.Unsuback{PacketID: p.PacketID, ReasonCodes: codes})
	return nil
}
