package cluster

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/mqttd/mqttd/broker"
)

// Sessions held for a node out of reach (standby).
//
// When the link to a node is lost, nothing routes to the persistent
// sessions it held: no node has their subscriptions. So that what is
// published for them meanwhile is not lost, the nodes of the majority hold
// those sessions at once, each session on one node chosen by a hash of its
// client id (the node that would adopt it): the session's subscriptions are
// installed there (broker.StandbySession) and what matches is queued as for
// any offline session, its queue entries written to mqttd_sessions under
// the holding node's name before the publisher's acknowledgement. The
// session's record and will stay the lost node's.
//
// The held session ends in one of three ways, each taking the entries the
// holder wrote:
//
//   - A node takes the session (its client connects there, or adoption):
//     it installs the subscriptions itself, makes sure every node knows
//     (syncInterest), asks every node to let its held copy go (reqHeldEnd),
//     then reads the bucket (fetchSession: the entries of the lost node
//     and of the holder) and deletes what it read.
//   - The lost node comes back (the link heals, or it restarts): once its
//     interest is known again it asks each node for the sessions held for
//     it (reqHeldNode), which are let go, and reads their entries from the
//     bucket into its own sessions (collectHeld).
//   - The holder restarts: its broker restores the held session from its
//     store, and reconcileSessions lets it go (another node owns it); the
//     entries it wrote stay in the bucket for the session's next move.
//
// When the holder itself goes before the session is adopted (it dies, or
// is shut down: a node holding sessions of a lost node does not tell the
// others it left, Leave), the nodes left hold the sessions it held, as part
// of holding its own (holdSessions with the lost nodes before it), so the
// hold gate covers them too. nodeFor is a rendezvous hash: only the gone
// holder's share moves, every other held copy stays where it is.
//
// Messages published after the link was lost and before the sessions are
// held (a tick of watchLinks, then a read of the bucket per session) match
// no subscription: the hold gate (holdgate.go) refuses their
// acknowledgement, so their publishers send them again. Sessions that
// could not be held (JetStream unavailable for the gate's whole limit) lose
// what is published for them until they are adopted or resumed, which the
// log says.

const (
	reqHeldEnd  = "held-end"  // let the held copy of the session go
	reqHeldNode = "held-node" // let go the sessions held for node ID; answer heldAnswer
)

// holdWorkers is how many sessions of a lost node are read at once.
const holdWorkers = 8

// heldBatch bounds the sessions one reqHeldNode lets go (its answer must
// fit a NATS message).
const heldBatch = 2000

// heldAnswer answers reqHeldNode: the client ids let go whose sessions
// queued something here, and whether more are held.
type heldAnswer struct {
	IDs []string `json:"ids"`
	// Queued is, for each of IDs, how many messages the held copy had
	// queued or in flight: the bucket has at least that many entries of
	// this node for it (collectOne reads until it sees them).
	Queued []int `json:"queued,omitempty"`
	More   bool  `json:"more"`
}

// ownedEntry is an ownership entry ownedBy found: its revision and the
// node it names.
type ownedEntry struct {
	rev  uint64
	node string
}

// ownedBy lists the client ids owned by the nodes in dead that go to this
// node: nodeFor over live, as adoption chooses. Right after
// a node dies JetStream may be electing new leaders for the buckets it led,
// and for the meta group, which creates the watch's consumer: a reading
// that stalls is tried again, as fetchRetrying does, up to adoptTries times.
func (n *Node) ownedBy(ctx context.Context, dead map[string]bool, live []string) (map[string]ownedEntry, error) {
	for attempt := 1; ; attempt++ {
		out, err := n.readOwned(ctx, dead, live, n.readFirstWait(attempt))
		if err == nil {
			return out, nil
		}
		if attempt == adoptTries || ctx.Err() != nil {
			return nil, err
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(readRetry):
		}
	}
}

