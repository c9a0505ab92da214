package broker

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// The embedding API: a Go program that runs the broker in its own process
// publishes and subscribes without a socket (Publish, Subscribe), ends a
// client's connection (Disconnect), or speaks MQTT to the broker over an
// in-process connection (DialLocal), which is how bridges reach it.

// ErrSysTopic refuses a publication to a $SYS topic through Publish.
var ErrSysTopic = errors.New("broker: $SYS topics are the server's own")

// Publish routes m as the server itself: no access check, no publisher
// (From is ignored: no subscription's No Local applies). m.Topic must be a
// valid topic name outside $SYS. QoS 1 and 2 messages for persistent
// sessions, and a retained m, are in the store when it returns; a retained
// m with an empty payload clears the retained message of its topic. m must
// not be changed afterwards.
func (s *Server) Publish(m *Message) error {
	if err := s.checkEmbedded(m); err != nil {
		return err
	}
	b := s.heldBatch() // deliveries to persistent sessions wait for it (persist.go)
	_, routed := s.publish(m, nil, b)
	if err := s.applyHeld(b); err != nil {
		return fmt.Errorf("broker: publish: %w", err)
	}
	if !routed {
		return ErrServerClosed // closing since the check above
	}
	return nil
}

// PublishAll publishes ms in order, as Publish does each, with one store
// write for all of them (and one wait for the ReplicaHooks): a burst of
// messages from elsewhere (a cluster's link) costs one sync, as a
// client's burst does. The result has one error per message, nil for
// each one routed; a message refused by the checks of Publish does not
// stop the others. The deliveries to persistent sessions wait for the
// write.
func (s *Server) PublishAll(ms []*Message) []error {
	errs := make([]error, len(ms))
	b := s.heldBatch()
	for i, m := range ms {
		if errs[i] = s.checkEmbedded(m); errs[i] != nil {
			continue
		}
		if _, routed := s.publish(m, nil, b); !routed {
			errs[i] = ErrServerClosed
		}
	}
	if err := s.applyHeld(b); err != nil {
		for i := range errs {
			if errs[i] == nil && (ms[i].QoS > 0 || ms[i].Retain) {
				errs[i] = fmt.Errorf("broker: publish: %w", err)
			}
		}
	}
	return errs
}

// checkEmbedded checks a message published by Publish or PublishAll and
// prepares it.
func (s *Server) checkEmbedded(m *Message) error {
	if err := topic.ValidateName(m.Topic); err != nil {
		return err
	}
	if isSysTopic(m.Topic) {
		return ErrSysTopic
	}
	if m.QoS > 2 {
		return fmt.Errorf("broker: QoS %d", m.QoS)
	}
	if m.Retain && !s.opts.retainAvailable() {
		return fmt.Errorf("broker: retained messages are not available")
	}
	if s.isClosing() {
		return ErrServerClosed
	}
	m.From = ""
	if m.Props != nil && m.Props.MessageExpiry != nil && m.Created.IsZero() {
		m.Created = time.Now()
	}
	return nil
}

// inlineSub is one subscription made with Server.Subscribe.
type inlineSub struct {
	qos byte
	fn  func(*Message)
}

// Subscribe adds an inline subscription (in the process, no socket, no
// session): fn is called with each message routed to a topic that filter
// matches, at most once, at the lower of the message's QoS and qos, on the
// publisher's goroutine with no lock held. fn must return quickly and must
// not change the message. $-topics are matched only by filters that start
// with $ [MQTT-4.7.2-1]. Shared filters ($share/...) are refused. cancel
// removes the subscription.
func (s *Server) Subscribe(filter string, qos byte, fn func(m *Message)) (cancel func(), err error) {
	if fn == nil {
		return nil, errors.New("broker: Subscribe without a function")
	}
	if qos > 2 {
		return nil, fmt.Errorf("broker: QoS %d", qos)
	}
	if _, _, shared, _ := topic.ParseShare(filter); shared {
		return nil, errors.New("broker: inline subscriptions cannot be shared")
	}
	if err := topic.ValidateFilter(filter); err != nil {
		return nil, err
	}
	sub := &inlineSub{qos: qos, fn: fn}
	idx := s.inline.Load()
	if idx == nil {
		s.inline.CompareAndSwap(nil, topic.NewIndex[*inlineSub, byte](256))
		idx = s.inline.Load()
	}
	idx.Add(filter, "", sub, qos)
	s.inlineN.Add(1)
	var once atomic.Bool
	return func() {
		if once.CompareAndSwap(false, true) && idx.Remove(filter, "", sub) {
			s.inlineN.Add(-1)
		}
	}, nil
}

