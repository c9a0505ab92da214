package broker

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// session is the server side of a client id: subscriptions, the outbound
// QoS 1/2 window and queue, and inbound QoS 2 packet ids. It outlives its
// connection when persistent.
type session struct {
	srv *Server
	id  string

	nsubs    atomic.Int32 // subscriptions; routing skips de-duplication when <= 1
	inboundN atomic.Int32 // len(inbound), readable without mu (receive maximum)

	mu          sync.Mutex
	conn        *conn              // nil while offline
	info        *ClientInfo        // the identity that owns the session: its own copy, without the password
	authGen     uint64             // changes with info: read checks made for another identity are stale
	expiry      time.Duration      // how long kept offline; <0 = forever
	subs        []subEntry         // in the order subscribed; few per session: searched in order
	subIdx      map[subKey]int     // position in subs by (group, filter), once subs holds subIndexFrom
	inflight    map[uint16]*outMsg // outbound QoS 1/2 awaiting acknowledgement
	order       []*outMsg          // inflight in send order (acknowledged ones skipped)
	queue       []*outMsg          // waiting for the window
	qhead       int
	queuedBytes int64
	inbound     map[uint16]struct{} // QoS 2 packet ids received, PUBREL not yet [MQTT-4.3.3-2]
	expiryTimer *time.Timer
	will        *pendingWill // a will waiting for its delay (will.go)
	nheld       int          // in-flight deliveries held until their store write is applied (outMsg.held)
	handoffHeld int          // held deliveries of a session handed over, not released yet (replica.go)
	nextID      uint16
	restored    bool // info comes from the store: no connection since the restart (persist.go)
	persistent  bool // kept after disconnect
	ended       bool // removed from the server; nothing more is delivered
	onDisk      bool // a session record was written to the store

	gauges sessionGauges // what it last added to the server's session gauges (stats.go)
}

// subEntry is one subscription of the session, keyed by group and filter.
type subEntry struct {
	filter, group string
	opts          subOptions
}

// subKey is what identifies a subscription of a session.
type subKey struct{ group, filter string }

// subIndexFrom is the count of subscriptions from which a session finds
// them through subIdx: below it a scan of a few entries is cheaper than a
// map, above it a SUBSCRIBE would cost O(k) in the session's k
// subscriptions (and n of them on one connection O(n²)).
const subIndexFrom = 32

// outMsg is one outbound QoS 1/2 (or queued QoS 0) delivery.
type outMsg struct {
	msg    *Message
	qos    byte
	retain bool
	subIDs []uint32
	id     uint16
	pubrel bool   // PUBREC received, PUBREL sent
	done   bool   // acknowledged
	seq    uint64 // store queue entry, 0 if not stored
	share  string // group+"\x00"+filter when routed by a shared subscription
	gen    uint64 // session.authGen its read access was checked for
	// held: its store write (the message and its queue entry, or its
	// in-flight state) is in a batch not applied yet, so the PUBLISH must
	// not go out: an acknowledgement from the client would otherwise reach
	// the store first, naming a message or entry it does not hold, and the
	// late batch would put back an entry the client had already finished
	// (after a restart, a QoS 2 message sent twice). See holdsFor.
	held bool
	// unsent: released from its hold but not written yet, because a
	// delivery before it in session.order is still held (another pump's
	// store write): writeReleasedLocked writes it after that one.
	unsent bool
}

// anyGen is the generation of a delivery that needs no read check (no
// Authorize hook).
const anyGen = ^uint64(0)

func newSession(s *Server, id string) *session {
	return &session{srv: s, id: id}
}

// findSubLocked returns the index of the subscription, or -1.
func (s *session) findSubLocked(group, filter string) int {
	if s.subIdx != nil {
		if i, ok := s.subIdx[subKey{group, filter}]; ok {
			return i
		}
		return -1
	}
	for i := range s.subs {
		if s.subs[i].filter == filter && s.subs[i].group == group {
			return i
		}
	}
	return -1
}

