package cluster

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/broker"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Acknowledgements of forwarded messages.
//
// A QoS 1 or 2 message published on this node and forwarded to others is
// acknowledged to its publisher only once every node that may have
// received it has published it to its own broker, which stores it (and
// copies it to the sessions bucket) for the persistent sessions that want
// it before it answers. Otherwise a node that dies with the message still
// in its queue loses a message its publisher was told was taken.
//
// Which nodes received a message NATS does not tell per message, but the
// embedded server counts what it sends on each route: once a flush shows
// that what this node published was routed, a node whose routes' count
// did not move since it last confirmed was sent nothing, and is not asked.
// To each of the others, after the messages, this node publishes a mark
// ("K NODE") on subjMark.<that node>. The node receives it in the same
// stream as this node's messages (NATS keeps one connection's order on a
// route), so once its publishLoop reaches the mark, every message of this
// node before the mark has been published there, with its store writes. It answers on
// ctl.<node>.marked with "K ok NODE", or "K lost NODE" when it dropped any
// QoS 1 or 2 message from the cluster since it answered this node's mark
// before the previous one (its queue was over its bound, NATS found it a
// slow consumer, or its broker refused one): two marks back, since a
// message of this mark may have been dropped before the previous mark was
// answered (lossHistory).
//
// A mark fails when an answer says lost, when an answer does not come
// within markTimeout, or when a link went down before the answers came; in
// the last case only the messages forwarded while that link was up fail
// (what was on the link then may be lost). watchRoutes looks at the links every
// routeCountInterval and numbers each set of links it sees (a
// generation); each forwarded message is known by the generation it was
// forwarded in, so a link lost before a message was forwarded does not
// fail it. A failed mark fails the publishers with messages in its range
// (AwaitAcks): their acknowledgements are withheld and their connections
// closed, and the clients send the messages again.
//
// One mark is in flight at a time; the publishers that forwarded while it
// was wait for the next, so marks batch themselves (one per round trip)
// however many publishers there are.
//
// Shared subscriptions (shared.go) receive on the node's second NATS
// connection, which the server feeds apart from the first: a mark on the
// first says nothing of what waits on the second. But the server handed
// the second connection what came before the mark before it handed the
// first the mark. So when publishLoop reaches a mark, echoMarks flushes
// the second connection (its PONG comes after those messages, which its
// reader put in the node's channel first) and then puts an echo of the
// mark in the channel; the mark is answered when publishLoop reaches the
// echo. The second connection has echo on: a message this node forwards
// may be chosen for its own member of a shared group, and wait in its own
// queue like one from another node. So while the node holds shared queue
// subscriptions and the server handed that connection anything since the
// last mark, the node marks itself too, on subjMark.<node>.own, which only
// the second connection subscribes to, and publishLoop answers that mark
// in place. A message the node offers to its group elsewhere (its member
// left) holds the answers to the marks reached after it until the node
// taking it answered (offers.go).

// subjMark is where a node receives marks: subjMark.<node>, and its own
// on subjMark.<node>.own.
const subjMark = subjControl + ".mark"

// markTimeout bounds the wait for the answers to one mark.
const markTimeout = 10 * time.Second

// testEcho, set by tests only, is called by echoMarks for each mark
// reached, before its echo.
var testEcho atomic.Pointer[func(n *Node)]

// testMarkRange, set by tests only, is called by runMark after its flush,
// before it reads the routes' counts and the range of the mark.
var testMarkRange atomic.Pointer[func(n *Node)]

// maxFailedRanges is how many failed marks are remembered for publishers
// that ask late; one asking about tokens older than those is failed too.
const maxFailedRanges = 1024

// errMarkLost, errLinkChanged and errMarkTimeout say why a mark failed.
var (
	errMarkLost    = errors.New("cluster: a node dropped messages from this node")
	errLinkChanged = errors.New("cluster: a link to a node went down or came back while messages were on it")
	errMarkTimeout = errors.New("cluster: a node did not confirm the messages in time")
	errMarkUnsure  = errors.New("cluster: a node did not answer an earlier mark in time, so its answer cannot confirm these messages")
)

