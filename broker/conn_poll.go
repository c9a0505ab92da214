package broker

import (
	"net"
	"sync"
	"time"
)

// States of a polled connection (pollState, guarded by pollMu).
const (
	pollIdle    = iota // armed in the poller, no goroutine
	pollReading        // a burst goroutine is reading
	pollClosed         // ended; teardown claimed by whoever set this
)

// startPolled hands c to the server's poller. It reports false when c cannot
// be polled (no poller, not a TCP socket); then c needs a read goroutine.
func (c *conn) startPolled() bool {
	p := c.srv.poller
	if p == nil {
		return false
	}
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	if !p.add(c) {
		return false // readLoop sets the connect timeout
	}
	// While idle a polled connection has no read deadline (pollBurst sets
	// it from due): the connect timeout runs in the shared timers.
	c.polled.Store(true)
	p.timers.schedule(c, p.timers.now()+int64(c.srv.opts.ConnectTimeout))
	return true
}

// pollReady runs on the poller's goroutine when c's socket is readable.
func (c *conn) pollReady() {
	c.pollMu.Lock()
	if c.pollState != pollIdle {
		c.pollMu.Unlock()
		return
	}
	c.pollState = pollReading
	c.pollMu.Unlock()
	c.srv.workers.run(job{c: c, fn: pollBurstJob})
}

// pollBurst reads while bytes keep coming, then re-arms the socket and exits.
// The burst's reads are bounded by the deadline the idle connection had in
// the shared timers (keep alive or connect timeout).
func (c *conn) pollBurst() {
	if due := c.due.Load(); due != 0 {
		c.nc.SetReadDeadline(c.srv.poller.timers.at(due))
	}
	c.pollRead(false)
}

// pollRead is pollBurst; a drain (drainPending, on the goroutine of the
// connection taking over) that ends the connection leaves the teardown,
// which waits for the writer, to a goroutine of its own.
func (c *conn) pollRead(drain bool) {
	var err error
	for {
		if err = c.readBurst(); err != nil || !c.moreToRead() {
			break
		}
	}
	c.pollMu.Lock()
	if err == nil && c.closeReq {
		err = net.ErrClosed
	}
	if err != nil {
		c.pollState = pollClosed
		c.srv.poller.removeLocked(c)
		closeReq := c.closeReq
		c.pollMu.Unlock()
		if closeReq {
			// closeNC left the socket open for this burst to finish; the
			// output it waited for is written.
			c.nc.Close()
		}
		if drain {
			// Why it ends is decided now, before the takeover's reason.
			c.setClose(causeOf(err, c.cleanExit), err)
			c.srv.workers.run(job{c: c, fn: endPolledJob, err: err})
		} else {
			c.endPolled(err)
		}
		return
	}
	// Parked: no read deadline (no runtime timer for an idle connection);
	// the shared timers watch the keep alive instead.
	c.nc.SetReadDeadline(time.Time{})
	t := &c.srv.poller.timers
	switch {
	case !c.connected.Load(): // the connect timeout keeps running
	case c.keepAlive > 0:
		t.schedule(c, t.now()+int64(c.keepAliveDur()*3/2)) // [MQTT-3.1.2-24]
	default:
		t.cancel(c) // keep alive 0: no timeout
	}
	c.pollState = pollIdle
	c.srv.poller.rearmLocked(c)
	c.pollMu.Unlock()
}

// closeAction is what closing the socket takes once outMu is released:
// closing a TLS or WebSocket connection writes (close_notify, a close
// frame), and no lock is held across a network write.
type closeAction uint8

const (
	closeNone   closeAction = iota // nothing (already closed, or a running burst closes it)
	closeSocket                    // close nc
	closeAndEnd                    // close nc, then tear the (idle, polled) connection down
)

