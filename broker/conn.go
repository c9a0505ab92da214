package broker

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
)

// conn is one client network connection. Its read loop is the only goroutine
// that reads from nc and the only one that touches the fields marked "read
// loop"; output goes through the outbound buffer (outMu), drained by a writer
// goroutine that runs only while there is something to write.
//
// An idle connection is mostly this struct (docs/operations.md counts its
// bytes): what only a read burst needs (burst) or only a backlog (out,
// with the backlog's size and the session waiting for it to drain) is taken
// from a pool while in use, what only enhanced authentication (authState),
// inbound topic aliases or a publish rate (rx) need is allocated by them,
// the timer that bounds a closing connection lives with the reason it
// closes (closeState), a polled connection
// has no timer of its own (idleTimers) and no goroutine, and the fields are
// ordered by alignment (words, then 4-byte, then 1-byte fields) so that no
// padding pushes the struct into a larger allocation size class (384 bytes
// on 64-bit platforms; checked below).
type conn struct {
	srv *Server
	nc  net.Conn
	lst *listenerState // per-listener settings; nil when served by plain Serve

	// Store writes of the current read burst, the acknowledgements that
	// wait for them and the deliveries held for them (read loop only); nil
	// outside a burst that writes to the store. See persist.go.
	burst *burstState

	// read loop
	sess *session
	info ClientInfo // shared with sess while connected (finishConnect, releaseInfo)
	will *packet.Will
	rx   *readExtras // inbound topic aliases, the publish rate bucket; nil until needed
	// v5 enhanced authentication (auth_enhanced.go), read loop: nil unless
	// the CONNECT named an Authentication Method. Its fields are promoted:
	// read them only once authState is known to be set.
	*authState

	// Outbound topic aliases (TopicAliasLRU), and the properties of the
	// PUBLISH being encoded with one; guarded by outMu.
	aliasOut *aliasTable // nil unless the client allows aliases and the policy is on

	// guarded by outMu (see below)
	out      *outBufs // encoded packets waiting to be written; nil when none wait and no writer runs
	writerWG sync.WaitGroup

	closed atomic.Pointer[closeState] // why the connection ends; set once (closereason.go)

	// The keep-alive or connect deadline of a polled connection, in
	// idleTimers' clock (0: none), and its index in idleTimers' heap + 1
	// (0: not in it).
	due    atomic.Int64
	dueIdx atomic.Int32

	fd     int32
	inAcks int32 // PUBACK/PUBCOMP waiting in pendAcks (receive maximum); read loop
	// set during CONNECT before the session is attached; read under session.mu
	maxOutSize uint32 // largest packet the client accepts (v5); 0 = no limit
	recvMax    uint16 // client's receive maximum (v5), our send window
	keepAlive  uint16 // seconds; 0: none (keepAliveDur)
	// Bursts whose acknowledgements wait for the store's sync while the
	// read loop goes on (flushAsync), and the PUBACK/PUBCOMP among them
	// (receive maximum). Raised by the read loop, lowered by the store's
	// goroutine once they are sent.
	asyncBursts atomic.Int32
	asyncAcks   atomic.Int32
	polled      atomic.Bool // 4 bytes, as atomic.Int32
	connected   atomic.Bool
	pollMu      sync.Mutex // guards pollState, closeReq
	outMu       sync.Mutex

	// read loop
	version     packet.Version
	cleanExit   bool // DISCONNECT received: no will
	problemInfo bool // v5: client accepts reason strings
	memPaused   bool // read a PUBLISH past memory_limit: pause after this packet (memlimit.go)
	local       bool // served for DialLocal (embed.go): the server's own connection
	bridge      bool // a 3.x bridge (protocol level | 0x80): its subscriptions are no-local, retain-as-published
	vectored    bool // nc takes writev (a TCP socket): big payloads are not copied

	// Polled connections (see poller): no goroutine while idle.
	pollState uint8 // guarded by pollMu
	closeReq  bool  // guarded by pollMu

	// guarded by outMu
	writing    bool // a writer goroutine is running
	closeAfter bool // close nc once the backlog is written
	dead       bool // nc is closed; output is dropped

	stats connStats
}

// authState is a connection's v5 enhanced authentication (auth_enhanced.go):
// allocated when a CONNECT names an Authentication Method, kept for
// re-authentication. Read loop only.
type authState struct {
	authMethod     string       // the CONNECT's Authentication Method
	authEx         AuthExchange // exchange in progress
	pendingConnect *connectAuth // CONNECT waiting for its exchange
}

// The size class conn must fit (see above): a field that grows it past 384
// bytes on a 64-bit platform fails to compile here; reorder or move a rarely
// used field out (as authState) rather than raise the bound lightly, it is
// paid by every connection.
var _ = [1]struct{}{}[unsafe.Sizeof(conn{})/385]

// readExtras is what a connection's read loop needs for some clients only
// (conn.rx): allocated by the first v5 PUBLISH that sets a topic alias, or
// the first PUBLISH under MaxPublishRate. Read loop only.
type readExtras struct {
	aliases map[uint16]string // v5 inbound topic aliases
	pubRate *tokenBucket      // MaxPublishRate (ratelimit.go)
}

// extras returns c.rx, allocating it. Read loop only.
func (c *conn) extras() *readExtras {
	if c.rx == nil {
		c.rx = new(readExtras)
	}
	return c.rx
}

// alias returns the topic an inbound topic alias stands for; x may be nil.
func (x *readExtras) alias(a uint16) (string, bool) {
	if x == nil {
		return "", false
	}
	t, ok := x.aliases[a]
	return t, ok
}

// keepAliveDur is the keep alive the connection runs with (0: none).
func (c *conn) keepAliveDur() time.Duration {
	return time.Duration(c.keepAlive) * time.Second
}

// authPending reports whether a CONNECT waits for its AUTH exchange.
func (c *conn) authPending() bool {
	return c.authState != nil && c.pendingConnect != nil
}

