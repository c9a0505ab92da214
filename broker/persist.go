package broker

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// Persistence (Options.Store). What touches the disk: persistent sessions,
// their subscriptions, their QoS 1/2 queue entries (one message record
// shared by every entry that names it), inbound QoS 2 packet ids, retained
// messages. Clean sessions and QoS 0 never do.
//
// Writes are collected per connection while it reads a burst of packets
// (conn.pend) and applied once at the end of the burst, before the
// acknowledgements that depend on them leave (conn.pendAcks): a QoS 1/2
// message bound for a persistent session is on disk before its publisher
// hears PUBACK/PUBREC, and a busy publisher pays one sync per burst, shared
// with other connections by the store's group commit. For the same reason a
// QoS 1/2 delivery to another persistent session waits for the publisher's
// batch (session.holdsFor), and PUBREL for its "PUBREL sent" state: every
// write naming a queue entry reaches the store after the write creating it.

// persistent reports whether this session's state goes to the store.
func (s *session) stored() bool { return s.persistent && s.srv.opts.Store != nil }

// storeID gives m its store id, once.
func (srv *Server) storeID(m *Message) uint64 {
	if id := m.id.Load(); id != 0 {
		return id
	}
	m.id.CompareAndSwap(0, srv.msgSeq.Add(1))
	return m.id.Load()
}

// toStore converts m for the store.
func (m *Message) toStore(id uint64) *store.Message {
	sm := &store.Message{ID: id, Received: m.Created,
		Publish: &packet.Publish{Topic: m.Topic, Payload: m.Payload, QoS: m.QoS, Retain: m.Retain, Props: m.Props}}
	if m.QoS > 0 {
		// The record is stored as a PUBLISH, which needs a packet id; the
		// real ids belong to each session's queue entry.
		sm.Publish.PacketID = 1
	}
	if sm.Received.IsZero() {
		sm.Received = time.Now()
	}
	if m.Props != nil && m.Props.MessageExpiry != nil {
		sm.Expiry = m.Created.Add(time.Duration(*m.Props.MessageExpiry) * time.Second)
	}
	return sm
}

func messageFromStore(sm *store.Message) *Message {
	p := sm.Publish
	m := &Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain, Props: p.Props, Created: sm.Received}
	m.id.Store(sm.ID)
	return m
}

// putEntryLocked records om (queued or in flight) in b. s.mu is held.
func (s *session) putEntryLocked(b *store.Batch, om *outMsg, withMessage bool) {
	if b == nil || !s.stored() || om.qos == 0 {
		return
	}
	id := s.srv.storeID(om.msg)
	if withMessage && !namesMessage(b, id) {
		b.PutMessage(om.msg.toStore(id))
	}
	if om.seq == 0 {
		// Numbered across sessions, not per session: a batch applied late
		// (session.holdsFor) can still put an entry of a session that a
		// clean start has replaced since, under the same client id. With
		// numbers of its own, that entry cannot replace one of the new
		// session, and releaseLocked deletes it (orphanLocked).
		om.seq = s.srv.entrySeq.Add(1)
	}
	st := store.Queued
	switch {
	case om.pubrel:
		st = store.PubrelSent
	case om.id != 0:
		st = store.PublishSent
	}
	b.PutQueueEntry(&store.QueueEntry{ClientID: s.id, Seq: om.seq, MessageID: id, QoS: om.qos,
		PacketID: om.id, State: st, Retain: om.retain, SubIDs: om.subIDs})
}

// namesMessage reports whether the last change in b puts message id or a
// queue entry naming it. A fan-out to many persistent sessions then writes
// the message body once per batch, followed by one entry per session,
// instead of one body per session. Skipping the body is safe: an entry
// naming id is put either after the body in this batch, or (a state change,
// putEntryLocked without the message) for a message the store already
// holds; and a store settles reference counts only when the whole batch is
// applied, so the entries put after it keep the message.
func namesMessage(b *store.Batch, id uint64) bool {
	ops := b.Ops()
	if len(ops) == 0 {
		return false
	}
	switch op := &ops[len(ops)-1]; op.Kind {
	case store.OpPutMessage:
		return op.Message.ID == id
	case store.OpPutQueueEntry:
		return op.Entry.MessageID == id
	}
	return false
}

