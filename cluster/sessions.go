package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// Persistent sessions in the cluster.
//
// Every store write of the broker reaches Replicate (broker.ReplicaHook)
// before the acknowledgements that depend on it leave, and is copied into
// the replicated bucket mqttd_sessions, one key per record, all of a client
// under one token of the key (C, the client id encoded):
//
//	s.C._          the session (store.Session, with the will still owed)
//	u.C.H          a subscription (H: its group and filter encoded)
//	e.C.N.S        a queue entry of node N numbered S with the message it
//	               names (entryRecord), written once
//	q.C.N.S        that entry's later state (store.QueueEntry), written
//	               only when its state changes (QoS 2, a restart)
//	i.C.P          an inbound QoS 2 packet id awaiting PUBREL
//
// So a QoS 1 delivery costs two writes: its entry and, once acknowledged,
// the entry's deletion. (Before 2026-12, a node wrote the entry as q and
// its message as b.C.N.S, four writes; fetchSession still reads those, and
// a node deletes all three kinds for the entries of an earlier process.)
//
// A deleted record leaves a marker that expires (sessionMarkerTTL); a
// session's end purges every key of C at once. So a node that did not
// hold a session (or whose holder died) rebuilds it from the bucket.
//
// A CONNECT asks BeforeSession (broker.ConnectHook) first: it makes this
// node the owner of the client id (claim), and when another node held the
// session it moves it here, without losing what was routed to it meanwhile:
//
//  1. the owner disconnects its client (request "takeover") and keeps the
//     session, which goes on queueing;
//  2. this node installs the session's subscriptions from the bucket
//     (broker.ImportSession): from now on what matches is queued here too;
//  3. the former owner lets the session go (request "release",
//     broker.HandOver), its last writes in the bucket;
//  4. this node reads the rest of the session from the bucket (the queue
//     entries other nodes wrote), imports it in front of what it queued
//     itself since 2, and deletes the other nodes' entries.
//
// A message routed between 2 and 3 is queued on both nodes, so it may be
// delivered twice (at least once, never lost). When the owner does not
// answer (it died, or it is cut off) steps 1 to 3 are skipped: the bucket
// holds everything that was acknowledged to a publisher.

const bucketSessions = "mqttd_sessions"

// sessionMarkerTTL is how long the marker of a deleted record stays.
const sessionMarkerTTL = time.Minute

// replicaTimeout bounds the copy of one store write.
const replicaTimeout = 5 * time.Second

// clientToken is the key token of a client id: base64url, or a hash for
// ids too long for a subject token.
func clientToken(id string) string {
	if len(id) > 180 {
		h := sha256.Sum256([]byte(id))
		return "h" + hex.EncodeToString(h[:])
	}
	return "c" + base64.RawURLEncoding.EncodeToString([]byte(id))
}

func nodeToken(node string) string { return base64.RawURLEncoding.EncodeToString([]byte(node)) }

func subKey(id, group, filter string) string {
	return "u." + clientToken(id) + "." + base64.RawURLEncoding.EncodeToString([]byte(group+"\x00"+filter))
}

func (n *Node) entryKey(kind, id string, seq uint64) string {
	return kind + "." + clientToken(id) + "." + nodeToken(n.cfg.Node) + "." + strconv.FormatUint(seq, 10)
}

// entryRecord is the value of an e key: a queue entry and its message.
type entryRecord struct {
	Entry   *store.QueueEntry `json:"entry"`
	Message *store.Message    `json:"message"`
}

// entryStates tells which queue entries need more than their e key
// deleted: those whose state this process wrote as a q record, and those
// an earlier process wrote (its records may be in the earlier format).
// Entry numbers are the broker's, unique across its sessions and growing
// across restarts.
type entryStates struct {
	first atomic.Uint64 // number of the first entry this process wrote; 0: none yet
	count atomic.Int64  // entries in restated
	// restated holds entry number → client id, for the entries whose q
	// record this process wrote.
	restated sync.Map
}

// wrote notes that the entry seq was written with its message.
func (es *entryStates) wrote(seq uint64) {
	if es.first.Load() == 0 {
		es.first.CompareAndSwap(0, seq)
	}
}

// changed notes that the state of client id's entry seq was written as a
// q record.
func (es *entryStates) changed(id string, seq uint64) {
	if _, had := es.restated.LoadOrStore(seq, id); !had {
		es.count.Add(1)
	}
}

// deleted reports, for an entry being deleted, whether it may have a q
// record (q) and whether it may be in the earlier format (old).
func (es *entryStates) deleted(seq uint64) (q, old bool) {
	if es.count.Load() > 0 {
		if _, had := es.restated.LoadAndDelete(seq); had {
			es.count.Add(-1)
			q = true
		}
	}
	first := es.first.Load()
	old = first == 0 || seq < first
	return q || old, old
}

