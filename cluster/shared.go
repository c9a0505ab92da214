package cluster

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/topic"
)

// Shared subscriptions across the cluster (MQTT 5.0 section 4.8.2): a
// message goes to exactly one member of a group (per filter), wherever the
// group's members are connected.
//
// Each node with a local member of the group g on the (routed) filter f
// holds NATS queue subscriptions on the subjects of f (filterSubjects),
// all in the queue group shareQueue(g, f), the same name on every node.
// Every message a node forwards (Node.forward) is published once on its
// topic's subject, so NATS hands it to exactly one node of each such
// queue group (chosen at random among the nodes that hold it, the
// publisher's own included), and that node gives it to one of its local
// members (broker.Server.DeliverShared, with the broker's selection
// policy). The router of the node where the message was published does
// not pick a member itself (RouteShared), nor does any node for a message
// it republishes from the cluster. These subscriptions are on a second
// NATS connection, without NoEcho, so that the publishing node's own queue
// subscription can be chosen too; a node whose clients hold only shared
// subscriptions on a filter holds no ordinary interest in it.
//
// Retained messages travel to every node on subjRetained; they are also
// published on subjSharedRetained plus the topic's subject, which only
// the shared queue subscriptions hold. A node that finds no member of the
// group any more (it left after NATS chose the node, which learns of the
// unsubscribe through the routes: lingerSharedLocked) offers the message
// to the group again on shareRedoSubject, at most maxShareHops times, then
// counts it as lost; so does a node whose last member of a group left
// with messages it had not delivered (OfferShared). Those offers and
// their subscriptions are on the first connection, whose NoEcho makes
// NATS choose another node than the one offering.
//
// Groups on filters of topics beginning with '$' (other than $SYS, which
// stays per node) keep the per-node behaviour: each node with members
// delivers to one of its own (RouteShared declines them).

const (
	subjShared         = "shr" // shr.<hop>.<group>.<filter>: a message offered to a group again
	subjSharedRetained = "sr"  // sr.<topic subject>: a retained message, for the shared queue subscriptions
	shareQueuePrefix   = "shr~"
	maxShareHops       = 3
)

// shareState is the node's part for shared subscriptions.
type shareState struct {
	nc        *nats.Conn   // the connection of the shared queue subscriptions (echo on)
	delivered atomic.Int64 // messages given to a local member of a group
	redone    atomic.Int64 // messages offered to their group again: the member had left
	lost      atomic.Int64 // messages no member took after maxShareHops offers
	live      atomic.Int64 // the node's queue subscriptions on nc: while there are, it marks itself (acks.go)
}

// forget counts s, a subscription just ended, out of live if it was one
// of the queue subscriptions on the second connection.
func (st *shareState) forget(s *nats.Subscription) {
	if strings.HasPrefix(s.Queue, shareQueuePrefix) && !strings.HasPrefix(s.Subject, subjShared+".") {
		st.live.Add(-1)
	}
}

var b64 = base64.RawURLEncoding

// shareQueue is the NATS queue group of the shared subscription group
// (group, filter), the same on every node.
func shareQueue(group, filter string) string {
	return shareQueuePrefix + b64.EncodeToString([]byte(group)) + "~" + b64.EncodeToString([]byte(filter))
}

// parseShareQueue reads what shareQueue wrote.
func parseShareQueue(q string) (group, filter string, ok bool) {
	rest, ok := strings.CutPrefix(q, shareQueuePrefix)
	if !ok {
		return "", "", false
	}
	eg, ef, ok := strings.Cut(rest, "~")
	if !ok {
		return "", "", false
	}
	g, err1 := b64.DecodeString(eg)
	f, err2 := b64.DecodeString(ef)
	if err1 != nil || err2 != nil || len(g) == 0 || len(f) == 0 {
		return "", "", false
	}
	return string(g), string(f), true
}

// shareRedoSubject is where a message is offered again to the group of
// queue q, for the hop-th time.
func shareRedoSubject(q string, hop int) string {
	eg, ef, _ := strings.Cut(strings.TrimPrefix(q, shareQueuePrefix), "~")
	return subjShared + "." + strconv.Itoa(hop) + "." + eg + "." + ef
}

// shareRedoFilter is the subject filter of the messages offered again to
// the group of queue q, at any hop.
func shareRedoFilter(q string) string {
	eg, ef, _ := strings.Cut(strings.TrimPrefix(q, shareQueuePrefix), "~")
	return subjShared + ".*." + eg + "." + ef
}

// interestKey is the key of a subscription in Node.refs and Node.clients:
// the routed filter, or "$share/GROUP/" and the routed filter for a shared
// subscription that the cluster routes to one member (not on a '$' topic).
func interestKey(clientFilter, routed string) string {
	group, _, shared, err := topic.ParseShare(clientFilter)
	if err != nil || !shared || strings.HasPrefix(routed, "$") {
		return routed
	}
	return "$share/" + group + "/" + routed
}