// burstState is what one read burst collects for the store (conn.burst):
// taken from burstPool by the burst's first store write, given back once
// flushPending has applied it and let its acknowledgements and held
// deliveries go.
type burstState struct {
	pend     store.Batch
	pendAcks []packet.Packet
	// Deliveries to other persistent sessions held until pend is applied
	// (session.holdsFor), and scratch for session.pump.
	held      []heldOut
	heldScrap []*outMsg
	early     []heldOut // scratch of releaseHeldQoS1
	// The AckGate tokens of the burst's messages (Message.HoldAck); 0:
	// none.
	gateFirst, gateLast uint64
}

// outBufs is the output of a connection while it has some (conn.out):
// taken from outPool by the first packet queued, given back by the writer
// once the backlog is written. Guarded by outMu, except that the running
// writer uses iov and the batch it took on its own.
type outBufs struct {
	// bytes is the backlog in bytes: every packet queued (PUBLISH of any
	// QoS and control packets), counted from when it is queued until the
	// write that carries it has completed (writeLoop subtracts what was
	// written), so it includes the batch being written; 0 when the
	// buffers go back to the pool. See backlogFullLocked.
	bytes int
	// backlogSub's queued QoS 1/2 wait for the backlog to drain
	// (drainedLocked): set only while it is full, so while c.out is held.
	backlogSub *session
	buf        []byte    // encoded packets waiting to be written
	items      []outItem // large payloads written straight from the shared message
	spare      []byte
	spareItems []outItem
	iov        net.Buffers
}

// outItem marks a large payload that follows the header ending at hdrEnd.
type outItem struct {
	hdrEnd  int
	payload []byte
}

// connStats are one connection's counters, folded into the server's totals
// when it closes. Each is written by one goroutine and read by the $SYS loop.
type connStats struct {
	msgsIn, bytesIn, pubBytesIn    atomic.Int64
	msgsOut, bytesOut, pubBytesOut atomic.Int64
	pubIn, pubOut                  [3]atomic.Int64 // PUBLISH packets by QoS
	droppedBacklog                 atomic.Int64    // QoS 0 over MaxBacklogBytes
	// (PUBLISH above the client's Maximum Packet Size: stats.droppedTooLarge)
}

const (
	inlinePayload = 1024     // payloads up to this size are copied next to their header
	bufPoolCap    = 64 << 10 // larger buffers are not pooled
)

var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4096) }}
	outPool    = sync.Pool{New: func() any { return new(outBufs) }}
	burstPool  = sync.Pool{New: func() any { return new(burstState) }}
)

// getOutLocked returns c.out, taking one from the pool if c has none.
// outMu is held.
func (c *conn) getOutLocked() *outBufs {
	o := c.out
	if o == nil {
		o = outPool.Get().(*outBufs)
		if o.buf == nil {
			o.buf = make([]byte, 0, 4096)
		}
		c.out = o
	}
	return o
}

// putOutLocked gives c.out back to the pool once nothing waits in it and
// no writer runs. outMu is held.
func (c *conn) putOutLocked() {
	o := c.out
	if o == nil || c.writing || len(o.buf) > 0 || len(o.items) > 0 {
		return
	}
	c.out = nil
	o.bytes, o.backlogSub = 0, nil
	for _, b := range []*[]byte{&o.buf, &o.spare} {
		if cap(*b) > bufPoolCap {
			*b = nil // larger buffers are not pooled
		} else {
			*b = (*b)[:0]
		}
	}
	clear(o.items[:cap(o.items)])
	clear(o.spareItems[:cap(o.spareItems)])
	clear(o.iov[:cap(o.iov)])
	o.items, o.spareItems, o.iov = o.items[:0], o.spareItems[:0], o.iov[:0]
	outPool.Put(o)
}

func newConn(s *Server, nc net.Conn, listener string) *conn {
	_, vec := nc.(*net.TCPConn)
	if _, ok := nc.(buffersWriter); ok {
		vec = true
	}
	// info's Remote and Listener are set here once and never written again:
	// other goroutines read them (logs, introspection) without a lock.
	return &conn{srv: s, nc: nc, vectored: vec, lst: s.listenerFor(listener),
		info: ClientInfo{Remote: remoteString(nc), Listener: listener}}
}

// serve runs a connection that has its own read goroutine to its end.
func (c *conn) serve() {
	err := c.readLoop()
	c.teardown(err)
	c.writerWG.Wait()
}

// finish drops the ended connection from the server.
func (c *conn) finish() {
	c.outMu.Lock()
	if cs := c.closed.Load(); cs != nil && cs.killTimer != nil {
		cs.killTimer.Stop()
	}
	c.outMu.Unlock()
	s := c.srv
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	c.lst.release()
	s.wg.Done()
}

var (
	errClosedByServer = errors.New("broker: connection closed by server")
	errShuttingDown   = errors.New("broker: server shutting down")
	errTakenOver      = errors.New("broker: session taken over")
	errKeepAlive      = errors.New("broker: keep alive timeout")
	errConnectTimeout = errors.New("broker: no CONNECT in time")
	errSecondConnect  = errors.New("broker: second CONNECT")
	errNotConnect     = errors.New("broker: first packet is not CONNECT")
)

// readLoop reads and dispatches packets until the connection ends. Between
// bursts of traffic it holds no read buffer: an idle connection waits for
// readability with none (waitReadable), and readBurst takes a pooled reader
// only while bytes flow. Keeping this frame small lets the runtime shrink an
// idle connection's stack to its minimum.
func (c *conn) readLoop() error {
	c.nc.SetReadDeadline(time.Now().Add(c.srv.opts.ConnectTimeout))
	var idle *idleWaiter // built by the first wait; kept off conn, which polled connections share
	for {
		if err := c.waitReadable(&idle); err != nil {
			return c.readErr(err)
		}
		if err := c.readBurst(); err != nil {
			return err
		}
	}
}