// ended forgets the entries of client id, whose session was deleted.
func (es *entryStates) ended(id string) {
	if es.count.Load() == 0 {
		return
	}
	es.restated.Range(func(k, v any) bool {
		if v.(string) == id {
			if _, had := es.restated.LoadAndDelete(k); had {
				es.count.Add(-1)
			}
		}
		return true
	})
}

// handOver lets client id's session leave this node's broker
// (broker.Server.HandOver); its entries' states are forgotten here, their
// records being the next owner's to delete.
func (n *Node) handOver(ctx context.Context, id string, keep bool) (bool, error) {
	had, err := n.srv.HandOver(ctx, id, keep)
	if err == nil {
		n.entries.ended(id)
	}
	return had, err
}

// Replicate copies a store batch into the bucket (broker.ReplicaHook):
// every record is published at once, and Replicate waits for JetStream's
// acknowledgements unless nothing waits for the batch (lazy).
func (n *Node) Replicate(b *store.Batch, lazy bool) error {
	return n.ReplicateOrdered(b, lazy, nil)
}

// ReplicateOrdered is Replicate, calling ordered (if not nil) once every
// record is published (broker.OrderedReplicaHook): one connection
// publishes them all, and JetStream keeps a stream in the order it
// receives, so a record published later (the deletion that a delivery's
// acknowledgement makes) comes after them.
func (n *Node) ReplicateOrdered(b *store.Batch, lazy bool, ordered func()) error {
	if !n.running() || n.sessions == nil {
		return nil
	}
	if !n.haveMajority() {
		return errCutOff
	}
	ctx, cancel := context.WithTimeout(context.Background(), replicaTimeout)
	defer cancel()
	var futs []jetstream.PubAckFuture
	var firstErr error
	put := func(key string, v any) {
		body, err := json.Marshal(v)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			return
		}
		f, err := n.js.PublishAsync(n.sessPrefix+key, body)
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			return
		}
		futs = append(futs, f)
	}
	del := func(key string) {
		f, err := n.js.PublishMsgAsync(n.deleteMarker(key), jetstream.WithMsgTTL(sessionMarkerTTL))
		if err != nil {
			firstErr = cmpErr(firstErr, err)
			return
		}
		futs = append(futs, f)
	}
	wait := func() error {
		firstErr = cmpErr(firstErr, awaitAcks(ctx, futs))
		futs = futs[:0]
		return firstErr
	}
	var bodies map[uint64]*store.Message
	ops := b.Ops()
	for i := range ops {
		op := &ops[i]
		switch op.Kind {
		case store.OpPutSession:
			put("s."+clientToken(op.Session.ClientID)+"._", op.Session)
		case store.OpDeleteSession:
			// Everything of the client, once what came before is in.
			if err := wait(); err != nil {
				return err
			}
			if err := n.purgeSession(ctx, op.ClientID); err != nil {
				return err
			}
			n.entries.ended(op.ClientID)
		case store.OpPutSubscription:
			put(subKey(op.Subscription.ClientID, op.Subscription.Group, op.Subscription.Sub.Filter), op.Subscription)
		case store.OpDeleteSubscription:
			del(subKey(op.ClientID, op.Group, op.Filter))
		case store.OpPutMessage:
			if bodies == nil {
				bodies = make(map[uint64]*store.Message)
			}
			bodies[op.Message.ID] = op.Message
		case store.OpPutQueueEntry:
			e := op.Entry
			if m := bodies[e.MessageID]; m != nil {
				// A new entry: its message with it.
				put(n.entryKey("e", e.ClientID, e.Seq), entryRecord{Entry: e, Message: m})
				n.entries.wrote(e.Seq)
			} else {
				// A change of state comes without one.
				n.entries.changed(e.ClientID, e.Seq)
				put(n.entryKey("q", e.ClientID, e.Seq), e)
			}
		case store.OpDeleteQueueEntry:
			del(n.entryKey("e", op.ClientID, op.Seq))
			if q, old := n.entries.deleted(op.Seq); q {
				del(n.entryKey("q", op.ClientID, op.Seq))
				if old {
					del(n.entryKey("b", op.ClientID, op.Seq))
				}
			}
		case store.OpPutInbound:
			put("i."+clientToken(op.ClientID)+"."+strconv.Itoa(int(op.PacketID)), op.PacketID)
		case store.OpDeleteInbound:
			del("i." + clientToken(op.ClientID) + "." + strconv.Itoa(int(op.PacketID)))
		}
	}
	if ordered != nil && firstErr == nil {
		ordered()
	}
	if lazy {
		// Nothing waits for it; JetStream's answers are not awaited.
		return firstErr
	}
	return wait()
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// deleteMarker is the record that deletes key: a purge of the key's
// earlier values (a roll-up of its subject), which itself expires.
func (n *Node) deleteMarker(key string) *nats.Msg {
	m := nats.NewMsg(n.sessPrefix + key)
	m.Header.Set("KV-Operation", "PURGE")
	m.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	return m
}

