package cluster

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
)

// ---- retained messages ----
//
// A retained message is cluster-wide: set on any node, delivered on
// SUBSCRIBE on every node, cleared anywhere. Two paths carry it:
//
//   - The live copy, for latency: the node where a client published it
//     applies it at once (its router) and forwards it on subjRetained to
//     every other node, which routes it to its subscribers and sets it
//     (publishLoop), in arrival order.
//   - The key-value bucket mqttd_retained (key retainedKey(topic), value
//     the encoded message), written by the node where it was published
//     (writeRetained, tried again until it succeeds). The bucket is the one
//     order of the cluster: every node reads it at start (loadRetained) and
//     then watches it (watchRetained), applying each update, a put or a
//     delete, to its broker's retained state in bucket order with
//     broker.Server.SetRetained (no delivery: the subscribers had the live
//     copy). An update equal to what the broker holds is skipped.
//
// So two nodes setting one topic at once both end with the value the
// bucket kept last (each applied its own, then the other's live copy, in
// opposite orders; the watch puts them in the bucket's), and a node cut
// off from the others learns, once the link is back, what changed meanwhile
// (the watch resumes where it was).
//
// A live copy can also come late: after the watch delivered its own
// bucket update and a newer one (the live copies wait in the inbound
// queue, and take another path than the bucket's). Applied then, it would
// stay. So a live copy applied is recorded as unconfirmed until the watch
// delivers an update with its content; one still unconfirmed after
// retainedConfirmWait (it came late, or its write never reached the
// bucket: the node that published it died first) is replaced by the
// bucket's value (the last update the watch delivered for the topic, or a
// Get), checked by watchRetained every retainedCheckEvery.
//
// Topics are the routed ones (after a listener's mount point), as the
// inline subscription that forwards them sees them.

func retainedKey(t string) string { return "t." + base64.RawURLEncoding.EncodeToString([]byte(t)) }

// retainedTopic is the inverse of retainedKey.
func retainedTopic(key string) (string, error) {
	enc, ok := strings.CutPrefix(key, "t.")
	if !ok {
		return "", fmt.Errorf("cluster: retained key %q: no t. prefix", key)
	}
	b, err := base64.RawURLEncoding.DecodeString(enc)
	if err != nil {
		return "", fmt.Errorf("cluster: retained key %q: %w", key, err)
	}
	return string(b), nil
}

// Timing of the retained messages' reconciliation.
const (
	retainedRetryMin       = 100 * time.Millisecond // pauses between tries of a write to the bucket
	retainedRetryMax       = 5 * time.Second
	retainedConfirmWait    = 3 * time.Second        // a live copy not seen in the bucket by then is checked
	retainedCheckEvery     = 1 * time.Second        // how often watchRetained checks them
	retainedRecent         = 30 * time.Second       // how long the last bucket update per topic is remembered
	retainedRecentMax      = 1 << 16                // topics remembered at most (past it, a check uses Get)
	retainedGetTimeout     = 2 * time.Second        // of one Get by a check
	retainedCheckMax       = 1024                   // live copies checked at most by one check
	retainedRewatchMin     = 500 * time.Millisecond // pauses before a new watch after the watch stopped
	retainedRewatchTimeout = 2 * time.Minute        // bounds a new watch's start and its reading of the bucket
)

// retainedState is what the node knows of the retained messages beyond its
// broker's state: the live copies not yet confirmed by the bucket, and the
// bucket's last update per topic lately.
type retainedState struct {
	mu     sync.Mutex
	live   map[string]liveCopy   // topic → a live copy applied, not yet seen in the bucket
	recent map[string]bucketSeen // topic → the last update the watch delivered, for retainedRecent

	applied   atomic.Int64 // bucket updates that changed the broker's retained state (not at start)
	corrected atomic.Int64 // late or unwritten live copies replaced by the bucket's value
	unwritten atomic.Int64 // operations of this node queued for the bucket, not yet written nor replaced
}

type liveCopy struct {
	sum uint64 // retainedSum of the copy
	at  time.Time
}

type bucketSeen struct {
	sum uint64 // retainedSum of the update (0: a delete)
	rev uint64 // its revision in the bucket
	at  time.Time
}

