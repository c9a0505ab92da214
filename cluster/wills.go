package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
)

// Wills of clean sessions in the cluster.
//
// A persistent session's will travels in its session record (sessions.go).
// A clean session (one that ends with its connection) is not stored, so
// its will is copied on its own: while a client with a will is connected
// with a clean session, the bucket mqttd_sessions holds the record
//
//	w.N.C          the will of client C connected to node N (willRecord)
//
// written when the session starts and deleted when it ends (the node
// published the will, or the client's DISCONNECT discarded it). Both
// writes leave the CONNECT and the disconnect without waiting for
// JetStream (a writer goroutine copies the latest state of each record),
// so a node that dies within the few milliseconds before a write lands
// loses that write: a will whose record had not landed is not published,
// and a record whose deletion had not landed is published although its
// client disconnected normally (or its will was published already).
//
// When the survivors adopt a lost node (adoptSessions) they publish its
// records' wills, each by the survivor its client id hashes to, and
// delete the records; the deletion is a compare-and-set on the record's
// revision, made before the will is published, so that a will goes at most
// once even when two survivors see different sets of nodes. A clean
// session ends with its connection, so its will is due at once, whatever
// its Will Delay Interval (the will goes when the delay passes or the
// session ends, whichever comes first). A node that starts deletes the
// records left from its previous run (startWills).

// willRecord is the will of a client connected with a clean session, with
// the identity its ACL decision needs.
type willRecord struct {
	ClientID    string       `json:"id"`
	Username    string       `json:"user,omitempty"`
	HasUsername bool         `json:"has_user,omitempty"`
	Listener    string       `json:"listener,omitempty"`
	Will        *packet.Will `json:"will"`
}

// willState is the node's copy of its clean sessions' wills.
type willState struct {
	mu    sync.Mutex
	held  map[string]bool          // client ids whose record this node wrote (or is writing)
	dirty map[string]*willRecord   // key → latest state not yet written (nil: delete)
	wake  chan struct{}            // one token: dirty is not empty
	retry map[string]time.Duration // key → pause before its next try, after a failed write
}

// willWriteTimeout bounds one round of writes of will records.
const willWriteTimeout = 5 * time.Second

func willKey(node, id string) string { return "w." + nodeToken(node) + "." + clientToken(id) }

// startWills starts the writer of the will records (Start), after it
// deleted the records of this node's previous run: their clients are gone,
// and a will still in the bucket would be published when this node is lost
// some day. (The wills they owed are not published: a node that stays away
// for Config.AdoptAfter has them published by the survivors.)
func (n *Node) startWills() {
	ctx, cancel := context.WithTimeout(context.Background(), willWriteTimeout)
	err := n.sessStream.Purge(ctx, jetstream.WithPurgeSubject(n.sessPrefix+"w."+nodeToken(n.cfg.Node)+".*"))
	cancel()
	if err != nil {
		n.log.Warn("cluster: will records of this node's previous run not deleted: they are published if this "+
			"node is lost", "err", err)
	}
	n.wills.held = make(map[string]bool)
	n.wills.dirty = make(map[string]*willRecord)
	n.wills.retry = make(map[string]time.Duration)
	n.wills.wake = make(chan struct{}, 1)
	n.wg.Add(1)
	go n.writeWills()
}

// noteWill copies or deletes the will record of the client of a session
// event (OnSession). It does not wait for JetStream.
func (n *Node) noteWill(c *broker.ClientInfo, e broker.SessionEvent) {
	if c == nil || c.ClientID == "" || !n.running() || n.wills.wake == nil {
		return
	}
	id := c.ClientID
	var rec *willRecord
	if e != broker.SessionEnded {
		w, persistent, ok := n.srv.ConnectionWill(c)
		if !ok {
			return // gone already: its end comes as SessionEnded
		}
		if w != nil && !persistent {
			rec = &willRecord{ClientID: id, Username: c.Username, HasUsername: c.HasUsername, Listener: c.Listener,
				Will: w}
		}
	}
	ws := &n.wills
	ws.mu.Lock()
	if rec == nil && !ws.held[id] {
		ws.mu.Unlock()
		return // nothing of it in the bucket
	}
	if rec != nil {
		ws.held[id] = true
	} else {
		delete(ws.held, id)
	}
	ws.dirty[willKey(n.cfg.Node, id)] = rec
	ws.mu.Unlock()
	select {
	case ws.wake <- struct{}{}:
	default:
	}
}

