package client

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mqttd/mqttd/packet"
)

const (
	kindPublish byte = iota
	kindControl      // SUBSCRIBE or UNSUBSCRIBE
)

// flight is a packet identifier in use: an outgoing QoS 1/2 message or a
// SUBSCRIBE/UNSUBSCRIBE waiting for its acknowledgement. Fields below pub
// are guarded by Client.fmu.
type flight struct {
	id   uint16
	kind byte
	seq  uint64          // publish order, for re-sending in order
	pub  *packet.Publish // immutable once the flight is ready
	gen  uint64          // control: the connection it was sent on

	done func(error)    // publish: outcome callback, may be nil
	res  chan ctlResult // control: the acknowledgement

	ready    bool   // stored and queued; the writer may send it
	rel      bool   // PUBREC received; PUBREL is due
	relSent  bool   // PUBREL written at least once
	sent     bool   // written at least once (DUP on the next send)
	sentGen  uint64 // connection generation it was last written on
	finished bool
	// cn is the connection whose send quota this PUBLISH holds: it was
	// written there and is not yet acknowledged [MQTT-3.3.4-7].
	cn *connState
}

type ctlResult struct {
	p   packet.Packet
	err error
}

// finish reports the outcome; call it once, without locks held.
func (f *flight) finish(p packet.Packet, err error) {
	if f.done != nil {
		f.done(err)
	}
	if f.res != nil {
		f.res <- ctlResult{p: p, err: err}
	}
}

// serverLimits are what the last CONNACK allows us to publish.
type serverLimits struct {
	maxQoS   byte
	retainOK bool
}

// Publish sends a message and, for QoS 1 and 2, waits until the server has
// acknowledged it (PUBACK / PUBCOMP). A failure code from the server is
// returned as an *AckError wrapping the packet.ReasonCode. Concurrent calls
// pipeline up to the in-flight window. A QoS 0 message returns once queued.
//
// If ctx ends while waiting for the acknowledgement, the message stays in
// flight (and in the Store) and may still be delivered.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, o PublishOptions) error {
	if o.QoS == 0 {
		return c.PublishAsync(ctx, topic, payload, o, nil)
	}
	ch := make(chan error, 1)
	if err := c.PublishAsync(ctx, topic, payload, o, func(err error) { ch <- err }); err != nil {
		return err
	}
	select {
	case err := <-ch:
		return err
	case <-ctx.Done():
		return fmt.Errorf("client: publish: %w (the message stays in flight)", ctx.Err())
	}
}

// PublishAsync queues a message and returns at once; done (may be nil) is
// called with the outcome once the server has acknowledged it (QoS 0: once
// written). It blocks only while the in-flight window is full (or, briefly,
// while the write queue is). done runs on a client goroutine and must not
// block. payload is not copied: do not modify it until done is called.
func (c *Client) PublishAsync(ctx context.Context, topic string, payload []byte, o PublishOptions, done func(error)) error {
	if err := c.checkPublish(topic, &o); err != nil {
		return err
	}
	select {
	case <-c.done:
		return c.err
	default:
	}
	p := &packet.Publish{QoS: o.QoS, Retain: o.Retain, Topic: topic, Props: o.Props, Payload: payload}
	if o.QoS == 0 {
		select {
		case c.out <- outItem{p: p, done: done}:
			return nil
		case <-ctx.Done():
			return fmt.Errorf("client: publish: %w", ctx.Err())
		case <-c.done:
			return c.err
		}
	}
	f, err := c.acquire(ctx, p, done)
	if err != nil {
		return err
	}
	if st := c.opts.Store; st != nil {
		if err := st.Put(&StoredMessage{Seq: f.seq, Publish: p}); err != nil {
			c.fmu.Lock()
			if !f.finished {
				f.done = nil // the caller learns the outcome from our error
			}
			c.fmu.Unlock()
			c.complete(f, nil, err, false)
			return fmt.Errorf("client: store: %w", err)
		}
	}
	// Queue it for the writer. The queue holds at most the in-flight
	// window, so this never blocks, connected or not.
	c.fmu.Lock()
	f.ready = true
	if !f.finished {
		c.pubQ = append(c.pubQ, f)
	}
	c.fmu.Unlock()
	c.wakeWriter()
	return nil
}