// readOwned reads the whole owners bucket in one pass (a watch: the keys
// with their values and revisions, not a listing then a read per key,
// which takes minutes for 100,000 sessions) and keeps the ids of ownedBy.
// It gives up when the first entry does not come within first, or the next
// within readIdle (guardRead).
func (n *Node) readOwned(ctx context.Context, dead map[string]bool, live []string, first time.Duration) (map[string]ownedEntry, error) {
	wctx, progress, stop := guardRead(ctx, first)
	defer stop()
	w, err := n.owners.WatchAll(wctx, jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("cluster: read the owners: %w", readErr(wctx, err))
	}
	defer w.Stop()
	out := make(map[string]ownedEntry)
	for {
		var e jetstream.KeyValueEntry
		select {
		case <-wctx.Done():
			return nil, fmt.Errorf("cluster: read the owners: %w", readErr(wctx, nil))
		case v, ok := <-w.Updates():
			if !ok {
				return nil, errors.New("cluster: read the owners: watcher stopped")
			}
			e = v
		}
		if e == nil {
			return out, nil // every current entry read
		}
		progress()
		if e.Operation() != jetstream.KeyValuePut || !dead[string(e.Value())] {
			continue
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(e.Key(), "c."))
		if err != nil {
			continue
		}
		if nodeFor(string(raw), live) == n.cfg.Node {
			out[string(raw)] = ownedEntry{rev: e.Revision(), node: string(e.Value())}
		}
	}
}

// ownerEntry reads the ownership entry key, trying again while JetStream
// elects a leader for the bucket (right after a node's loss); nil when the
// key is gone.
func (n *Node) ownerEntry(ctx context.Context, key string) (e jetstream.KeyValueEntry, err error) {
	err = retryJS(ctx, n.log, "owner "+key, func(ctx context.Context) (err error) {
		e, err = n.owners.Get(ctx, key)
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			e, err = nil, nil
		}
		return err
	})
	return e, err
}

// liveNodes is this node and those it has a link to, sorted.
func (n *Node) liveNodes() []string {
	live := []string{n.cfg.Node}
	for name := range linkNames(n.ns) {
		live = append(live, name)
	}
	slices.Sort(live)
	return live
}

