package broker

import (
	"strings"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// publishWill publishes a client's last will, with the will's QoS and retain
// flag [MQTT-3.1.2-8], on any close but a DISCONNECT [MQTT-3.1.2-10]. Wills
// to $SYS (but for a bridge state under $SYS/broker/connection/), or to a
// topic the client may not publish to, are dropped. A will
// restored from the store (restored) is dropped as well when no ACL
// decision can be taken for its identity (mayDecide: fail closed).
func (s *Server) publishWill(w *packet.Will, info *ClientInfo, restored bool) {
	if isSysTopic(w.Topic) && !strings.HasPrefix(w.Topic, bridgeStateTopic) {
		return // a bridge's will (its state 0) may go to $SYS/broker/connection/
	}
	if s.hasAuthz() && (!s.mayDecide(info, restored) || !s.allowed(info, AccessPublish, w.Topic)) {
		s.log.Info("will denied", "client", info.ClientID, "topic", w.Topic)
		return
	}
	m := &Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain,
		Props: willMessageProps(w.Props), From: info.ClientID}
	if m.Props != nil && m.Props.MessageExpiry != nil {
		m.Created = time.Now()
	}
	s.log.Debug("will published", "client", info.ClientID, "topic", w.Topic)
	b := s.heldBatch() // deliveries to persistent sessions wait for it (persist.go)
	s.publish(m, nil, b)
	s.applyHeld(b)
}

// willMessageProps are the will properties that travel with the message;
// the will delay stays with the server.
func willMessageProps(p *packet.Properties) *packet.Properties {
	if p == nil {
		return nil
	}
	c := *p
	c.WillDelay = nil
	return &c
}

// pendingWill is a will waiting for its Will Delay Interval.
type pendingWill struct {
	w        *packet.Will
	info     *ClientInfo
	restored bool // from the store: info's listener is not verified (persist.go)
	timer    *time.Timer
}

// willDelay is the will's Will Delay Interval (5.0).
func willDelay(w *packet.Will) time.Duration {
	if w.Props == nil || w.Props.WillDelay == nil {
		return 0
	}
	return time.Duration(*w.Props.WillDelay) * time.Second
}

// setWillLocked holds w until its delay passes, then publishes it: the
// will is sent after the delay or when the session ends, whichever comes
// first [MQTT-3.1.2-8]. s.mu is held.
func (s *session) setWillLocked(w *packet.Will, info *ClientInfo) {
	s.setWillAfterLocked(w, info, willDelay(w), false)
}

// setWillAfterLocked is setWillLocked with the delay given (what is left of
// it after a restart) for a will restored from the store or not. s.mu is
// held.
func (s *session) setWillAfterLocked(w *packet.Will, info *ClientInfo, delay time.Duration, restored bool) {
	s.cancelWillLocked()
	pw := &pendingWill{w: w, info: info, restored: restored}
	pw.timer = time.AfterFunc(delay, func() { s.fireWill(pw) })
	s.will = pw
}

// restoredWillWait is how long after the server started a restored will
// that is due waits for its listener to be served (Restore runs before
// the listeners start); restoredWillPoll is how often it looks.
const (
	restoredWillWait = time.Minute
	restoredWillPoll = 20 * time.Millisecond
)

// fireWill publishes pw when its delay has passed, unless it was cancelled.
// A restored will whose listener is not served yet waits for it, for a
// while after the start: its ACL decision needs that listener. After
// Shutdown began it does nothing: a will still delayed then stays in the
// store (with its persistent session) and is published after the restart.
func (s *session) fireWill(pw *pendingWill) {
	if s.srv.isClosing() {
		return
	}
	wait := pw.restored && s.srv.hasAuthz() && pw.info.Listener != "" &&
		!s.srv.listenerServed(pw.info.Listener) && time.Since(s.srv.started) < restoredWillWait
	s.mu.Lock()
	if s.will != pw {
		s.mu.Unlock()
		return // cancelled or already published
	}
	if wait && s.srv.isClosing() {
		s.will = nil // shutting down: the listener will not come
		s.mu.Unlock()
		return
	}
	if wait {
		pw.timer.Reset(restoredWillPoll)
		s.mu.Unlock()
		return
	}
	s.will = nil
	s.mu.Unlock()
	s.srv.publishWill(pw.w, pw.info, pw.restored)
}

// cancelWillLocked drops a pending will: a new connection resumed the
// session within the delay [MQTT-3.1.3-9]. s.mu is held.
func (s *session) cancelWillLocked() {
	if s.will != nil {
		s.will.timer.Stop()
		s.will = nil
	}
}

// takeWillLocked removes and returns the pending will, to publish now.
func (s *session) takeWillLocked() *pendingWill {
	pw := s.will
	if pw != nil {
		pw.timer.Stop()
		s.will = nil
	}
	return pw
}
