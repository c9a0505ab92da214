package broker

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// Sessions kept beyond this server (a cluster): a ReplicaHook copies every
// store write elsewhere before the acknowledgements that depend on it
// leave, a ConnectHook moves a client's session to this server before its
// CONNECT looks for it (ImportSession), and HandOver lets a session go to
// another server. The hooks see store batches and ClientInfo only, never a
// connection or a session.

// ReplicaHook is given every batch the server applies to its store, after
// the store took it and before anything that waits for the write (a
// publisher's PUBACK or PUBREC, a CONNACK) goes out: it copies the
// persistent sessions' state (sessions, subscriptions, queue entries with
// their messages, inbound QoS 2 packet ids) elsewhere. Retained messages
// are in the batches too; a hook may ignore them. lazy says that nothing
// waits for the batch (a subscriber's acknowledgements): the hook may copy
// it without waiting. An error fails the write as the store's own would (no
// acknowledgement that depended on it is sent), but does not count as a
// failing disk. The hook must not keep b after it returns. Batches marked
// store.Batch.Local are not given to it. Without a store (Options.Store)
// nothing is persistent and the hook is never called.
type ReplicaHook interface {
	Replicate(b *store.Batch, lazy bool) error
}

// OrderedReplicaHook is a ReplicaHook that can say when a batch's copy is
// ordered: ReplicateOrdered is Replicate, and calls ordered (at most once,
// on its goroutine, with no lock held) as soon as nothing given to the
// hook later can reach the copy before b's records (they are sent, in
// order), before it waits for the copy to be taken. The QoS 1 deliveries
// held for b then go at once (as with the store's own order,
// store.OrderedApplier): a subscriber's acknowledgement is copied after
// the entry it deletes. The publisher's acknowledgement, and a session's
// handover (HandOver), still wait for the copy.
type OrderedReplicaHook interface {
	ReplicaHook
	ReplicateOrdered(b *store.Batch, lazy bool, ordered func()) error
}

// replicaTrack numbers the calls of the ReplicaHooks that may let
// deliveries go before they return (an ordered callback), so that a
// handover can wait for those begun before it (HandOver).
type replicaTrack struct {
	mu      sync.Mutex
	next    uint64
	running map[uint64]struct{}
}

func (t *replicaTrack) begin() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.next++
	if t.running == nil {
		t.running = make(map[uint64]struct{})
	}
	t.running[t.next] = struct{}{}
	return t.next
}

func (t *replicaTrack) end(k uint64) {
	t.mu.Lock()
	delete(t.running, k)
	t.mu.Unlock()
}

// mark returns the number of the last call begun.
func (t *replicaTrack) mark() uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next
}

// doneUpTo reports whether every call numbered up to k has returned.
func (t *replicaTrack) doneUpTo(k uint64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	for r := range t.running {
		if r <= k {
			return false
		}
	}
	return true
}

// ConnectHook is called for every CONNECT that passed authentication and
// authorization, before the server looks up the client id's session: a
// cluster takes the client id over from the node that holds it and brings
// its session here (Server.ImportSession), so that the CONNACK's session
// present flag and the resumed state are right [MQTT-3.2.2-2]. cleanStart
// is the CONNECT's Clean Start (Clean Session) flag. The call is bounded by
// ctx. An error refuses the CONNECT: with its reason code when it is a
// packet.ReasonCode, Server unavailable otherwise.
type ConnectHook interface {
	BeforeSession(ctx context.Context, c *ClientInfo, cleanStart bool) error
}

// ConnectEndHook is told when a CONNECT whose ConnectHooks were called
// has ended: connected reports whether its client is connected (its session
// attached, the SessionHooks told) or the CONNECT was refused (by a
// ConnectHook or after them). c is the ClientInfo the ConnectHooks got, so
// a hook can tell two CONNECTs with one client id apart. A cluster uses it
// to learn when a client it claimed can be taken over.
type ConnectEndHook interface {
	ConnectEnded(c *ClientInfo, connected bool)
}

// connectEnded tells the ConnectEndHooks that the CONNECT of c ended.
func (srv *Server) connectEnded(c *ClientInfo, connected bool) {
	if len(srv.hooks.connect) == 0 {
		return
	}
	for _, h := range srv.hooks.connEnd {
		h.ConnectEnded(c, connected)
	}
}