// SubscribeAll is Subscribe to every topic, the $-topics included (which
// "#" does not match [MQTT-4.7.2-1]): for a hook that hands every message
// on, such as a cluster forwarding to other nodes, and that may hold the
// publisher's acknowledgement for it (Message.HoldAck) whatever the topic.
func (s *Server) SubscribeAll(qos byte, fn func(m *Message)) (cancel func(), err error) {
	if fn == nil {
		return nil, errors.New("broker: SubscribeAll without a function")
	}
	if qos > 2 {
		return nil, fmt.Errorf("broker: QoS %d", qos)
	}
	sub := &inlineSub{qos: qos, fn: fn}
	s.inlineMu.Lock()
	var all []*inlineSub
	if p := s.inlineAll.Load(); p != nil {
		all = *p
	}
	all = append(slices.Clip(all), sub) // copied: publish reads the old slice without a lock
	s.inlineAll.Store(&all)
	s.inlineN.Add(1)
	s.inlineMu.Unlock()
	var once atomic.Bool
	return func() {
		if !once.CompareAndSwap(false, true) {
			return
		}
		s.inlineMu.Lock()
		defer s.inlineMu.Unlock()
		rest := slices.DeleteFunc(slices.Clone(*s.inlineAll.Load()), func(o *inlineSub) bool { return o == sub })
		s.inlineAll.Store(&rest)
		s.inlineN.Add(-1)
	}, nil
}

// deliverInline gives m to the inline subscriptions that match it.
func (s *Server) deliverInline(m *Message) int {
	n := 0
	if idx := s.inline.Load(); idx != nil { // no lock on the PUBLISH path
		entries := idx.Match(m.Topic)
		for i := range entries {
			entries[i].Key.give(m)
		}
		n = len(entries)
	}
	if p := s.inlineAll.Load(); p != nil {
		for _, sub := range *p {
			sub.give(m)
		}
		n += len(*p)
	}
	return n
}

// give calls the subscription's function with m at the lower of m's QoS
// and its own.
func (sub *inlineSub) give(m *Message) {
	q := min(m.QoS, sub.qos)
	if q == m.QoS {
		sub.fn(m)
		return
	}
	sub.fn(&Message{Topic: m.Topic, Payload: m.Payload, QoS: q, Retain: m.Retain, Props: m.Props,
		From: m.From, Created: m.Created})
}

// errAdministrative ends a connection by Server.Disconnect.
var errAdministrative = errors.New("broker: disconnected by the server's administrator")

// adminClose carries the reason code Server.Disconnect sends.
type adminClose struct{ rc packet.ReasonCode }

func (e *adminClose) Error() string { return errAdministrative.Error() + " (" + e.rc.Error() + ")" }
func (e *adminClose) Unwrap() error { return errAdministrative }

// Disconnect ends the connection of the client clientID: a v5 client is sent
// DISCONNECT with rc (AdministrativeAction, 0x98, when rc is not an error
// code), the connection is closed (after at most a second for what is
// queued to it), its will is published as for any close but the client's
// DISCONNECT, and its session stays or ends as its expiry says. The close
// is recorded as CauseAdministrative. It reports false when no client with
// that id is connected.
func (s *Server) Disconnect(clientID string, rc packet.ReasonCode) bool {
	if !rc.IsError() {
		rc = packet.AdministrativeAction
	}
	s.sessMu.Lock()
	sess := s.sessions[clientID]
	s.sessMu.Unlock()
	if sess == nil {
		return false
	}
	sess.mu.Lock()
	c := sess.conn
	sess.mu.Unlock()
	if c == nil {
		return false
	}
	s.log.Info("client disconnected by the server", "client", clientID, "remote", c.info.Remote, "listener", c.info.Listener,
		"reason_code", rc.Error())
	c.disconnect(&adminClose{rc: rc})
	c.closeWithin(takeoverGrace)
	return true
}

// LocalListener is the listener name of connections made with DialLocal.
const LocalListener = "local"
