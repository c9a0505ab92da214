package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// Message is an application message received from the server.
type Message struct {
	Topic    string // with any v5 topic alias resolved
	Payload  []byte
	QoS      byte
	Retain   bool
	Dup      bool
	PacketID uint16
	Props    *packet.Properties // v5 properties as received (nil if none)

	cn    *connState // the connection it arrived on, for the acknowledgement
	acked bool       // ManualAck: Ack was called; guarded by Client.ackMu
}

// Handler receives messages. Handlers run one at a time, in arrival order,
// on the client's delivery goroutine; the acknowledgement (PUBACK or
// PUBREC) is sent after the handler returns (or, with Options.ManualAck,
// when the application calls Client.Ack). A handler may call any Client
// method, including Publish and Subscribe.
//
// A slow handler delays acknowledgements, and so slows the server down:
// under MQTT 5 it sends no more unacknowledged QoS 1 and 2 messages than
// our Receive Maximum. QoS 0 messages are not acknowledged; while the
// handler is busy they queue up to Options.MaxQueuedQoS0 messages and
// Options.MaxQueuedBytes bytes, and beyond that the newly arriving QoS 0
// message is dropped and counted in Client.Dropped.
type Handler func(*Message)

// route sends messages matching any of filters to h: one per Subscribe call,
// so that a message matching several of its filters reaches h once.
type route struct {
	filters []string
	h       Handler
}

// subEntry is a granted subscription, kept for resubscribing.
type subEntry struct {
	sub   packet.Subscription
	props *packet.Properties
}

// Subscribe sends SUBSCRIBE and waits for SUBACK. Messages that match these
// filters go to h (nil = the default handler). If the server refuses some
// filters (a SUBACK code >= 0x80) the Suback is returned with an *AckError
// for the first refused filter; the granted ones stay subscribed.
// props carries v5 SUBSCRIBE properties such as a Subscription Identifier.
func (c *Client) Subscribe(ctx context.Context, subs []packet.Subscription, h Handler) (*packet.Suback, error) {
	return c.SubscribeWith(ctx, subs, nil, h)
}