// shareKey splits a key of interestKey for a shared subscription.
func shareKey(key string) (group, filter string, ok bool) {
	group, filter, shared, err := topic.ParseShare(key)
	if err != nil || !shared {
		return "", "", false
	}
	return group, filter, true
}

// connectShared opens the second NATS connection (echo on).
func (n *Node) connectShared() error {
	nc, err := nats.Connect("", nats.InProcessServer(n.ns), nats.Name("mqttd-"+n.cfg.Node+"-shared"),
		nats.MaxReconnects(-1), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrSlowConsumer) {
				n.acks.slowConsumers.Add(1) // fails the next mark answered (acks.go)
				return                      // counted by the subscription, reported by watchDrops
			}
			n.log.Warn("cluster: nats error (shared subscriptions)", "err", err)
		}))
	if err != nil {
		return fmt.Errorf("cluster: connect to the embedded nats server: %w", err)
	}
	n.share.nc = nc
	return nil
}

// subscribeSharedLocked makes the NATS queue subscriptions of the shared
// subscription group (group, filter): the filter's subjects, those of its
// retained messages and the subject of the messages offered again. They
// are flushed, so that the local server routes to them before the client's
// SUBACK. n.mu is held.
func (n *Node) subscribeSharedLocked(group, filter string, in *interest) error {
	if n.share.nc == nil {
		return errors.New("cluster: no connection for shared subscriptions")
	}
	subjects, err := filterSubjects(filter)
	if err != nil {
		return err
	}
	q := shareQueue(group, filter)
	all := make([]string, 0, 2*len(subjects))
	for _, s := range subjects {
		all = append(all, s, subjSharedRetained+"."+s)
	}
	for _, s := range all {
		sub, err := n.share.nc.ChanQueueSubscribe(s, q, n.inbound)
		if err != nil {
			return err
		}
		n.share.live.Add(1)
		in.subs = append(in.subs, sub)
	}
	// Messages offered again are published on the first connection, whose
	// NoEcho makes NATS choose another node than the one offering.
	sub, err := n.nc.ChanQueueSubscribe(shareRedoFilter(q), q, n.inbound)
	if err != nil {
		return err
	}
	in.subs = append(in.subs, sub)
	if err := n.share.nc.FlushTimeout(2 * time.Second); err != nil {
		n.log.Debug("cluster: flush of shared subscriptions", "group", group, "topic", filter, "err", err)
	}
	return nil
}

// forwardRetainedShared publishes a retained message the node forwards
// for the shared queue subscriptions too (subjRetained reaches every node,
// whose republication skips shared groups). n.pubMu is held.
func (n *Node) forwardRetainedShared(t string, body []byte) {
	if strings.HasPrefix(t, "$") {
		return
	}
	if err := n.nc.Publish(subjSharedRetained+"."+topicSubject(t), body); err != nil {
		n.log.Warn("cluster: forward to shared subscriptions", "topic", t, "err", err)
	}
}

// RouteShared tells the broker that the cluster gives a message to one
// member of a shared subscription group (broker.SharedRouteHook): the
// forward of the message reaches the group's queue subscriptions, and a
// message republished from the cluster was given to the group where it was
// published. Groups on '$' topics, and every group while the node does not
// forward, are left to the broker.
func (n *Node) RouteShared(m *broker.Message, group, filter string) bool {
	if strings.HasPrefix(m.Topic, "$") || strings.HasPrefix(filter, "$") {
		return false
	}
	if _, ok := n.republish.Load(m); ok {
		return true // [MQTT-4.8.2-3]: one member of the cluster's group got it already
	}
	return n.running()
}