// addSubLocked adds or replaces a subscription; it reports whether it existed.
func (s *session) addSubLocked(group, filter string, o subOptions) (existed bool) {
	e := subEntry{filter: filter, group: group, opts: o}
	if i := s.findSubLocked(group, filter); i >= 0 {
		s.subs[i] = e // replaces [MQTT-3.8.4-3]
		return true
	}
	s.subs = append(s.subs, e)
	switch {
	case s.subIdx != nil:
		s.subIdx[subKey{group, filter}] = len(s.subs) - 1
	case len(s.subs) >= subIndexFrom:
		s.subIdx = make(map[subKey]int, len(s.subs))
		for i, se := range s.subs {
			s.subIdx[subKey{se.group, se.filter}] = i
		}
	}
	s.nsubs.Add(1)
	if group != "" {
		s.srv.shareJoin(group, filter)
	}
	return false
}

// removeSubLocked removes a subscription; it reports whether it existed.
// The caller lowers nsubs once the index entry is gone.
func (s *session) removeSubLocked(group, filter string) bool {
	i := s.findSubLocked(group, filter)
	if i < 0 {
		return false
	}
	s.subs = slices.Delete(s.subs, i, i+1)
	if s.subIdx != nil {
		delete(s.subIdx, subKey{group, filter})
		if len(s.subs) < subIndexFrom/2 {
			s.subIdx = nil
		} else {
			for j := i; j < len(s.subs); j++ { // the ones after it moved up
				s.subIdx[subKey{s.subs[j].group, s.subs[j].filter}] = j
			}
		}
	}
	if group != "" {
		s.srv.shareLeave(group, filter) // the group's entry goes with its last member
	}
	return true
}

// windowLocked is how many QoS 1/2 messages may be in flight to the client.
func (s *session) windowLocked() int {
	w := s.srv.opts.MaxInflight
	if c := s.conn; c != nil && c.recvMax > 0 && int(c.recvMax) < w {
		w = int(c.recvMax) // the client's Receive Maximum [MQTT-3.3.4-9]
	}
	return w
}

// deliver hands one message to the session at the QoS and retain flag the
// caller chose for it, if the identity that owns the session may read it.
// Store writes for a persistent session go into b.
func (s *session) deliver(m *Message, qos byte, retain bool, subIDs []uint32, b *store.Batch) {
	if gen, ok := s.srv.authorizeRead(s, m); ok {
		s.deliverShare(m, qos, retain, subIDs, "", b, gen)
	}
}

// deliverShare is deliver for a message routed by the shared subscription
// share ("" for none), which is remembered for redistribution. gen is the
// authGen the router checked read access for (anyGen: no check needed); if
// another identity took the session over since, the check is made again
// for it, so that a message is never delivered on an older identity's
// rights.
func (s *session) deliverShare(m *Message, qos byte, retain bool, subIDs []uint32, share string, b *store.Batch, gen uint64) {
	s.mu.Lock()
	for gen != anyGen && gen != s.authGen {
		s.mu.Unlock() // no lock across the hook
		g, ok := s.srv.authorizeRead(s, m)
		if !ok {
			return
		}
		gen = g
		s.mu.Lock()
	}
	defer s.mu.Unlock()
	if s.ended {
		return
	}
	c := s.conn
	if qos == 0 {
		if c != nil {
			c.writePublish(m, 0, 0, retain, false, subIDs)
		} else if s.srv.opts.QueueQoS0 && s.persistent {
			s.enqueueLocked(&outMsg{msg: m, retain: retain, subIDs: subIDs, gen: s.authGen})
		}
		return
	}
	om := &outMsg{msg: m, qos: qos, retain: retain, subIDs: subIDs, share: share, gen: s.authGen}
	holder := s.holdsFor(b)
	if c != nil && s.qhead == len(s.queue) && len(s.inflight) < s.windowLocked() && c.backlogRoom(s) {
		if holder != nil {
			// In flight with its packet id, written once the publisher's
			// batch holding it is applied (conn.releaseHeld).
			s.reserveLocked(om)
			om.held = true
			s.nheld++
			s.putEntryLocked(b, om, true)
			holder.hold(s, om)
			return
		}
		if s.sendLocked(c, om) {
			s.putEntryLocked(b, om, true)
		}
		return
	}
	if s.enqueueLocked(om) {
		s.putEntryLocked(b, om, true)
		if holder != nil {
			om.held = true // refillLocked stops at it until the batch is applied
			holder.hold(s, om)
		}
	}
}

