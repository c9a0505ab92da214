package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/mqttd/mqttd/broker"
)

// A graceful leave: a node that is shut down hands its persistent sessions
// to the others before its links go.
//
// Without it, a node that stops is a lost node like one killed: until the
// others hold its sessions (standby.go) they refuse the acknowledgement of
// every QoS 1 and 2 message they forward (holdgate.go), seconds during
// which every QoS 1 and 2 publisher of the cluster is disconnected, and
// its sessions wait cluster_adopt_after for their adoption. A rolling
// restart would do that once per node.
//
// So Leave, called after broker.Server.Quiesce (no client is connected,
// none can connect, and what the cluster publishes is still queued for the
// sessions), asks for each persistent session the node owns that another
// node take it, chosen by a hash of its client id as adoption chooses
// (reqTake). That node moves it as for a client connecting there
// (beforeSession: ownership, subscriptions, the release by this node, the
// queue from the bucket), without a client. Once every session went, the
// node tells each other node that it left (reqLeft): when its links go,
// they know there is nothing of it to hold, and do not refuse
// acknowledgements. A session that could not be moved keeps the loss's
// behaviour: the others do not hear "left", hold the node's sessions and
// adopt them.

const (
	reqTake = "take" // take the session of ID from the node asking (it leaves)
	reqLeft = "left" // the node asking left: it owns no session any more
)

// leaveWorkers is how many sessions a leaving node hands over at once.
const leaveWorkers = 8

// takeTimeout bounds one session's move to the node taking it.
const takeTimeout = 15 * time.Second

// errNoPeer is Leave's error when no other node can take the sessions.
var errNoPeer = errors.New("cluster: no other node of a majority to hand the sessions to")

// errLeaving answers a node asking this one, which leaves too, to take a
// session (the whole cluster is stopped): the session stays where it is.
var errLeaving = errors.New("cluster: the node asked leaves too")

// Leave hands the node's persistent sessions to the other nodes (see the
// top of this file); call it after broker.Server.Quiesce and before the
// broker's Shutdown and Close. It returns how many sessions moved, and an
// error when some did not (they are held and adopted as a lost node's), or
// when ctx ended first.
func (n *Node) Leave(ctx context.Context) (moved int, err error) {
	if !n.running() || !n.srv.HasStore() {
		return 0, nil
	}
	start := time.Now()
	// No session is taken from the others any more; those being taken
	// from another that leaves (the whole cluster is stopped) are here
	// first, and listed below.
	if err := n.leave.begin(ctx); err != nil {
		return 0, err
	}
	var peers []string
	for name := range linkNames(n.ns) {
		if !n.hasLeft(name) {
			peers = append(peers, name)
		}
	}
	slices.Sort(peers)
	if len(peers) == 0 || !n.haveMajority() {
		return 0, errNoPeer
	}
	var ids []string
	for cs := range n.sessionsHere() {
		if _, held := n.held.Load(cs.ID); cs.Persistent && !held {
			ids = append(ids, cs.ID) // sessions held for a lost node stay its own
		}
	}
	// A request to a node whose link goes (it stopped too) ends then, not
	// after takeTimeout.
	peerCtx := make(map[string]context.Context, len(peers))
	cancels := make(map[string]context.CancelFunc, len(peers))
	for _, p := range peers {
		peerCtx[p], cancels[p] = context.WithCancel(ctx)
	}
	watchDone := make(chan struct{})
	defer close(watchDone)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-watchDone:
				for _, c := range cancels {
					c()
				}
				return
			case <-tick.C:
			}
			up := linkNames(n.ns)
			for p, c := range cancels {
				if !up[p] {
					c()
				}
			}
		}
	}()
	var mu sync.Mutex // guards failed and firstErr
	failed := 0
	var firstErr error
	work := make(chan string)
	var wg sync.WaitGroup
	for range leaveWorkers {
		wg.Go(func() {
			for id := range work {
				to := nodeFor(id, peers)
				err := n.askTake(peerCtx[to], to, id)
				if err == nil {
					continue
				}
				mu.Lock()
				failed++
				firstErr = cmpErr(firstErr, err)
				mu.Unlock()
				n.log.Warn("cluster: session not handed over before shutdown: it is held and adopted as a "+
					"lost node's", "client", id, "peer", to, "err", err)
			}
		})
	}
	sent := 0
	for _, id := range ids {
		if ctx.Err() != nil {
			break
		}
		work <- id
		sent++
	}
	close(work)
	wg.Wait()
	failed += len(ids) - sent
	moved = len(ids) - failed
	if failed > 0 {
		return moved, fmt.Errorf("cluster: %d of %d sessions not handed over: %w", failed, len(ids),
			cmpErr(firstErr, ctx.Err()))
	}
	n.handLeadership(ctx)
	if h := n.heldCount(); h > 0 {
		// Sessions held here for a lost node stay its own: the others must
		// hold them again when this node is gone, as for a lost node, so
		// they do not hear "left" (they refuse acknowledgements until the
		// sessions are held, instead of dropping what is published for
		// them).
		n.log.Warn("cluster: this node holds sessions of a lost node: the others hold them again once it is "+
			"gone, and refuse acknowledgements until they do", "sessions", h)
		return moved, nil
	}
	// Every node hears that this one left before its links go.
	for _, peer := range peers {
		if err := n.askCtx(ctx, peer, ownerRequest{ID: n.cfg.Node, Op: reqLeft}); err != nil {
			return moved, fmt.Errorf("cluster: node %s not told that this node leaves: %w", peer, err)
		}
	}
	n.log.Info("cluster: sessions handed over to the other nodes before shutdown", "sessions", moved,
		"took", time.Since(start).Round(time.Millisecond).String())
	return moved, nil
}

