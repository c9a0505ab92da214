package broker

import (
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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

// setRetained makes m the retained message of its topic, or clears it when
// m's payload is empty [MQTT-3.3.1-5] [MQTT-3.3.1-10], and puts the change
// into b (nil without a store).
func (s *Server) setRetained(m *Message, b *store.Batch) {
	s.retained.set(m)
	if b == nil {
		return
	}
	if len(m.Payload) == 0 {
		b.DeleteRetained(m.Topic)
	} else {
		b.PutRetained(m.toStore(s.storeID(m)))
	}
}

// publish routes m to every matching subscription and returns how many
// sessions it was given to. It takes no server-wide lock: the index match is
// a shared read (cached), each session is locked on its own. routed is false
// when the server is closing and m went to no one: a QoS 1/2 publisher must
// then not be acknowledged, so that it sends the message again to the next
// server (acknowledging it would lose it).
func (s *Server) publish(m *Message, from *session, b *store.Batch) (n int, routed bool) {
	if m.Retain {
		s.setRetained(m, b)
	}
	if s.isClosing() {
		return 0, false
	}
	if s.inlineN.Load() > 0 {
		n = s.deliverInline(m) // Server.Subscribe (embed.go)
	}
	entries := s.subs.Match(m.Topic)
	if len(entries) == 0 {
		return n, true
	}
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
		gen, ok := s.authorizeRead(ss, m)
		if !ok {
			continue
		}
		var ids []uint32
		if e.Value.SubID != 0 {
			ids = []uint32{e.Value.SubID}
		}
		ss.deliverShare(m, min(m.QoS, e.Value.QoS), e.Value.RetainAsPublished && m.Retain, ids, "", b, gen)
		n++
	}
	if multi != nil {
		for i := range *multi {
			t := &(*multi)[i]
			gen, ok := s.authorizeRead(t.sess, m)
			if !ok {
				continue
			}
			// One copy at the highest granted QoS, with every identifier
			// [MQTT-3.3.4-2], [MQTT-3.3.4-3].
			t.sess.deliverShare(m, min(m.QoS, t.qos), t.rap && m.Retain, t.subIDs, "", b, gen)
			n++
		}
		clear(*multi)
		*multi = (*multi)[:0]
		targetPool.Put(multi)
	}
	for k, members := range groups {
		if s.routeSharedHooks(m, k) { // a cluster picks the member (shared_hook.go)
			n++
			continue
		}
		n += s.deliverShared(k, members, m, b)
	}
	return n, true
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

// deliverShared gives m to one member of a shared subscription group
// (MQTT 5.0 section 4.8.2; Options.SharedSubPolicy picks it: round-robin,
// random or by the publisher's client id), preferring connected members, at
// that member's granted QoS [MQTT-4.8.2-3]. Retain is never set on a shared
// delivery, which no retained message reaches either.
func (s *Server) deliverShared(key string, members []*session, m *Message, b *store.Batch) int {
	var start int
	switch s.opts.SharedSubPolicy {
	case SharedRandom:
		start = rand.IntN(len(members))
	case SharedHashClientID:
		h := uint32(2166136261) // FNV-1a, inline: no allocation per message
		for i := 0; i < len(m.From); i++ {
			h = (h ^ uint32(m.From[i])) * 16777619
		}
		start = int(h % uint32(len(members)))
	default:
		// Never created here: the group's entry lives exactly as long as it
		// has members (shareJoin, shareLeave). A publish racing with the
		// last member's departure starts from the first member.
		if v, ok := s.shared.Load(key); ok {
			start = int(v.(*shareGroup).next.Add(1))
		}
	}
	for i := range members {
		ss := members[(start+i)%len(members)]
		ss.mu.Lock()
		online := ss.conn != nil
		ss.mu.Unlock()
		if !online && i < len(members)-1 {
			continue // prefer a connected member
		}
		gen, ok := s.authorizeRead(ss, m)
		if !ok {
			continue
		}
		qos := m.QoS
		if o, ok := ss.subOptions(key); ok {
			qos = min(qos, o.QoS)
		}
		ss.deliverShare(m, qos, false, nil, key, b, gen)
		return 1
	}
	return 0
}

// shareGroup is the entry of one shared subscription group in
// Server.shared (key: group "\x00" filter): its round-robin cursor and how
// many sessions hold the subscription. It is removed when the last one
// leaves, so that groups that come and go do not pile up.
type shareGroup struct {
	next atomic.Uint32 // round-robin cursor

	mu      sync.Mutex // a leaf: taken under session.mu, nothing taken under it
	members int
	dead    bool // removed from Server.shared: a joiner makes a new one
}

// shareJoin counts one more session holding the shared subscription
// (group, filter). Called with the session's mu held, when the
// subscription enters its list (session.addSubLocked).
func (s *Server) shareJoin(group, filter string) {
	key := group + "\x00" + filter
	for {
		v, ok := s.shared.Load(key)
		if !ok {
			v, _ = s.shared.LoadOrStore(key, new(shareGroup))
		}
		g := v.(*shareGroup)
		g.mu.Lock()
		if !g.dead {
			g.members++
			g.mu.Unlock()
			return
		}
		g.mu.Unlock() // removed meanwhile: store a new one
	}
}

// shareLeave counts one session fewer holding the shared subscription and
// frees the group's entry with its last member (unsubscribe, session end).
// Called with the session's mu held, when the subscription leaves its list.
func (s *Server) shareLeave(group, filter string) {
	key := group + "\x00" + filter
	v, ok := s.shared.Load(key)
	if !ok {
		return
	}
	g := v.(*shareGroup)
	g.mu.Lock()
	if g.members--; g.members <= 0 && !g.dead {
		g.dead = true
		s.shared.CompareAndDelete(key, g)
	}
	g.mu.Unlock()
}

// shareRedo is a message a leaving member of a shared subscription group
// had not delivered.
type shareRedo struct {
	key string
	msg *Message
}

// sharedLeftLocked collects, from a session that ends, the messages it got
// through shared subscriptions and did not deliver: queued ones and QoS 1
// ones in flight go to the rest of the group. A QoS 2 delivery that started
// (PUBLISH sent) is not sent to another member [MQTT-4.8.2-5]. s.mu is held.
func (s *session) sharedLeftLocked() []shareRedo {
	var out []shareRedo
	for _, om := range s.order {
		if om != nil && !om.done && om.share != "" && om.qos == 1 {
			out = append(out, shareRedo{om.share, om.msg})
		}
	}
	for _, om := range s.queue[s.qhead:] {
		if om != nil && om.share != "" && om.qos > 0 {
			out = append(out, shareRedo{om.share, om.msg})
		}
	}
	return out
}

// redistribute gives each message to another member of its group, if one
// is left.
func (s *Server) redistribute(redo []shareRedo) {
	if len(redo) == 0 {
		return
	}
	b := s.heldBatch() // deliveries to persistent sessions wait for it (persist.go)
	now := time.Now()
	for _, r := range redo {
		if r.msg.expired(now) {
			continue
		}
		group, filter, _ := strings.Cut(r.key, "\x00")
		var members []*session
		for _, e := range s.subs.Match(r.msg.Topic) {
			if e.Group == group && e.Filter == filter {
				members = append(members, e.Key)
			}
		}
		if len(members) > 0 {
			s.deliverShared(r.key, members, r.msg, b)
		} else {
			s.offerSharedHooks(r.msg, r.key) // members elsewhere, in a cluster (shared_hook.go)
		}
	}
	s.applyHeld(b)
}

// subOptions returns the options of the session's shared subscription
// (key: group "\x00" filter).
func (ss *session) subOptions(groupFilterKey string) (subOptions, bool) {
	group, filter, _ := strings.Cut(groupFilterKey, "\x00")
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if i := ss.findSubLocked(group, filter); i >= 0 {
		return ss.subs[i].opts, true
	}
	return subOptions{}, false
}

// authorizeRead decides whether the identity that owns ss may receive a
// message m, checked at every delivery (as Mosquitto): the
// subscriptions of a session resumed by another user stay, but deliver only
// what that user may read. It returns the session's authGen the decision
// was made for (deliverShare checks again if it changed), or anyGen when
// there is no Authorizer. Restored identities fail closed (mayDecide). Call
// with no lock held.
func (s *Server) authorizeRead(ss *session, m *Message) (uint64, bool) {
	if !s.hasAuthz() {
		return anyGen, true
	}
	ss.mu.Lock()
	info, gen, restored := ss.info, ss.authGen, ss.restored
	ss.mu.Unlock()
	ok := info != nil && s.mayDecide(info, restored) && s.allowed(info, AccessReceive, m.Topic)
	if !ok {
		s.noteDelivery(ss.id, m, DropNotAuthorized)
	}
	return gen, ok
}