// ackState is the forwarding side's bookkeeping. seq and gens are guarded
// by Node.pubMu (they number what is published on the link); the rest by
// mu.
type ackState struct {
	seq  uint64     // forwarded QoS 1 and 2 messages, under Node.pubMu
	gens []genStart // the generation of the links each token was forwarded in, under Node.pubMu
	gen  atomic.Uint64

	gating atomic.Bool  // a lost node's sessions are not held yet: what is forwarded fails (holdgate.go)
	doomed []tokenRange // tokens forwarded while gating, under mu (and Node.pubMu to add)

	mu      sync.Mutex
	want    uint64        // the largest token a publisher waits for
	settled uint64        // every token up to it has its result
	forgot  uint64        // tokens up to it whose failure may have been forgotten
	failed  []tokenRange  // recent failed marks, oldest first
	changed chan struct{} // closed and replaced when settled moves
	kick    chan struct{} // wakes markLoop (buffer 1)
	marks   uint64        // marks sent
	cur     *markRound    // the mark in flight

	routes map[uint64]map[string][]uint64 // route ids by generation, from the oldest a token may need
	sentTo map[string]routeCount          // messages out on each node's routes when it last confirmed (markLoop only)
	ownOut uint64                         // messages out to the second connection when it last confirmed (markLoop only)

	slowConsumers atomic.Int64 // slow consumer events of the node's NATS connection
	publishLost   atomic.Int64 // QoS 1 and 2 messages from the cluster the broker refused, or undecodable

	// The answering side (publishLoop only): the counts of dropped
	// messages when each node's last two marks were answered.
	lossAt map[string]lossHistory

	// unsure counts, by node, the next marks to it that fail whatever it
	// answers (markLoop only): a mark it did not answer before its round
	// ended leaves the baseline of those marks' answers unknown.
	unsure map[string]int
}

// lossHistory is the count of dropped messages (queue, slow consumer,
// broker) when a node's last mark was answered, and when the one before
// was.
//
// A mark's answer compares the counts with those of two marks back, not
// one: a message forwarded after a mark may reach the answering node
// before that mark's answer is sent (the answer waits for the echo), so a
// drop of it may come before the answer of the mark before its own. It
// cannot come before the answer of the mark two back: the forwarding node
// forwards it after it read the range of the previous mark, which it did
// once every answer to the mark before that came. (A node whose answer
// did not come, a round ended by a timeout or a lost link, makes the next
// two marks to it fail: ackState.unsure.) So a drop fails the mark whose
// messages it lost, and the next one.
type lossHistory struct{ last, before [3]int64 }

// tokenRange is the range of a failed mark, with why it failed.
type tokenRange struct {
	first, last uint64
	err         error
}

// genStart says that tokens from seq on were forwarded in generation gen
// of the links (until the next genStart).
type genStart struct{ seq, gen uint64 }

// markRound is one mark in flight.
type markRound struct {
	k    uint64
	need map[string]bool // nodes whose answer is awaited
	lost bool
	done chan struct{} // closed when need is empty
}

// initAcks prepares the state before anything is forwarded.
func (n *Node) initAcks() {
	a := &n.acks
	a.changed = make(chan struct{})
	a.kick = make(chan struct{}, 1)
	a.lossAt = make(map[string]lossHistory)
	a.unsure = make(map[string]int)
	a.routes = map[uint64]map[string][]uint64{0: routeIDs(n.ns)}
	a.sentTo = make(map[string]routeCount)
}

// holdForward numbers a QoS 1 or 2 message just published on the link and
// makes its publisher's acknowledgement wait for the mark that covers it.
// Call with Node.pubMu held, after the publish.
func (n *Node) holdForward(m *broker.Message) {
	a := &n.acks
	a.seq++
	if g := a.gen.Load(); len(a.gens) == 0 || a.gens[len(a.gens)-1].gen != g {
		a.gens = append(a.gens, genStart{a.seq, g})
	}
	m.HoldAck(a.seq)
	if a.gating.Load() {
		a.mu.Lock()
		if k := len(a.doomed); k > 0 && a.doomed[k-1].last == a.seq-1 {
			a.doomed[k-1].last = a.seq
		} else {
			a.doomed = append(a.doomed, tokenRange{a.seq, a.seq, errUnheld})
			if len(a.doomed) > maxFailedRanges {
				a.doomed = slices.Delete(a.doomed, 0, 1)
			}
		}
		a.mu.Unlock()
	}
}