// holdsFor returns the holder of store batch b (persist.go) when b
// receives this session's writes and is not this session's own
// connection's: the deliveries it gives s wait until b is applied
// (outMsg.held). That is another connection's read burst, or a batch
// written outside one (a will, a redistribution, Server.Publish:
// Server.heldBatch). Writes of s's own connection need no holding: the
// client's acknowledgement of a delivery is read by that connection after
// the PUBLISH was written, so its store writes land in the same batch,
// after the delivery's, or in a later one.
//
// Holding (rather than making the subscriber's writes tolerate a missing
// message) keeps the store's rule simple: every write that names a queue
// entry reaches the store after the write that created it. s.mu is held.
func (s *session) holdsFor(b *store.Batch) holder {
	if b == nil || !s.stored() {
		return nil
	}
	switch h := b.Owner.(type) {
	case *conn:
		if h.sess != s {
			return h
		}
	case *batchHold:
		return h
	}
	return nil
}

// heldOut is a delivery held for its publisher's store batch.
type heldOut struct {
	s  *session
	om *outMsg
}

// enqueueLocked queues a delivery behind the window (or behind a full
// connection backlog), within the per-client bounds by count and bytes;
// past them the message is dropped and counted. Bytes are payload bytes, as
// Mosquitto counts max_queued_bytes (Message.size).
func (s *session) enqueueLocked(om *outMsg) bool {
	o := &s.srv.opts
	size := om.msg.size()
	if (o.MaxQueuedMessages > 0 && len(s.queue)-s.qhead >= o.MaxQueuedMessages) ||
		(o.MaxQueuedBytes > 0 && s.queuedBytes+size > o.MaxQueuedBytes) ||
		(o.MaxQueuedBytesTotal > 0 && s.srv.queuedBytes.Load()+size > o.MaxQueuedBytesTotal) {
		s.srv.stats.droppedQueue.Add(1)
		s.srv.noteDelivery(s.id, om.msg, DropQueueFull)
		return false
	}
	s.queue = append(s.queue, om)
	s.queuedBytes += size
	s.srv.queuedBytes.Add(size)
	s.syncStatsLocked()
	return true
}

// sendLocked gives om a packet id, puts it in flight and writes it. It
// reports false when om was discarded instead.
func (s *session) sendLocked(c *conn, om *outMsg) bool {
	if om.qos == 0 {
		c.writePublish(om.msg, 0, 0, om.retain, false, om.subIDs)
		return false
	}
	om.id = s.nextIDLocked()
	switch c.writePublish(om.msg, om.qos, om.id, om.retain, false, om.subIDs) {
	case tooLarge, dropped:
		om.id = 0
		return false // behaves as if sent and acknowledged [MQTT-3.1.2-25]
	}
	s.putInflightLocked(om)
	return true
}

// reserveLocked gives om a packet id and puts it in flight without writing
// it (it is held: releaseLocked writes it).
func (s *session) reserveLocked(om *outMsg) {
	om.id = s.nextIDLocked()
	s.putInflightLocked(om)
}

func (s *session) putInflightLocked(om *outMsg) {
	if s.inflight == nil {
		s.inflight = make(map[uint16]*outMsg)
	}
	s.inflight[om.id] = om
	s.order = append(s.order, om)
	s.syncStatsLocked()
}

// releaseLocked lets a held delivery go once the batch holding its store
// write is applied: a queued one may now be taken by refillLocked, one in
// flight is written (on reconnection attachLocked re-sends it if the
// session is offline). Writes it causes (a delivery discarded as too
// large) go into b. s.mu is held.
func (s *session) releaseLocked(om *outMsg, b *store.Batch) {
	if !om.held {
		return
	}
	om.held = false
	if s.handoffHeld > 0 {
		// Handed over (HandOver): its entry, now written, is the new
		// owner's to import; it leaves this server's store with the
		// session's deletion.
		s.handoffHeld--
		return
	}
	if s.ended || !s.stored() {
		s.orphanLocked(om, b) // ended or no longer stored meanwhile
	}
	if om.id == 0 {
		return // queued
	}
	s.nheld--
	if s.ended || s.conn == nil {
		return
	}
	om.unsent = !om.done
	s.writeReleasedLocked(b) // om, and what waited behind it
}