// readBurst reads packets while the pooled reader has bytes buffered (at
// least one packet), then gives the reader back.
//
//go:noinline
func (c *conn) readBurst() error {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(c.nc)
	defer func() {
		br.Reset(nil)
		readerPool.Put(br)
	}()
	for {
		err := c.readPacket(br)
		if err == nil && br.Buffered() > 0 && c.pendLen() < maxPendingOps && !c.memPaused {
			continue
		}
		if ferr := c.flushPending(); err == nil {
			err = ferr
		}
		if err != nil {
			c.awaitAsync() // the connection ends: what was read before goes first
		}
		if err == nil {
			c.memWait() // past memory_limit: read nothing more until under (memlimit.go)
		}
		if err != nil || br.Buffered() == 0 {
			return err
		}
	}
}

// maxPendingOps bounds the store writes one burst collects before applying.
const maxPendingOps = 1024

// batch is where this connection's handlers put store writes; nil without a
// store.
func (c *conn) batch() *store.Batch {
	if c.srv.opts.Store == nil {
		return nil
	}
	return &c.takeBurst().pend
}

// takeBurst returns the burst's state, taking it from the pool first.
func (c *conn) takeBurst() *burstState {
	if c.burst == nil {
		c.burst = burstPool.Get().(*burstState)
		c.burst.pend.Owner = c // session.holdsFor
	}
	return c.burst
}

// noteGate records that the acknowledgement of m, just routed, waits for
// the AckGates (Message.HoldAck).
func (c *conn) noteGate(m *Message) {
	t := m.gate.Load()
	if t == 0 {
		return
	}
	b := c.takeBurst()
	if b.gateFirst == 0 || t < b.gateFirst {
		b.gateFirst = t
	}
	b.gateLast = max(b.gateLast, t)
}

// pendLen is the number of store writes the burst collected.
func (c *conn) pendLen() int {
	if c.burst == nil {
		return 0
	}
	return c.burst.pend.Len()
}

// sendAck sends an acknowledgement, after the burst's store writes when
// there are any (what it acknowledges must be on disk first) and after the
// AckGates when the burst's messages are held for them.
func (c *conn) sendAck(p packet.Packet) {
	b := c.burst
	if (b == nil || b.pend.Empty() && b.gateLast == 0 && len(b.pendAcks) == 0) && c.asyncBursts.Load() == 0 {
		c.send(p)
		return
	}
	// Behind the burst's writes, or behind the acknowledgements of earlier
	// bursts still waiting for the disk (flushAsync) [MQTT-4.6.0-2].
	b = c.takeBurst()
	switch p.(type) {
	case *packet.Puback, *packet.Pubcomp:
		c.inAcks++ // still unacknowledged for the client's receive quota
	}
	b.pendAcks = append(b.pendAcks, p)
}

// flushPending applies the burst's store writes, then lets the waiting
// acknowledgements go. If the store fails, nothing is acknowledged and the
// client is disconnected (it will re-send); when no acknowledgement waited
// for the writes, the connection goes on.
func (c *conn) flushPending() error {
	b := c.burst
	if b == nil {
		c.inAcks = 0
		return nil
	}
	if len(b.pendAcks) > 0 && (!b.pend.Empty() && acksNeedStore(b.pendAcks) || c.asyncBursts.Load() > 0) {
		if a := c.srv.asyncStore(); a != nil {
			return c.flushAsync(a, b)
		}
	}
	c.inAcks = 0
	defer c.endBurst()
	if b.pend.Empty() {
		if err := c.awaitGates(b); err != nil {
			return err
		}
		for _, p := range b.pendAcks {
			c.send(p)
		}
		clear(b.pendAcks)
		b.pendAcks = b.pendAcks[:0]
		return nil
	}
	// When nothing waits for these writes (a subscriber's acknowledgements
	// deleting queue entries, say, with at most a PINGRESP in the same
	// burst), losing them in a power cut costs a redelivery: they do not
	// wait for the disk.
	lazy := !acksNeedStore(b.pendAcks)
	if lazy && c.writerPending() {
		// The deliveries this burst's acknowledgements let go (a
		// persistent subscriber's next messages) are queued for the
		// writer goroutine, which would otherwise run only after these
		// deletions are written: on a busy processor that write sits in
		// the subscriber's round trip, which bounds its rate at its
		// in-flight window. Nothing waits for lazy writes, so the writer
		// goes first. QoS 1 fan-in to persistent sessions on one core:
		// 80k-92k -> 118k-123k msg/s (docs/performance.md).
		runtime.Gosched()
	}
	var ordered func()
	if !lazy && len(b.held) > 0 {
		ordered = b.releaseHeldQoS1
	}
	err := c.srv.storeApplyOrdered(&b.pend, lazy, ordered)
	b.pend.Reset() // storeApply noted err: a failing store refuses what must be stored (diskfull.go)
	// The deliveries that waited for these writes go now (their
	// publisher's acknowledgements below still wait for the writes' own
	// success). After a failure too: nothing here is acknowledged to the
	// publisher, which re-sends; the online subscriber is served as one
	// without a store would be.
	b.releaseHeld()
	if err != nil {
		c.srv.log.Error("store write failed", "client", c.info.ClientID, "err", err)
		if acksNeedStore(b.pendAcks) {
			clear(b.pendAcks)
			b.pendAcks = b.pendAcks[:0]
			b.gateFirst, b.gateLast = 0, 0
			return packet.UnspecifiedError
		}
		// No acknowledgement depended on these writes (a subscriber's
		// PUBACKs, say): as after a power cut, it costs a redelivery; the
		// connection goes on (diskfull.go).
	}
	if err := c.awaitGates(b); err != nil {
		return err
	}
	for _, p := range b.pendAcks {
		c.send(p)
	}
	clear(b.pendAcks)
	b.pendAcks = b.pendAcks[:0]
	return nil
}

