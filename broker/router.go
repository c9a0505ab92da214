package broker

import (
	"sync"
	"sync/atomic"

	"github.com/mqttd/mqttd/store"
)

// target is one session that receives a message, after merging every
// subscription of that session that matched.
type target struct {
	sess   *session
	qos    byte
	rap    bool // retain as published
	subIDs []uint32
}

var targetPool = sync.Pool{New: func() any { s := make([]target, 0, 16); return &s }}

// publish routes m to every matching subscription and returns how many
// sessions it was given to. It takes no server-wide lock: the index match is
// a shared read (cached), each session is locked on its own.
func (s *Server) publish(m *Message, from *session, b *store.Batch) int {
	if m.Retain {
		s.retained.set(m) // [MQTT-3.3.1-5]; an empty payload clears [MQTT-3.3.1-10]
		if b != nil {
			if len(m.Payload) == 0 {
				b.DeleteRetained(m.Topic)
			} else {
				b.PutRetained(m.toStore(s.storeID(m)))
			}
		}
	}
	if s.isClosing() {
		return 0
	}
	entries := s.subs.Match(m.Topic)
	if len(entries) == 0 {
		return 0
	}
	authz := s.opts.Authorize
	n := 0
	var multi *[]target // sessions with more than one subscription: merged first
	var groups map[string][]*session
	for i := range entries {
		e := &entries[i]
		ss := e.Key
		if e.Group != "" {
			if groups == nil {
				groups = make(map[string][]*session)
			}
			k := e.Group + "\x00" + e.Filter
			groups[k] = append(groups[k], ss)
			continue
		}
		if e.Value.NoLocal && ss == from {
			continue // [MQTT-3.8.3-3]
		}
		if ss.nsubs.Load() > 1 {
			if multi == nil {
				multi = targetPool.Get().(*[]target)
			}
			*multi = mergeTarget(*multi, ss, &e.Value)
			continue
		}
		if authz != nil && !s.authorizeRead(ss, m.Topic) {
			continue
		}
		var ids []uint32
		if e.Value.SubID != 0 {
			ids = []uint32{e.Value.SubID}
		}
		ss.deliver(m, min(m.QoS, e.Value.QoS), e.Value.RetainAsPublished && m.Retain, ids, b)
		n++
	}
	if multi != nil {
		for i := range *multi {
			t := &(*multi)[i]
			if authz == nil || s.authorizeRead(t.sess, m.Topic) {
				// One copy at the highest granted QoS, with every identifier
				// [MQTT-3.3.4-2], [MQTT-3.3.4-3].
				t.sess.deliver(m, min(m.QoS, t.qos), t.rap && m.Retain, t.subIDs, b)
				n++
			}
		}
		clear(*multi)
		*multi = (*multi)[:0]
		targetPool.Put(multi)
	}
	for k, members := range groups {
		n += s.deliverShared(k, members, m, b)
	}
	return n
}

// mergeTarget adds one matching subscription of ss to ts, merging with an
// earlier one of the same session.
func mergeTarget(ts []target, ss *session, o *subOptions) []target {
	for i := range ts {
		if ts[i].sess == ss {
			t := &ts[i]
			t.qos = max(t.qos, o.QoS)
			t.rap = t.rap || o.RetainAsPublished
			if o.SubID != 0 {
				t.subIDs = append(t.subIDs, o.SubID)
			}
			return ts
		}
	}
	t := target{sess: ss, qos: o.QoS, rap: o.RetainAsPublished}
	if o.SubID != 0 {
		t.subIDs = []uint32{o.SubID}
	}
	return append(ts, t)
}

// deliverShared gives m to one member of a shared subscription group,
// round-robin [MQTT-4.8.2-?], skipping members that cannot take it now.
func (s *Server) deliverShared(key string, members []*session, m *Message, b *store.Batch) int {
	v, _ := s.shared.LoadOrStore(key, new(atomic.Uint32))
	start := int(v.(*atomic.Uint32).Add(1))
	for i := range members {
		ss := members[(start+i)%len(members)]
		ss.mu.Lock()
		online := ss.conn != nil
		ss.mu.Unlock()
		if !online && i < len(members)-1 {
			continue // prefer a connected member
		}
		if s.opts.Authorize != nil && !s.authorizeRead(ss, m.Topic) {
			continue
		}
		qos := m.QoS
		if o, ok := ss.subOptions(key); ok {
			qos = min(qos, o.QoS)
		}
		ss.deliver(m, qos, false, nil, b)
		return 1
	}
	return 0
}

// subOptions returns the options of the session's shared subscription key.
func (ss *session) subOptions(groupFilterKey string) (subOptions, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	e, ok := ss.subs[groupFilterKey]
	return e.opts, ok
}

func (s *Server) authorizeRead(ss *session, name string) bool {
	ss.mu.Lock()
	info := ss.info
	ss.mu.Unlock()
	return info != nil && s.opts.Authorize(info, name, false)
}