// beforeSessionTimeout bounds the ConnectHooks of one CONNECT.
const beforeSessionTimeout = 15 * time.Second

// ErrSessionBusy is returned by ImportSession when the client id's session
// here is in use (connected) or no longer persistent.
var ErrSessionBusy = errors.New("broker: session in use")

// replicate gives b to the ReplicaHooks (storeApply, after the store took
// it), calling ordered (if not nil) when the last hook has ordered b
// (OrderedReplicaHook). ordered is not called when the hooks cannot tell:
// the caller does it after.
func (srv *Server) replicate(b *store.Batch, lazy bool, ordered func()) error {
	if b.Local {
		return nil
	}
	if ordered != nil {
		// Its deliveries may go before it returns: HandOver waits for it.
		k := srv.replicas.begin()
		defer srv.replicas.end(k)
	}
	hs := srv.hooks.replica
	for i, h := range hs {
		var err error
		if o, ok := h.(OrderedReplicaHook); ok && ordered != nil && i == len(hs)-1 {
			err = o.ReplicateOrdered(b, lazy, ordered)
		} else {
			err = h.Replicate(b, lazy)
		}
		if err != nil {
			srv.stats.replicaFailures.Add(1)
			return fmt.Errorf("broker: replicating a store write: %w", err)
		}
	}
	return nil
}

// beforeSession runs the ConnectHooks for the CONNECT of c.
func (srv *Server) beforeSession(info *ClientInfo, cleanStart bool) error {
	if len(srv.hooks.connect) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), beforeSessionTimeout)
	defer cancel()
	for _, h := range srv.hooks.connect {
		if err := h.BeforeSession(ctx, info, cleanStart); err != nil {
			return err
		}
	}
	return nil
}

// ImportSession installs a persistent session that another server held
// (a cluster node that gave it up, or that died), for a CONNECT about to
// resume it: its subscriptions, its queued and in-flight QoS 1/2 messages
// (msgs holds the messages its queue entries name, by MessageID), its
// inbound QoS 2 packet ids [MQTT-4.3.3-2] and the will still owed. When
// this server already has an offline persistent session under the id, the
// imported state is merged into it: subscriptions it lacks are added, and
// the imported deliveries go before its own (they were routed first), in
// flight first, each in its original order [MQTT-4.6.0-6]. Everything is
// written to the store (and the ReplicaHooks) as this server's own, and
// the SubscriptionHooks are told of each subscription added. A will owed
// at once is published; a delayed one waits for what is left of its delay
// unless a connection resumes the session first [MQTT-3.1.3-9]. It returns
// ErrSessionBusy when the id's session here is connected or not
// persistent.
func (srv *Server) ImportSession(st *store.SessionState, msgs map[uint64]*store.Message) error {
	return srv.importSession(st, msgs, false)
}

// HasStore reports whether the server keeps persistent sessions in a
// store (Options.Store): only then do the ReplicaHooks see their writes.
func (srv *Server) HasStore() bool { return srv.opts.Store != nil }

// StandbySession installs, for another server that may have died (a
// cluster node whose link is lost), the subscriptions of a persistent
// session it held, so that what is published for the session meanwhile is
// queued here: those queue entries go to the store and the ReplicaHooks as
// usual, for whichever server takes the session next (ImportSession, which
// merges them) or for the holder when it comes back. Nothing else of the
// session is written to the ReplicaHooks (its record stays the holder's, with
// the will it owes), no will is published or scheduled and the session does
// not expire here: it stays until ImportSession makes it this server's own
// or HandOver lets it go. It returns ErrSessionBusy when this server has a
// session under the id already.
func (srv *Server) StandbySession(st *store.SessionState) error {
	return srv.importSession(st, nil, true)
}