// deliverShared gives a message NATS chose this node for to one local
// member of (group, filter) [MQTT-4.8.2-3], or offers it to the group
// again if the node has none left.
func (n *Node) deliverShared(msg *nats.Msg, group, filter string) {
	m, err := decodeMessage(msg.Data)
	if err != nil {
		n.dropped.Add(1)
		n.log.Warn("cluster: bad message from the cluster", "err", err)
		n.answerOffer(msg.Reply, false)
		return
	}
	// Taken from the cluster, as the messages of the ordinary interest
	// (NATS may pick this node for a message of its own publishers too).
	n.forwardedIn.Add(1)
	ok, err := n.srv.DeliverShared(m, group, filter)
	kept := err == nil || m.QoS == 0
	if !kept {
		n.acks.publishLost.Add(1) // not stored: the next mark answered says lost (acks.go)
		n.log.Warn("cluster: cannot store a message from the cluster for a shared subscription",
			"group", group, "topic", m.Topic, "err", err)
	}
	if ok {
		n.share.delivered.Add(1)
		n.answerOffer(msg.Reply, kept) // an offer from another node (offers.go)
		return
	}
	hop := 0
	if rest, ok := strings.CutPrefix(msg.Subject, subjShared+"."); ok {
		h, _, _ := strings.Cut(rest, ".")
		hop, _ = strconv.Atoi(h)
	}
	if hop >= maxShareHops {
		n.shareLost(group, m.Topic, hop+1, nil)
		n.answerOffer(msg.Reply, kept) // no member took it: nothing was promised
		return
	}
	// On the NoEcho connection: NATS chooses another node. A QoS 1 or 2
	// offer is answered, and the marks this node reaches meanwhile wait
	// for the answer (offers.go).
	offer := &nats.Msg{Subject: shareRedoSubject(msg.Sub.Queue, hop+1), Data: msg.Data}
	var seq uint64
	if m.QoS > 0 {
		seq, offer.Reply = n.issueOffer(msg.Reply)
	}
	if err := n.nc.PublishMsg(offer); err != nil {
		if m.QoS > 0 {
			n.settleOffer(seq, false) // counted lost: the next mark answered says so (offers.go)
		}
		n.shareLost(group, m.Topic, hop+1, err)
		return
	}
	n.share.redone.Add(1)
}

// shareLost counts a message no member of its group took: in the node's
// undeliverable drops too (Stats.Dropped, logged by watchDrops).
func (n *Node) shareLost(group, t string, offers int, err error) {
	n.share.lost.Add(1)
	n.dropped.Add(1)
	n.log.Debug("cluster: shared subscription message lost: no member of the group took it",
		"group", group, "topic", t, "offers", offers, "err", err)
}

// SharedCounts returns how many messages this node gave to a local member
// of a shared subscription group for the cluster, offered to a group again
// (its member here had left), and lost (no member took them).
func (n *Node) SharedCounts() (delivered, redone, lost int64) {
	return n.share.delivered.Load(), n.share.redone.Load(), n.share.lost.Load()
}

// shareLinger is how long a node keeps the queue subscriptions of a group
// whose last local member left: the other nodes learn of the unsubscribe
// through the routes, and until then NATS may still choose this node for
// the group. What comes meanwhile is offered to the group again.
const shareLinger = 2 * time.Second

// lingerSharedLocked ends the NATS subscriptions of the shared
// subscription key f, which has no local member left: the one of the
// messages offered again at once (so that they go to the other nodes), the
// others after shareLinger. It reports false if f is not a shared key or
// the node does not forward (the caller unsubscribes at once). n.mu is
// held.
func (n *Node) lingerSharedLocked(f string, in *interest) bool {
	if _, _, ok := shareKey(f); !ok || !n.ready || n.closed || n.share.nc == nil {
		return false
	}
	var rest []*nats.Subscription
	for _, s := range in.subs {
		if strings.HasPrefix(s.Subject, subjShared+".") {
			n.unsubscribeLocked(f, s)
			continue
		}
		rest = append(rest, s)
	}
	if len(rest) == 0 {
		return true
	}
	time.AfterFunc(shareLinger, func() {
		n.mu.Lock()
		defer n.mu.Unlock()
		for _, s := range rest {
			n.unsubscribeLocked(f, s)
		}
	})
	return true
}

// unsubscribeLocked ends one NATS subscription of the interest key f,
// counting what NATS dropped for it. n.mu is held.
func (n *Node) unsubscribeLocked(f string, s *nats.Subscription) {
	n.share.forget(s)
	if d, err := s.Dropped(); err == nil {
		n.ncDropped += int64(d)
	}
	if err := s.Unsubscribe(); err != nil && !errors.Is(err, nats.ErrConnectionClosed) &&
		!errors.Is(err, nats.ErrBadSubscription) {
		n.log.Warn("cluster: unsubscribe", "topic", f, "err", err)
	}
}

// OfferShared gives a message a leaving member of (group, filter) did not
// deliver, and that no member on this node is left to take, to the
// group's members on the other nodes (broker.SharedOfferHook): it is
// offered to the group as a message offered again.
func (n *Node) OfferShared(m *broker.Message, group, filter string) bool {
	if strings.HasPrefix(m.Topic, "$") || strings.HasPrefix(filter, "$") || !n.running() || n.share.nc == nil {
		return false
	}
	body, err := encodeMessage(m, time.Now())
	if err != nil {
		return errors.Is(err, errExpired) // an expired message is for no one [MQTT-3.3.2-5]
	}
	if err := n.nc.Publish(shareRedoSubject(shareQueue(group, filter), 1), body); err != nil { // another node
		n.log.Warn("cluster: offer to a shared subscription group", "group", group, "topic", m.Topic, "err", err)
		return false
	}
	n.share.redone.Add(1)
	return true
}