// writeReleasedLocked writes the released deliveries in flight in their
// order, up to the first one still held: two pumps (a publisher's release
// and a refill on another goroutine) may hold deliveries of one session at
// once, and the one released first must not overtake an earlier delivery
// still waiting for its store write [MQTT-4.6.0-6]. s.mu is held.
func (s *session) writeReleasedLocked(b *store.Batch) {
	c := s.conn
	for _, om := range s.order { // freeLocked may shorten s.order: this is its old view
		if om == nil || om.done {
			continue
		}
		if om.held {
			return
		}
		if !om.unsent {
			continue
		}
		om.unsent = false
		switch c.writePublish(om.msg, om.qos, om.id, om.retain, false, om.subIDs) {
		case tooLarge, dropped:
			s.freeLocked(om, b) // as if sent and acknowledged [MQTT-3.1.2-25]
		}
	}
}

// pump releases held (whose store writes are applied) and fills the window
// from the queue outside the session's own connection: after a publisher's
// batch (conn.releaseHeld) or when the connection's backlog drained. What
// it takes from the queue is held too while its store writes (a QoS 2
// entry in flight with its packet id) are applied, then written, in queue
// order. It returns held's memory for reuse. No lock is held.
func (s *session) pump(held []*outMsg) []*outMsg {
	var b store.Batch
	for {
		s.mu.Lock()
		for _, om := range held {
			s.releaseLocked(om, &b)
		}
		held = held[:0]
		if s.conn != nil && !s.ended {
			held = s.refillLocked(&b, true, held)
		}
		s.mu.Unlock()
		if b.Empty() {
			return held
		}
		s.srv.applyNow(&b)
		b.Reset()
	}
}

// nextIDLocked returns a packet id not in flight [MQTT-2.3.1-2].
func (s *session) nextIDLocked() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			s.nextID = 1
		}
		if _, used := s.inflight[s.nextID]; !used {
			return s.nextID
		}
	}
}

// refillLocked moves queued messages into the window while it has room,
// skipping those that expired while queued [MQTT-3.3.2-5]. It stops at a
// queued message held for its publisher's batch, and does nothing while
// deliveries in flight are held (pump, which holds them, refills after
// them: the queue stays in order). Without pump (the session's own
// connection) it writes what it takes; with pump it reserves QoS 2
// deliveries of a stored session, held (their "PUBLISH sent" state is
// stored first), appends them to hold, and stops at anything after them.
func (s *session) refillLocked(b *store.Batch, pump bool, hold []*outMsg) []*outMsg {
	c := s.conn
	if c == nil || s.nheld > 0 {
		return hold
	}
	var now time.Time // read once, and only for a message that can expire (not on every PUBACK)
	w := s.windowLocked()
	for s.qhead < len(s.queue) && !s.queue[s.qhead].held && (len(s.inflight) < w || s.queue[s.qhead].qos == 0) && c.backlogRoom(s) {
		om := s.queue[s.qhead]
		holdIt := pump && om.qos == 2 && s.stored()
		if pump && !holdIt && len(hold) > 0 {
			break // after the held ones (pump's next round)
		}
		s.queue[s.qhead] = nil
		s.qhead++
		s.queuedBytes -= om.msg.size()
		s.srv.queuedBytes.Add(-om.msg.size())
		if p := om.msg.Props; p != nil && p.MessageExpiry != nil {
			if now.IsZero() {
				now = time.Now()
			}
			if om.msg.expired(now) {
				s.deleteEntryLocked(b, om)
				continue
			}
		}
		if holdIt {
			s.reserveLocked(om)
			om.held = true
			s.nheld++
			hold = append(hold, om)
		} else if !s.sendLocked(c, om) {
			s.deleteEntryLocked(b, om)
			continue
		}
		if om.qos == 2 {
			// In flight with its packet id: after a restart a QoS 2 message
			// is re-sent with that id [MQTT-4.4.0-1], so the receiver that
			// already has it does not deliver it twice. A QoS 1 entry stays
			// "queued" on disk: re-sent with a new id, as QoS 1 allows.
			s.putEntryLocked(b, om, false)
		}
	}
	if s.qhead == len(s.queue) {
		s.queue, s.qhead = nil, 0
	} else if s.qhead > 1024 && s.qhead*2 > len(s.queue) {
		s.queue = append([]*outMsg(nil), s.queue[s.qhead:]...)
		s.qhead = 0
	}
	s.syncStatsLocked()
	return hold
}