func (srv *Server) importSession(st *store.SessionState, msgs map[uint64]*store.Message, standby bool) error {
	if st == nil || st.Session == nil || st.Session.ClientID == "" {
		return errors.New("broker: ImportSession: no session")
	}
	if srv.isClosing() {
		return ErrServerClosed
	}
	rec := st.Session
	id := rec.ClientID
	now := time.Now()
	srv.sessMu.Lock()
	s := srv.sessions[id]
	if s != nil && standby {
		srv.sessMu.Unlock()
		return ErrSessionBusy
	}
	if s != nil {
		s.mu.Lock()
		if s.conn != nil || s.ended || !s.persistent {
			s.mu.Unlock()
			srv.sessMu.Unlock()
			return ErrSessionBusy
		}
	} else {
		s = newSession(srv, id)
		s.persistent = true
		s.info = restoredInfo(rec)
		s.restored = true
		s.expiry = -1
		if rec.ExpiryInterval != store.NeverExpire {
			s.expiry = time.Duration(rec.ExpiryInterval) * time.Second
		}
		srv.sessions[id] = s
		s.mu.Lock()
	}
	var b *store.Batch
	if srv.opts.Store != nil {
		// A standby's record and subscriptions are this server's store's
		// only: the replicas keep the holder's.
		b = &store.Batch{Local: standby}
	}
	type added struct {
		filter, group string
		o             subOptions
	}
	var subs []added
	for _, sub := range st.Subscriptions {
		if s.findSubLocked(sub.Group, sub.Sub.Filter) >= 0 {
			continue
		}
		o := subOptions{QoS: sub.Sub.QoS, NoLocal: sub.Sub.NoLocal, RetainAsPublished: sub.Sub.RetainAsPublished,
			RetainHandling: sub.Sub.RetainHandling, SubID: sub.SubID}
		s.addSubLocked(sub.Group, sub.Sub.Filter, o)
		subs = append(subs, added{sub.Sub.Filter, sub.Group, o})
		if b != nil {
			c := *sub
			c.ClientID = id
			b.PutSubscription(&c)
		}
	}

	// The session's own queued deliveries go after the imported ones: they
	// are numbered again (a store orders a queue by number).
	own := slices.Clone(s.queue[s.qhead:])
	for _, om := range own {
		if om.seq != 0 && b != nil {
			b.DeleteQueueEntry(id, om.seq)
		}
		om.seq = 0
	}
	var queue []*outMsg
	imported := 0
	for e, m := range importedEntries(st.Queue, msgs, now) {
		om := &outMsg{msg: m, qos: e.QoS, retain: e.Retain, subIDs: e.SubIDs}
		if e.State != store.Queued && e.PacketID != 0 && s.inflight[e.PacketID] == nil && e.QoS > 0 {
			om.id, om.pubrel = e.PacketID, e.State == store.PubrelSent
			if s.inflight == nil {
				s.inflight = make(map[uint16]*outMsg)
			}
			s.inflight[om.id] = om
			s.order = append(s.order, om)
			s.nextID = max(s.nextID, om.id)
		} else {
			queue = append(queue, om)
			s.queuedBytes += m.size()
			srv.queuedBytes.Add(m.size())
		}
		s.putEntryLocked(b, om, true)
		imported++
	}
	for _, om := range own {
		s.putEntryLocked(b, om, true)
	}
	s.queue = append(queue, own...)
	s.qhead = 0
	for _, pid := range st.Inbound {
		if standby {
			break // the holder's, for the connection that resumes there
		}
		if s.inbound == nil {
			s.inbound = make(map[uint16]struct{})
		}
		s.inbound[pid] = struct{}{}
	}
	s.inboundN.Store(int32(len(s.inbound)))

	var willNow *packet.Will
	if w := rec.Will; w != nil && !standby {
		// Owed: the connection that set it ended without DISCONNECT (its
		// server died) or its delay had not run out. What is left of the
		// delay runs from the disconnect, or from now [MQTT-3.1.2-8].
		delay := willDelay(w)
		if !rec.DisconnectedAt.IsZero() {
			delay -= now.Sub(rec.DisconnectedAt)
		}
		if delay <= 0 {
			willNow = w
		} else {
			s.setWillAfterLocked(w, s.info, delay, true)
		}
	}
	if s.expiryTimer == nil && !standby {
		// The imported record's interval (a standby's was not started).
		s.expiry = -1
		if rec.ExpiryInterval != store.NeverExpire {
			s.expiry = time.Duration(rec.ExpiryInterval) * time.Second
		}
	}
	if s.expiry > 0 && s.expiryTimer == nil && !standby {
		left := s.expiry
		if !rec.DisconnectedAt.IsZero() {
			left -= now.Sub(rec.DisconnectedAt)
		}
		s.expiryTimer = time.AfterFunc(max(left, 0), func() { srv.expireSession(s) })
	}
	if b != nil {
		var pending *packet.Will
		if s.will != nil {
			pending = s.will.w
		}
		disc := rec.DisconnectedAt
		if disc.IsZero() {
			disc = now
		}
		b.PutSession(s.sessionRecordLocked(disc, pending))
		s.onDisk = true
	}
	s.syncStatsLocked()
	info := *s.info
	s.mu.Unlock()
	srv.sessMu.Unlock()

	for _, a := range subs {
		srv.subs.Add(a.filter, a.group, s, a.o)
	}
	if len(srv.hooks.subs) > 0 {
		for _, a := range subs {
			f := a.filter
			if a.group != "" {
				f = "$share/" + a.group + "/" + a.filter
			}
			srv.noteSubscription(&info, SubscriptionEvent{Filter: f, Routed: a.filter, QoS: a.o.QoS})
		}
	}
	var err error
	if b != nil && !b.Empty() {
		err = srv.applyNow(b)
	}
	if willNow != nil {
		srv.publishWill(willNow, &info, true)
	}
	if standby {
		srv.log.Debug("session held for a server out of reach", "client", id, "subscriptions", len(subs))
	} else {
		srv.log.Info("session imported", "client", id, "subscriptions", len(subs), "messages", imported,
			"inbound", len(st.Inbound))
	}
	return err
}

