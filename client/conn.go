package client

import (
	"bufio"
	"errors"
	"fmt"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// outItem is one entry of the writer's queue.
type outItem struct {
	p    packet.Packet // a control packet or a QoS 0 PUBLISH
	gen  uint64        // non-zero: only for the connection of this generation
	done func(error)   // called once the packet is flushed, or with why not
}

// send queues p for connection cn; it gives up when cn ends.
func (c *Client) send(cn *connState, p packet.Packet) {
	select {
	case c.out <- outItem{p: p, gen: cn.gen}:
	case <-cn.dead:
	}
}

// writeLoop writes to cn: a due PINGREQ first, then the sendable flights
// (PUBRELs, and PUBLISHes within the send quota), then the write queue,
// coalescing them in a buffered writer that is flushed whenever there is
// nothing more to write.
func (c *Client) writeLoop(cn *connState) {
	defer close(cn.writerDone)
	w := &connWriter{c: c, cn: cn, bw: bufio.NewWriterSize(cn.conn, 16<<10)}
	cn.lastWrite.Store(time.Now().UnixNano())
	var fl []*flight
	for {
		busy := false
		select {
		case <-cn.pingCh:
			if err := w.writePing(); err != nil {
				w.fail(err)
				return
			}
			busy = true
		default:
		}
		fl = c.takeFlights(cn, fl[:0])
		for i, f := range fl {
			fl[i] = nil
			if err := w.writeFlight(f); err != nil {
				w.fail(err)
				return
			}
			busy = true
		}
		var it outItem
		select {
		case it = <-c.out:
		default:
			if busy {
				continue
			}
			if err := w.flush(); err != nil {
				w.fail(err)
				return
			}
			select {
			case it = <-c.out:
			case <-c.sendWake:
				continue
			case <-cn.pingCh:
				if err := w.writePing(); err != nil {
					w.fail(err)
					return
				}
				continue
			case <-cn.dead:
				return
			}
		}
		stop, err := w.write(it)
		if err != nil {
			if it.done != nil {
				it.done(errLostOr(cn, err))
			}
			w.fail(err)
			return
		}
		if stop {
			return
		}
	}
}

// connWriter is the state of one writeLoop.
type connWriter struct {
	c     *Client
	cn    *connState
	bw    *bufio.Writer
	buf   []byte        // scratch for encoding
	dones []func(error) // callbacks of written, not yet flushed packets
}

// writePing writes a PINGREQ [MQTT-3.12.4-1].
func (w *connWriter) writePing() error {
	w.c.trace("send", w.cn, &packet.Pingreq{})
	_, err := w.bw.Write([]byte{byte(packet.PINGREQ) << 4, 0})
	return err
}

func (w *connWriter) flush() error {
	if w.bw.Buffered() > 0 {
		if err := w.bw.Flush(); err != nil {
			return err
		}
		w.cn.lastWrite.Store(time.Now().UnixNano())
	}
	for i, d := range w.dones {
		d(nil)
		w.dones[i] = nil
	}
	w.dones = w.dones[:0]
	return nil
}

// fail ends the connection after a write error.
func (w *connWriter) fail(err error) {
	w.cn.fail(fmt.Errorf("client: write: %w", err))
	for i, d := range w.dones {
		d(errLost(w.cn))
		w.dones[i] = nil
	}
	w.dones = nil
}

func errLostOr(cn *connState, err error) error {
	if cn.isDead() {
		return errLost(cn)
	}
	return fmt.Errorf("%w: %w", ErrConnectionLost, err)
}

// write writes one queued item. stop is true after a DISCONNECT, when
// nothing more may be sent [MQTT-3.14.4-2]. A packet that cannot be encoded
// fails alone; a returned error is a failed connection.
func (w *connWriter) write(it outItem) (stop bool, err error) {
	if it.gen != 0 && it.gen != w.cn.gen {
		// An acknowledgement or request meant for an earlier connection.
		if it.done != nil {
			it.done(ErrConnectionLost)
		}
		return false, nil
	}
	v := w.c.version
	w.c.trace("send", w.cn, it.p)
	if pub, ok := it.p.(*packet.Publish); ok {
		if err := w.writePublish(pub); err != nil {
			if it.done != nil {
				it.done(err)
			}
			return false, nil
		}
	} else {
		b, err := it.p.Encode(w.buf[:0], v)
		if err != nil {
			if it.done != nil {
				it.done(fmt.Errorf("client: encode %s: %w", it.p.Type(), err))
			}
			return false, nil
		}
		w.buf = b
		if _, err := w.bw.Write(b); err != nil {
			return false, err
		}
	}
	if it.done != nil {
		w.dones = append(w.dones, it.done)
	}
	if _, ok := it.p.(*packet.Disconnect); ok {
		if err := w.flush(); err != nil {
			return false, err
		}
		w.cn.fail(ErrClosed)
		return true, nil
	}
	return false, nil
}

// errEncode marks a PUBLISH that cannot be sent (the connection is fine).
type errEncode struct{ err error }

func (e errEncode) Error() string { return e.err.Error() }
func (e errEncode) Unwrap() error { return e.err }

// writePublish writes the header and then the payload, so the payload is
// never copied into a scratch buffer. Only an errEncode is returned for a
// packet that cannot be sent; anything else is a write error.
func (w *connWriter) writePublish(p *packet.Publish) error {
	hdr, err := p.AppendHeader(w.buf[:0], w.c.version)
	if err != nil {
		return errEncode{fmt.Errorf("client: encode PUBLISH: %w", err)}
	}
	w.buf = hdr
	if len(hdr)+len(p.Payload) > w.cn.maxOut {
		// [MQTT-3.2.2-15] Nothing larger than the server's Maximum Packet Size.
		return errEncode{fmt.Errorf("client: PUBLISH of %d bytes: %w", len(hdr)+len(p.Payload), packet.PacketTooLarge)}
	}
	if _, err := w.bw.Write(hdr); err != nil {
		return err
	}
	_, err = w.bw.Write(p.Payload)
	return err
}

// writeFlight writes the PUBLISH or PUBREL that f is waiting for, unless it
// was already written on this connection or is finished.
func (w *connWriter) writeFlight(f *flight) error {
	c := w.c
	c.fmu.Lock()
	if f.finished || f.sentGen == w.cn.gen {
		c.fmu.Unlock()
		return nil
	}
	f.sentGen = w.cn.gen
	rel, dup := f.rel, f.sent
	f.sent = true
	resent := f.relSent || (dup && !rel)
	if rel {
		f.relSent = true
	}
	c.fmu.Unlock()
	if resent && c.opts.OnResend != nil {
		c.opts.OnResend(f.pub, rel)
	}
	if rel {
		// [MQTT-4.3.3-3] After PUBREC, the sender sends PUBREL with the same id.
		if c.tracing {
			c.trace("send", w.cn, &packet.Pubrel{PacketID: f.id})
		}
		b, err := (&packet.Pubrel{PacketID: f.id}).Encode(w.buf[:0], c.version)
		if err != nil {
			return err
		}
		w.buf = b
		_, err = w.bw.Write(b)
		return err
	}
	p := *f.pub
	// [MQTT-3.3.1-1] A PUBLISH sent again carries DUP=1.
	p.Dup = dup
	if c.tracing {
		q := p // a copy, so that p does not escape
		c.trace("send", w.cn, &q)
	}
	if err := w.writePublish(&p); err != nil {
		if e, ok := err.(errEncode); ok {
			c.complete(f, nil, e.err, true)
			return nil
		}
		return err
	}
	return nil
}

// readLoop reads packets from cn until it fails.
func (c *Client) readLoop(cn *connState) {
	var aliases map[uint16]string
	for {
		p, err := packet.Read(cn.br, c.version, c.maxIn)
		if err == nil {
			cn.lastRead.Store(time.Now().UnixNano())
			c.trace("recv", cn, p)
		}
		if err != nil {
			var rc packet.ReasonCode
			if errors.As(err, &rc) {
				// Malformed, too large, or against the protocol: v5 says
				// which in a DISCONNECT [MQTT-4.13.1-1].
				c.protocolError(cn, err)
				return
			}
			cn.fail(fmt.Errorf("client: read: %w", err))
			return
		}
		switch p := p.(type) {
		case *packet.Publish:
			if aliases == nil && cn.aliasMax > 0 {
				// [MQTT-3.3.2-7] Aliases live as long as one connection.
				aliases = make(map[uint16]string)
			}
			err = c.handlePublish(cn, p, aliases)
		case *packet.Puback:
			c.handleAck(cn, p.PacketID, packet.PUBACK, p.ReasonCode, p.Props)
		case *packet.Pubrec:
			c.handleAck(cn, p.PacketID, packet.PUBREC, p.ReasonCode, p.Props)
		case *packet.Pubcomp:
			c.handleAck(cn, p.PacketID, packet.PUBCOMP, p.ReasonCode, p.Props)
		case *packet.Pubrel:
			rc := packet.Success
			if gen, ok := c.q2[p.PacketID]; ok {
				delete(c.q2, p.PacketID)
				if gen == cn.gen {
					cn.inUnacked.Add(-1) // our PUBCOMP ends the exchange
				}
			} else if c.version == packet.V5 {
				rc = packet.PacketIdentifierNotFound
			}
			// [MQTT-4.3.3-11] PUBREL is answered with PUBCOMP, same id.
			c.send(cn, &packet.Pubcomp{PacketID: p.PacketID, ReasonCode: rc})
		case *packet.Suback:
			c.handleControlAck(p.PacketID, p)
		case *packet.Unsuback:
			c.handleControlAck(p.PacketID, p)
		case *packet.Pingresp:
			cn.pingSent.Store(0)
		case *packet.Auth:
			if c.version != packet.V5 {
				err = fmt.Errorf("%w: AUTH before MQTT 5", packet.ProtocolError)
				break
			}
			err = c.handleAuth(cn, p)
		case *packet.Disconnect:
			cn.fail(&DisconnectError{Disconnect: p})
			return
		default:
			err = fmt.Errorf("%w: unexpected %s", packet.ProtocolError, p.Type())
		}
		if err != nil {
			c.protocolError(cn, err)
			return
		}
	}
}

// protocolError ends cn because the server broke the protocol: for v5 with
// a DISCONNECT carrying the reason code err wraps, if any.
func (c *Client) protocolError(cn *connState, err error) {
	err = fmt.Errorf("%w: %w", ErrProtocol, err)
	c.log.Warn("mqtt protocol error", "err", err)
	if c.version != packet.V5 {
		cn.fail(err)
		return
	}
	rc := packet.ProtocolError
	var code packet.ReasonCode
	if asReason(err, &code) && code.IsError() {
		rc = code
	}
	it := outItem{p: &packet.Disconnect{ReasonCode: rc}, gen: cn.gen, done: func(error) { cn.fail(err) }}
	timeout := time.NewTimer(time.Second)
	defer timeout.Stop()
	select {
	case c.out <- it:
	case <-timeout.C:
		cn.fail(err)
		return
	case <-cn.dead:
		return
	}
	select {
	case <-cn.dead:
	case <-timeout.C:
		cn.fail(err)
	}
}

// handlePublish takes an inbound PUBLISH: topic alias, QoS 2 duplicate
// detection, then hands it to the delivery goroutine.
func (c *Client) handlePublish(cn *connState, p *packet.Publish, aliases map[uint16]string) error {
	topic := p.Topic
	if p.Props != nil && p.Props.TopicAlias != nil && c.version == packet.V5 {
		a := *p.Props.TopicAlias
		if a == 0 || a > cn.aliasMax {
			// [MQTT-3.3.2-8] [MQTT-3.3.2-9] An alias must be 1..our Topic Alias Maximum.
			return fmt.Errorf("topic alias %d: %w", a, packet.TopicAliasInvalid)
		}
		if topic != "" {
			aliases[a] = topic
		} else if t, ok := aliases[a]; ok {
			topic = t
		} else {
			return fmt.Errorf("unknown topic alias %d: %w", a, packet.ProtocolError)
		}
	}
	if topic == "" {
		return fmt.Errorf("PUBLISH without topic: %w", packet.ProtocolError)
	}
	if p.QoS == 2 {
		if _, ok := c.q2[p.PacketID]; ok {
			// [MQTT-4.3.3-10] (5.0) / [MQTT-4.3.3-2] (3.1.1): until PUBREL, a
			// PUBLISH with the same id is acknowledged again but not
			// delivered again.
			c.send(cn, &packet.Pubrec{PacketID: p.PacketID})
			return nil
		}
		c.q2[p.PacketID] = cn.gen
	}
	if p.QoS > 0 && c.version == packet.V5 {
		// [MQTT-3.3.4-9] The server sends no more unacknowledged QoS 1/2
		// PUBLISHes than our Receive Maximum; more is a protocol error
		// (4.9: DISCONNECT with Receive Maximum exceeded). The count drops
		// when we send PUBACK or receive PUBREL, before the server can know.
		if n := cn.inUnacked.Add(1); n > int32(c.recvMax) {
			return fmt.Errorf("%d unacknowledged QoS 1/2 messages, Receive Maximum %d: %w", n, c.recvMax, packet.ReceiveMaximumExceeded)
		}
	}
	m := &Message{
		Topic:    topic,
		Payload:  p.Payload,
		QoS:      p.QoS,
		Retain:   p.Retain,
		Dup:      p.Dup,
		PacketID: p.PacketID,
		Props:    p.Props,
		cn:       cn,
	}
	if !c.inbox.push(delivery{cn: cn, msg: m}) {
		if c.dropped.Add(1) == 1 || !cn.dropping {
			c.log.Warn("mqtt handler too slow: dropping QoS 0 messages", "topic", topic, "dropped_total", c.dropped.Load())
		}
		cn.dropping = true
		return nil
	}
	if p.QoS == 0 {
		cn.dropping = false
	}
	return nil
}

// pingLoop sends PINGREQ when nothing was written for 3/4 of the keep
// alive [MQTT-3.1.2-23] (3.1.1) [MQTT-3.1.2-20] (5.0), and also when nothing
// was received for a whole keep alive although the client keeps writing: a
// link that swallows everything accepts writes for a long time. The
// connection ends when a PINGRESP is a whole keep alive late. The PINGREQ
// has its own slot in the writer, so a full write queue cannot drop it.
func (c *Client) pingLoop(cn *connState) {
	ka := cn.keepAlive
	t := time.NewTicker(ka / 4)
	defer t.Stop()
	for {
		select {
		case <-cn.dead:
			return
		case now := <-t.C:
			n := now.UnixNano()
			if sent := cn.pingSent.Load(); sent != 0 {
				if n-sent > int64(ka) {
					c.log.Warn("mqtt keep alive: no PINGRESP", "keep_alive", ka)
					cn.fail(ErrPingTimeout)
					return
				}
				continue
			}
			if n-cn.lastWrite.Load() < int64(ka*3/4) && n-cn.lastRead.Load() < int64(ka) {
				continue
			}
			cn.pingSent.Store(n)
			select {
			case cn.pingCh <- struct{}{}:
			default: // one is already waiting for the writer
			}
		}
	}
}