// backlogDrained refills the window once c's backlog, which held queued
// messages back, is below MaxBacklogBytes again. It runs on c's writer with
// no lock held.
func (s *session) backlogDrained(c *conn) {
	s.mu.Lock()
	mine := s.conn == c
	s.mu.Unlock()
	if mine {
		s.pump(nil)
	}
}

// ackLocked frees the slot of an acknowledged message and refills.
func (s *session) ackLocked(om *outMsg, b *store.Batch) {
	s.freeLocked(om, b)
	s.refillLocked(b, false, nil)
}

// freeLocked frees the slot of an acknowledged (or discarded) message.
func (s *session) freeLocked(om *outMsg, b *store.Batch) {
	s.deleteEntryLocked(b, om)
	delete(s.inflight, om.id)
	om.done = true
	i := 0
	for i < len(s.order) && s.order[i].done {
		s.order[i] = nil
		i++
	}
	s.order = s.order[i:]
	if len(s.inflight) == 0 {
		s.order = nil
		s.inflight = nil
	}
	s.syncStatsLocked()
}

// puback completes a QoS 1 delivery [MQTT-4.3.2-1].
func (s *session) puback(id uint16, b *store.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if om := s.inflight[id]; om != nil && om.qos == 1 {
		s.ackLocked(om, b)
	}
}

// pubrec answers PUBREC with PUBREL [MQTT-4.3.3-1], which it returns for
// the caller to send after b is applied (conn.sendAck): once the client
// has PUBREL it forgets the packet id, so a restart that still found the
// entry "PUBLISH sent" would re-send the message as a new one (QoS 2
// delivered twice). An error code ends the delivery (5.0): nil.
func (s *session) pubrec(id uint16, rc packet.ReasonCode, b *store.Batch) *packet.Pubrel {
	s.mu.Lock()
	defer s.mu.Unlock()
	om := s.inflight[id]
	if om == nil || om.qos != 2 {
		// Unknown id: PUBREL with 0x92 (5.0)
		return &packet.Pubrel{PacketID: id, ReasonCode: packet.PacketIdentifierNotFound}
	}
	if rc.IsError() {
		s.ackLocked(om, b)
		return nil
	}
	om.pubrel = true
	s.putEntryLocked(b, om, false)
	return &packet.Pubrel{PacketID: id}
}

// pubcomp completes a QoS 2 delivery.
func (s *session) pubcomp(id uint16, b *store.Batch) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if om := s.inflight[id]; om != nil && om.qos == 2 && om.pubrel {
		s.ackLocked(om, b)
	}
}

// attachLocked binds a new connection and re-sends what was in flight: PUBLISH
// with DUP set [MQTT-4.4.0-1], or PUBREL for those already received
// [MQTT-4.4.0-2]; then fills the window from the queue.
func (s *session) attachLocked(c *conn, b *store.Batch) {
	s.stopExpiryLocked()
	s.cancelWillLocked() // a new connection before the will delay [MQTT-3.1.3-9]
	s.conn = c
	for _, om := range s.order {
		if om.done || om.held {
			continue // a held one goes when its batch is applied (releaseLocked)
		}
		om.unsent = false
		if om.pubrel {
			c.send(&packet.Pubrel{PacketID: om.id})
		} else {
			c.writePublish(om.msg, om.qos, om.id, om.retain, true, om.subIDs)
		}
	}
	s.refillLocked(b, false, nil)
	s.syncStatsLocked()
}