// HandOver lets the session of clientID go to another server that takes
// the client over (a cluster node): a connected client is sent DISCONNECT
// with reason 0x8E and closed [MQTT-3.1.4-3], and its will goes as on any
// takeover (at once without a delay; a delayed one is cancelled, since a
// new connection came before its delay [MQTT-3.1.3-9]). Once the connection
// is done (bounded by ctx), the session leaves this server. With keep its
// state stays with the replicas (ReplicaHook): it is deleted from this
// server's store only (store.Batch.Local), for the new owner to import.
// Without keep the session ends as a clean start ends it, everywhere. It
// reports whether there was a session.
func (srv *Server) HandOver(ctx context.Context, clientID string, keep bool) (bool, error) {
	s, err := srv.takeOver(ctx, clientID)
	if s == nil || err != nil {
		return s != nil, err
	}
	s.mu.Lock()
	attached := s.conn != nil
	s.mu.Unlock()
	if attached {
		// A client connected here again meanwhile: it keeps the session.
		return true, ErrSessionBusy
	}
	if keep {
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		if srv.endSessionAs(s, true, true) {
			// The deliveries routed to it whose store writes (and copies)
			// were not done yet are done before the new owner reads it.
			for waited := false; ; waited = true {
				s.mu.Lock()
				left := s.handoffHeld
				s.mu.Unlock()
				if left == 0 {
					if waited {
						srv.dropHandedOver(clientID)
					}
					break
				}
				select {
				case <-ctx.Done():
					return true, fmt.Errorf("broker: handing %q over: %d deliveries not written: %w", clientID,
						left, ctx.Err())
				case <-tick.C:
				}
			}
		}
		// Deliveries let go before their copy was taken (OrderedReplicaHook)
		// are copied before the new owner reads the session: every call of
		// the hooks begun by now (the held ones above were let go inside
		// theirs) has returned.
		mark := srv.replicas.mark()
		for !srv.replicas.doneUpTo(mark) {
			select {
			case <-ctx.Done():
				return true, fmt.Errorf("broker: handing %q over: copies of its writes not taken: %w", clientID,
					ctx.Err())
			case <-tick.C:
			}
		}
	} else {
		srv.endSession(s, true)
	}
	return true, nil
}

// dropHandedOver deletes from this server's store (only) what the held
// deliveries of a session handed over wrote after its deletion, unless a
// new session of the id exists here by now. Server.sessMu is held across
// the write so that none is created meanwhile; it is rare (a handover that
// found deliveries held) and short.
func (srv *Server) dropHandedOver(clientID string) {
	if srv.opts.Store == nil {
		return
	}
	srv.sessMu.Lock()
	defer srv.sessMu.Unlock()
	if srv.sessions[clientID] != nil {
		return
	}
	b := store.Batch{Local: true}
	b.DeleteSession(clientID)
	srv.applyNow(&b)
}