// handLeadership makes another node the leader of each bucket's stream
// this node leads, and waits (bounded) until one is: otherwise the
// writes of persistent sessions on the other nodes stall once this node
// is gone, until JetStream elects a leader (seconds), and fail past
// replicaTimeout, disconnecting their publishers.
func (n *Node) handLeadership(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, leadershipWait)
	defer cancel()
	acc := server.DEFAULT_GLOBAL_ACCOUNT
	for _, b := range []string{bucketSessions, bucketOwners, bucketRetained} {
		stream := "KV_" + b
		if !n.ns.JetStreamIsStreamLeader(acc, stream) {
			continue
		}
		if err := n.ns.JetStreamStepdownStream(acc, stream); err != nil {
			n.log.Warn("cluster: leadership of a bucket not handed over before shutdown", "bucket", b, "err", err)
			continue
		}
		if !n.ledElsewhere(wctx, stream) {
			n.log.Warn("cluster: no other leader of a bucket yet at shutdown: its writes wait for an election",
				"bucket", b)
		}
	}
}

// ledElsewhere waits until another node leads stream, and reports
// whether one did before ctx ended, or before too few nodes were left
// linked to elect one (the whole cluster stops). Each request for the stream's info is
// bounded by infoWait: one sent while the stream has no leader (right
// after the stepdown) may get no answer, and is sent again.
func (n *Node) ledElsewhere(ctx context.Context, stream string) bool {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, infoWait)
		info, err := n.js.Stream(rctx, stream)
		cancel()
		if err == nil {
			if l := info.CachedInfo().Cluster; l != nil && l.Leader != "" && l.Leader != n.cfg.Node {
				return true
			}
		}
		if (len(linkNames(n.ns))+1)*2 <= n.size {
			return false // too few nodes left to elect one (the others stop too)
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
}

// sessionsHere yields the sessions of this node's broker, a page at a time.
func (n *Node) sessionsHere() iter.Seq[broker.ClientSummary] {
	return func(yield func(broker.ClientSummary) bool) {
		cursor := ""
		for {
			page, next := n.srv.ClientsPage(broker.ClientFilter{}, cursor, 0, 500)
			for _, cs := range page {
				if !yield(cs) {
					return
				}
			}
			if next == "" || len(page) == 0 {
				return
			}
			cursor = next
		}
	}
}

// leadershipWait bounds handLeadership.
const leadershipWait = 5 * time.Second