// retainedSum is a digest of what a SUBSCRIBE gets of a retained message:
// QoS, payload and the application properties (of the message expiry
// interval only whether there is one: the bucket holds what was left of it
// when it was forwarded). 0 stands for no message (a clear).
func retainedSum(m *broker.Message) uint64 {
	if m == nil || len(m.Payload) == 0 {
		return 0
	}
	h := fnv.New64a()
	var n [8]byte
	field := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	h.Write([]byte{m.QoS})
	field(m.Payload)
	var flags [3]byte
	if p := m.Props; p != nil {
		if p.PayloadFormat != nil {
			flags[0], flags[1] = 1, *p.PayloadFormat
		}
		if p.MessageExpiry != nil {
			flags[2] = 1
		}
		h.Write(flags[:])
		field([]byte(p.ContentType))
		field([]byte(p.ResponseTopic))
		field(p.CorrelationData)
		binary.BigEndian.PutUint64(n[:], uint64(len(p.User)))
		h.Write(n[:])
		for _, u := range p.User {
			field([]byte(u.Key))
			field([]byte(u.Value))
		}
	} else {
		h.Write(flags[:])
		for range 3 {
			field(nil)
		}
		binary.BigEndian.PutUint64(n[:], 0)
		h.Write(n[:])
	}
	if s := h.Sum64(); s != 0 {
		return s
	}
	return 1
}

// heldSum is the retainedSum of the broker's retained message of topic t.
func (n *Node) heldSum(t string) uint64 {
	m, ok := n.srv.RetainedMessage(t)
	if !ok {
		return 0
	}
	return retainedSum(m)
}

// noteLiveRetained records a live copy from another node that the broker
// just applied (publishLoop), unless the watch already delivered the same
// content as the topic's last bucket update.
func (n *Node) noteLiveRetained(m *broker.Message) {
	sum := retainedSum(m)
	r := &n.ret
	r.mu.Lock()
	defer r.mu.Unlock()
	if s, ok := r.recent[m.Topic]; ok && s.sum == sum {
		delete(r.live, m.Topic)
		return
	}
	if r.live == nil {
		r.live = make(map[string]liveCopy)
	}
	r.live[m.Topic] = liveCopy{sum: sum, at: time.Now()}
}

// setRetained makes the broker's retained message of t be m (nil: none),
// unless it is already.
func (n *Node) setRetained(t string, m *broker.Message, sum uint64) (changed bool) {
	if n.heldSum(t) == sum {
		return false
	}
	if m == nil {
		m = &broker.Message{Topic: t}
	}
	if err := n.srv.SetRetained(m); err != nil {
		if !errors.Is(err, broker.ErrServerClosed) {
			n.log.Warn("cluster: cannot apply a retained message of the cluster", "topic", t, "err", err)
		}
		return false
	}
	return true
}

// applyEntry applies one update of the bucket to the broker's retained
// state. live: the watch is past the bucket's initial values (remember
// the update, confirm a live copy).
func (n *Node) applyEntry(e jetstream.KeyValueEntry, live bool) (changed bool) {
	t, err := retainedTopic(e.Key())
	if err != nil {
		n.log.Warn("cluster: bad retained key in the bucket", "err", err)
		return false
	}
	var m *broker.Message
	if e.Operation() == jetstream.KeyValuePut {
		if m, err = decodeMessage(e.Value()); err != nil {
			n.log.Warn("cluster: bad retained message in the bucket", "topic", t, "err", err)
			return false
		}
		if m.Topic != t {
			n.log.Warn("cluster: retained message under another topic's key in the bucket", "topic", t,
				"message_topic", m.Topic)
			return false
		}
		m.Retain = true
		if len(m.Payload) == 0 {
			m = nil
		}
	}
	sum := retainedSum(m)
	if live {
		r := &n.ret
		r.mu.Lock()
		if l, ok := r.live[t]; ok && l.sum == sum {
			delete(r.live, t) // confirmed
		}
		if _, ok := r.recent[t]; ok || len(r.recent) < retainedRecentMax {
			if r.recent == nil {
				r.recent = make(map[string]bucketSeen)
			}
			r.recent[t] = bucketSeen{sum: sum, rev: e.Revision(), at: time.Now()}
		}
		r.mu.Unlock()
	}
	return n.setRetained(t, m, sum)
}

