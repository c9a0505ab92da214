package broker

import (
	"net"
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
	c.nc.SetReadDeadline(time.Now().Add(c.srv.opts.ConnectTimeout))
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	if !p.add(c) {
		return false
	}
	c.timer = time.AfterFunc(c.srv.opts.ConnectTimeout, c.pollTimeout)
	c.polled.Store(true)
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
	go c.pollBurst()
}

// pollBurst reads while bytes keep coming, then re-arms the socket and exits.
func (c *conn) pollBurst() { c.pollRead(false) }

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
			go c.endPolled(err)
		} else {
			c.endPolled(err)
		}
		return
	}
	switch {
	case !c.connected.Load(): // the connect timeout keeps running
	case c.keepAlive > 0:
		c.timer.Reset(c.keepAlive * 3 / 2) // [MQTT-3.1.2-24]
	default:
		c.timer.Stop()
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

// pollTimeout fires when an idle connection sent nothing for 1.5 x its keep
// alive, or no CONNECT within the connect timeout.
func (c *conn) pollTimeout() {
	c.pollMu.Lock()
	if c.pollState != pollIdle {
		c.pollMu.Unlock()
		return // reading: the burst re-arms the timer
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
		go c.endPolled(net.ErrClosed)
	}
}

// closeGrace is how long a closing connection's running burst may go on
// reading what its client already sent.
const closeGrace = 100 * time.Millisecond

// endPolled ends a polled connection: the same teardown as the read loop's.
func (c *conn) endPolled(err error) {
	c.timer.Stop()
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