// purgeSession removes every record of client id from the bucket.
func (n *Node) purgeSession(ctx context.Context, id string) error {
	if err := n.sessStream.Purge(ctx, jetstream.WithPurgeSubject(n.sessPrefix+"*."+clientToken(id)+".>")); err != nil {
		return fmt.Errorf("cluster: delete the session of %q: %w", id, err)
	}
	return nil
}

// errCutOff refuses a persistent session's write while the node is cut
// off from the majority: JetStream could not take it, and what it would
// acknowledge could be lost with this node.
var errCutOff = errors.New("cluster: cut off from the majority of the nodes: persistent sessions' writes refused")

// haveMajority reports whether this node and the nodes it has a link to
// are a majority of the cluster (as watchLinks last saw the links).
func (n *Node) haveMajority() bool {
	size := n.size
	if (int(n.linksUp.Load())+1)*2 > size {
		return true
	}
	// The count watchLinks keeps lags by up to a second (right after
	// Start, or a link that just came back): look again, at most every
	// 100 ms.
	now := time.Now().UnixNano()
	if last := n.linksChecked.Load(); now-last < int64(100*time.Millisecond) || !n.linksChecked.CompareAndSwap(last, now) {
		return false
	}
	links := len(linkNames(n.ns))
	n.linksUp.Store(int32(links))
	return (links+1)*2 > size
}

// replicated is a session read from the bucket.
type replicated struct {
	state   *store.SessionState
	msgs    map[uint64]*store.Message
	foreign []string // keys of the queue entries and messages other nodes wrote
}

// fetchSession reads client id's session from the bucket: only the session
// record and its subscriptions with subsOnly, and then only the queue
// entries other nodes wrote (this node's own are in its broker). nil when
// the bucket has no session for id. The read is given up when its first
// record does not come within first, or the next within readIdle
// (guardRead).
func (n *Node) fetchSession(ctx context.Context, id string, subsOnly bool, first time.Duration) (*replicated, error) {
	tok := clientToken(id)
	keys := []string{"*." + tok + ".>"}
	if subsOnly {
		keys = []string{"s." + tok + "._", "u." + tok + ".>"}
	}
	ctx, progress, stop := guardRead(ctx, first)
	defer stop()
	w, err := n.sessions.WatchFiltered(ctx, keys, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("cluster: read the session of %q: %w", id, readErr(ctx, err))
	}
	defer w.Stop()
	self := nodeToken(n.cfg.Node)
	r := &replicated{state: &store.SessionState{}, msgs: make(map[uint64]*store.Message)}
	type slot struct {
		e *store.QueueEntry
		m *store.Message
	}
	slots := make(map[string]*slot) // by "N.S"
	bad := 0
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: read the session of %q: %w", id, readErr(ctx, nil))
		case v, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("cluster: read the session of %q: watcher stopped", id)
			}
			e = v
		}
		if e == nil {
			break // every current record read
		}
		progress()
		if e.Operation() != jetstream.KeyValuePut {
			continue
		}
		parts := strings.SplitN(e.Key(), ".", 4)
		var err error
		switch parts[0] {
		case "s":
			var s store.Session
			if err = json.Unmarshal(e.Value(), &s); err == nil {
				r.state.Session = &s
			}
		case "u":
			var s store.Subscription
			if err = json.Unmarshal(e.Value(), &s); err == nil {
				r.state.Subscriptions = append(r.state.Subscriptions, &s)
			}
		case "i":
			var pid uint16
			if err = json.Unmarshal(e.Value(), &pid); err == nil {
				r.state.Inbound = append(r.state.Inbound, pid)
			}
		case "e", "q", "b":
			if len(parts) != 4 || parts[2] == self {
				continue
			}
			r.foreign = append(r.foreign, e.Key())
			k := parts[2] + "." + parts[3]
			sl := slots[k]
			if sl == nil {
				sl = &slot{}
				slots[k] = sl
			}
			switch parts[0] {
			case "e":
				var rec entryRecord
				if err = json.Unmarshal(e.Value(), &rec); err == nil {
					sl.m = rec.Message
					if sl.e == nil {
						sl.e = rec.Entry // a q record is its later state
					}
				}
			case "q":
				var q store.QueueEntry
				if err = json.Unmarshal(e.Value(), &q); err == nil {
					sl.e = &q
				}
			default: // b, the earlier format's message
				var m store.Message
				if err = json.Unmarshal(e.Value(), &m); err == nil {
					sl.m = &m
				}
			}
		}
		if err != nil {
			bad++
		}
	}
	if bad > 0 {
		n.log.Warn("cluster: unreadable records of a session skipped", "client", id, "records", bad)
	}
	if r.state.Session == nil {
		return nil, nil
	}
	var next uint64
	for _, sl := range slots {
		if sl.e == nil || sl.m == nil {
			continue // half written by a node that died: never acknowledged
		}
		next++
		sl.e.MessageID, sl.m.ID = next, next
		r.msgs[next] = sl.m
		r.state.Queue = append(r.state.Queue, sl.e)
	}
	slices.Sort(r.state.Inbound)
	r.state.Session.ClientID = id
	return r, nil
}