// pollTimeout runs when the shared timers find c's deadline passed: an idle
// connection that sent nothing for 1.5 x its keep alive, or no CONNECT
// within the connect timeout. A deadline moved on meanwhile (a burst that
// parked again) is scheduled anew.
func (c *conn) pollTimeout() {
	c.pollMu.Lock()
	if c.pollState != pollIdle {
		c.pollMu.Unlock()
		return // reading: the burst schedules the next deadline when it parks
	}
	t := &c.srv.poller.timers
	due := c.due.Load()
	if due == 0 {
		c.pollMu.Unlock()
		return // keep alive 0: no timeout
	}
	if due > t.now() {
		t.schedule(c, due)
		c.pollMu.Unlock()
		return
	}
	c.pollState = pollClosed
	c.srv.poller.removeLocked(c)
	c.pollMu.Unlock()
	err := errConnectTimeout
	if c.connected.Load() {
		err = errKeepAlive
	}
	c.endPolled(err)
}

// closeNCLocked decides how the socket closes; the caller runs the action
// with closeNC once it has released outMu. A polled connection has no
// reader to notice the close, so an idle one is taken out of the epoll set
// here (before its socket closes) and torn down by closeNC. A reading one
// is left to finish the bytes its client already sent (a DISCONNECT that
// cancels the will, say), bounded by a short read deadline; its burst then
// closes the socket and ends it. With now (a writer stuck on a client that
// does not read, a shutdown past its deadline) the burst is not waited for:
// the socket leaves the epoll set and closes, and the burst's read fails
// and ends it.
// Called with outMu held (lock order: conn.outMu -> conn.pollMu).
func (c *conn) closeNCLocked(now bool) closeAction {
	if !c.polled.Load() {
		return closeSocket
	}
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	switch c.pollState {
	case pollIdle:
		c.pollState = pollClosed
		c.srv.poller.removeLocked(c)
		return closeAndEnd
	case pollReading:
		c.closeReq = true
		if !now {
			c.nc.SetReadDeadline(time.Now().Add(closeGrace))
			return closeNone
		}
		c.srv.poller.removeLocked(c)
	}
	return closeSocket
}

// closeNC carries out what closeNCLocked decided, with no lock held.
func (c *conn) closeNC(a closeAction) {
	switch a {
	case closeSocket:
		c.nc.Close()
	case closeAndEnd:
		c.nc.Close()
		c.srv.workers.run(job{c: c, fn: endPolledJob, err: net.ErrClosed})
	}
}

// closeGrace is how long a closing connection's running burst may go on
// reading what its client already sent.
const closeGrace = 100 * time.Millisecond

// endPolled ends a polled connection: the same teardown as the read loop's.
func (c *conn) endPolled(err error) {
	c.srv.poller.timers.cancel(c)
	c.teardown(err)
	c.writerWG.Wait()
	c.finish()
}

// drainPending handles, before a takeover closes c, the packets c's client
// already sent (a DISCONNECT, say, that must cancel the will): a broker that
// read every socket in order would have seen them first. Only an idle polled
// connection with bytes waiting is drained, with a short read deadline.
func (c *conn) drainPending() {
	if !c.polled.Load() {
		return
	}
	c.pollMu.Lock()
	if c.pollState != pollIdle || !c.moreToRead() {
		c.pollMu.Unlock()
		return
	}
	c.pollState = pollReading
	c.pollMu.Unlock()
	c.nc.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	c.pollRead(true)
}

// idleTimers holds the keep-alive and connect deadlines of the polled
// connections in one min-heap under one runtime timer, instead of a
// time.Timer per connection (about 130 bytes each, and a slot in the
// runtime's timer heap). A connection is in the heap from its first
// deadline to its end, at a key no later than its deadline (conn.due). A
// burst that parks with a later deadline only stores it: the heap catches
// up lazily when the entry comes due (fire moves it to the deadline, or
// pollTimeout schedules it again). Only an earlier deadline (a keep alive
// shorter than the connect timeout left) reorders the heap at once.
type idleTimers struct {
	base  time.Time // monotonic origin of the deadlines (nanoseconds since base)
	mu    sync.Mutex
	heap  []dueEntry // conn.dueIdx is an entry's index + 1, 0 when out
	timer *time.Timer
	next  int64 // what timer is set for; 0: not set; -1: stopped
}

// dueEntry is one connection in idleTimers' heap.
type dueEntry struct {
	c   *conn
	key int64 // no later than c.due
}

func (t *idleTimers) now() int64 { return int64(time.Since(t.base)) }

// at converts a deadline to a time.Time (with a monotonic reading).
func (t *idleTimers) at(due int64) time.Time { return t.base.Add(time.Duration(due)) }