// deleteEntryLocked removes om's record once it is acknowledged.
func (s *session) deleteEntryLocked(b *store.Batch, om *outMsg) {
	if b != nil && s.stored() && om.seq != 0 {
		b.DeleteQueueEntryOf(s.id, om.seq, om.msg.id.Load())
	}
}

// orphanLocked deletes the queue entry of a held delivery (om) once the
// batch that put it is applied, when meanwhile s ended (a clean start
// replaced it, it expired) or stopped being stored (resumed without a
// session expiry): the late batch put an entry of a session the store no
// longer has, which would keep its message forever and, after a restart,
// hand it to whichever session then has the client id. The entry's number
// is its own (entrySeq), so this cannot delete an entry of the session
// that replaced s. The store reads the entry back: if the session's
// deletion came after the batch, there is nothing left to delete.
func (s *session) orphanLocked(om *outMsg, b *store.Batch) {
	if b != nil && om.seq != 0 && s.srv.opts.Store != nil {
		b.DeleteQueueEntry(s.id, om.seq)
		om.seq = 0
	}
}

// sessionRecordLocked is the store's view of s, with the will that is owed
// if the connection (or, after a crash, the broker) goes away: the
// connection's will while connected, the pending delayed will once
// disconnected. s.mu is held.
func (s *session) sessionRecordLocked(disconnected time.Time, will *packet.Will) *store.Session {
	rec := &store.Session{ClientID: s.id, DisconnectedAt: disconnected, ExpiryInterval: store.NeverExpire, Will: will}
	if s.expiry >= 0 {
		rec.ExpiryInterval = uint32(s.expiry / time.Second)
	}
	if s.info != nil {
		rec.Username = s.info.Username
		rec.Listener = s.info.Listener // its per-listener security, after a restart
	}
	if c := s.conn; c != nil {
		rec.Version = c.version
	}
	return rec
}

// storeApply applies b, without waiting for stable storage when lazy and
// the store allows it, and counts the write and its time for the metrics.
// Every write's outcome goes to noteApply: a failing disk turns on the
// refusals of diskfull.go whichever write found it (a read burst's, a
// CONNECT's, a will's, a refill's).
func (srv *Server) storeApply(b *store.Batch, lazy bool) error {
	return srv.storeApplyOrdered(b, lazy, nil)
}

// storeApplyOrdered is storeApply that calls ordered as soon as no later
// write can reach the store before b (store.OrderedApplier: before the wait
// for stable storage), when the store can tell and nothing else must see b
// first; with ReplicaHooks, once the store took b and the last hook has
// ordered its copy (OrderedReplicaHook: before the wait for the copy).
// ordered is called at most once, on this goroutine, with no lock held;
// when it is not called, the caller does what it would have done once
// storeApplyOrdered returns.
func (srv *Server) storeApplyOrdered(b *store.Batch, lazy bool, ordered func()) error {
	start := time.Now()
	var err error
	if l, ok := srv.opts.Store.(store.LazyApplier); ok && lazy {
		err = l.ApplyNoSync(b)
	} else if o, ok := srv.opts.Store.(store.OrderedApplier); ok && ordered != nil && len(srv.hooks.replica) == 0 {
		err = o.ApplyOrdered(b, ordered)
	} else {
		err = srv.opts.Store.Apply(b)
	}
	if err == nil && len(srv.hooks.replica) > 0 {
		// Not a disk's failure: noteApply does not see it.
		if rerr := srv.replicate(b, lazy, ordered); rerr != nil {
			srv.stats.storeWrites.Add(1)
			srv.stats.storeNanos.Add(int64(time.Since(start)))
			return rerr
		}
	}
	srv.stats.storeWrites.Add(1)
	srv.stats.storeNanos.Add(int64(time.Since(start)))
	srv.noteApply(err)
	return err
}