// infoWait bounds one request for a stream's info in ledElsewhere.
const infoWait = 250 * time.Millisecond

// nodeFor is the node of nodes chosen for client id: the node that holds,
// adopts or takes its session, or publishes its will, when its own node is
// lost or leaves. Rendezvous hashing: each node gets a score from the id
// and its name, and the highest wins. So when a node goes, only the ids it
// was chosen for move (each to its next best), and the others stay where
// they are: the sessions a lost node's holder held are held again by the
// survivors without any other session changing holder (standby.go).
func nodeFor(id string, nodes []string) string {
	var best string
	var top uint64
	for i, node := range nodes {
		if s := nodeScore(id, node); i == 0 || s > top || (s == top && node < best) {
			best, top = node, s
		}
	}
	return best
}

// nodeScore is FNV-1a over id, a zero byte and node, then a 64-bit
// finalizer (the names differ in their last bytes, which FNV alone mixes
// poorly into the high bits).
func nodeScore(id, node string) uint64 {
	h := uint64(14695981039346656037)
	for i := range len(id) {
		h = (h ^ uint64(id[i])) * 1099511628211
	}
	h *= 1099511628211 // the zero byte
	for i := range len(node) {
		h = (h ^ uint64(node[i])) * 1099511628211
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// askTake asks node to take the session of client id; nil once it has.
func (n *Node) askTake(ctx context.Context, node, id string) error {
	tctx, cancel := context.WithTimeout(ctx, takeTimeout)
	defer cancel()
	return n.askCtx(tctx, node, ownerRequest{ID: id, Op: reqTake})
}

// refusal is the answer of a node that could not do what it was asked.
type refusal string

func (r refusal) Error() string { return string(r) }

// askCtx sends request r to node and waits for its answer: nil for "ok",
// a refusal with the node's error text, or the request's own error (no
// answer).
func (n *Node) askCtx(ctx context.Context, node string, r ownerRequest) error {
	body, _ := json.Marshal(r)
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, askTimeout)
		defer cancel()
	}
	msg, err := n.nc.RequestWithContext(ctx, subjControl+"."+encodeLevel(node)+".takeover", body)
	if err != nil {
		return err
	}
	if s := string(msg.Data); s != "ok" {
		return refusal(s)
	}
	return nil
}

// onTake takes the session of r.ID from a node that leaves, as a CONNECT
// here would, and answers once it is here (its own goroutine: the move
// asks other nodes, whose requests to this node must not wait behind it).
func (n *Node) onTake(msg *nats.Msg, r ownerRequest) {
	if !n.leave.take() {
		if err := msg.Respond([]byte(errLeaving.Error())); err != nil {
			n.log.Debug("cluster: take answer", "client", r.ID, "err", err)
		}
		return
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer n.leave.taken()
		ctx, cancel := n.untilClosed()
		defer cancel()
		tctx, tcancel := context.WithTimeout(ctx, takeTimeout)
		defer tcancel()
		answer := "ok"
		if !n.running() {
			answer = broker.ErrServerClosed.Error()
		} else if err := n.beforeSession(tctx, r.ID, false, nil); err != nil {
			answer = err.Error()
		} else {
			n.log.Info("cluster: session taken from a node that leaves", "client", r.ID)
		}
		if err := msg.Respond([]byte(answer)); err != nil {
			n.log.Debug("cluster: take answer", "client", r.ID, "err", err)
		}
	}()
}

// leaveState is whether the node leaves, and the sessions it is taking
// from others meanwhile.
type leaveState struct {
	mu      sync.Mutex
	leaving bool
	taking  int
}

// take counts a session taken from another node; false once the node
// leaves.
func (l *leaveState) take() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.leaving {
		return false
	}
	l.taking++
	return true
}

func (l *leaveState) taken() {
	l.mu.Lock()
	l.taking--
	l.mu.Unlock()
}

// begin marks the node leaving and waits until the sessions it was taking
// are here (or ctx ends).
func (l *leaveState) begin(ctx context.Context) error {
	l.mu.Lock()
	l.leaving = true
	l.mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		l.mu.Lock()
		n := l.taking
		l.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}