// fetchRetrying is fetchSession, tried again while it makes no progress
// (JetStream electing a new leader for the bucket, or the meta group's,
// after a node's loss), until ctx ends; each try waits readFirstWait for
// its first record, so a read that waited on a leader now gone is sent
// again soon after the new one is elected, and a read that is only slow
// gets the time it needs.
func (n *Node) fetchRetrying(ctx context.Context, id string, subsOnly bool) (*replicated, error) {
	for try := 1; ; try++ {
		r, err := n.fetchSession(ctx, id, subsOnly, n.readFirstWait(try))
		if err == nil || ctx.Err() != nil {
			return r, err
		}
		n.log.Debug("cluster: read a session: trying again", "client", id, "err", err)
		select {
		case <-ctx.Done():
			return nil, err
		case <-n.done:
			return nil, err
		case <-time.After(readRetry):
		}
	}
}

// dropForeign deletes the records other nodes wrote for a session this
// node imported (it wrote them again as its own).
func (n *Node) dropForeign(ctx context.Context, keys []string) error {
	var futs []jetstream.PubAckFuture
	for _, k := range keys {
		f, err := n.js.PublishMsgAsync(n.deleteMarker(k), jetstream.WithMsgTTL(sessionMarkerTTL))
		if err != nil {
			return err
		}
		futs = append(futs, f)
	}
	return awaitAcks(ctx, futs)
}