// schedule sets c's deadline to due. c.pollMu is held (schedule and cancel
// of one connection never run at once).
func (t *idleTimers) schedule(c *conn, due int64) {
	old := c.due.Swap(due)
	if due >= old && c.dueIdx.Load() != 0 {
		return // in the heap at a key <= old <= due: caught up when it comes due
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := int(c.dueIdx.Load()) - 1; i >= 0 {
		if t.heap[i].key > due {
			t.heap[i].key = due
			t.up(i)
		}
	} else {
		t.heap = append(t.heap, dueEntry{c, due})
		c.dueIdx.Store(int32(len(t.heap)))
		t.up(len(t.heap) - 1)
	}
	t.armLocked()
}

// cancel clears c's deadline and takes it out of the heap.
func (t *idleTimers) cancel(c *conn) {
	c.due.Store(0)
	if c.dueIdx.Load() == 0 {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if i := int(c.dueIdx.Load()) - 1; i >= 0 {
		t.removeAt(i)
		if len(t.heap) == 0 {
			t.heap = nil // let a drained heap's array go
		}
	}
}

// removeAt takes heap[i] out. t.mu is held.
func (t *idleTimers) removeAt(i int) {
	c := t.heap[i].c
	last := len(t.heap) - 1
	if i != last {
		t.swap(i, last)
	}
	t.heap[last] = dueEntry{}
	t.heap = t.heap[:last]
	c.dueIdx.Store(0)
	if i != last {
		t.down(i)
		t.up(i)
	}
}

// armLocked sets the runtime timer for the earliest entry. t.mu is held.
func (t *idleTimers) armLocked() {
	if len(t.heap) == 0 || t.next < 0 {
		return // fire finds nothing; the timer is left to lapse
	}
	first := t.heap[0].key
	if t.next != 0 && t.next <= first {
		return
	}
	t.next = first
	d := time.Duration(first - t.now())
	if t.timer == nil {
		t.timer = time.AfterFunc(d, t.fire)
	} else {
		t.timer.Reset(d)
	}
}

// stop stops the runtime timer (the server shut down).
func (t *idleTimers) stop() {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.timer != nil {
		t.timer.Stop()
	}
	t.next = -1 // armLocked sets nothing more
}

// fire runs when the earliest key passed: entries whose connection's
// deadline moved on are keyed at it again; the others leave the heap and
// their connections' pollTimeout decides (a burst may be running, or have
// just parked with a new deadline).
func (t *idleTimers) fire() {
	t.mu.Lock()
	if t.next < 0 {
		t.mu.Unlock()
		return // stopped
	}
	t.next = 0
	due := t.expireLocked(t.now(), nil)
	t.armLocked()
	t.mu.Unlock()
	for _, c := range due {
		c.srv.workers.run(job{c: c, fn: pollTimeoutJob})
	}
}

// expireLocked takes the connections whose deadline is at or before now
// out of the heap and appends them to due; entries whose deadline moved
// later are keyed at it again. t.mu is held.
func (t *idleTimers) expireLocked(now int64, due []*conn) []*conn {
	for len(t.heap) > 0 && t.heap[0].key <= now {
		c := t.heap[0].c
		if d := c.due.Load(); d > now {
			t.heap[0].key = d
			t.down(0)
			continue
		}
		t.removeAt(0)
		due = append(due, c)
	}
	if len(t.heap) == 0 {
		t.heap = nil
	}
	return due
}

func (t *idleTimers) less(i, j int) bool { return t.heap[i].key < t.heap[j].key }

func (t *idleTimers) swap(i, j int) {
	t.heap[i], t.heap[j] = t.heap[j], t.heap[i]
	t.heap[i].c.dueIdx.Store(int32(i + 1))
	t.heap[j].c.dueIdx.Store(int32(j + 1))
}

func (t *idleTimers) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !t.less(i, p) {
			return
		}
		t.swap(i, p)
		i = p
	}
}

func (t *idleTimers) down(i int) {
	n := len(t.heap)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && t.less(r, l) {
			m = r
		}
		if !t.less(m, i) {
			return
		}
		t.swap(i, m)
		i = m
	}
}