// wakeWriter tells the writer that a flight may have become sendable.
func (c *Client) wakeWriter() {
	select {
	case c.sendWake <- struct{}{}:
	default:
	}
}

// takeFlights moves the flights that cn may send now from the send queues
// to buf: every due PUBREL, then PUBLISHes in order while the server's
// Receive Maximum allows [MQTT-3.3.4-7] (a PUBREL takes no quota).
func (c *Client) takeFlights(cn *connState, buf []*flight) []*flight {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	for _, f := range c.relQ {
		if !f.finished {
			buf = append(buf, f)
		}
	}
	clear(c.relQ)
	c.relQ = c.relQ[:0]
	n := 0
	for n < len(c.pubQ) {
		f := c.pubQ[n]
		if f.finished || f.rel || f.sentGen == cn.gen {
			n++
			continue
		}
		if cn.outstanding >= c.window {
			break
		}
		cn.outstanding++
		f.cn = cn
		buf = append(buf, f)
		n++
	}
	if n == len(c.pubQ) {
		clear(c.pubQ)
		c.pubQ = c.pubQ[:0]
	} else if n > 0 {
		m := copy(c.pubQ, c.pubQ[n:])
		clear(c.pubQ[m:])
		c.pubQ = c.pubQ[:m]
	}
	return buf
}

// releaseQuota frees the send quota that f holds. c.fmu must be held.
func (c *Client) releaseQuotaLocked(f *flight) bool {
	if f.cn == nil {
		return false
	}
	f.cn.outstanding--
	f.cn = nil
	return len(c.pubQ) > 0
}

func (c *Client) checkPublish(topic string, o *PublishOptions) error {
	if o.QoS > 2 {
		return ErrInvalidQoS
	}
	aliased := c.version == packet.V5 && o.Props != nil && o.Props.TopicAlias != nil
	if !(topic == "" && aliased) && !validTopicName(topic) {
		return fmt.Errorf("%w: %q", ErrInvalidTopic, topic)
	}
	if l := c.limits.Load(); l != nil {
		if o.QoS > l.maxQoS {
			// [MQTT-3.2.2-11] Not above the server's Maximum QoS.
			return fmt.Errorf("client: publish QoS %d: %w", o.QoS, packet.QoSNotSupported)
		}
		if o.Retain && !l.retainOK {
			// [MQTT-3.2.2-14] No RETAIN when the server has no retain.
			return fmt.Errorf("client: publish: %w", packet.RetainNotSupported)
		}
	}
	return nil
}

// validTopicName reports whether s may be published to: at least one
// character [MQTT-4.7.3-1], no wildcards [MQTT-3.3.2-2], well-formed UTF-8
// without U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2], at most 65535 bytes.
func validTopicName(s string) bool {
	return s != "" && len(s) <= 65535 && !strings.ContainsAny(s, "+#") && packet.ValidUTF8(s)
}

// acquire waits for room in the in-flight window and takes a packet id for
// p. The flight is not ready yet.
func (c *Client) acquire(ctx context.Context, p *packet.Publish, done func(error)) (*flight, error) {
	for {
		c.fmu.Lock()
		if c.stopped {
			c.fmu.Unlock()
			return nil, c.stoppedErr()
		}
		if c.inflight < c.window {
			// [MQTT-2.2.1-3] A new PUBLISH with QoS > 0 takes an unused,
			// non-zero packet id.
			id, ok := c.newIDLocked()
			if ok {
				c.inflight++
				c.seq++
				p.PacketID = id
				f := &flight{id: id, kind: kindPublish, seq: c.seq, pub: p, done: done}
				c.flights[id] = f
				more := c.inflight < c.window
				c.fmu.Unlock()
				if more {
					c.signalSlot() // pass the wake-up on to the next waiter
				}
				return f, nil
			}
		}
		c.fmu.Unlock()
		select {
		case <-c.slot:
		case <-ctx.Done():
			c.signalSlot()
			return nil, fmt.Errorf("client: publish: waiting for the in-flight window: %w", ctx.Err())
		case <-c.done:
			return nil, c.err
		}
	}
}

// stoppedErr is the error for an operation on a stopped client. Call it only
// after stopped was seen true.
func (c *Client) stoppedErr() error {
	<-c.done
	return c.err
}