// watchRoutes numbers the sets of links as they change (ackState.gen):
// it counts them every routeCountInterval and looks at them all when the
// count changed or markIdleRefresh has passed.
func (n *Node) watchRoutes() {
	defer n.wg.Done()
	a := &n.acks
	a.mu.Lock()
	cur := a.routes[a.gen.Load()]
	a.mu.Unlock()
	count, looked := n.ns.NumRoutes(), time.Now()
	tick := time.NewTicker(routeCountInterval)
	defer tick.Stop()
	for {
		select {
		case <-n.done:
			return
		case now := <-tick.C:
			c := n.ns.NumRoutes()
			if c == count && now.Sub(looked) < markIdleRefresh {
				continue
			}
			count, looked = c, now
			ids := routeIDs(n.ns)
			if sameRoutes(cur, ids, nil) && sameRoutes(ids, cur, nil) {
				continue
			}
			// A node lost closes the hold gate before the generation
			// moves: a message forwarded from then on fails.
			for name := range cur {
				if _, ok := ids[name]; !ok {
					n.linkLostAt.Store(time.Now().UnixNano()) // reads of the buckets retry soon (readFirstWait)
					n.gateLost(name, ids)
				}
			}
			for name := range ids {
				if _, ok := cur[name]; !ok {
					n.gateBack(name)
				}
			}
			cur = ids
			a.mu.Lock()
			g := a.gen.Load() + 1
			a.routes[g] = ids
			a.gen.Store(g)
			a.mu.Unlock()
			// watchLinks looks now, not at its next tick: a node lost
			// has its sessions held the sooner (standby.go).
			select {
			case n.linkWake <- struct{}{}:
			default:
			}
		}
	}
}

// AwaitAcks waits until the messages with tokens first..last, forwarded by
// the client's read burst, are confirmed by every node that may have
// received them (broker.AckGate).
func (n *Node) AwaitAcks(_ *broker.ClientInfo, first, last uint64) error {
	a := &n.acks
	a.mu.Lock()
	for i := len(a.doomed) - 1; i >= 0; i-- {
		if r := a.doomed[i]; first <= r.last && last >= r.first {
			a.mu.Unlock()
			return fmt.Errorf("%w (forwarded messages %d to %d)", r.err, r.first, r.last)
		}
	}
	timer := time.NewTimer(2 * markTimeout)
	defer timer.Stop()
	if last > a.want {
		a.want = last
		select {
		case a.kick <- struct{}{}:
		default:
		}
	}
	for a.settled < last {
		ch := a.changed
		a.mu.Unlock()
		select {
		case <-ch:
		case <-n.done:
			return broker.ErrServerClosed
		case <-timer.C:
			return errMarkTimeout
		}
		a.mu.Lock()
	}
	defer a.mu.Unlock()
	if first <= a.forgot {
		return errMarkTimeout
	}
	for _, r := range a.failed {
		if first <= r.last && last >= r.first {
			return fmt.Errorf("%w (forwarded messages %d to %d)", r.err, r.first, r.last)
		}
	}
	return nil
}

// markLoop sends the marks the publishers wait for, one at a time.
func (n *Node) markLoop() {
	defer n.wg.Done()
	a := &n.acks
	for {
		select {
		case <-n.done:
			return
		case <-a.kick:
		}
		for {
			a.mu.Lock()
			want, settled := a.want, a.settled
			a.mu.Unlock()
			if want <= settled {
				break
			}
			last, lostUpTo, err := n.runMark()
			a.mu.Lock()
			if lostUpTo > a.settled {
				a.settleLocked(lostUpTo, errLinkChanged)
			}
			if last > a.settled {
				a.settleLocked(last, err)
			}
			a.mu.Unlock()
			if lostUpTo != 0 && err == nil {
				err = errLinkChanged // for the log line below
			}
			if err != nil {
				n.log.Warn("cluster: forwarded messages not confirmed: their publishers are disconnected and send them again",
					"err", err)
			}
			select {
			case <-n.done:
				return
			default:
			}
		}
	}
}

// watchRoutes counts the links every routeCountInterval and looks at them
// all when the count changed, or every markIdleRefresh (a link replaced by
// another between two counts).
const (
	routeCountInterval = 10 * time.Millisecond
	markIdleRefresh    = 200 * time.Millisecond
)

// settleLocked gives every token up to last its result. Under mu.
func (a *ackState) settleLocked(last uint64, err error) {
	if err != nil {
		a.failed = append(a.failed, tokenRange{a.settled + 1, last, err})
		if len(a.failed) > maxFailedRanges {
			a.forgot = a.failed[0].last
			a.failed = slices.Delete(a.failed, 0, 1)
		}
	}
	a.settled = last
	close(a.changed)
	a.changed = make(chan struct{})
}