// holdSessions holds here the persistent sessions of node dead, whose link
// was just lost, that this node would adopt (see the top of this file).
// Those of the nodes in others, lost earlier and not adopted yet, that
// dead held for them go to the survivors the same way (nodeFor moves only
// dead's share): otherwise what is published for them until their
// adoption would be acknowledged and matched by no subscription. The
// others' sessions held here already stay as they are.
func (n *Node) holdSessions(dead string, others []string) {
	defer n.wg.Done()
	// Every node says when it is done, holding or not (holdgate.go).
	defer n.reportHeld(dead)
	if !n.srv.HasStore() || !n.haveMajority() {
		return
	}
	ctx, cancel := n.untilClosed()
	defer cancel()
	start := time.Now()
	// The gate (holdgate.go) waits for this node's report: what failed is
	// tried again meanwhile, since a session not held loses what is
	// published for it, acknowledged.
	deadline := start.Add(holdGateMax)
	owners := map[string]bool{dead: true}
	for _, o := range others {
		owners[o] = true
	}
	var ids map[string]ownedEntry
	for {
		var err error
		if ids, err = n.ownedBy(ctx, owners, n.liveNodes()); err == nil {
			break
		}
		if ctx.Err() != nil || time.Now().After(deadline) || linkNames(n.ns)[dead] {
			n.log.Warn("cluster: sessions of a lost node not held: owners not listed; messages for them are "+
				"dropped until they are adopted", "peer", dead, "err", err)
			return
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	// A few reads of the bucket at a time: each session waits for one.
	held := 0
	todo := slices.Collect(maps.Keys(ids))
	var lastErr error
	for len(todo) > 0 {
		var mu sync.Mutex
		var again []string
		work := make(chan string)
		var wg sync.WaitGroup
		for range holdWorkers {
			wg.Go(func() {
				for id := range work {
					ok, err := n.holdSession(ctx, id, ids[id].node)
					mu.Lock()
					switch {
					case err != nil:
						again = append(again, id)
						lastErr = err
					case ok:
						held++
					}
					mu.Unlock()
				}
			})
		}
		for _, id := range todo {
			if ctx.Err() != nil {
				break
			}
			if linkNames(n.ns)[ids[id].node] {
				continue // back already: it keeps its sessions
			}
			work <- id
		}
		close(work)
		wg.Wait()
		todo = again
		if len(todo) == 0 || ctx.Err() != nil || time.Now().After(deadline) || linkNames(n.ns)[dead] {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
	if len(todo) > 0 {
		n.log.Warn("cluster: sessions of a lost node not held: messages for them are dropped until they are "+
			"adopted or resumed", "peer", dead, "sessions", len(todo), "err", lastErr)
	}
	if held > 0 {
		n.log.Warn("cluster: sessions of a lost node held here: what is published for them is queued",
			"peer", dead, "sessions", held, "took", time.Since(start).Round(time.Millisecond).String())
	}
}

// holdSession holds the session of client id, owned by node dead; it
// reports whether it did.
func (n *Node) holdSession(ctx context.Context, id, dead string) (bool, error) {
	if _, ok := n.srv.ClientDetail(id); ok {
		return false, nil // here already (adopted, or its client connected here)
	}
	fctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	r, err := n.fetchRetrying(fctx, id, true)
	if err != nil || r == nil {
		return false, err
	}
	r.state.Session.Will = nil // the lost node's to publish, or its adopter's
	n.held.Store(id, dead)
	if err := n.srv.StandbySession(r.state); err != nil {
		n.held.Delete(id)
		if errors.Is(err, broker.ErrSessionBusy) {
			return false, nil
		}
		return false, err
	}
	// Another node that took the session meanwhile has asked the others
	// to let their copies go before this one existed: it goes now. (This
	// node may have taken it itself, adopting it: it stays.)
	if e, err := n.owners.Get(ctx, ownerKey(id)); err == nil {
		if owner := string(e.Value()); owner != dead && owner != n.cfg.Node {
			n.letHeldGo(ctx, id)
			return false, nil
		}
	}
	return true, nil
}

// heldCount is how many sessions are held here for lost nodes.
func (n *Node) heldCount() int {
	c := 0
	for _, v := range n.held.Range {
		if v.(string) != "" {
			c++
		}
	}
	return c
}

// letHeldGo lets the session held here for client id go: what other nodes
// sent for it before they knew of the node taking it reaches it first, then
// it leaves this broker (its store only; the entries it wrote to the bucket
// stay for the node taking it). It reports whether the session queued
// anything meanwhile.
func (n *Node) letHeldGo(ctx context.Context, id string) bool {
	if _, ok := n.held.Load(id); !ok {
		return false
	}
	n.syncInterest()
	n.drainInbound(ctx)
	return n.dropHeld(ctx, id) > 0
}

// dropHeld lets the held session of id go, once drained, and returns how many
// messages it had queued or in flight (their entries stay in the bucket).
func (n *Node) dropHeld(ctx context.Context, id string) int {
	d, ok := n.srv.ClientDetail(id)
	queued := 0
	if ok {
		queued = d.Queued + d.Inflight
	}
	if _, err := n.handOver(ctx, id, true); err != nil {
		n.log.Warn("cluster: session held for a lost node not let go", "client", id, "err", err)
	}
	n.held.Delete(id)
	return queued
}

// releaseHeld is done by a node about to take the session of client id
// from a node that did not answer (it died, or is cut off): the session's
// subscriptions are installed here (held, unless here already), every node
// knows it, and every other node lets its held copy go. The caller then
// reads the bucket, which has what all of them queued, and imports it.
func (n *Node) releaseHeld(ctx context.Context, id string) error {
	if _, ok := n.srv.ClientDetail(id); !ok {
		r, err := n.fetchRetrying(ctx, id, true)
		if err != nil {
			return err
		}
		if r == nil {
			return nil // no persistent session: nothing was held
		}
		r.state.Session.Will = nil // the import that follows has it
		n.held.Store(id, "")
		if err := n.srv.StandbySession(r.state); err != nil && !errors.Is(err, broker.ErrSessionBusy) {
			n.held.Delete(id)
			return err
		}
	}
	n.syncInterest()
	n.askHeldEnd(id)
	return nil
}

// askHeldEnd asks every other node to let go the copy of client id's
// session it may hold, and waits for their answers.
func (n *Node) askHeldEnd(id string) {
	body, _ := json.Marshal(ownerRequest{ID: id, Op: reqHeldEnd})
	var wg sync.WaitGroup
	for peer := range linkNames(n.ns) {
		wg.Go(func() {
			if _, err := n.nc.Request(subjControl+"."+encodeLevel(peer)+".takeover", body, askTimeout); err != nil {
				n.log.Warn("cluster: a node did not say it let go of a session it may hold: what it queued "+
					"since is read by the session's next move", "client", id, "peer", peer, "err", err)
			}
		})
	}
	wg.Wait()
}

// onHeldRequest answers reqHeldEnd and reqHeldNode, off the request
// callback: letting a session go waits for other nodes (syncInterest),
// whose requests to this node the callback must stay free to answer.
func (n *Node) onHeldRequest(msg *nats.Msg, r ownerRequest) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), takeoverWait)
		defer cancel()
		var answer []byte
		switch r.Op {
		case reqHeldEnd:
			n.letHeldGo(ctx, r.ID)
			answer = []byte("ok")
		case reqHeldNode:
			var ids []string
			more := false
			n.held.Range(func(k, v any) bool {
				if v.(string) == r.ID {
					if len(ids) == heldBatch {
						more = true
						return false
					}
					ids = append(ids, k.(string))
				}
				return true
			})
			a := heldAnswer{More: more}
			if len(ids) > 0 {
				n.syncInterest()
				n.drainInbound(ctx)
				for _, id := range ids {
					dctx, dcancel := context.WithTimeout(context.Background(), takeoverWait)
					if q := n.dropHeld(dctx, id); q > 0 {
						a.IDs = append(a.IDs, id)
						a.Queued = append(a.Queued, q)
					}
					dcancel()
				}
				n.log.Info("cluster: sessions held for a node let go: it is back", "peer", r.ID,
					"sessions", len(ids), "with messages", len(a.IDs))
			}
			answer, _ = json.Marshal(a)
		}
		if err := msg.Respond(answer); err != nil {
			n.log.Debug("cluster: answer about held sessions", "request", r.Op, "err", err)
		}
	}()
}