// awaitGates waits for the AckGates when the burst's messages are held for
// them. On an error the burst's acknowledgements are dropped and the
// connection is to be closed: the client sends those messages again.
func (c *conn) awaitGates(b *burstState) error {
	first, last := b.gateFirst, b.gateLast
	if last == 0 {
		return nil
	}
	b.gateFirst, b.gateLast = 0, 0
	for _, h := range c.srv.hooks.gate {
		if err := h.AwaitAcks(&c.info, first, last); err != nil {
			c.srv.log.Warn("acknowledgements withheld: the messages were not confirmed safe; the client will send them again",
				"client", c.info.ClientID, "remote", c.info.Remote, "err", err)
			clear(b.pendAcks)
			b.pendAcks = b.pendAcks[:0]
			return packet.ServerBusy
		}
	}
	return nil
}

// endBurst gives the burst's state back to the pool once it holds nothing:
// an idle connection keeps none. Read loop only.
func (c *conn) endBurst() {
	b := c.burst
	if b == nil || !b.pend.Empty() || len(b.pendAcks) > 0 || len(b.held) > 0 || b.gateLast != 0 {
		return
	}
	c.burst = nil
	b.put()
}

// put gives b back to the pool.
func (b *burstState) put() {
	b.pend.Owner = nil
	clear(b.heldScrap[:cap(b.heldScrap)])
	b.heldScrap = b.heldScrap[:0]
	burstPool.Put(b)
}

// flushAsync is flushPending for a store that need not be waited for: the
// burst's writes are applied and its QoS 1 deliveries released now, and the
// read loop goes on while the store's goroutine waits for the sync, then
// releases the other deliveries and sends the acknowledgements
// (finishAsync). The client's next PUBLISH is read, routed and delivered
// meanwhile instead of waiting behind the disk. Acknowledgements stay in
// the order their packets came [MQTT-4.6.0-2]: the store calls back in
// order, and while any burst waits, every later acknowledgement waits
// behind it (sendAck; a burst without writes is a barrier in the store's
// order). The burst is the store's until then: the read loop takes another.
func (c *conn) flushAsync(a store.AsyncApplier, b *burstState) error {
	acks := c.inAcks
	c.inAcks = 0
	c.burst = nil
	c.asyncAcks.Add(acks)
	c.asyncBursts.Add(1)
	// The QoS 1 deliveries go once ApplyAsync returns (the writes are
	// ordered), from here: b is the store's goroutine's from then on. Not
	// from ApplyAsync's ordered: the writer goroutine they start would then
	// queue behind the store's, which waits for the disk, on a single
	// processor.
	var earlyBuf [16]heldOut
	early := b.takeHeldQoS1(earlyBuf[:0])
	start := time.Now()
	wrote := !b.pend.Empty()
	err := a.ApplyAsync(&b.pend, nil, func(err error) {
		if rc := c.finishAsync(b, acks, wrote, start, err); rc != nil {
			c.disconnect(rc) // as the read loop does with flushPending's error
			c.closeWithin(takeoverGrace)
		}
	})
	if len(early) > 0 {
		var scrap [16]*outMsg
		releaseHeldOuts(early, scrap[:0])
		clear(early)
	}
	if err != nil {
		return c.finishAsync(b, acks, wrote, start, err) // refused: nothing was written, or acknowledged
	}
	return nil
}

// awaitAsync waits until the acknowledgements of the bursts given to the
// store (flushAsync) are sent, or dropped: a connection that ends (its
// client's DISCONNECT, say) first answers what its client sent before.
// Read loop only.
func (c *conn) awaitAsync() {
	if c.asyncBursts.Load() == 0 {
		return
	}
	a := c.srv.asyncStore()
	if a == nil {
		return
	}
	done := make(chan struct{})
	if a.ApplyAsync(&store.Batch{}, nil, func(error) { close(done) }) != nil {
		return // the store is closed or failed: it calls back what it holds
	}
	<-done
}

// finishAsync ends a burst of flushAsync once its writes are durable or
// failed: as flushPending after its write, it releases the deliveries
// still held and sends the acknowledgements, or, when the write failed and
// they depended on it, drops them and returns the error that ends the
// connection (the client sends the messages again). No lock is held.
func (c *conn) finishAsync(b *burstState, acks int32, wrote bool, start time.Time, err error) error {
	if wrote {
		c.srv.stats.storeWrites.Add(1)
		c.srv.stats.storeNanos.Add(int64(time.Since(start)))
		c.srv.noteApply(err)
	}
	b.pend.Reset()
	b.releaseHeld()
	var rc error
	if err != nil {
		c.srv.log.Error("store write failed", "client", c.info.ClientID, "err", err)
		if acksNeedStore(b.pendAcks) {
			rc = packet.UnspecifiedError
		}
	}
	// The quota is given back before the acknowledgements go: a client may
	// send its next PUBLISH the moment one arrives, and the read loop must
	// not count it twice then [MQTT-3.3.4-7].
	c.asyncAcks.Add(-acks)
	if rc == nil {
		for _, p := range b.pendAcks {
			c.send(p)
		}
	}
	clear(b.pendAcks)
	b.pendAcks = b.pendAcks[:0]
	c.asyncBursts.Add(-1) // after the sends: a later acknowledgement may go straight now
	b.put()
	return rc
}

// releaseHeldQoS1 lets the QoS 1 deliveries held for the burst's writes
// go as soon as the store has ordered the writes, before they are on
// stable storage (storeApplyOrdered): the subscriber's acknowledgement,
// which deletes the entry, is then ordered after the entry in the store
// (the rule holding keeps, session.holdsFor). Should the writes be lost in a
// crash, the publisher was not acknowledged and sends the message again: a
// duplicate, which QoS 1 allows. QoS 2 deliveries wait for
// stable storage (releaseHeld): sent once, they must not be sent again as
// a new message. Order within a session is kept: a QoS 1 delivery behind a
// held QoS 2 one waits for it (session.writeReleasedLocked). On the goroutine
// applying the burst's writes; no lock held.
func (b *burstState) releaseHeldQoS1() {
	b.early = b.takeHeldQoS1(b.early[:0])
	b.heldScrap = releaseHeldOuts(b.early, b.heldScrap)
	clear(b.early)
	b.early = b.early[:0]
}