// reauthorizeLocked checks read access, for info (the identity of a
// connection resuming the session), to every message queued or in flight
// to the session. They were routed on the rights of whoever owned the
// session before, and a client id is no credential: a resume must not hand
// one user's messages to another (Mosquitto checks each message on
// delivery too). What info may not read is dropped, never sent: queued
// ones leave the queue, in-flight ones are released (store entries
// deleted, packet ids freed). A delivery in the PUBREL state carries no
// message and completes as usual. Dropped messages of shared
// subscriptions are returned, for the rest of their group.
//
// s.mu is held on entry and on return; it is released around the
// Authorize calls. ok is false if meanwhile the session ended or another
// connection claimed it.
func (s *session) reauthorizeLocked(info *ClientInfo, b *store.Batch) (ok bool, dropped int, redo []shareRedo) {
	if !s.srv.hasAuthz() {
		return !s.ended && s.conn == nil && s.info == info, 0, nil
	}
	for {
		if s.ended || s.conn != nil || s.info != info {
			return false, dropped, redo
		}
		gen := s.authGen
		var allowed map[string]bool
		note := func(om *outMsg) {
			if om != nil && !om.done && !om.pubrel && om.gen != gen {
				if allowed == nil {
					allowed = make(map[string]bool)
				}
				allowed[om.msg.Topic] = false
			}
		}
		for _, om := range s.order {
			note(om)
		}
		for _, om := range s.queue[s.qhead:] {
			note(om)
		}
		if len(allowed) == 0 {
			return true, dropped, redo
		}
		s.mu.Unlock() // no lock across the hook
		for t := range allowed {
			allowed[t] = s.srv.allowed(info, AccessReceive, t)
		}
		s.mu.Lock()
		if s.ended || s.conn != nil || s.info != info || s.authGen != gen {
			return false, dropped, redo
		}
		// Messages routed meanwhile are not in allowed: the next round
		// checks them.
		n, r := s.filterLocked(gen, allowed, b)
		dropped += n
		redo = append(redo, r...)
	}
}

// filterLocked marks the messages whose topic allowed permits as checked
// for gen and drops those it denies (see reauthorizeLocked). s.mu is held.
func (s *session) filterLocked(gen uint64, allowed map[string]bool, b *store.Batch) (dropped int, redo []shareRedo) {
	keep := func(om *outMsg) bool {
		if om.gen == gen {
			return true
		}
		ok, seen := allowed[om.msg.Topic]
		if !seen {
			return true // routed after the check: the next round
		}
		if ok {
			om.gen = gen
		}
		return ok
	}
	for _, om := range s.order {
		if om == nil || om.done || om.pubrel || keep(om) {
			continue
		}
		s.deleteEntryLocked(b, om)
		delete(s.inflight, om.id) // the packet id is free again
		om.done = true
		dropped++
		if om.share != "" && om.qos == 1 {
			// A QoS 2 delivery that started is not sent to another member
			// [MQTT-4.8.2-5].
			redo = append(redo, shareRedo{om.share, om.msg})
		}
	}
	if dropped > 0 {
		s.order = slices.DeleteFunc(s.order, func(om *outMsg) bool { return om == nil || om.done })
		if len(s.inflight) == 0 {
			s.order, s.inflight = nil, nil
		}
	}
	var kept []*outMsg
	for _, om := range s.queue[s.qhead:] {
		if om == nil {
			continue
		}
		if keep(om) {
			kept = append(kept, om)
			continue
		}
		size := om.msg.size()
		s.queuedBytes -= size
		s.srv.queuedBytes.Add(-size)
		s.deleteEntryLocked(b, om)
		dropped++
		if om.share != "" && om.qos > 0 {
			redo = append(redo, shareRedo{om.share, om.msg})
		}
	}
	if len(kept) != len(s.queue)-s.qhead {
		s.queue, s.qhead = kept, 0
	}
	s.syncStatsLocked()
	return dropped, redo
}

// detach unbinds c at the end of its connection; a session that is not
// persistent ends, a persistent one starts its expiry clock. w is the
// connection's will to publish (nil for none): at once, or after its delay
// unless the session ends first or a new connection resumes it.
func (s *session) detach(c *conn, w *packet.Will) {
	defer s.srv.notifyDetach(s)
	s.mu.Lock()
	if s.conn != c {
		// Taken over: the new connection owns the session. A delayed will
		// is not sent: a new connection to this session came before its
		// delay [MQTT-3.1.3-9]; unless that connection ended the session.
		now := w != nil && (willDelay(w) == 0 || s.ended)
		if w != nil && !now && s.conn == nil {
			s.setWillLocked(w, &c.info) // the takeover's CONNECT is still deciding
		}
		s.mu.Unlock()
		if now {
			s.srv.publishWill(w, &c.info, false)
		}
		return
	}
	s.conn = nil
	s.syncStatsLocked()
	end := !s.persistent || s.expiry == 0
	if !end && s.expiry > 0 {
		s.expiryTimer = time.AfterFunc(s.expiry, func() { s.srv.expireSession(s) })
	}
	willNow := w != nil && (end || willDelay(w) == 0)
	if w != nil && !willNow {
		s.setWillLocked(w, &c.info) // [MQTT-3.1.2-8]
	}
	var b *store.Batch
	if !end && s.stored() {
		b = new(store.Batch)
		var pending *packet.Will
		if s.will != nil {
			pending = s.will.w // still owed after a restart
		}
		b.PutSession(s.sessionRecordLocked(time.Now(), pending)) // its expiry runs from now
		s.onDisk = true
	}
	s.mu.Unlock()
	if willNow {
		s.srv.publishWill(w, &c.info, false)
	}
	if end {
		s.srv.endSession(s, true)
	}
	s.srv.applyNow(b)
}