// asyncStore returns the store as a store.AsyncApplier when acknowledgements
// may wait for its sync while the connection reads on (conn.flushAsync):
// not when a ReplicaHook must be given each batch after the store, nor
// when AckGates hold acknowledgements (both wait in the read loop).
func (srv *Server) asyncStore() store.AsyncApplier {
	if len(srv.hooks.replica) > 0 || len(srv.hooks.gate) > 0 {
		return nil
	}
	a, _ := srv.opts.Store.(store.AsyncApplier)
	return a
}

// applyNow applies b at once (for work outside a read burst). A failure
// is logged and, as any store write's (storeApply), turns on the refusals
// of diskfull.go when the disk fails.
func (srv *Server) applyNow(b *store.Batch) error {
	if b == nil || b.Empty() {
		return nil
	}
	err := srv.storeApply(b, false)
	if err != nil {
		srv.log.Error("store write failed", "err", err)
	}
	return err
}

// holder is the owner of a store batch (store.Batch.Owner) that collects
// the deliveries held until the batch is applied (session.holdsFor): a
// connection's read burst (conn.releaseHeld lets them go), or a batchHold.
type holder interface {
	hold(s *session, om *outMsg)
}

// hold implements holder for the connection's read burst (c.pend). Read
// loop only.
func (c *conn) hold(s *session, om *outMsg) { c.burst.held = append(c.burst.held, heldOut{s, om}) }

// batchHold is the holder of a batch written outside a read burst: a will
// (publishWill), a shared-subscription redistribution, Server.Publish.
// Their deliveries to persistent sessions wait for the batch as a
// publisher's do: otherwise a subscriber online (or resuming its session
// meanwhile, attachLocked) is sent the message at once, and its
// acknowledgement, or the "PUBLISH sent" state of a refill, reaches the
// store before the message it names (the store refuses that batch). One
// goroutine uses it: the one that routes and then applies the batch.
type batchHold struct {
	held  []heldOut
	scrap []*outMsg
}

func (h *batchHold) hold(s *session, om *outMsg) { h.held = append(h.held, heldOut{s, om}) }

// heldBatch returns a batch for store writes made outside a read burst,
// whose deliveries are held until applyHeld applied it; nil without a
// store.
func (srv *Server) heldBatch() *store.Batch {
	if srv.opts.Store == nil {
		return nil
	}
	return &store.Batch{Owner: &batchHold{}}
}

// applyHeld applies b (from heldBatch; nil for none) and then lets the
// deliveries held for it go, in order, session by session. After a failed
// write too, as conn.flushPending does: the sessions are served as without
// a store. No lock may be held.
func (srv *Server) applyHeld(b *store.Batch) error {
	if b == nil {
		return nil
	}
	err := srv.applyNow(b)
	if h, ok := b.Owner.(*batchHold); ok {
		h.scrap = releaseHeldOuts(h.held, h.scrap)
		clear(h.held)
		h.held = h.held[:0]
	}
	return err
}

// releaseHeldOuts lets held go, grouped by session (consecutive entries of
// one session in one session.pump), and returns scrap, pump's scratch
// memory, for reuse.
func releaseHeldOuts(held []heldOut, scrap []*outMsg) []*outMsg {
	for i := 0; i < len(held); {
		s := held[i].s
		sc := scrap[:0]
		for ; i < len(held) && held[i].s == s; i++ {
			sc = append(sc, held[i].om)
		}
		scrap = s.pump(sc)
	}
	clear(scrap[:cap(scrap)])
	return scrap[:0]
}