// takeHeldQoS1 moves the held QoS 1 deliveries of b to dst, in order.
func (b *burstState) takeHeldQoS1(dst []heldOut) []heldOut {
	keep := b.held[:0]
	for _, h := range b.held {
		if h.om.qos == 1 {
			dst = append(dst, h)
		} else {
			keep = append(keep, h)
		}
	}
	clear(b.held[len(keep):])
	b.held = keep
	return dst
}

// releaseHeld lets the deliveries held for the burst's writes go, in
// order, session by session (session.pump). By the read loop, or by the
// store's goroutine once the burst is the store's (flushAsync); no lock
// held.
func (b *burstState) releaseHeld() {
	b.heldScrap = releaseHeldOuts(b.held, b.heldScrap)
	clear(b.held)
	b.held = b.held[:0]
}

// readPacket reads and handles one packet.
//
// Until CONNACK every byte is hostile: a first packet that is not CONNECT is
// refused at its first byte, before its length is read [MQTT-3.1.0-1], and the
// packets of the CONNECT exchange are held to MaxConnectPacketSize. Bodies
// are allocated as their bytes arrive (readBody), never from the declared
// length alone.
func (c *conn) readPacket(br *bufio.Reader) error {
	limit := c.srv.opts.MaxPacketSize
	if !c.connected.Load() {
		if !c.authPending() {
			first, err := br.Peek(1)
			if err != nil {
				return c.readErr(err)
			}
			if packet.Type(first[0]>>4) != packet.CONNECT {
				return errNotConnect // [MQTT-3.1.0-1]
			}
		}
		limit = min(limit, c.srv.opts.MaxConnectPacketSize)
	}
	fh, err := packet.ReadFixedHeader(br)
	if err != nil {
		return c.readErr(err)
	}
	// Reject an oversized packet before reading its body [MQTT-3.2.2-15] (5.0: the
	// advertised Maximum Packet Size; 3.x: max_packet_size, as Mosquitto).
	size := 1 + varintLen(fh.Remaining) + fh.Remaining
	if size > limit {
		return packet.PacketTooLarge
	}
	body, err := readBody(br, fh.Remaining)
	if err != nil {
		return c.readErr(err)
	}
	c.stats.msgsIn.Add(1)
	c.stats.bytesIn.Add(int64(size))
	if !c.connected.Load() {
		if c.authPending() {
			// Enhanced authentication in progress (auth_enhanced.go).
			if err := c.handleConnectAuth(fh, body); err != nil {
				return err
			}
		} else if fh.Type != packet.CONNECT {
			return errNotConnect // [MQTT-3.1.0-1]
		} else if err := c.handleConnect(fh, body); err != nil {
			return err
		}
		if !c.connected.Load() {
			return nil // the connect timeout bounds the AUTH exchange
		}
		if c.keepAlive == 0 {
			c.nc.SetReadDeadline(time.Time{}) // keep alive 0: no timeout
		}
	} else {
		pkt, err := packet.Decode(fh, body, c.version)
		if err != nil {
			return err
		}
		if err := c.publishRateWait(pkt); err != nil { // max_publish_rate (ratelimit.go)
			return err
		}
		if err := c.handle(pkt); err != nil {
			return err
		}
	}
	if c.keepAlive > 0 {
		// [MQTT-3.1.2-24] (3.1.1) / [MQTT-3.1.2-22] (5.0): 1.5 x keep alive.
		c.nc.SetReadDeadline(time.Now().Add(c.keepAliveDur() * 3 / 2))
	}
	return nil
}

// readErr names a read failure: a deadline is the keep-alive (or connect)
// timeout, anything else passes through.
func (c *conn) readErr(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		if c.connected.Load() {
			return errKeepAlive
		}
		return errConnectTimeout
	}
	return err
}

// bodyChunk is the most readBody allocates ahead of the bytes that arrived.
const bodyChunk = 4096

// readBody reads a packet body of n bytes. A body already buffered, or a small
// one, gets one exact allocation. A larger one grows as its bytes arrive, at
// most doubling what has been read, so that a peer that declares 256 MiB and
// sends nothing costs bodyChunk, not 256 MiB. The result has length and
// capacity n: a PUBLISH's payload aliases it for as long as the message lives.
func readBody(br *bufio.Reader, n int) ([]byte, error) {
	if n <= bodyChunk || n <= br.Buffered() {
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return nil, err
		}
		return body, nil
	}
	body := make([]byte, 0, max(bodyChunk, br.Buffered()))
	for len(body) < n {
		if len(body) == cap(body) {
			grown := make([]byte, len(body), min(2*cap(body), n))
			copy(grown, body)
			body = grown
		}
		m, err := br.Read(body[len(body):cap(body)])
		body = body[:len(body)+m]
		if err != nil && len(body) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return body, nil
}

func varintLen(n int) int {
	switch {
	case n < 128:
		return 1
	case n < 16384:
		return 2
	case n < 2097152:
		return 3
	}
	return 4
}

// handle dispatches one packet of a connected client.
func (c *conn) handle(pkt packet.Packet) error {
	switch p := pkt.(type) {
	case *packet.Publish:
		return c.handlePublish(p)
	case *packet.Puback:
		c.sess.puback(p.PacketID, c.batch())
	case *packet.Pubrec:
		if rel := c.sess.pubrec(p.PacketID, p.ReasonCode, c.batch()); rel != nil {
			c.sendAck(rel) // after its "PUBREL sent" state is stored
		}
	case *packet.Pubrel:
		c.handlePubrel(p)
	case *packet.Pubcomp:
		c.sess.pubcomp(p.PacketID, c.batch())
	case *packet.Subscribe:
		return c.handleSubscribe(p)
	case *packet.Unsubscribe:
		return c.handleUnsubscribe(p)
	case *packet.Pingreq:
		c.sendAck(&packet.Pingresp{}) // [MQTT-3.12.4-1]
	case *packet.Disconnect:
		return c.handleDisconnect(p)
	case *packet.Connect:
		return errSecondConnect // [MQTT-3.1.0-2]
	case *packet.Auth:
		return c.handleAuth(p) // re-authentication (auth_enhanced.go)
	default:
		// CONNACK, SUBACK, UNSUBACK, PINGRESP from a client.
		return packet.ProtocolError
	}
	return nil
}