// loadRetained applies the retained messages of the bucket to the local
// broker (which has no client yet), clears those it restored from its own
// store that the bucket deleted meanwhile, and leaves the same watch
// running (watchRetained): no update is missed between the two.
func (n *Node) loadRetained(ctx context.Context) error {
	var w *retainedWatch
	var count int
	for {
		var err error
		if w, count, err = n.readRetained(ctx); err == nil {
			break
		}
		// The watch's consumer is a JetStream request, which may go
		// unanswered while a restarted node catches up (nats.go gives up
		// after its own 5 s): tried again until Start's time is up.
		select {
		case <-ctx.Done():
			return err
		case <-n.done:
			return err
		case <-time.After(200 * time.Millisecond):
		}
		n.log.Debug("cluster: waiting for jetstream", "request", "watch "+bucketRetained, "err", err)
	}
	n.log.Info("cluster: retained messages loaded", "changed", count) // the others were in the store already
	n.wg.Add(1)
	go n.watchRetained(w)
	return nil
}

// retainedWatch is a watch of the whole bucket and the end of the context
// its subscription lives by.
type retainedWatch struct {
	jetstream.KeyWatcher
	cancel context.CancelFunc
}

func (w *retainedWatch) stop() {
	w.Stop()
	w.cancel()
}

// readRetained starts a watch of the whole bucket and applies its initial
// values; it returns the watch, past them, and how many changed the
// broker's retained state. ctx bounds the start and the reading; the watch
// itself lives until stopped or the node closes (the context given to
// WatchAll ends its subscription).
func (n *Node) readRetained(ctx context.Context) (*retainedWatch, int, error) {
	wctx, cancel := n.untilClosed()
	undo := context.AfterFunc(ctx, cancel) // a start that takes too long is given up
	kw, err := n.retained.WatchAll(wctx)
	if err != nil {
		cancel()
		return nil, 0, fmt.Errorf("cluster: read retained messages: %w", err)
	}
	w := &retainedWatch{KeyWatcher: kw, cancel: cancel}
	count := 0
	for {
		select {
		case <-ctx.Done():
			w.stop()
			return nil, 0, fmt.Errorf("cluster: read retained messages: %w", ctx.Err())
		case <-n.done:
			w.stop()
			return nil, 0, errors.New("cluster: read retained messages: node closed")
		case e, ok := <-w.Updates():
			if !ok {
				w.stop()
				return nil, 0, errors.New("cluster: read retained messages: watcher stopped")
			}
			if e != nil {
				if n.applyEntry(e, false) {
					count++
				}
				continue
			}
			// The initial values are all read: from now on the watch
			// lives by the node, not by ctx.
			if !undo() {
				w.stop()
				return nil, 0, fmt.Errorf("cluster: read retained messages: %w", ctx.Err())
			}
			return w, count, nil
		}
	}
}

// watchRetained applies the bucket's updates as the watch w delivers them,
// and checks the live copies not confirmed in time. A watch that stops is
// started again (reading the whole bucket: what changed meanwhile is
// applied).
func (n *Node) watchRetained(w *retainedWatch) {
	defer n.wg.Done()
	tick := time.NewTicker(retainedCheckEvery)
	defer tick.Stop()
	wait := retainedRewatchMin
	for {
		if w == nil {
			select {
			case <-n.done:
				return
			case <-time.After(wait):
			}
			ctx, cancel := context.WithTimeout(context.Background(), retainedRewatchTimeout)
			var count int
			var err error
			w, count, err = n.readRetained(ctx)
			cancel()
			if err != nil {
				wait = min(2*wait, retainedRetryMax)
				n.log.Warn("cluster: retained messages: watch of the bucket not started again", "err", err)
				continue
			}
			wait = retainedRewatchMin
			n.ret.applied.Add(int64(count))
			n.log.Info("cluster: retained messages: watch of the bucket started again", "changed", count)
		}
		select {
		case <-n.done:
			w.stop()
			return
		case e, ok := <-w.Updates():
			if !ok {
				w.stop()
				w = nil
				n.mu.Lock()
				closing := n.closed // Close closes the NATS connection, then done
				n.mu.Unlock()
				if closing {
					return
				}
				n.log.Warn("cluster: retained messages: watch of the bucket stopped; starting it again")
				continue
			}
			if e != nil && n.applyEntry(e, true) {
				n.ret.applied.Add(1)
			}
		case <-tick.C:
			n.checkLiveRetained()
		}
	}
}

