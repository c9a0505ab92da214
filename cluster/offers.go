package cluster

import (
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
)

// Offers to a shared subscription group elsewhere, covered by the
// acknowledgement wait.
//
// A node NATS chose for a message of a shared group whose member here has
// left offers the message to the group on the other nodes (deliverShared).
// The publisher's node knows nothing of that offer: its mark reaches only
// the node NATS chose, which would answer once it had made the offer, while
// the message was still on its way to the node taking it. So a QoS 1 or 2
// offer carries a reply subject (ctl.<node>.offered.<seq>), and the node
// taking it answers there once its broker has the message ("ok"), or once
// it gave up on it ("lost": its store refused it), or once its own offer
// onwards was answered (a chain of at most maxShareHops). A mark this node
// reaches while offers it made are unanswered is answered when they are,
// saying "lost" if one of them failed or was not answered within
// offerTimeout. An offer no node subscribes to any more is answered by
// NATS at once (no responders): no member anywhere, nothing promised. The
// node making no offers pays nothing: the mark is answered at once.
//
// Messages a leaving member leaves behind (OfferShared) were acknowledged
// long before; their offers carry no reply subject, but the node taking
// one covers its own offers onwards all the same.

// offerTimeout bounds the wait for the answer to one offer.
const offerTimeout = 5 * time.Second

// subjOffered is the suffix of ctl.<node> where a node's offers are answered.
const subjOffered = ".offered."

// offerState is the node's offers awaiting their answers.
type offerState struct {
	mu      sync.Mutex
	prefix  string                // ctl.<node>.offered.
	next    uint64                // offers made
	open    map[uint64]*openOffer // offers not answered yet
	failed  uint64                // offers that failed, counted
	waiting []offerWait           // mark answers waiting for offers
}

type openOffer struct {
	upstream string // the reply subject of the offer this one continues ("" if none)
	timer    *time.Timer
}

// offerWait is a mark's answer waiting until every offer numbered up to
// upTo is answered; failed is offerState.failed when it began to wait.
type offerWait struct {
	upTo, failed uint64
	send         func(lost bool)
}

// issueOffer opens an offer continuing the one answered on upstream (if any)
// and returns its number and reply subject.
func (n *Node) issueOffer(upstream string) (uint64, string) {
	o := &n.offers
	o.mu.Lock()
	defer o.mu.Unlock()
	o.next++
	seq := o.next
	if o.open == nil {
		o.open = make(map[uint64]*openOffer)
	}
	oo := &openOffer{upstream: upstream}
	oo.timer = time.AfterFunc(offerTimeout, func() { n.settleOffer(seq, false) })
	o.open[seq] = oo
	return seq, o.prefix + strconv.FormatUint(seq, 10)
}

// settleOffer records the answer to offer seq, passes it on to the offer
// it continues, and sends the mark answers that waited only for it.
func (n *Node) settleOffer(seq uint64, ok bool) {
	o := &n.offers
	o.mu.Lock()
	oo := o.open[seq]
	if oo == nil {
		o.mu.Unlock()
		return // answered already, or timed out
	}
	delete(o.open, seq)
	oo.timer.Stop()
	if !ok {
		o.failed++
		// A mark reached before this answer came, but after the offer,
		// says lost too (acks.go compares the count).
		n.acks.publishLost.Add(1)
	}
	low := o.next + 1 // the lowest offer still open
	for s := range o.open {
		low = min(low, s)
	}
	type answer struct {
		send func(lost bool)
		lost bool
	}
	var ready []answer
	kept := o.waiting[:0]
	for _, h := range o.waiting {
		if h.upTo < low {
			ready = append(ready, answer{h.send, o.failed > h.failed})
		} else {
			kept = append(kept, h)
		}
	}
	clear(o.waiting[len(kept):])
	o.waiting = kept
	o.mu.Unlock()
	n.answerOffer(oo.upstream, ok)
	for _, a := range ready {
		a.send(a.lost)
	}
}

// holdAnswer makes send wait for the offers made so far; false when none
// is open (the caller sends at once).
func (n *Node) holdAnswer(send func(lost bool)) bool {
	o := &n.offers
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.open) == 0 {
		return false
	}
	o.waiting = append(o.waiting, offerWait{upTo: o.next, failed: o.failed, send: send})
	return true
}

// answerOffer answers an offer this node took (its reply subject, "" for
// none): ok once its broker has the message or no member anywhere wanted
// it, false when it was lost here.
func (n *Node) answerOffer(reply string, ok bool) {
	if reply == "" {
		return
	}
	v := "ok"
	if !ok {
		v = "lost"
	}
	if err := n.nc.Publish(reply, []byte(v)); err != nil {
		n.log.Warn("cluster: answer an offer to a shared subscription group", "err", err)
	}
}

// onOffered takes the answer to one of this node's offers.
func (n *Node) onOffered(msg *nats.Msg) {
	_, s, _ := strings.Cut(msg.Subject, subjOffered)
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return
	}
	// NATS answers 503 (no responders) itself when no node holds the
	// group any more: no member took it, nothing was promised.
	noMember := len(msg.Data) == 0 && msg.Header.Get("Status") == "503"
	n.settleOffer(seq, noMember || string(msg.Data) == "ok")
}