// send queues a control packet.
func (c *conn) send(p packet.Packet) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.queueLocked(p) {
		c.kickLocked()
	}
}

// sendConnack is send for a CONNACK that accepts the connection: c counts
// as connected before the writer can put the CONNACK on the wire, so a
// disconnect that comes once the client has it (a shutdown) sends its
// DISCONNECT (5.0) after it, and one that comes first sends none before
// it [MQTT-3.2.0-1].
func (c *conn) sendConnack(ack *packet.Connack) {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	queued := c.queueLocked(ack)
	c.connected.Store(true)
	if queued {
		c.kickLocked()
	}
}

// queueLocked encodes p into the output buffer; false if c is closing or p
// could not be encoded. outMu is held.
func (c *conn) queueLocked(p packet.Packet) bool {
	if c.dead || c.closeAfter {
		return false
	}
	o := c.getOutLocked()
	n := len(o.buf)
	b, err := p.Encode(o.buf, c.version)
	if err != nil {
		c.srv.log.Error("encode failed", "client", c.info.ClientID, "packet", p.Type().String(), "err", err)
		o.buf = b[:n]
		c.putOutLocked()
		return false
	}
	o.buf = b
	o.bytes += len(b) - n
	c.stats.msgsOut.Add(1)
	return true
}

// sendResult says what became of a PUBLISH handed to writePublish.
type sendResult int

const (
	sent     sendResult = iota // queued for the socket
	dropped                    // over the backlog (QoS 0) or too large for the client
	tooLarge                   // bigger than the client's maximum packet size
	gone                       // the connection is closing
)

// writePublish queues one PUBLISH for this subscriber: its own header, the
// shared payload.
func (c *conn) writePublish(m *Message, qos byte, id uint16, retain, dup bool, subIDs []uint32) sendResult {
	p := packet.Publish{Topic: c.localTopic(m.Topic), QoS: qos, PacketID: id, Retain: retain, Dup: dup, Payload: m.Payload}
	if c.version == packet.V5 {
		p.Props = outProps(m, subIDs)
	}
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead || c.closeAfter {
		return gone
	}
	if qos == 0 && c.backlogFullLocked() {
		c.stats.droppedBacklog.Add(1)
		c.srv.noteDelivery(c.info.ClientID, m, DropBacklog)
		return dropped
	}
	o := c.getOutLocked()
	var alias uint16
	var known bool
	var aliasName string
	if c.aliasOut != nil {
		// A server-assigned alias, within the client's Topic Alias Maximum
		// [MQTT-3.3.2-11]; a known one is sent with an empty topic.
		aliasName = p.Topic
		alias, known = c.aliasOut.pick(aliasName)
		if p.Props != nil {
			c.aliasOut.props = *p.Props
		} else {
			c.aliasOut.props = packet.Properties{}
		}
		c.aliasOut.val = alias
		c.aliasOut.props.TopicAlias = &c.aliasOut.val
		p.Props = &c.aliasOut.props
		if known {
			p.Topic = ""
		}
	}
	start := len(o.buf)
	b, err := p.AppendHeader(o.buf, c.version)
	if err != nil {
		c.srv.log.Error("encode failed", "client", c.info.ClientID, "topic", m.Topic, "err", err)
		o.buf = b[:start]
		c.putOutLocked()
		return dropped
	}
	size := len(b) - start + len(m.Payload)
	// Never send a packet larger than the client allows [MQTT-3.1.2-24] (5.0):
	// it is discarded as if it had been sent [MQTT-3.1.2-25].
	if c.maxOutSize > 0 && size > int(c.maxOutSize) {
		o.buf = b[:start]
		c.putOutLocked()
		c.srv.stats.droppedTooLarge.Add(1)
		c.srv.noteDelivery(c.info.ClientID, m, DropTooLarge)
		return tooLarge
	}
	if c.aliasOut != nil {
		c.aliasOut.commit(aliasName, alias, known)
		c.aliasOut.props = packet.Properties{} // drop references to the message's properties
	}
	if len(m.Payload) <= inlinePayload || !c.vectored {
		b = append(b, m.Payload...)
	} else {
		o.items = append(o.items, outItem{hdrEnd: len(b), payload: m.Payload})
	}
	o.buf = b
	o.bytes += size
	c.stats.msgsOut.Add(1)
	c.stats.pubOut[qos].Add(1)
	c.stats.pubBytesOut.Add(int64(len(m.Payload)))
	c.srv.noteDelivery(c.info.ClientID, m, Delivered)
	c.kickLocked()
	return sent
}

// outProps are the v5 properties of one delivery: the message's own, with
// the remaining expiry [MQTT-3.3.2-6] and this subscriber's subscription
// identifiers [MQTT-3.3.4-3]. The topic alias is never forwarded: aliases
// belong to one network connection.
// Payload Format Indicator [MQTT-3.3.2-4], Response Topic [MQTT-3.3.2-15],
// Correlation Data [MQTT-3.3.2-16], User Properties in order [MQTT-3.3.2-17],
// [MQTT-3.3.2-18] and Content Type [MQTT-3.3.2-20] go unaltered; a 3.x
// subscriber gets none (writePublish sets them for 5.0 only).
func outProps(m *Message, subIDs []uint32) *packet.Properties {
	mp := m.Props
	if mp == nil && len(subIDs) == 0 {
		return nil
	}
	if mp != nil && mp.MessageExpiry == nil && mp.TopicAlias == nil && len(subIDs) == 0 {
		return mp
	}
	var p packet.Properties
	if mp != nil {
		p = *mp
		p.TopicAlias = nil
		if mp.MessageExpiry != nil {
			left := int64(*mp.MessageExpiry) - int64(time.Since(m.Created)/time.Second)
			if left < 1 {
				left = 1
			}
			p.MessageExpiry = packet.Ptr(uint32(left))
		}
	}
	p.SubscriptionIDs = subIDs
	return &p
}