// promoteLocked puts back in flight, for a session just restored, the
// queued deliveries that come before (by queue sequence) a delivery
// restored in flight, and orders the deliveries in flight by sequence: on
// resumption they are re-sent in the order they were routed
// [MQTT-4.6.0-6], before the queue. The store can hold that mix after a
// crash: a QoS 2 delivery taken from the queue is written to the client
// only once its "PUBLISH sent" state is stored (session.pump), but a later
// message routed straight into the window is stored by its publisher's
// batch, which can be applied first; a kill -9 between the two leaves the
// earlier message "queued" and the later one "in flight", and without this
// the later one would go first. A promoted delivery gets a fresh packet id
// (its old one, if it had one, was never stored) and its new state is put
// in b before anything is sent, so that a QoS 2 PUBREC from the client
// finds the entry with that id after another restart [MQTT-4.3.3-2].
// QoS 0 entries stay queued. s.mu need not be held (Restore runs before
// Serve) but the method keeps the session's locking convention.
func (s *session) promoteLocked(b *store.Batch) {
	var hi uint64
	for _, om := range s.order {
		if !om.pubrel {
			hi = max(hi, om.seq)
		}
	}
	if hi == 0 {
		return
	}
	kept := s.queue[:0]
	promoted := false
	for _, om := range s.queue {
		if om.seq > hi || om.qos == 0 {
			kept = append(kept, om)
			continue
		}
		size := om.msg.size()
		s.queuedBytes -= size
		s.srv.queuedBytes.Add(-size)
		om.id = s.nextIDLocked()
		s.inflight[om.id] = om
		s.order = append(s.order, om)
		s.putEntryLocked(b, om, false)
		promoted = true
	}
	clear(s.queue[len(kept):])
	s.queue = kept
	if promoted {
		slices.SortFunc(s.order, func(x, y *outMsg) int { return cmp.Compare(x.seq, y.seq) })
	}
}

// restoredInfo is the identity of a session restored from the store: its
// user name and the name of the listener its client last came through.
func restoredInfo(rec *store.Session) *ClientInfo {
	return &ClientInfo{ClientID: rec.ClientID, Username: rec.Username, HasUsername: rec.Username != "",
		Listener: rec.Listener}
}

// mayDecide reports whether an ACL decision may be taken for info. A
// restored identity (a session or will loaded from the store, whose client
// has not connected since the restart) is only as good as its listener:
// with per-listener security (per_listener_settings) the listener selects
// the ACL, and an identity without one would be judged by the wrong rules.
// So it fails closed: no decision, hence no delivery that needs one and no
// will, when the record names no listener (written before listeners were
// stored) or names one this server does not serve (any more), until the
// client connects again through a listener. (Mosquitto likewise denies
// every ACL check of a restored client that has no listener.)
//
// Without Options.ListenerSecurity the listener selects no rules: a
// restored identity that names a listener is judged by the same rules as
// any, whether or not that listener is served here. (A cluster imports the
// sessions of other nodes, whose listeners are not this node's: their
// deliveries were silently refused until the client came back.)
func (srv *Server) mayDecide(info *ClientInfo, restored bool) bool {
	return !restored || (info.Listener != "" && (!srv.opts.ListenerSecurity || srv.listenerServed(info.Listener)))
}

// listenerServed reports whether a listener called name is being served
// (Serve or ServeListener). Server.mu is taken: call it with no lock held.
func (srv *Server) listenerServed(name string) bool {
	if srv.listenerFor(name) != nil {
		return true
	}
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for l := range srv.listeners {
		if l.Addr().String() == name {
			return true
		}
	}
	return false
}

