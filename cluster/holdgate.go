package cluster

import (
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// The hold gate: no acknowledgement for what the lost node's sessions may
// miss.
//
// From the moment a node's links are lost until the survivors hold its
// persistent sessions (standby.go), nothing routes to those sessions: a
// QoS 1 or 2 message published meanwhile for one of them would be
// acknowledged and lost. The survivors hold them only once JetStream has
// elected new leaders for the buckets the lost node led, seconds later. So
// while a lost node's sessions are not held by every surviving node (each
// holds its share, and says so on subjHeld), a node of the majority with a
// store refuses the acknowledgement of every QoS 1 or 2 message it
// forwards (watchRoutes starts the gate within routeCountInterval of the
// loss; the messages forwarded before went out while the link was up and
// fail as such, acks.go): the publishers are disconnected with 0x89
// (Server busy) and send the messages again, which are held by then. The
// gate closes when every node expected has said its share is held, when
// the lost node is back, or after holdGateMax.

// subjHeld is where nodes say they hold a lost node's sessions: body
// "LOST NODE".
const subjHeld = subjControl + ".held"

// holdGateMax bounds the gate for one lost node.
const holdGateMax = 60 * time.Second

// errUnheld fails the acknowledgements of messages forwarded while the
// gate was closed.
var errUnheld = errors.New("cluster: a node was lost and its persistent sessions are not held yet")

// holdGate is the state of the gate, under its mu.
type holdGate struct {
	mu      sync.Mutex
	pending map[string]map[string]bool      // lost node → nodes whose hold is awaited
	since   map[string]time.Time            // lost node → when the gate opened for it
	early   map[string]map[string]time.Time // lost node → nodes that said so before this one saw the loss
	left    map[string]time.Time            // node → when it said it left, its sessions handed over (leave.go)
}

// nodeLeft records that node name left the cluster after handing its
// sessions over: the loss of its links that follows closes no gate.
func (n *Node) nodeLeft(name string) {
	g := &n.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.left == nil {
		g.left = make(map[string]time.Time)
	}
	g.left[name] = time.Now()
	n.log.Info("cluster: a node leaves, its sessions handed over", "peer", name)
}

// hasLeft reports whether node name said it left (nodeLeft) within
// holdGateMax, and has not come back since.
func (n *Node) hasLeft(name string) bool {
	g := &n.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.leftLocked(name)
}

// leftLocked is hasLeft with g.mu held.
func (g *holdGate) leftLocked(name string) bool {
	at, ok := g.left[name]
	return ok && time.Since(at) < holdGateMax
}

// gateLost closes the gate for node lost, whose links just went (from
// watchRoutes); live are the nodes linked now. A node in a gate's
// pending set that is lost itself is not waited for.
func (n *Node) gateLost(lost string, live map[string][]uint64) {
	g := &n.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, p := range g.pending {
		delete(p, lost)
	}
	if g.leftLocked(lost) {
		n.log.Info("cluster: a node that left is gone: it owned no session, acknowledgements go on",
			"peer", lost)
		n.gateUpdateLocked()
		return
	}
	if _, ok := g.pending[lost]; !ok && n.srv.HasStore() && (len(live)+1)*2 > n.size {
		p := map[string]bool{n.cfg.Node: true}
		for name := range live {
			p[name] = true
		}
		for name, at := range g.early[lost] {
			if time.Since(at) < holdGateMax {
				delete(p, name)
			}
		}
		delete(g.early, lost)
		if len(p) > 0 {
			g.pending[lost] = p
			g.since[lost] = time.Now()
		}
	}
	n.gateUpdateLocked()
}

// gateBack opens the gate for node name, whose link is back: it holds its
// sessions again.
func (n *Node) gateBack(name string) {
	g := &n.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pending, name)
	delete(g.since, name)
	delete(g.left, name)
	n.gateUpdateLocked()
}

// onHeld records that a node holds its share of a lost node's sessions.
func (n *Node) onHeld(msg *nats.Msg) {
	if lost, from, ok := strings.Cut(string(msg.Data), " "); ok {
		n.heldBy(lost, from)
	}
}

// heldBy records that node from holds its share of node lost's sessions.
func (n *Node) heldBy(lost, from string) {
	g := &n.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	if p, ok := g.pending[lost]; ok {
		delete(p, from)
	} else {
		if g.early[lost] == nil {
			g.early[lost] = make(map[string]time.Time)
		}
		g.early[lost][from] = time.Now()
	}
	n.gateUpdateLocked()
}

// gateExpire opens the gates older than holdGateMax (watchLinks).
func (n *Node) gateExpire() {
	g := &n.gate
	g.mu.Lock()
	defer g.mu.Unlock()
	for lost, at := range g.since {
		if time.Since(at) >= holdGateMax {
			n.log.Warn("cluster: acknowledgements given again although not every node said it holds the "+
				"sessions of a lost node", "peer", lost, "waited", holdGateMax.String())
			delete(g.pending, lost)
			delete(g.since, lost)
		}
	}
	for name, at := range g.left {
		if time.Since(at) >= holdGateMax {
			delete(g.left, name)
		}
	}
	for lost, m := range g.early {
		for name, at := range m {
			if time.Since(at) >= holdGateMax {
				delete(m, name)
			}
		}
		if len(m) == 0 {
			delete(g.early, lost)
		}
	}
	n.gateUpdateLocked()
}

// gateUpdateLocked sets the flag holdForward reads, and logs each change.
func (n *Node) gateUpdateLocked() {
	g := &n.gate
	for lost, p := range g.pending {
		if len(p) == 0 {
			n.log.Info("cluster: sessions of a lost node held by every node: acknowledgements go on",
				"peer", lost, "after", time.Since(g.since[lost]).Round(time.Millisecond).String())
			delete(g.pending, lost)
			delete(g.since, lost)
		}
	}
	closed := len(g.pending) > 0
	if n.acks.gating.Swap(closed) != closed && closed {
		n.log.Warn("cluster: a node was lost: QoS 1 and 2 messages are refused (0x89) until its persistent " +
			"sessions are held")
	}
}

// reportHeld says this node holds its share of node lost's sessions, to
// itself and to the others (its NATS connection does not get back what it
// publishes).
func (n *Node) reportHeld(lost string) {
	n.heldBy(lost, n.cfg.Node)
	if err := n.nc.Publish(subjHeld, []byte(lost+" "+n.cfg.Node)); err != nil {
		n.log.Debug("cluster: held report", "peer", lost, "err", err)
	}
}