// backlogFullLocked reports whether the backlog reached MaxBacklogBytes. A
// PUBLISH is queued only below the bound, so the backlog never exceeds it
// by more than one PUBLISH, plus the control packets (acknowledgements,
// PINGRESP, SUBACK, which answer the client's own packets and are never
// dropped) and the QoS 1/2 re-sent on reconnection (at most the in-flight
// window). Past the bound a QoS 0 PUBLISH is dropped and counted
// (Stats.DroppedBacklog); a QoS 1/2 one is not written but stays queued in
// the session (backlogRoom), within max_queued_messages / max_queued_bytes,
// until the writer drains the backlog below the bound. outMu is held.
func (c *conn) backlogFullLocked() bool {
	return c.out != nil && c.out.bytes >= c.srv.opts.MaxBacklogBytes
}

// backlogRoom reports whether the backlog takes another QoS 1/2 PUBLISH for
// s. If not, the writer refills s once it has drained below the bound. A
// closing connection has room: writePublish tells (gone). s.mu is held.
func (c *conn) backlogRoom(s *session) bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead || c.closeAfter || !c.backlogFullLocked() {
		return true
	}
	c.out.backlogSub = s // the backlog is full: c.out is held
	return false
}

// drainedLocked returns the session waiting for room in the backlog, if
// the backlog is below the bound again. outMu is held.
func (c *conn) drainedLocked() *session {
	o := c.out
	if o == nil || o.backlogSub == nil || c.backlogFullLocked() {
		return nil
	}
	s := o.backlogSub
	o.backlogSub = nil
	return s
}

// writerPending reports whether the writer goroutine has been started and
// has not finished: something was queued for the socket.
func (c *conn) writerPending() bool {
	c.outMu.Lock()
	defer c.outMu.Unlock()
	return c.writing
}

// kickLocked starts the writer if none runs. outMu is held.
func (c *conn) kickLocked() {
	if !c.writing {
		c.writing = true
		c.writerWG.Add(1)
		c.srv.workers.run(job{c: c, fn: writeLoopJob})
	}
}

// writeLoop writes the backlog in vectored writes until it is empty, then
// gives its buffers back to the pool and exits.
func (c *conn) writeLoop() {
	defer c.writerWG.Done()
	for {
		c.outMu.Lock()
		o := c.out
		if o == nil || len(o.buf) == 0 {
			c.writing = false
			c.putOutLocked()
			if c.polled.Load() {
				// No write deadline (no runtime timer) while idle; under
				// outMu, so that it clears no next writer's deadline.
				c.nc.SetWriteDeadline(time.Time{})
			}
			act := closeNone
			if c.closeAfter && !c.dead {
				c.dead = true
				act = c.closeNCLocked(false)
			}
			c.outMu.Unlock()
			c.closeNC(act) // no socket I/O under outMu: a TLS close writes
			return
		}
		buf, items := o.buf, o.items
		o.buf, o.items = o.spare, o.spareItems
		o.spare, o.spareItems = nil, nil
		if o.buf == nil {
			o.buf = make([]byte, 0, 4096)
		}
		// The batch stays in o.bytes until it is written.
		batch := len(buf)
		for _, it := range items {
			batch += len(it.payload)
		}
		c.outMu.Unlock()

		n, err := c.flush(o, buf, items)
		c.stats.bytesOut.Add(n)
		clear(items)

		c.outMu.Lock()
		o.spare, o.spareItems = buf[:0], items[:0]
		o.bytes -= batch // written whole (a transport may count its framing in n)
		if err != nil {
			o.bytes = 0 // nothing more is written
			o.backlogSub = nil
			c.writeFailed(err)
			act := closeNone
			if !c.dead {
				act = c.closeNCLocked(false) // the reader (or poller) sees it and tears down
			}
			c.dead = true
			c.writing = false
			o.buf = o.buf[:0]
			clear(o.items)
			o.items = o.items[:0]
			c.putOutLocked()
			c.outMu.Unlock()
			c.closeNC(act)
			return
		}
		wake := c.drainedLocked()
		c.outMu.Unlock()
		if wake != nil {
			wake.backlogDrained(c) // QoS 1/2 held back by the bound; no lock held here
		}
	}
}

// flush writes one batch with a deadline: a client that reads nothing for
// WriteTimeout is disconnected as a slow consumer. o is c.out, which the
// running writer keeps.
func (c *conn) flush(o *outBufs, buf []byte, items []outItem) (int64, error) {
	c.nc.SetWriteDeadline(time.Now().Add(c.srv.opts.WriteTimeout))
	if len(items) == 0 {
		n, err := c.nc.Write(buf)
		return int64(n), err
	}
	iov := o.iov[:0]
	prev := 0
	for _, it := range items {
		iov = append(iov, buf[prev:it.hdrEnd], it.payload)
		prev = it.hdrEnd
	}
	if prev < len(buf) {
		iov = append(iov, buf[prev:])
	}
	keep := iov
	var n int64
	var err error
	if bw, ok := c.nc.(buffersWriter); ok {
		n, err = bw.writeBuffers(&iov)
	} else {
		n, err = iov.WriteTo(c.nc)
	}
	clear(keep)
	o.iov = keep[:0]
	return n, err
}

// remoteString is nc's peer address as a string; a rawConn has it ready.
func remoteString(nc net.Conn) string {
	if r, ok := nc.(interface{ remoteString() string }); ok {
		return r.remoteString()
	}
	return nc.RemoteAddr().String()
}

// buffersWriter is a connection that writes net.Buffers with vectored
// writes of its own (rawConn); net.Buffers.WriteTo does that only for the
// net package's connections.
type buffersWriter interface {
	writeBuffers(v *net.Buffers) (int64, error)
}