// writeWills writes the latest state of each will record that changed,
// one round at a time: a round's writes are acknowledged before the next
// round starts, so two states of one record land in order. A write that
// fails is tried again (a second, then longer pauses up to 30 s) unless a
// newer state of its record came meanwhile.
func (n *Node) writeWills() {
	defer n.wg.Done()
	ws := &n.wills
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-ws.wake:
		case <-timer.C:
		}
		ws.mu.Lock()
		batch := ws.dirty
		ws.dirty = make(map[string]*willRecord)
		ws.mu.Unlock()
		if len(batch) == 0 {
			continue
		}
		failed := n.writeWillRound(batch)
		ws.mu.Lock()
		pause := time.Duration(0)
		for key := range batch {
			if !failed[key] {
				delete(ws.retry, key)
				continue
			}
			if _, newer := ws.dirty[key]; !newer {
				ws.dirty[key] = batch[key]
			}
			p := min(max(2*ws.retry[key], time.Second), 30*time.Second)
			ws.retry[key] = p
			if pause == 0 || p < pause {
				pause = p
			}
		}
		ws.mu.Unlock()
		if pause > 0 {
			n.log.Debug("cluster: will records not written: trying again", "records", len(failed), "after", pause)
			timer.Reset(pause)
		}
	}
}

// writeWillRound publishes batch (key → record, nil: delete) and returns
// the keys whose writes failed.
func (n *Node) writeWillRound(batch map[string]*willRecord) map[string]bool {
	failed := make(map[string]bool)
	if !n.haveMajority() {
		for key := range batch {
			failed[key] = true
		}
		return failed
	}
	ctx, cancel := context.WithTimeout(context.Background(), willWriteTimeout)
	defer cancel()
	type pending struct {
		key string
		fut jetstream.PubAckFuture
	}
	var futs []pending
	for key, rec := range batch {
		var f jetstream.PubAckFuture
		var err error
		if rec == nil {
			f, err = n.js.PublishMsgAsync(n.deleteMarker(key), jetstream.WithMsgTTL(sessionMarkerTTL))
		} else {
			var body []byte
			if body, err = json.Marshal(rec); err == nil {
				f, err = n.js.PublishAsync(n.sessPrefix+key, body)
			}
		}
		if err != nil {
			failed[key] = true
			continue
		}
		futs = append(futs, pending{key, f})
	}
	for _, p := range futs {
		select {
		case <-p.fut.Ok():
		case <-p.fut.Err():
			failed[p.key] = true
		case <-ctx.Done():
			failed[p.key] = true
		}
	}
	return failed
}

// adoptWills publishes the wills owed by the clean sessions of node dead
// (its will records), each by the node of live its client id hashes to
// (adoptSessions), and deletes their records. It returns how many it
// published.
func (n *Node) adoptWills(ctx context.Context, dead string, live []string) (int, error) {
	prefix := "w." + nodeToken(dead) + "."
	var recs []jetstream.KeyValueEntry
	for {
		tctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		var err error
		recs, err = n.readWills(tctx, prefix+"*")
		cancel()
		if err == nil {
			break
		}
		n.log.Debug("cluster: read the wills of a lost node: trying again", "peer", dead, "err", err)
		select {
		case <-ctx.Done():
			return 0, err
		case <-time.After(200 * time.Millisecond):
		}
	}
	published := 0
	for _, e := range recs {
		var rec willRecord
		if err := json.Unmarshal(e.Value(), &rec); err != nil || rec.Will == nil || rec.ClientID == "" ||
			!strings.HasSuffix(e.Key(), "."+clientToken(rec.ClientID)) {
			n.log.Warn("cluster: unreadable will record skipped", "peer", dead, "key", e.Key())
			continue
		}
		if nodeFor(rec.ClientID, live) != n.cfg.Node {
			continue
		}
		// The record goes first, if it is still the one read: then no
		// other node publishes the will again.
		dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := n.js.PublishMsg(dctx, n.deleteMarker(e.Key()), jetstream.WithMsgTTL(sessionMarkerTTL),
			jetstream.WithExpectLastSequencePerSubject(e.Revision()))
		cancel()
		if err != nil {
			n.log.Debug("cluster: will record of a lost node not taken", "client", rec.ClientID, "peer", dead, "err", err)
			continue
		}
		info := &broker.ClientInfo{ClientID: rec.ClientID, Username: rec.Username, HasUsername: rec.HasUsername,
			Listener: rec.Listener}
		if err := n.srv.PublishWill(rec.Will, info); err != nil {
			n.log.Warn("cluster: will of a client of a lost node not published", "client", rec.ClientID, "peer", dead,
				"topic", rec.Will.Topic, "err", err)
			continue
		}
		published++
	}
	return published, nil
}

// readWills reads the will records whose keys match filter.
func (n *Node) readWills(ctx context.Context, filter string) ([]jetstream.KeyValueEntry, error) {
	w, err := n.sessions.Watch(ctx, filter, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("cluster: read will records: %w", err)
	}
	defer w.Stop()
	var out []jetstream.KeyValueEntry
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: read will records: %w", ctx.Err())
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("cluster: read will records: watcher stopped")
			}
			if e == nil {
				return out, nil
			}
			if e.Operation() == jetstream.KeyValuePut {
				out = append(out, e)
			}
		}
	}
}