// SubscribeWith is Subscribe with v5 SUBSCRIBE properties (e.g. a
// Subscription Identifier or user properties).
func (c *Client) SubscribeWith(ctx context.Context, subs []packet.Subscription, props *packet.Properties, h Handler) (*packet.Suback, error) {
	if len(subs) == 0 {
		// [MQTT-3.8.3-3] A SUBSCRIBE carries at least one filter.
		return nil, fmt.Errorf("client: subscribe: no topic filter")
	}
	for _, s := range subs {
		if !validFilter(s.Filter) {
			return nil, fmt.Errorf("client: subscribe: invalid topic filter %q", s.Filter)
		}
		if s.QoS > 2 {
			return nil, fmt.Errorf("client: subscribe %q: %w", s.Filter, ErrInvalidQoS)
		}
	}
	subs = append([]packet.Subscription(nil), subs...)
	filters := make([]string, len(subs))
	for i, s := range subs {
		filters[i] = s.Filter
	}
	// Route before sending: retained messages may follow the SUBACK at once.
	if h != nil {
		c.addRoute(filters, h)
	}
	cn, err := c.waitConnected(ctx)
	if err != nil {
		if h != nil {
			c.removeRoutes(filters)
		}
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	ack, err := c.subscribeOn(ctx, cn, subs, props)
	if err != nil {
		if h != nil {
			c.removeRoutes(filters)
		}
		return ack, err
	}
	return ack, c.checkSuback(subs, props, ack, h)
}

func (c *Client) subscribeOn(ctx context.Context, cn *connState, subs []packet.Subscription, props *packet.Properties) (*packet.Suback, error) {
	p, err := c.roundTrip(ctx, cn, func(id uint16) packet.Packet {
		return &packet.Subscribe{PacketID: id, Subscriptions: subs, Props: props}
	})
	if err != nil {
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	ack, ok := p.(*packet.Suback)
	if !ok || len(ack.ReasonCodes) != len(subs) {
		// [MQTT-3.8.4-6] One return code per filter, in order.
		err := fmt.Errorf("%w: SUBACK does not match SUBSCRIBE", ErrProtocol)
		return nil, fmt.Errorf("client: subscribe: %w", err)
	}
	return ack, nil
}

// checkSuback records the granted subscriptions and unroutes the refused.
func (c *Client) checkSuback(subs []packet.Subscription, props *packet.Properties, ack *packet.Suback, h Handler) error {
	var first error
	var refused []string
	c.mu.Lock()
	for i, s := range subs {
		rc := ack.ReasonCodes[i]
		if rc.IsError() {
			refused = append(refused, s.Filter)
			if first == nil {
				first = &AckError{Type: packet.SUBACK, ReasonCode: rc, ReasonString: reasonString(ack.Props), Filter: s.Filter}
			}
			continue
		}
		c.subs = slicesDeleteFilter(c.subs, s.Filter)
		c.subs = append(c.subs, subEntry{sub: s, props: props})
	}
	c.mu.Unlock()
	if len(refused) > 0 && h != nil {
		c.removeRoutes(refused)
	}
	return first
}

func slicesDeleteFilter(l []subEntry, filter string) []subEntry {
	out := l[:0]
	for _, e := range l {
		if e.sub.Filter != filter {
			out = append(out, e)
		}
	}
	return out
}

// resubscribe restores subscriptions on a connection whose server kept no
// session; consecutive entries with the same properties share a SUBSCRIBE.
func (c *Client) resubscribe(cn *connState, subs []subEntry) {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.ConnectTimeout)
	defer cancel()
	for len(subs) > 0 {
		n := 1
		for n < len(subs) && subs[n].props == subs[0].props {
			n++
		}
		batch := make([]packet.Subscription, n)
		for i := range n {
			batch[i] = subs[i].sub
		}
		ack, err := c.subscribeOn(ctx, cn, batch, subs[0].props)
		if err != nil {
			c.log.Warn("mqtt resubscribe failed", "err", err)
			return
		}
		for i, rc := range ack.ReasonCodes {
			if rc.IsError() {
				c.log.Warn("mqtt resubscribe refused", "filter", batch[i].Filter, "reason", rc)
			}
		}
		subs = subs[n:]
	}
}

// Unsubscribe sends UNSUBSCRIBE and waits for UNSUBACK; the filters' routes
// are removed. A v5 failure code is returned as an *AckError.
func (c *Client) Unsubscribe(ctx context.Context, filters ...string) (*packet.Unsuback, error) {
	if len(filters) == 0 {
		// [MQTT-3.10.3-2] An UNSUBSCRIBE carries at least one filter.
		return nil, fmt.Errorf("client: unsubscribe: no topic filter")
	}
	cn, err := c.waitConnected(ctx)
	if err != nil {
		return nil, fmt.Errorf("client: unsubscribe: %w", err)
	}
	fl := append([]string(nil), filters...)
	p, err := c.roundTrip(ctx, cn, func(id uint16) packet.Packet {
		return &packet.Unsubscribe{PacketID: id, Filters: fl}
	})
	if err != nil {
		return nil, fmt.Errorf("client: unsubscribe: %w", err)
	}
	ack, ok := p.(*packet.Unsuback)
	if !ok || (c.version == packet.V5 && len(ack.ReasonCodes) != len(fl)) {
		return nil, fmt.Errorf("client: unsubscribe: %w: UNSUBACK does not match UNSUBSCRIBE", ErrProtocol)
	}
	c.mu.Lock()
	for _, f := range fl {
		c.subs = slicesDeleteFilter(c.subs, f)
	}
	c.mu.Unlock()
	c.removeRoutes(fl)
	for i, rc := range ack.ReasonCodes {
		if rc.IsError() {
			return ack, &AckError{Type: packet.UNSUBACK, ReasonCode: rc, ReasonString: reasonString(ack.Props), Filter: fl[i]}
		}
	}
	return ack, nil
}

// SetDefaultHandler sets the handler for messages that match no
// subscription's handler (e.g. from a resumed session). nil drops them.
func (c *Client) SetDefaultHandler(h Handler) {
	if h == nil {
		c.defHandler.Store(nil)
		return
	}
	c.defHandler.Store(&h)
}

// addRoute adds a route for filters to h; the filters leave older routes.
func (c *Client) addRoute(filters []string, h Handler) {
	c.routeMu.Lock()
	defer c.routeMu.Unlock()
	var next []route
	if cur := c.routes.Load(); cur != nil {
		next = withoutFilters(*cur, filters)
	}
	next = append(next, route{filters: filters, h: h})
	c.routes.Store(&next)
}

// removeRoutes removes filters from every route.
func (c *Client) removeRoutes(filters []string) {
	c.routeMu.Lock()
	defer c.routeMu.Unlock()
	cur := c.routes.Load()
	if cur == nil {
		return
	}
	next := withoutFilters(*cur, filters)
	c.routes.Store(&next)
}

func withoutFilters(rs []route, filters []string) []route {
	out := make([]route, 0, len(rs))
	for _, r := range rs {
		var keep []string
		for _, f := range r.filters {
			if !contains(filters, f) {
				keep = append(keep, f)
			}
		}
		if len(keep) > 0 {
			out = append(out, route{filters: keep, h: r.h})
		}
	}
	return out
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// dispatch hands m to every route with a matching filter, or else to the
// default handler.
func (c *Client) dispatch(m *Message) {
	handled := false
	if rs := c.routes.Load(); rs != nil {
		for _, r := range *rs {
			for _, f := range r.filters {
				if matchFilter(f, m.Topic) {
					r.h(m)
					handled = true
					break
				}
			}
		}
	}
	if !handled {
		if h := c.defHandler.Load(); h != nil {
			(*h)(m)
		}
	}
}

// validFilter reports whether s is a well-formed topic filter
// (topic.ValidateFilter: wildcard placement, UTF-8, length, $share form).
func validFilter(s string) bool { return topic.ValidateFilter(s) == nil }

// matchFilter reports whether name matches filter; a shared subscription
// matches by its real filter.
func matchFilter(filter, name string) bool {
	if _, real, shared, err := topic.ParseShare(filter); shared {
		if err != nil {
			return false
		}
		filter = real
	}
	return topic.Match(filter, name)
}

// delivery is one received message waiting for its handler.
type delivery struct {
	msg *Message
	cn  *connState // the connection to acknowledge on
}

// inbox is the FIFO from the reader to the delivery goroutine; it never
// blocks the reader, so a handler may wait for acknowledgements. QoS 1/2
// messages are bounded by our Receive Maximum (v5) or by the server's own
// in-flight limit (3.x); QoS 0 messages by a count and a byte budget,
// beyond which push refuses them.
type inbox struct {
	mu   sync.Mutex
	q    []delivery
	wake chan struct{}

	max0, maxBytes int64        // QoS 0 limits, < 0 = none
	n0, bytes0     atomic.Int64 // QoS 0 messages and payload bytes queued or in a handler
}

// push queues d; it returns false for a QoS 0 message over the limits. Only
// the reader goroutine pushes, so the check and the add need no lock.
func (b *inbox) push(d delivery) bool {
	if d.msg.QoS == 0 {
		n, size := b.n0.Load(), b.bytes0.Load()
		l := int64(len(d.msg.Payload) + len(d.msg.Topic))
		if (b.max0 >= 0 && n >= b.max0) || (b.maxBytes >= 0 && n > 0 && size+l > b.maxBytes) {
			return false
		}
		b.n0.Add(1)
		b.bytes0.Add(l)
	}
	b.mu.Lock()
	b.q = append(b.q, d)
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	return true
}

// done0 gives back the room of a delivered QoS 0 message.
func (b *inbox) done0(m *Message) {
	b.n0.Add(-1)
	b.bytes0.Add(-int64(len(m.Payload) + len(m.Topic)))
}

// take swaps the queue for spare (emptied) and returns the queued items.
func (b *inbox) take(spare []delivery) []delivery {
	b.mu.Lock()
	q := b.q
	b.q = spare[:0]
	b.mu.Unlock()
	return q
}

// Dropped returns how many QoS 0 messages were dropped because the handler
// could not keep up (see Options.MaxQueuedQoS0).
func (c *Client) Dropped() uint64 { return c.dropped.Load() }

// deliverLoop runs handlers for received messages, one at a time, and then
// sends each acknowledgement: PUBACK for QoS 1 [MQTT-4.3.2-4], PUBREC for
// QoS 2 [MQTT-4.3.3-8]. With ManualAck the application acknowledges.
func (c *Client) deliverLoop() {
	defer c.wg.Done()
	var batch []delivery
	for {
		batch = c.inbox.take(batch)
		if len(batch) == 0 {
			select {
			case <-c.inbox.wake:
				continue
			case <-c.done:
				return
			}
		}
		for i := range batch {
			d := batch[i]
			batch[i] = delivery{}
			if d.msg.QoS == 0 {
				c.dispatch(d.msg)
				c.inbox.done0(d.msg)
				continue
			}
			if c.opts.ManualAck {
				c.ackMu.Lock()
				c.ackQ = append(c.ackQ, d.msg)
				c.ackMu.Unlock()
				c.dispatch(d.msg)
				continue
			}
			c.dispatch(d.msg)
			if !c.sendAck(d.msg) {
				return
			}
		}
	}
}

// sendAck queues the PUBACK or PUBREC of m on the connection it came from;
// false when the client has stopped.
func (c *Client) sendAck(m *Message) bool {
	var ack packet.Packet
	if m.QoS == 1 {
		ack = &packet.Puback{PacketID: m.PacketID}
		// PUBACK ends the exchange: the server's quota grows again.
		m.cn.inUnacked.Add(-1)
	} else {
		ack = &packet.Pubrec{PacketID: m.PacketID}
	}
	select {
	case c.out <- outItem{p: ack, gen: m.cn.gen}:
	case <-m.cn.dead:
	case <-c.done:
		return false
	}
	return true
}

// Ack acknowledges m when Options.ManualAck is set: the PUBACK (QoS 1) or
// PUBREC (QoS 2) goes to the server once every message received before m
// has been acknowledged too, as acknowledgements must go in the order the
// messages arrived [MQTT-4.6.0-2]. Acknowledge a message once it has really
// been processed; until then the server keeps it and re-sends it after a
// reconnection. A QoS 0 message needs no acknowledgement (Ack returns nil).
// Until a QoS 1/2 message is acknowledged it takes one place of our Receive
// Maximum.
func (c *Client) Ack(m *Message) error {
	if m.QoS == 0 {
		return nil
	}
	if !c.opts.ManualAck {
		return errors.New("client: Ack without Options.ManualAck (acknowledgements are automatic)")
	}
	c.ackMu.Lock()
	if m.acked {
		c.ackMu.Unlock()
		return errors.New("client: message acknowledged twice")
	}
	m.acked = true
	var due []*Message
	n := 0
	for ; n < len(c.ackQ); n++ {
		q := c.ackQ[n]
		if q.acked {
			due = append(due, q)
		} else if !q.cn.isDead() {
			break
		}
	}
	rest := copy(c.ackQ, c.ackQ[n:])
	clear(c.ackQ[rest:])
	c.ackQ = c.ackQ[:rest]
	c.ackMu.Unlock()
	for _, q := range due {
		if q.cn.isDead() {
			continue // the server sends it again on the next connection
		}
		if !c.sendAck(q) {
			return c.err
		}
	}
	return nil
}