// closeAfterFlush closes the connection once what is queued has been
// written (bounded by WriteTimeout).
func (c *conn) closeAfterFlush() {
	act := closeNone
	c.outMu.Lock()
	if !c.dead && !c.closeAfter {
		c.closeAfter = true
		if !c.writing {
			c.dead = true
			act = c.closeNCLocked(false)
		}
	}
	c.outMu.Unlock()
	c.closeNC(act)
}

// closeWithin closes the socket if what is queued is not written within d:
// a client that does not read cannot hold a closing connection open for
// WriteTimeout. The close unblocks the writer.
func (c *conn) closeWithin(d time.Duration) {
	// Every caller has recorded why c ends (disconnect) first; the timer
	// lives with that record.
	cs := c.setClose(CauseError, net.ErrClosed)
	c.outMu.Lock()
	defer c.outMu.Unlock()
	if c.dead || cs.killTimer != nil {
		return
	}
	cs.killTimer = time.AfterFunc(d, c.forceClose)
}

// forceClose closes the socket now, whatever is left to write.
func (c *conn) forceClose() {
	act := closeNone
	c.outMu.Lock()
	if !c.dead {
		c.dead = true
		act = c.closeNCLocked(true)
	}
	c.outMu.Unlock()
	c.closeNC(act)
}

// disconnect ends the connection from the server's side, telling a v5 client
// why with DISCONNECT first. why is recorded as the reason the connection
// ends unless one was recorded before; the DISCONNECT carries the one that
// stands.
func (c *conn) disconnect(why error) {
	cs := c.setClose(causeOf(why, false), why)
	if c.connected.Load() && c.version == packet.V5 {
		why := cs.err
		if rc, ok := disconnectCode(why); ok {
			d := &packet.Disconnect{ReasonCode: rc}
			var rd *errRedirect
			if errors.As(why, &rd) {
				// Use another server / server moved (MQTT 5.0 section 4.11).
				d.Props = &packet.Properties{ServerReference: rd.ref}
			} else {
				d.Props = c.reasonProps(reasonText(why, rc)) // [MQTT-3.14.2-3]
			}
			c.send(d)
		}
	}
	c.closeAfterFlush()
}

// takeoverGrace is how long a connection whose client id was taken over
// may take to write what is queued and its DISCONNECT before its socket is
// closed.
const takeoverGrace = time.Second

// takenOver ends c because another connection took its client id: after
// the packets its client already sent (drainPending), DISCONNECT 0x8E (5.0)
// and the close [MQTT-3.1.4-3]. The close does not wait for a client that
// does not read (closeWithin), and the caller, the new connection, waits
// for nothing.
func (c *conn) takenOver() {
	c.drainPending()
	c.disconnect(errTakenOver)
	c.closeWithin(takeoverGrace)
}

// disconnectCode maps an error onto the reason code a v5 DISCONNECT carries.
func disconnectCode(err error) (packet.ReasonCode, bool) {
	switch {
	case errors.Is(err, errShuttingDown):
		return packet.ServerShuttingDown, true
	case errors.Is(err, errTakenOver):
		return packet.SessionTakenOver, true
	case errors.Is(err, errKeepAlive):
		return packet.KeepAliveTimeout, true
	case errors.Is(err, errSecondConnect), errors.Is(err, errNotConnect):
		return packet.ProtocolError, true
	}
	var rd *errRedirect
	if errors.As(err, &rd) {
		return rd.code(), true
	}
	var ac *adminClose
	if errors.As(err, &ac) {
		return ac.rc, true
	}
	var rc packet.ReasonCode
	if errors.As(err, &rc) && rc.IsError() {
		return rc, true
	}
	return 0, false
}

// teardown runs once when the read loop ends: the one place where errors
// become a DISCONNECT (v5) or a plain close (3.x), the will is published and
// the session detached.
func (c *conn) teardown(err error) {
	c.releaseInfo()
	cs := c.setClose(causeOf(err, c.cleanExit), err)
	c.srv.closes[cs.cause].Add(1)
	c.emitEnd(cs)
	if len(c.srv.hooks.discon) > 0 && c.connected.Load() {
		for _, h := range c.srv.hooks.discon {
			h.OnDisconnect(&c.info, cs.cause, cs.err)
		}
	}
	level := slog.LevelInfo
	switch cs.cause {
	case CauseDisconnect, CauseClosed, CauseRefused:
		level = slog.LevelDebug
	}
	if c.srv.log.Enabled(context.Background(), level) {
		args := []any{"client", c.info.ClientID, "remote", c.info.Remote, "listener", c.info.Listener, "reason", cs.cause.String()}
		switch cs.cause {
		case CauseDisconnect, CauseKeepAlive, CauseConnectTimeout, CauseTakenOver, CauseShutdown:
			// the reason says it all
		default:
			if cs.err != nil {
				args = append(args, "err", cs.err.Error())
			}
		}
		c.srv.log.Log(context.Background(), level, "client disconnected", args...)
	}
	if !c.connected.Load() {
		c.disconnect(err)
		return
	}
	c.srv.stats.fold(&c.stats)
	w := c.will
	c.will = nil
	if c.cleanExit {
		w = nil
	}
	c.sess.detach(c, w) // publishes the will now or after its delay (will.go)
	c.srv.stats.connected.Add(-1)
	// The socket closes after the session is detached: a client that sees
	// its connection end finds its session offline (or ended) when it
	// connects again, and the counters already say so.
	c.disconnect(err)
}

// releaseInfo gives the session a copy of its own of the identity that owns
// it if it still shares this connection's (finishConnect shares c.info
// rather than copying it: one ClientInfo per connected client). The session
// outlives the connection and must not keep it reachable; a session taken
// over meanwhile holds its new owner's and is left alone. The copy has the
// same contents (c.info does not change once connected), so a pointer to
// either read before the swap stays valid; authGen is unchanged.
func (c *conn) releaseInfo() {
	s := c.sess
	if s == nil {
		return
	}
	s.mu.Lock()
	if s.info == &c.info {
		info := c.info
		s.info = &info
	}
	s.mu.Unlock()
}