// checkLiveRetained replaces the live copies unconfirmed for
// retainedConfirmWait with the bucket's value: the last update the watch
// delivered for the topic if it remembers one, else what Get reads. A Get
// that fails (no quorum) leaves the rest for the next check.
func (n *Node) checkLiveRetained() {
	r := &n.ret
	now := time.Now()
	var checks []retainedCheck
	r.mu.Lock()
	for t, l := range r.live {
		if len(checks) == retainedCheckMax {
			break // the rest at the next check: the watch waits meanwhile
		}
		if now.Sub(l.at) < retainedConfirmWait {
			continue
		}
		delete(r.live, t)
		s, ok := r.recent[t]
		checks = append(checks, retainedCheck{topic: t, seen: s, known: ok})
	}
	for t, s := range r.recent {
		if now.Sub(s.at) >= retainedRecent {
			delete(r.recent, t)
		}
	}
	r.mu.Unlock()
	for i, c := range checks {
		if c.known && n.heldSum(c.topic) == c.seen.sum {
			continue // the broker holds the bucket's last update the watch delivered
		}
		ctx, cancel := context.WithTimeout(context.Background(), retainedGetTimeout)
		e, err := n.retained.Get(ctx, retainedKey(c.topic))
		cancel()
		var m *broker.Message
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			n.requeueLive(checks[i:], now)
			return
		case c.known && e.Revision() < c.seen.rev:
			n.requeueLive(checks[i:i+1], now) // a replica behind the watch: later
			continue
		default:
			if m, err = decodeMessage(e.Value()); err != nil || m.Topic != c.topic {
				n.log.Warn("cluster: bad retained message in the bucket", "topic", c.topic, "err", err)
				continue
			}
			m.Retain = true
		}
		if n.setRetained(c.topic, m, retainedSum(m)) {
			r.corrected.Add(1)
			n.log.Info("cluster: retained message replaced by the cluster's (a late or unstored copy)",
				"topic", c.topic)
		}
	}
}

// requeueLive puts checks back as unconfirmed live copies (checked again
// after retainedConfirmWait), unless a newer copy came meanwhile.
func (n *Node) requeueLive(cs []retainedCheck, now time.Time) {
	sums := make([]uint64, len(cs))
	for i, c := range cs {
		sums[i] = n.heldSum(c.topic)
	}
	r := &n.ret
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.live == nil {
		r.live = make(map[string]liveCopy)
	}
	for i, c := range cs {
		if _, ok := r.live[c.topic]; !ok {
			r.live[c.topic] = liveCopy{sum: sums[i], at: now}
		}
	}
}

// retainedCheck is one unconfirmed live copy checkLiveRetained checks: its
// topic and the last bucket update the watch delivered for it, if known.
type retainedCheck struct {
	topic string
	seen  bucketSeen
	known bool
}

// writeRetained keeps the bucket up to date with the retained messages set
// and cleared on this node. A write that fails (the node is cut off, or
// JetStream is electing a leader) is tried again until it succeeds, so the
// bucket catches up when the cluster is back; meanwhile only the latest
// operation per topic is kept.
func (n *Node) writeRetained() {
	defer n.wg.Done()
	pending := make(map[string]kvOp) // by key: the latest operation not yet written
	var order []string               // keys of pending, first changed first
	add := func(op kvOp) {
		if _, ok := pending[op.key]; !ok {
			order = append(order, op.key)
		} else {
			n.ret.unwritten.Add(-1) // replaced
		}
		pending[op.key] = op
	}
	wait, failing := retainedRetryMin, false
	for {
		if len(order) == 0 {
			select {
			case <-n.done:
				return
			case op := <-n.kvq:
				add(op)
			}
		}
		for drained := false; !drained; {
			select {
			case op := <-n.kvq:
				add(op)
			default:
				drained = true
			}
		}
		key := order[0]
		op := pending[key]
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		var err error
		if op.body == nil {
			err = n.retained.Delete(ctx, op.key)
		} else {
			_, err = n.retained.Put(ctx, op.key, op.body)
		}
		cancel()
		if err == nil {
			delete(pending, key)
			order = order[1:]
			n.ret.unwritten.Add(-1)
			if failing {
				n.log.Info("cluster: retained messages stored in the cluster again", "waiting", len(order))
			}
			wait, failing = retainedRetryMin, false
			continue
		}
		if !failing {
			n.log.Warn("cluster: retained message not stored in the cluster: tried again until it is", "err", err,
				"waiting", len(order))
			failing = true
		}
		timer := time.NewTimer(wait)
		wait = min(2*wait, retainedRetryMax)
		for waiting := true; waiting; {
			select {
			case <-n.done:
				timer.Stop()
				return
			case op := <-n.kvq:
				add(op)
			case <-timer.C:
				waiting = false
			}
		}
	}
}