// awaitAcks waits for JetStream's answer to each of futs and returns the
// first error (a refusal, or ctx ending).
func awaitAcks(ctx context.Context, futs []jetstream.PubAckFuture) error {
	for _, f := range futs {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Requests to the owner of a client id (subject ctl.<node>.takeover).
const (
	reqTakeover = "takeover" // disconnect the client, keep its session
	reqRelease  = "release"  // let the session go to the asking node
	reqEnd      = "end"      // end the session everywhere (a clean start)
	reqSync     = "sync"     // answer: what this node sent before has reached the asked one
)

type ownerRequest struct {
	ID string `json:"id"`
	Op string `json:"op"`
	// Rev, for takeover, release and end: the asked node's CONNECTs of ID
	// whose claim wrote the ownership entry at this revision or before are
	// superseded (connecting.go). For takeover it is the entry the asking
	// node read (naming the asked node), for the others the asking node's
	// own claim. 0 supersedes none.
	Rev uint64 `json:"rev,omitempty"`
}

// ask sends request op about client id to node owner and reports whether
// it answered; rev is ownerRequest.Rev.
func (n *Node) ask(owner, id, op string, rev uint64) bool {
	if op == reqTakeover {
		n.takeoversOut.Add(1)
	}
	err := n.askCtx(context.Background(), owner, ownerRequest{ID: id, Op: op, Rev: rev})
	var refused refusal
	if err != nil && !errors.As(err, &refused) {
		n.log.Debug("cluster: owner did not answer", "client", id, "owner", owner, "request", op, "err", err)
		return false
	}
	if err != nil {
		n.log.Warn("cluster: owner could not do what was asked", "client", id, "owner", owner, "request", op,
			"err", string(refused))
	}
	return true
}

// cleanClaimWait bounds the claim a clean start waits for before CONNACK.
const cleanClaimWait = 2 * time.Second

// askTimeout bounds one request to another node; it covers the owner's
// wait for its client's connection to end (takeoverWait).
const askTimeout = 5 * time.Second

// takeoverWait bounds the owner's wait for its client's connection to end.
const takeoverWait = 3 * time.Second

// supersedeWait bounds the owner's wait for its CONNECTs of the client id
// that a takeover, release or end supersedes (connecting.go); with
// takeoverWait it stays under askTimeout.
const supersedeWait = 1500 * time.Millisecond

// onTakeoverRequest does what another node asks of a client id this node
// owns: disconnect its client (v5: DISCONNECT 0x8E [MQTT-3.1.4-3]), let the
// session go, or end it.
func (n *Node) onTakeoverRequest(msg *nats.Msg) {
	var r ownerRequest
	if err := json.Unmarshal(msg.Data, &r); err != nil || r.ID == "" {
		r = ownerRequest{ID: string(msg.Data), Op: reqTakeover}
	}
	switch r.Op {
	case reqTakeover, reqRelease, reqEnd:
		// Each on its own goroutine: it may wait for a CONNECT here that
		// is itself asking another node, whose requests to this node must
		// not wait behind it.
		go n.onOwnerRequest(msg, r)
		return
	}
	n.onOwnerRequest(msg, r)
}

func (n *Node) onOwnerRequest(msg *nats.Msg, r ownerRequest) {
	switch r.Op {
	case reqHeldNode:
		n.onHeldRequest(msg, r)
		return
	case reqTake: // leave.go
		n.onTake(msg, r)
		return
	case reqLeft:
		n.nodeLeft(r.ID)
		if err := msg.Respond([]byte("ok")); err != nil {
			n.log.Debug("cluster: left answer", "peer", r.ID, "err", err)
		}
		return
	}
	if v, ok := n.adopting.Load(r.ID); ok && r.Op != reqSync {
		// Adopting it (adopt): an adoption that has not imported the
		// session yet stops (the asking node reads it from the bucket); one
		// importing it is waited for, then the session goes as from any
		// owner.
		a := v.(*adoption)
		a.stop()
		wait := time.NewTimer(takeoverWait)
		select {
		case <-a.done:
		case <-wait.C:
			n.log.Warn("cluster: a request about a session being adopted is answered before the adoption "+
				"ended", "client", r.ID, "request", r.Op)
		}
		wait.Stop()
	}
	if r.Rev != 0 && (r.Op == reqTakeover || r.Op == reqRelease || r.Op == reqEnd) {
		sctx, cancel := context.WithTimeout(context.Background(), supersedeWait)
		if !n.conns.supersede(sctx, r.ID, r.Rev) {
			n.log.Warn("cluster: a CONNECT here that another node's claim superseded did not end in time: "+
				"it closes its client itself", "client", r.ID, "request", r.Op)
		}
		cancel()
	}
	ctx, cancel := context.WithTimeout(context.Background(), takeoverWait)
	defer cancel()
	var had bool
	var err error
	switch r.Op {
	case reqSync:
	case reqHeldEnd:
		n.onHeldRequest(msg, r)
		return
	case reqRelease:
		n.moving.Delete(r.ID)
		n.held.Delete(r.ID)
		// What the other nodes sent before they knew the asking node's
		// interest reaches the session before it goes.
		n.syncInterest()
		n.drainInbound(ctx)
		had, err = n.handOver(ctx, r.ID, true)
	case reqEnd:
		n.moving.Delete(r.ID)
		n.held.Delete(r.ID)
		had, err = n.handOver(ctx, r.ID, false)
	default:
		had, err = n.srv.TakeOver(ctx, r.ID)
	}
	if had && r.Op == reqTakeover {
		n.takeoversIn.Add(1)
	}
	if had {
		n.log.Info("cluster: client taken over by another node", "client", r.ID, "request", r.Op, "err", err)
	}
	answer := "ok"
	if err != nil {
		answer = err.Error()
	}
	if err := msg.Respond([]byte(answer)); err != nil {
		n.log.Debug("cluster: takeover answer", "client", r.ID, "err", err)
	}
}

// BeforeSession makes this node the owner of the connecting client's id
// and brings its session here from the node that held it
// (broker.ConnectHook): see the top of this file. While the node is cut
// off from the majority the claim fails: the client is served with what
// this node holds, and the claim is tried again until the link is back.
func (n *Node) BeforeSession(ctx context.Context, c *broker.ClientInfo, cleanStart bool) error {
	id := c.ClientID
	if id == "" || !n.running() {
		return nil
	}
	k := n.conns.begin(c) // ended by ConnectEnded
	err := n.beforeSession(ctx, id, cleanStart, k)
	if err == nil && n.conns.isSuperseded(k) {
		// A node that claimed the id after this CONNECT asked for it
		// meanwhile: its client keeps the id [MQTT-3.1.4-3].
		err = fmt.Errorf("cluster: client id %q taken over by another node while connecting: %w", id,
			packet.ServerBusy)
	}
	if err != nil {
		n.log.Warn("cluster: CONNECT refused: the client's session could not be brought here; the client may "+
			"try again", "client", id, "err", err)
	}
	return err
}

// beforeSession is BeforeSession for the CONNECT k (nil when a leaving
// node hands a session over with no client).
func (n *Node) beforeSession(ctx context.Context, id string, cleanStart bool, k *connecting) error {
	if !n.haveMajority() {
		n.log.Warn("cluster: cut off from the majority: client served from this node's own state; its "+
			"ownership is claimed when the link is back", "client", id)
		n.queueOwn(ownOp{id: id, claim: true})
		return nil
	}
	// A clean start has no session to bring: its claim gets a short
	// while, then goes on in the background (the old connection elsewhere
	// is closed a little later). A resumed session's claim waits while
	// JetStream elects a leader (a node just died, a link just healed): the
	// session may be in the bucket, and the client is better refused (it
	// tries again) than started with nothing.
	cctx := ctx
	if cleanStart {
		var cancel context.CancelFunc
		cctx, cancel = context.WithTimeout(ctx, cleanClaimWait)
		defer cancel()
	}
	rev, former, unanswered, err := n.claimCtx(cctx, id, k)
	for err != nil && cctx.Err() == nil && n.haveMajority() {
		select {
		case <-cctx.Done():
		case <-n.done:
			return broker.ErrServerClosed
		case <-time.After(200 * time.Millisecond):
		}
		rev, former, unanswered, err = n.claimCtx(cctx, id, k)
	}
	if err != nil {
		if !cleanStart && n.haveMajority() {
			n.log.Warn("cluster: client id ownership not recorded: CONNECT refused, the client may try "+
				"again", "client", id, "err", err)
			return fmt.Errorf("cluster: claim of %q: %w", id, err)
		}
		n.log.Warn("cluster: client id ownership not recorded: the client is served from this node's "+
			"own state, and the claim is tried again", "client", id, "err", err)
		n.queueOwn(ownOp{id: id, claim: true})
		return nil
	}
	n.queueOwn(ownOp{id: id, rev: rev, owned: true, unanswered: unanswered})
	if err := n.step(ctx, "connect.claimed", id); err != nil {
		return err
	}
	other := former != "" && former != n.cfg.Node
	if !other && former != "" {
		// This node owns the id already. A move of its session here that
		// an earlier CONNECT began and did not finish (it failed after the
		// claim) goes on from the same former owner: the session this node
		// holds may be the subscriptions alone, and the former owner may
		// still hold the queue.
		if v, ok := n.moving.Load(id); ok {
			former, other, unanswered = v.(string), true, ""
		}
	}
	if cleanStart {
		// [MQTT-3.1.2-4] the session there ends; here the broker starts
		// a new one.
		n.moving.Delete(id)
		if other && unanswered == "" {
			n.ask(former, id, reqEnd, rev)
			return nil
		}
		if other {
			// Nodes holding it for the former owner let it go first:
			// nothing they queue may outlive the purge.
			n.askHeldEnd(id)
			n.held.Delete(id)
			return n.purgeSession(ctx, id)
		}
		return nil
	}
	if !other {
		if v, ok := n.adopting.Load(id); ok {
			// This node is adopting the session: it is here once that
			// is done.
			select {
			case <-v.(*adoption).done:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if _, held := n.held.Load(id); held {
			// An earlier CONNECT claimed it from a node that did not
			// answer and stopped before the import: it goes on.
			if err := n.releaseHeld(ctx, id); err != nil {
				return err
			}
		} else if _, ok := n.srv.ClientDetail(id); ok || former == "" {
			return nil // this node's own session, or a new client id
		}
		// This node owns the id but has no session (an earlier CONNECT
		// claimed it and could not import it), or holds it for a node
		// that did not answer. The bucket has it.
	}
	if other && unanswered != "" {
		// The former owner did not answer: other nodes may hold the
		// session for it (standby.go), and queued for it since.
		if err := n.releaseHeld(ctx, id); err != nil {
			return err
		}
	}
	if other && unanswered == "" {
		// Steps 2 and 3: the subscriptions first, then the release. Until
		// step 4 is done the move is unfinished (moving).
		n.moving.Store(id, former)
		r, err := n.fetchRetrying(ctx, id, true)
		if err != nil {
			return err
		}
		if r != nil {
			if err := n.srv.ImportSession(r.state, nil); err != nil && !errors.Is(err, broker.ErrSessionBusy) {
				return err
			}
			n.syncInterest()
		}
		if !n.ask(former, id, reqRelease, rev) {
			n.log.Warn("cluster: former owner did not let the session go: what it queued since is read "+
				"from the cluster", "client", id, "owner", former)
			if err := n.releaseHeld(ctx, id); err != nil {
				return err
			}
		}
		if err := n.step(ctx, "move.released", id); err != nil {
			return err
		}
	}
	r, err := n.fetchRetrying(ctx, id, false)
	if err != nil {
		return err
	}
	if r == nil {
		n.moving.Delete(id)
		n.held.Delete(id)
		return nil
	}
	if err := n.srv.ImportSession(r.state, r.msgs); err != nil {
		if errors.Is(err, broker.ErrSessionBusy) {
			// A connection of this node resumed it meanwhile; the move
			// stays unfinished for its next CONNECT.
			return nil
		}
		return err
	}
	n.moving.Delete(id)
	n.held.Delete(id)
	n.sessionsIn.Add(1)
	if err := n.dropForeign(ctx, r.foreign); err != nil {
		n.log.Warn("cluster: records of the former owner not deleted: a later takeover may deliver "+
			"them again", "client", id, "err", err)
	}
	return nil
}

// syncInterest returns once every node this node has a link to knows the
// interest it holds now: a round trip to each, sent after the
// subscriptions on the same link (a link delivers in order). Then the
// former owner of a session may let it go: whatever any node publishes for
// it from then on comes here.
func (n *Node) syncInterest() {
	if err := n.nc.Flush(); err != nil {
		n.log.Debug("cluster: flush", "err", err)
	}
	body, _ := json.Marshal(ownerRequest{ID: "-", Op: reqSync})
	var wg sync.WaitGroup
	for peer := range linkNames(n.ns) {
		wg.Go(func() {
			if _, err := n.nc.Request(subjControl+"."+encodeLevel(peer)+".takeover", body, askTimeout); err != nil {
				n.log.Debug("cluster: sync with a node", "peer", peer, "err", err)
			}
		})
	}
	wg.Wait()
}

// drainInbound returns once every message from the cluster that arrived
// before the call is published to the broker (or dropped), or when ctx
// ends.
func (n *Node) drainInbound(ctx context.Context) {
	target := n.arrived.Load() + int64(len(n.inbound))
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for n.settled.Load() < target {
		select {
		case <-ctx.Done():
			return
		case <-n.done:
			return
		case <-tick.C:
		}
	}
}

// adoptSessions adopts the persistent sessions owned by node dead, whose
// link has been lost for Config.AdoptAfter while this node is on the
// majority side (watchLinks): their clients' messages are queued again, and
// the wills they owed are published (broker.ImportSession). Each session
// goes to one surviving node, chosen by a hash of its client id over the
// nodes this one has a link to, and is claimed with compare-and-set on the
// ownership entry still naming dead: a client that connects meanwhile (on
// any node) wins, or takes the session from its adopter as from any owner
// (adopt). The wills of dead's clean sessions are published first, by the
// same choice of node (adoptWills).
func (n *Node) adoptSessions(dead string) {
	defer n.wg.Done()
	ctx, cancel := n.untilClosed()
	defer cancel()
	live := n.liveNodes()
	// The wills its clean sessions owed first (wills.go).
	wctx, wcancel := context.WithTimeout(ctx, 30*time.Second)
	wills, err := n.adoptWills(wctx, dead, live)
	wcancel()
	if err != nil {
		n.log.Warn("cluster: wills of the clean sessions of a lost node not published", "peer", dead, "err", err)
	}
	ids, err := n.ownedBy(ctx, map[string]bool{dead: true}, live)
	if err != nil {
		n.log.Warn("cluster: sessions of a lost node not adopted: owners not listed; tried again soon",
			"peer", dead, "err", err)
		n.adoptRetry.Store(dead, time.Now())
		return
	}
	adopted, failed := 0, 0
	for id, e := range ids {
		ok, err := n.adopt(ctx, id, e.rev, dead)
		switch {
		case err != nil:
			failed++
			n.log.Warn("cluster: session of a lost node not adopted", "client", id, "peer", dead, "err", err)
		case ok:
			adopted++
		}
	}
	n.log.Warn("cluster: sessions of a node lost for long adopted", "peer", dead, "sessions", adopted,
		"failed", failed, "wills", wills, "after", n.cfg.AdoptAfter.String())
	if failed > 0 {
		n.adoptRetry.Store(dead, time.Now()) // those failed are tried again soon (watchLinks)
	}
}

// adoptRetryAfter is how long after an adoption that failed in part (a
// session, or the listing) watchLinks tries it again.
const adoptRetryAfter = 5 * time.Second

// adoptTries bounds the listings of the owners bucket of one adoption.
const adoptTries = 30

// adoption is the adoption of one session under way (adopt), found by a
// request about its client id from another node (onTakeoverRequest).
type adoption struct {
	mu        sync.Mutex
	stopped   bool // a request came first: the session is not imported here
	importing bool // past the point where a request stops it
	cancel    context.CancelFunc
	done      chan struct{} // closed when the adoption ended
}

// stop stops the adoption unless it imports the session already, and
// reports whether it stopped it.
func (a *adoption) stop() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.importing {
		return false
	}
	a.stopped = true
	a.cancel()
	return true
}

// begin marks the import started, unless the adoption was stopped.
func (a *adoption) begin() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.stopped {
		return false
	}
	a.importing = true
	return true
}

// adopt claims client id from node dead (its ownership entry at revision
// rev) and imports its session; it reports whether there was one.
//
// A client of the id may connect meanwhile on another node, which then
// asks this one (the owner once the claim is written) to let the id go:
// before the import the adoption stops there and the other node reads the
// session from the bucket, where the lost node's records stay; during the
// import the request waits for it, and the session moves as from any
// owner. An import that ends after the request was answered anyway (it ran
// for longer than takeoverWait) finds the id owned by the other node: the
// session is let go here, and the records this node wrote for it are
// deleted (the other node read the lost node's, which stay).
func (n *Node) adopt(ctx context.Context, id string, rev uint64, dead string) (bool, error) {
	actx, acancel := context.WithCancel(ctx)
	a := &adoption{cancel: acancel, done: make(chan struct{})}
	n.adopting.Store(id, a)
	defer func() {
		n.adopting.Delete(id)
		acancel()
		close(a.done)
	}()
	wctx, cancel := context.WithTimeout(actx, 5*time.Second)
	newRev, err := n.owners.Update(wctx, ownerKey(id), []byte(n.cfg.Node), rev)
	cancel()
	if err != nil {
		if casConflict(err) || a.isStopped() {
			return false, nil // a client connected meanwhile, somewhere: its node has it
		}
		return false, err
	}
	n.queueOwn(ownOp{id: id, rev: newRev, owned: true, unanswered: dead})
	fctx, cancel := context.WithTimeout(actx, 15*time.Second)
	defer cancel()
	// The nodes holding it (standby.go) let it go: what they queued is
	// in the bucket, and from now on it is queued here.
	if err := n.releaseHeld(fctx, id); err != nil {
		if a.isStopped() {
			return false, nil
		}
		return false, err
	}
	r, err := n.fetchRetrying(fctx, id, false)
	if err == nil {
		err = n.step(fctx, "adopt.fetched", id)
	}
	if !a.begin() {
		n.log.Info("cluster: adoption of a session stopped: its client connected to another node", "client", id)
		return false, nil
	}
	if err != nil || r == nil {
		return false, err
	}
	// The import's writes are bounded by their own timeouts, not by the
	// adoption's: a request waits for them.
	if err := n.srv.ImportSession(r.state, r.msgs); err != nil {
		if errors.Is(err, broker.ErrSessionBusy) {
			return false, nil
		}
		return false, err
	}
	n.held.Delete(id)
	n.sessionsIn.Add(1)
	n.adoptedIn.Add(1)
	dctx, dcancel := context.WithTimeout(ctx, 15*time.Second)
	defer dcancel()
	if err := n.step(dctx, "adopt.imported", id); err != nil {
		return false, err
	}
	if n.ownedElsewhere(dctx, id, newRev) {
		n.letAdoptedGo(dctx, id)
		return false, nil
	}
	if err := n.dropForeign(dctx, r.foreign); err != nil {
		n.log.Warn("cluster: records of the lost node not deleted: a later takeover may deliver them again",
			"client", id, "err", err)
	}
	return true, nil
}

// ownedElsewhere reports whether a read of the ownership entry of id shows
// another node's write after this node's at revision rev (a read may lag:
// one that does not show it proves nothing).
func (n *Node) ownedElsewhere(ctx context.Context, id string, rev uint64) bool {
	e, err := n.owners.Get(ctx, ownerKey(id))
	return err == nil && e.Revision() > rev && string(e.Value()) != n.cfg.Node
}

func (a *adoption) isStopped() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.stopped
}

// letAdoptedGo lets go of a session this node imported by adoption while
// its client connected to another node: the session leaves this broker
// (its store only), and the queue entries this node wrote for it are
// deleted from the bucket; the lost node's, which the other node reads,
// were left.
func (n *Node) letAdoptedGo(ctx context.Context, id string) {
	n.log.Warn("cluster: adopted session let go: its client connected to another node during the adoption",
		"client", id)
	if _, err := n.handOver(ctx, id, true); err != nil {
		// A client connected here meanwhile keeps it (ErrSessionBusy),
		// with its records.
		n.log.Warn("cluster: adopted session not let go", "client", id, "err", err)
		return
	}
	pfx := n.sessPrefix
	for _, kind := range []string{"e", "q", "b"} {
		subj := pfx + kind + "." + clientToken(id) + "." + nodeToken(n.cfg.Node) + ".*"
		if err := n.sessStream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			n.log.Warn("cluster: records of an adopted session let go not deleted: a later takeover may "+
				"deliver them again", "client", id, "err", err)
		}
	}
}

// testStep, set by tests only, is called at named steps of a session's
// move or adoption (step); an error it returns fails the step.
var testStep atomic.Pointer[func(ctx context.Context, node, step, id string) error]

func (n *Node) step(ctx context.Context, name, id string) error {
	if f := testStep.Load(); f != nil {
		return (*f)(ctx, n.cfg.Node, name, id)
	}
	return nil
}

// reconcileSessions lets go, at Start, the sessions the broker restored
// from its store that another node owns now (it took the client over while
// this node was down or cut off): their state is in the bucket.
func (n *Node) reconcileSessions(ctx context.Context) {
	dropped := 0
	for cs := range n.sessionsHere() {
		e, err := n.owners.Get(ctx, ownerKey(cs.ID))
		if err != nil || string(e.Value()) == n.cfg.Node {
			continue
		}
		if had, _ := n.handOver(ctx, cs.ID, true); had {
			dropped++
		}
	}
	if dropped > 0 {
		n.log.Info("cluster: sessions another node took over while this one was away let go", "sessions", dropped)
	}
}