// TakeOver ends the connection of clientID for another server that takes
// the client over, as HandOver does, and waits (bounded by ctx) until the
// connection is done; the session stays (offline, or ended when it was
// not persistent). It reports whether there was a session.
func (srv *Server) TakeOver(ctx context.Context, clientID string) (bool, error) {
	s, err := srv.takeOver(ctx, clientID)
	return s != nil, err
}

func (srv *Server) takeOver(ctx context.Context, clientID string) (*session, error) {
	srv.sessMu.Lock()
	s := srv.sessions[clientID]
	srv.sessMu.Unlock()
	if s == nil {
		return nil, nil
	}
	s.mu.Lock()
	c := s.conn
	s.mu.Unlock()
	if c != nil {
		srv.log.Info("client taken over by another server", "client", clientID, "remote", c.info.Remote,
			"listener", c.info.Listener)
		ch := make(chan struct{})
		srv.detachWaiters.Store(s, ch)
		defer srv.detachWaiters.CompareAndDelete(s, ch)
		c.takenOver()
		// Woken by the detach (notifyDetach); the ticker covers a detach
		// of another connection of s that took the wake-up.
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			s.mu.Lock()
			gone := s.conn != c || s.ended
			s.mu.Unlock()
			if gone {
				break
			}
			select {
			case <-ctx.Done():
				return s, fmt.Errorf("broker: handing %q over: %w", clientID, ctx.Err())
			case <-ch:
			case <-tick.C:
			}
		}
	}
	return s, nil
}

// notifyDetach wakes a TakeOver waiting for a connection of s to end.
func (srv *Server) notifyDetach(s *session) {
	if ch, ok := srv.detachWaiters.LoadAndDelete(s); ok {
		close(ch.(chan struct{}))
	}
}

// DeliverQueued gives the persistent session of clientID, connected or
// not, the deliveries another server queued for it (st.Queue, their
// messages in msgs by MessageID) as if they were routed to it now: after
// what it has queued, each written to the store and the ReplicaHooks as
// this server's own before it is sent. A cluster node uses it for what
// another node queued for one of its sessions while it was out of reach.
// Expired messages are dropped [MQTT-3.3.2-5]. It reports how many were
// given, and ErrSessionBusy when the id has no persistent session here.
func (srv *Server) DeliverQueued(clientID string, st *store.SessionState, msgs map[uint64]*store.Message) (int, error) {
	if srv.isClosing() {
		return 0, ErrServerClosed
	}
	srv.sessMu.Lock()
	s := srv.sessions[clientID]
	srv.sessMu.Unlock()
	if s == nil {
		return 0, ErrSessionBusy
	}
	s.mu.Lock()
	ok := s.persistent && !s.ended
	s.mu.Unlock()
	if !ok {
		return 0, ErrSessionBusy
	}
	b := srv.heldBatch()
	n := 0
	for e, m := range importedEntries(st.Queue, msgs, time.Now()) {
		s.deliver(m, e.QoS, e.Retain, e.SubIDs, b)
		n++
	}
	if err := srv.applyHeld(b); err != nil {
		return n, fmt.Errorf("broker: deliver queued: %w", err)
	}
	return n, nil
}

// importedEntries yields another server's queue entries in their order
// (by Seq), each with this server's copy of its message (one per message
// id, without a store id of this server yet), skipping entries whose
// message is missing or expired [MQTT-3.3.2-5].
func importedEntries(queue []*store.QueueEntry, msgs map[uint64]*store.Message, now time.Time) iter.Seq2[*store.QueueEntry, *Message] {
	return func(yield func(*store.QueueEntry, *Message) bool) {
		entries := slices.Clone(queue)
		slices.SortFunc(entries, func(x, y *store.QueueEntry) int { return cmp.Compare(x.Seq, y.Seq) })
		local := make(map[uint64]*Message) // imported message id → this server's copy
		for _, e := range entries {
			sm := msgs[e.MessageID]
			if sm == nil || sm.Publish == nil || sm.Expired(now) {
				continue
			}
			m := local[e.MessageID]
			if m == nil {
				m = messageFromStore(sm)
				m.id.Store(0) // an id of this server's store (storeID)
				local[e.MessageID] = m
			}
			if !yield(e, m) {
				return
			}
		}
	}
}