func (c *Client) signalSlot() {
	select {
	case c.slot <- struct{}{}:
	default:
	}
}

// newIDLocked returns an unused packet id. c.fmu must be held.
func (c *Client) newIDLocked() (uint16, bool) {
	for range 65535 {
		c.nextID++
		if c.nextID == 0 {
			c.nextID = 1
		}
		if _, used := c.flights[c.nextID]; !used {
			return c.nextID, true
		}
	}
	return 0, false
}

// complete finishes f with (p, err) and frees its packet id; unstore
// removes a publish from the Store first (before the id can be reused).
func (c *Client) complete(f *flight, p packet.Packet, err error, unstore bool) {
	c.fmu.Lock()
	if f.finished {
		c.fmu.Unlock()
		return
	}
	f.finished = true
	c.fmu.Unlock()
	if unstore && f.kind == kindPublish {
		if st := c.opts.Store; st != nil {
			if serr := st.Delete(f.id); serr != nil {
				c.log.Error("mqtt store delete", "id", f.id, "err", serr)
			}
		}
	}
	c.fmu.Lock()
	if c.flights[f.id] == f {
		delete(c.flights, f.id)
	}
	if f.kind == kindPublish {
		c.inflight--
	}
	wake := c.releaseQuotaLocked(f)
	drained := c.inflight == 0
	c.fmu.Unlock()
	if wake {
		c.wakeWriter()
	}
	if f.kind == kindPublish {
		c.signalSlot()
		if drained {
			c.signalDrained()
		}
	}
	f.finish(p, err)
}

// handleAck processes PUBACK, PUBREC and PUBCOMP from the server.
func (c *Client) handleAck(cn *connState, id uint16, typ packet.Type, rc packet.ReasonCode, props *packet.Properties) {
	c.fmu.Lock()
	f := c.flights[id]
	if f == nil || f.kind != kindPublish || f.finished || !f.ready {
		c.fmu.Unlock()
		return
	}
	qos := f.pub.QoS
	switch {
	case typ == packet.PUBACK && qos == 1, typ == packet.PUBCOMP && qos == 2:
		c.fmu.Unlock()
		var err error
		if typ == packet.PUBACK && rc.IsError() {
			err = &AckError{Type: typ, ReasonCode: rc, ReasonString: reasonString(props)}
		}
		// A PUBCOMP ends the exchange whatever its code: the server took the
		// message at PUBREC (0x92 only says it had forgotten the id).
		c.complete(f, nil, err, true)
	case typ == packet.PUBREC && qos == 2:
		if rc.IsError() {
			c.fmu.Unlock()
			// [MQTT-4.4.0-2] (5.0) A failure code acknowledges the message:
			// it is not sent again.
			c.complete(f, nil, &AckError{Type: typ, ReasonCode: rc, ReasonString: reasonString(props)}, true)
			return
		}
		first := !f.rel
		f.rel = true
		f.sentGen = 0
		c.fmu.Unlock()
		if first {
			if st := c.opts.Store; st != nil {
				if err := st.Put(&StoredMessage{Seq: f.seq, Released: true, Publish: f.pub}); err != nil {
					c.log.Error("mqtt store update", "id", id, "err", err)
				}
			}
		}
		c.fmu.Lock()
		if !f.finished {
			c.relQ = append(c.relQ, f)
		}
		c.fmu.Unlock()
		c.wakeWriter()
	default:
		c.fmu.Unlock()
	}
}

// requeue rebuilds the send queues for the new connection cn: everything
// that was sent on an earlier connection and not yet acknowledged goes
// again, in the order it was first published [MQTT-4.4.0-1]
// [MQTT-4.6.0-1], subject to the new connection's send quota. It returns
// how many PUBLISHes are re-sent.
func (c *Client) requeue(cn *connState) int {
	c.fmu.Lock()
	defer c.fmu.Unlock()
	clear(c.pubQ)
	clear(c.relQ)
	c.pubQ, c.relQ = c.pubQ[:0], c.relQ[:0]
	n := 0
	for _, f := range c.flights {
		if f.kind != kindPublish || !f.ready || f.finished {
			continue
		}
		f.cn = nil // the quota starts afresh on each connection
		if f.rel {
			c.relQ = append(c.relQ, f)
		} else {
			c.pubQ = append(c.pubQ, f)
			if f.sent {
				n++
			}
		}
	}
	bySeq := func(a, b *flight) int { return cmp.Compare(a.seq, b.seq) }
	slices.SortFunc(c.pubQ, bySeq)
	slices.SortFunc(c.relQ, bySeq)
	return n
}