// runMark publishes one mark and waits for its answers. It returns the
// last token the mark covers, the last of those forwarded while a link
// that is gone now was up (0: none; they fail whatever the answers), and
// the result of the others.
func (n *Node) runMark() (last, lostUpTo uint64, err error) {
	a := &n.acks
	a.mu.Lock()
	a.marks++
	round := &markRound{k: a.marks, need: map[string]bool{}, done: make(chan struct{})}
	first := a.settled + 1
	a.mu.Unlock()

	// Which nodes were sent anything since they last confirmed: once the
	// embedded server has routed what was published before (a flush),
	// a route's count of messages out has moved if anything of this
	// node went to that node. Only those need to answer: a node with no
	// interest in what was published (a subscriber on this node, say) got
	// nothing that it could lose. Other traffic on the route (JetStream)
	// only asks more nodes than needed.
	flushErr := n.nc.FlushTimeout(markTimeout)
	if f := testMarkRange.Load(); f != nil {
		(*f)(n)
	}
	// The counts this mark takes as confirmed are read before its range,
	// and the range under pubMu: a message counted on a route was
	// published on the connection before the counts were read, inside the
	// forwarder's pubMu section that gives it its token, so its token is in
	// the range and a node that drops it fails this mark. (The range read
	// before the flush left out a message forwarded during it, whose count
	// this mark took as confirmed: the next mark did not ask that node, and
	// the message was acknowledged although the node had dropped it.) A
	// message in the range but not yet routed when the counts are read goes
	// before the mark all the same; its count only makes the next mark ask
	// again. Nothing is read from the server while forwarding waits.
	var out map[string]routeCount
	shared := n.share.live.Load() > 0
	own, ownOK := uint64(0), true
	if flushErr == nil {
		out = routeOut(n.ns)
		if shared {
			own, ownOK = n.ownOut()
		}
	}
	n.pubMu.Lock()
	last = a.seq
	// The links when each message of the range was forwarded: each may
	// have carried it. Generations no token needs any more go.
	nowGen := a.gen.Load()
	since := nowGen
	if i := sort.Search(len(a.gens), func(i int) bool { return a.gens[i].seq > first }) - 1; i >= 0 {
		since = a.gens[i].gen
		a.gens = a.gens[i:]
	}
	a.mu.Lock()
	now := a.routes[nowGen]
	var lostGen uint64 // the last generation with a link that is gone now
	lost := false
	for g, r := range a.routes {
		if g < since {
			delete(a.routes, g)
		} else if !sameRoutes(r, now, n.hasLeft) && (!lost || g > lostGen) {
			lostGen, lost = g, true
		}
	}
	a.mu.Unlock()
	if lost {
		// A message forwarded in a generation up to lostGen may have gone
		// on a link that is gone: those fail. The ones forwarded later did
		// not (messages no waiter asked about, say, from before a node
		// left, do not fail the publishers that came after).
		lostUpTo = last
		for _, g := range a.gens {
			if g.gen > lostGen {
				lostUpTo = g.seq - 1
				break
			}
		}
		if lostUpTo < first {
			lostUpTo = 0
		}
	}
	n.pubMu.Unlock()
	if flushErr != nil {
		return last, lostUpTo, fmt.Errorf("cluster: flush before a mark: %w", flushErr)
	}
	body := fmt.Appendf(nil, "%d %s", round.k, n.cfg.Node)
	a.mu.Lock()
	for name := range now {
		if o, ok := out[name]; !ok || o != a.sentTo[name] {
			round.need[name] = true
		}
	}
	if shared && (!ownOK || own != a.ownOut) {
		round.need[n.cfg.Node] = true // its own shared subscriptions may hold some
	}
	waiting := len(round.need) > 0 // round.need is onMarked's (under mu) from here
	need := make([]string, 0, len(round.need))
	unsure := false
	for name := range round.need {
		need = append(need, name)
		if a.unsure[name] > 0 {
			a.unsure[name]--
			unsure = true
		}
	}
	a.cur = round
	a.mu.Unlock()
	defer func() {
		// The nodes that did not answer: the next two marks to them fail.
		a.mu.Lock()
		for name := range round.need {
			a.unsure[name] = 2
		}
		a.mu.Unlock()
		if unsure && err == nil {
			err = errMarkUnsure
		}
	}()
	for _, name := range need {
		subj := subjMark + "." + encodeLevel(name)
		if name == n.cfg.Node {
			subj += ownMark
		}
		if err = n.nc.Publish(subj, body); err != nil {
			break
		}
	}
	// What the marks add to the counts: one message on each route, one to
	// the second connection.
	for name, o := range out {
		if slices.Contains(need, name) {
			o.msgs++
		}
		a.sentTo[name] = o
	}
	if slices.Contains(need, n.cfg.Node) {
		own++
	}
	a.ownOut = own
	defer func() {
		a.mu.Lock()
		a.cur = nil
		a.mu.Unlock()
	}()
	switch {
	case err != nil:
		return last, lostUpTo, fmt.Errorf("cluster: publish a mark: %w", err)
	case !waiting:
		return last, lostUpTo, nil
	}

	timeout := time.NewTimer(markTimeout)
	defer timeout.Stop()
	tick := time.NewTicker(routeCountInterval)
	defer tick.Stop()
	lostLink := func() bool {
		if a.gen.Load() == nowGen {
			return false
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		return !sameRoutes(now, a.routes[a.gen.Load()], n.hasLeft)
	}
	// A node that left (leave.go) and whose links are gone answers no
	// more: it had nothing to lose.
	dropLeft := func() {
		a.mu.Lock()
		defer a.mu.Unlock()
		cur := a.routes[a.gen.Load()]
		for name := range round.need {
			if _, up := cur[name]; !up && n.hasLeft(name) {
				round.answered(name, true)
			}
		}
	}
	for {
		select {
		case <-round.done:
			a.mu.Lock()
			lost := round.lost
			a.mu.Unlock()
			if lost {
				return last, lostUpTo, errMarkLost
			}
			if lostLink() {
				return last, lostUpTo, errLinkChanged
			}
			return last, lostUpTo, nil
		case <-tick.C:
			if lostLink() {
				return last, lostUpTo, errLinkChanged
			}
			dropLeft()
		case <-timeout.C:
			return last, lostUpTo, errMarkTimeout
		case <-n.done:
			return last, lostUpTo, broker.ErrServerClosed
		}
	}
}

// sameRoutes reports whether every route of before is still up in now
// (routes added since lost nothing), but for the nodes skip reports (nil:
// none).
func sameRoutes(before, now map[string][]uint64, skip func(string) bool) bool {
	for name, ids := range before {
		if skip != nil && skip(name) {
			continue
		}
		for _, id := range ids {
			if !slices.Contains(now[name], id) {
				return false
			}
		}
	}
	return true
}

// ownOut returns the messages the embedded server handed the second
// connection (the shared subscriptions'); false if it cannot say.
func (n *Node) ownOut() (uint64, bool) {
	if n.share.nc == nil {
		return 0, true // nothing this node forwards can come that way
	}
	cid, err := n.share.nc.GetClientID()
	if err != nil {
		return 0, false
	}
	cz, err := n.ns.Connz(&server.ConnzOptions{CID: cid})
	if err != nil || len(cz.Conns) != 1 {
		return 0, false
	}
	return uint64(cz.Conns[0].OutMsgs), true
}

// onMarked takes another node's answer to a mark: "K ok|lost NODE".
func (n *Node) onMarked(msg *nats.Msg) {
	f := strings.Fields(string(msg.Data))
	if len(f) != 3 {
		return
	}
	n.marked(f[0], f[1], f[2])
}

// marked takes the answer verdict of node to mark k.
func (n *Node) marked(k, verdict, node string) {
	kn, err := strconv.ParseUint(k, 10, 64)
	if err != nil {
		return
	}
	a := &n.acks
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := a.cur; r != nil && r.k == kn {
		r.answered(node, verdict == "ok")
	}
}

// answered takes node's answer to the round (ok: nothing was lost), if
// the round waits for it; the last one awaited ends the round. Under
// ackState.mu.
func (r *markRound) answered(node string, ok bool) {
	if !r.need[node] {
		return
	}
	delete(r.need, node)
	if !ok {
		r.lost = true
	}
	if len(r.need) == 0 {
		close(r.done)
	}
}

// stampMark adds to a mark, as receive queues it, the count of messages
// the queue dropped so far.
func (n *Node) stampMark(msg *nats.Msg) {
	drops := n.overload[1].Load() // QoS 1 and 2: a QoS 0 message dropped was never promised
	data := make([]byte, 0, len(msg.Data)+21)
	data = append(append(append(data, msg.Data...), ' '), strconv.FormatInt(drops, 10)...)
	msg.Data = data
}

// ownMark is the suffix of the subject of a node's marks to itself.
const ownMark = ".own"

// markingState is the echo of marks (see the top of the file).
type markingState struct {
	echo chan *nats.Msg     // marks reached, for echoMarks
	sub  *nats.Subscription // the Sub of an echo (no subscription of NATS)
}

// isMark reports whether msg is a mark, its echo, or a mark of its own.
func (n *Node) isMark(msg *nats.Msg) bool {
	return msg.Sub != nil && (msg.Sub == n.markSub || msg.Sub == n.shareMarkSub || msg.Sub == n.marking.sub)
}

// echoMarks puts in the node's channel, for each mark publishLoop
// reached, its echo, once the second connection is flushed: publishLoop
// reaches the echo after every message that connection had from the
// mark's node before the mark.
func (n *Node) echoMarks() {
	defer n.wg.Done()
	for {
		var m *nats.Msg
		select {
		case <-n.done:
			return
		case m = <-n.marking.echo:
		}
		if f := testEcho.Load(); f != nil {
			(*f)(n)
		}
		if n.share.nc != nil {
			if err := n.share.nc.FlushTimeout(markTimeout); err != nil {
				n.acks.publishLost.Add(1) // what it holds is not known: the answer says lost
			}
		}
		select {
		case <-n.done:
			return
		case n.inbound <- m:
		}
	}
}

// reachMark takes a mark publishLoop reached: every message before it on
// its connection, from its node, has been published to the broker
// (flushed). A mark from another node goes to echoMarks; its echo, and a
// mark of this node's own, are answered. Publish loop only.
func (n *Node) reachMark(msg *nats.Msg) {
	f := strings.Fields(string(msg.Data)) // "K NODE DROPS" (stampMark added DROPS)
	if len(f) != 3 {
		return
	}
	k, node := f[0], f[1]
	if (msg.Sub == n.shareMarkSub) != (node == n.cfg.Node) {
		return // only its own marks come on the second connection, and only there
	}
	if msg.Sub == n.markSub {
		// The echo is stamped again when it is queued.
		echo := &nats.Msg{Subject: msg.Subject, Data: []byte(k + " " + node), Sub: n.marking.sub}
		select {
		case n.marking.echo <- echo:
		case <-n.done:
		}
		return
	}
	queued, err := strconv.ParseInt(f[2], 10, 64)
	if err != nil {
		return
	}
	a := &n.acks
	loss := [3]int64{queued, a.slowConsumers.Load(), a.publishLost.Load()}
	h := a.lossAt[node]
	verdict := "ok"
	if loss != h.before {
		verdict = "lost"
	}
	a.lossAt[node] = lossHistory{last: loss, before: h.last}
	send := func(offerLost bool) {
		v := verdict
		if offerLost {
			v = "lost"
		}
		if node == n.cfg.Node {
			n.marked(k, v, node)
			return
		}
		body := k + " " + v + " " + n.cfg.Node
		if err := n.nc.Publish(subjControl+"."+encodeLevel(node)+".marked", []byte(body)); err != nil {
			n.log.Warn("cluster: answer a mark", "peer", node, "err", err)
		}
	}
	// After the answers to the offers made so far (offers.go).
	if !n.holdAnswer(send) {
		send(false)
	}
}

// routeOut returns, by node name, the messages this node's server sent on
// its routes to it that may carry the node's messages: the pooled routes
// (the global account's), not those pinned to another account (the system
// account's, busy with JetStream's own traffic).
func routeOut(ns *server.Server) map[string]routeCount {
	out := map[string]routeCount{}
	rz, err := ns.Routez(nil)
	if err != nil {
		return out
	}
	for _, r := range rz.Routes {
		if r.RemoteName != "" && (r.Account == "" || r.Account == server.DEFAULT_GLOBAL_ACCOUNT) {
			c := out[r.RemoteName]
			c.msgs += r.OutMsgs
			c.ids += r.Rid
			out[r.RemoteName] = c
		}
	}
	return out
}

// routeCount is what a node's routes sent, and which routes they are (the
// sum of their ids: a link made again, or a node of the same name that
// came back, has new ones, whose counts start again from 0 and could
// otherwise match the old routes' by chance).
type routeCount struct {
	msgs int64
	ids  uint64
}

// routeIDs returns, by node name, the ids of this node's routes to it: a
// link made again has new ids.
func routeIDs(ns *server.Server) map[string][]uint64 {
	out := map[string][]uint64{}
	rz, err := ns.Routez(nil)
	if err != nil {
		return out
	}
	for _, r := range rz.Routes {
		if r.RemoteName != "" {
			out[r.RemoteName] = append(out[r.RemoteName], r.Rid)
		}
	}
	return out
}