func (s *session) stopExpiryLocked() {
	if s.expiryTimer != nil {
		s.expiryTimer.Stop()
		s.expiryTimer = nil
	}
}

func (s *session) stopExpiry() {
	s.mu.Lock()
	s.stopExpiryLocked()
	s.cancelWillLocked()
	s.mu.Unlock()
}

// expireSession removes an offline session whose expiry passed. After
// Shutdown began it does nothing: the session stays in the store, where the
// next start finds it expired.
func (srv *Server) expireSession(s *session) {
	if srv.isClosing() {
		return
	}
	if srv.endSession(s, true) {
		srv.log.Info("session expired", "client", s.id)
		srv.stats.expired.Add(1)
	}
}

// endSession removes s from the server and its subscriptions from the index.
// With onlyOffline it does nothing if a connection has (re)attached to s. It
// reports whether it ended the session.
func (srv *Server) endSession(s *session, onlyOffline bool) bool {
	return srv.endSessionAs(s, onlyOffline, false)
}

// endSessionAs is endSession; handedOver ends s on this server only, for
// another that resumes it (HandOver): no will (a delayed one is cancelled:
// the client connected elsewhere before its delay [MQTT-3.1.3-9]), and its
// deletion from the store is not replicated (store.Batch.Local).
func (srv *Server) endSessionAs(s *session, onlyOffline, handedOver bool) bool {
	srv.sessMu.Lock()
	s.mu.Lock()
	if s.ended || (onlyOffline && s.conn != nil) {
		s.mu.Unlock()
		srv.sessMu.Unlock()
		return false
	}
	s.ended = true
	var owner ClientInfo // for the SessionHooks
	if s.info != nil {
		owner = *s.info
	}
	owner.ClientID = s.id
	var will *pendingWill
	if handedOver {
		s.cancelWillLocked()
	} else {
		will = s.takeWillLocked() // the session ends: its will goes now [MQTT-3.1.2-8]
	}
	// A session replaced by a new one of the same id (clean start) is
	// deleted from the store by the CONNECT that replaced it.
	stored := s.onDisk && srv.sessions[s.id] == s
	s.stopExpiryLocked()
	subs := s.subs
	s.subs = nil
	s.subIdx = nil
	for _, e := range subs {
		if e.group != "" {
			srv.shareLeave(e.group, e.filter)
		}
	}
	if srv.sessions[s.id] == s {
		delete(srv.sessions, s.id)
	}
	redo := s.sharedLeftLocked()
	if handedOver {
		for _, om := range s.queue[s.qhead:] {
			if om.held {
				s.handoffHeld++
			}
		}
		for _, om := range s.order {
			if om != nil && om.held {
				s.handoffHeld++
			}
		}
	}
	s.queue, s.inflight, s.order, s.inbound = nil, nil, nil, nil
	s.inboundN.Store(0)
	srv.queuedBytes.Add(-s.queuedBytes)
	s.queuedBytes, s.qhead = 0, 0
	s.syncStatsLocked()
	s.mu.Unlock()
	srv.sessMu.Unlock()
	if len(srv.hooks.session) > 0 {
		srv.noteSession(&owner, SessionEnded)
	}
	if will != nil {
		srv.publishWill(will.w, will.info, will.restored)
	}
	if stored {
		b := store.Batch{Local: handedOver}
		b.DeleteSession(s.id)
		srv.applyNow(&b)
	}
	for _, e := range subs {
		srv.subs.Remove(e.filter, e.group, s)
	}
	s.nsubs.Store(0)
	srv.redistribute(redo)
	return true
}