// loadStore takes the messages an earlier client left in the Store: they go
// out, with DUP, once connected.
func (c *Client) loadStore() error {
	st := c.opts.Store
	if st == nil {
		return nil
	}
	msgs, err := st.Load()
	if err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	for _, m := range msgs {
		p := m.Publish
		if p == nil || p.QoS == 0 || p.PacketID == 0 {
			continue
		}
		if _, dup := c.flights[p.PacketID]; dup {
			continue
		}
		f := &flight{id: p.PacketID, kind: kindPublish, seq: m.Seq, pub: p,
			ready: true, rel: m.Released, relSent: m.Released, sent: true}
		if cb := c.opts.OnStoreResult; cb != nil {
			f.done = func(err error) {
				if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrConnectionLost) {
					cb(p, err)
				}
			}
		}
		c.flights[p.PacketID] = f
		c.inflight++
		c.seq = max(c.seq, m.Seq)
	}
	return nil
}

// roundTrip sends the SUBSCRIBE or UNSUBSCRIBE that build returns for a new
// packet id and waits for its acknowledgement.
func (c *Client) roundTrip(ctx context.Context, cn *connState, build func(id uint16) packet.Packet) (packet.Packet, error) {
	c.fmu.Lock()
	if c.stopped {
		c.fmu.Unlock()
		return nil, c.stoppedErr()
	}
	// [MQTT-2.2.1-3] SUBSCRIBE and UNSUBSCRIBE take an unused packet id.
	id, ok := c.newIDLocked()
	if !ok {
		c.fmu.Unlock()
		return nil, ErrNoPacketID
	}
	f := &flight{id: id, kind: kindControl, gen: cn.gen, res: make(chan ctlResult, 1), ready: true}
	c.flights[id] = f
	c.fmu.Unlock()

	select {
	case c.out <- outItem{p: build(id), gen: cn.gen}:
	case <-ctx.Done():
		c.complete(f, nil, ctx.Err(), false)
		return nil, ctx.Err()
	case <-cn.dead:
		err := errLost(cn)
		c.complete(f, nil, err, false)
		return nil, err
	}
	select {
	case r := <-f.res:
		return r.p, r.err
	case <-ctx.Done():
		c.complete(f, nil, ctx.Err(), false)
	case <-cn.dead:
		c.complete(f, nil, errLost(cn), false)
	}
	r := <-f.res // complete delivered exactly one result
	return r.p, r.err
}

// handleControlAck completes the SUBSCRIBE or UNSUBSCRIBE with id.
func (c *Client) handleControlAck(id uint16, p packet.Packet) {
	c.fmu.Lock()
	f := c.flights[id]
	c.fmu.Unlock()
	if f == nil || f.kind != kindControl {
		return
	}
	c.complete(f, p, nil, false)
}

func asReason(err error, rc *packet.ReasonCode) bool { return errors.As(err, rc) }

// signalDrained wakes the WaitDrained callers once nothing is in flight.
func (c *Client) signalDrained() {
	c.fmu.Lock()
	ch := c.drainCh
	if c.inflight == 0 && ch != nil {
		c.drainCh = nil
		close(ch)
	}
	c.fmu.Unlock()
}

// WaitDrained waits until every outgoing QoS 1 and 2 message accepted so
// far, including those loaded from the Store at Dial, has been acknowledged
// by the server (Pending() == 0), or until ctx ends or the client stops.
func (c *Client) WaitDrained(ctx context.Context) error {
	c.fmu.Lock()
	if c.inflight == 0 {
		c.fmu.Unlock()
		return nil
	}
	if c.drainCh == nil {
		c.drainCh = make(chan struct{})
	}
	ch := c.drainCh
	c.fmu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("client: wait drained: %w (%d pending)", ctx.Err(), c.Pending())
	case <-c.done:
		return c.err
	}
}
