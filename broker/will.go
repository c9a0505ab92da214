package broker

import (
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// publishWill publishes a client's last will, with the will's QoS and retain
// flag [MQTT-3.1.2-8], on any close but a DISCONNECT [MQTT-3.1.2-10]. Wills
// to $SYS, or to a topic the client may not publish to, are dropped.
func (s *Server) publishWill(w *packet.Will, info *ClientInfo) {
	if isSysTopic(w.Topic) {
		return
	}
	if s.opts.Authorize != nil && !s.opts.Authorize(info, w.Topic, true) {
		s.log.Info("will denied", "client", info.ClientID, "topic", w.Topic)
		return
	}
	m := &Message{Topic: w.Topic, Payload: w.Payload, QoS: w.QoS, Retain: w.Retain,
		Props: willMessageProps(w.Props), From: info.ClientID}
	if m.Props != nil && m.Props.MessageExpiry != nil {
		m.Created = time.Now()
	}
	s.log.Debug("will published", "client", info.ClientID, "topic", w.Topic)
	var b *store.Batch
	if s.opts.Store != nil {
		b = new(store.Batch)
	}
	s.publish(m, nil, b)
	s.applyNow(b)
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