// collectHeld is done when the link to peer comes up (and at start): peer
// may hold sessions of this node, held while this node was out of reach.
// Once every node knows this node's interest again, peer lets them go, and
// what they queued is read from the bucket and delivered to this node's
// sessions (broker.DeliverQueued), connected or not, after what they got
// since.
func (n *Node) collectHeld(peer string) {
	defer n.wg.Done()
	// This node's interest first: at start it is subscribed last.
	for !n.running() {
		select {
		case <-n.done:
			return
		case <-time.After(10 * time.Millisecond):
		}
	}
	n.syncInterest()
	body, _ := json.Marshal(ownerRequest{ID: n.cfg.Node, Op: reqHeldNode})
	collected := 0
	failures := 0
	for {
		msg, err := n.nc.Request(subjControl+"."+encodeLevel(peer)+".takeover", body, askTimeout+takeoverWait)
		if err != nil {
			// Right after a start or a heal the peer may not have this
			// node's route yet (no responders): asked again while the
			// link is up, for a minute (a link that comes back later asks
			// anew, watchLinks).
			failures++
			n.log.Debug("cluster: asking for the sessions held for this node: trying again", "peer", peer, "err", err)
			if failures == 60 || !linkNames(n.ns)[peer] {
				n.log.Warn("cluster: sessions held for this node not asked for: what the peer queued for them "+
					"is read by their next move", "peer", peer, "err", err)
				return
			}
			select {
			case <-n.done:
				return
			case <-time.After(time.Second):
			}
			continue
		}
		var a heldAnswer
		if err := json.Unmarshal(msg.Data, &a); err != nil {
			n.log.Warn("cluster: unreadable answer about held sessions", "peer", peer, "err", err)
			return
		}
		for i, id := range a.IDs {
			want := 1 // a node of an older version does not say: it said there were some
			if i < len(a.Queued) {
				want = a.Queued[i]
			}
			if n.collectOne(id, want) {
				collected++
			}
		}
		if !a.More || n.isDone() {
			break
		}
	}
	if collected > 0 {
		n.log.Warn("cluster: messages queued by another node while this one was out of reach taken into its "+
			"sessions", "peer", peer, "sessions", collected)
	}
}