// Restore loads the store's sessions, subscriptions, queues and retained
// messages. Call it once, before Serve.
func (srv *Server) Restore() error {
	st := srv.opts.Store
	if st == nil {
		return nil
	}
	start := time.Now()
	state, err := st.Load(start)
	if err != nil {
		return fmt.Errorf("broker: restoring from the store: %w", err)
	}
	msgs := make(map[uint64]*Message, len(state.Messages))
	for id, sm := range state.Messages {
		msgs[id] = messageFromStore(sm)
	}
	srv.msgSeq.Store(state.NextMessageID)
	queued := 0
	type owed struct {
		s     *session
		w     *packet.Will
		delay time.Duration
	}
	var wills []owed
	// Expiry timers are armed after the loop: one whose expiry has run out
	// fires at once, and its expireSession (endSession reads s.onDisk and
	// srv.sessions) must not race with the writes below.
	type expiring struct {
		s    *session
		left time.Duration
	}
	var expiries []expiring
	var promoted store.Batch // queued entries now in flight (promoteLocked)
	for _, ss := range state.Sessions {
		rec := ss.Session
		s := newSession(srv, rec.ClientID)
		s.persistent = true
		s.info = restoredInfo(rec)
		s.restored = true
		s.expiry = -1
		if rec.ExpiryInterval != store.NeverExpire {
			s.expiry = time.Duration(rec.ExpiryInterval) * time.Second
		}
		for _, sub := range ss.Subscriptions {
			o := subOptions{QoS: sub.Sub.QoS, NoLocal: sub.Sub.NoLocal, RetainAsPublished: sub.Sub.RetainAsPublished,
				RetainHandling: sub.Sub.RetainHandling, SubID: sub.SubID}
			s.addSubLocked(sub.Group, sub.Sub.Filter, o)
			srv.subs.Add(sub.Sub.Filter, sub.Group, s, o)
		}
		for _, e := range ss.Queue {
			if e.Seq > srv.entrySeq.Load() {
				srv.entrySeq.Store(e.Seq)
			}
			m := msgs[e.MessageID]
			if m == nil {
				continue
			}
			om := &outMsg{msg: m, qos: e.QoS, retain: e.Retain, subIDs: e.SubIDs, seq: e.Seq, id: e.PacketID,
				pubrel: e.State == store.PubrelSent}
			if e.State == store.Queued || e.PacketID == 0 {
				om.id = 0
				s.queue = append(s.queue, om)
				s.queuedBytes += m.size()
				srv.queuedBytes.Add(m.size())
			} else {
				if s.inflight == nil {
					s.inflight = make(map[uint16]*outMsg)
				}
				s.inflight[om.id] = om
				s.order = append(s.order, om)
				s.nextID = max(s.nextID, om.id)
			}
			queued++
		}
		s.promoteLocked(&promoted)
		for _, id := range ss.Inbound {
			if s.inbound == nil {
				s.inbound = make(map[uint16]struct{})
			}
			s.inbound[id] = struct{}{}
		}
		s.inboundN.Store(int32(len(s.inbound)))
		// Offline since the restart at the latest: its expiry runs from its
		// disconnect, or from now after a crash.
		if s.expiry >= 0 {
			left := s.expiry
			if !rec.DisconnectedAt.IsZero() {
				left -= start.Sub(rec.DisconnectedAt)
			}
			expiries = append(expiries, expiring{s, max(left, 0)})
		}
		s.onDisk = true
		s.syncStatsLocked() // offline, with its queue and window
		srv.sessions[s.id] = s
		if w := rec.Will; w != nil {
			// A will still owed: the session was connected when the broker
			// stopped without a DISCONNECT (a crash), or its delay had not
			// run out. It goes after what is left of its delay [MQTT-3.1.2-8].
			delay := willDelay(w)
			if !rec.DisconnectedAt.IsZero() {
				delay -= start.Sub(rec.DisconnectedAt)
			}
			wills = append(wills, owed{s, w, max(delay, 0)})
		}
	}
	if !promoted.Empty() {
		if err := srv.storeApply(&promoted, false); err != nil {
			return fmt.Errorf("broker: restoring from the store: %w", err)
		}
	}
	for _, sm := range state.Retained {
		srv.retained.set(messageFromStore(sm))
	}
	for _, e := range expiries {
		e.s.mu.Lock()
		e.s.expiryTimer = time.AfterFunc(e.left, func() { srv.expireSession(e.s) })
		e.s.mu.Unlock()
	}
	// Wills are scheduled once every session and subscription is back, so
	// that they reach everyone.
	for _, o := range wills {
		o.s.mu.Lock()
		o.s.setWillAfterLocked(o.w, o.s.info, o.delay, true)
		o.s.mu.Unlock()
	}
	for _, rec := range state.Expired {
		if rec.Will != nil {
			// The session ended while the broker was down: its will goes
			// now, once its listener is served (fireWill). The session is
			// not registered: nothing can resume it.
			gone := newSession(srv, rec.ClientID)
			gone.ended = true
			gone.mu.Lock()
			gone.setWillAfterLocked(rec.Will, restoredInfo(rec), 0, true)
			gone.mu.Unlock()
		}
	}
	srv.log.Info("store restored", "sessions", len(state.Sessions), "queued", queued,
		"retained", len(state.Retained), "expired_sessions", len(state.Expired), "took", time.Since(start).String())
	return nil
}