// collectOne reads into this node's session of id what other nodes queued
// for it, at least want messages (what the node that held it said it had);
// it reports whether there was anything.
func (n *Node) collectOne(id string, want int) bool {
	// Right after a restart JetStream may take a while to serve the bucket.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if e, err := n.ownerEntry(ctx, ownerKey(id)); err != nil || e == nil || string(e.Value()) != n.cfg.Node {
		if err != nil {
			n.log.Warn("cluster: messages queued elsewhere for a session not read: its owner could not be "+
				"read; its next move delivers them", "client", id, "err", err)
		} else {
			n.log.Debug("cluster: held messages not collected: the session is another node's", "client", id)
		}
		return false // another node's now: it reads them when it takes the session
	}
	if _, ok := n.srv.ClientDetail(id); !ok {
		n.log.Debug("cluster: held messages not collected: no such session here", "client", id)
		return false // not here: the CONNECT that resumes it reads the bucket
	}
	r, err := n.fetchAtLeast(ctx, id, want)
	if err != nil {
		n.log.Warn("cluster: messages queued elsewhere for a session not read: its next move "+
			"delivers them", "client", id, "err", err)
		return false
	}
	got := 0
	if r != nil {
		got = len(r.state.Queue)
	}
	if got == 0 {
		n.log.Warn("cluster: messages queued elsewhere for a session not found in the bucket: its next "+
			"move delivers them", "client", id, "want", want)
		return false
	}
	if got < want {
		n.log.Warn("cluster: fewer messages queued elsewhere for a session found than were queued: the "+
			"others are delivered by its next move", "client", id, "want", want, "got", got)
	}
	if _, err := n.srv.DeliverQueued(id, r.state, r.msgs); err != nil {
		n.log.Warn("cluster: messages queued elsewhere for a session not taken: its next move delivers "+
			"them", "client", id, "err", err)
		return false
	}
	if err := n.dropForeign(ctx, r.foreign); err != nil {
		n.log.Warn("cluster: records of another node not deleted: a later takeover may deliver them again",
			"client", id, "err", err)
	}
	return true
}

// fetchAtLeast reads client id's session (fetchRetrying) until its queue
// has at least want entries of other nodes, or ctx ends (then it returns
// the last reading): right after a restart this node's replica of the
// bucket may still be catching up, and a reading may miss what was written
// while it was away.
func (n *Node) fetchAtLeast(ctx context.Context, id string, want int) (*replicated, error) {
	for {
		r, err := n.fetchRetrying(ctx, id, false)
		if err != nil || r != nil && len(r.state.Queue) >= want {
			return r, err
		}
		select {
		case <-time.After(500 * time.Millisecond):
			n.log.Debug("cluster: held messages not all in the bucket yet: reading again", "client", id,
				"want", want)
		case <-ctx.Done():
			return r, nil
		case <-n.done:
			return r, nil
		}
	}
}

func (n *Node) isDone() bool {
	select {
	case <-n.done:
		return true
	default:
		return false
	}
}
