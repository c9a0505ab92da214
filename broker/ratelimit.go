package broker

import (
	"net"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Rate limits (issue 12).
//
// ListenerOptions.MaxConnectionRate (max_connection_rate, listener-scoped)
// bounds the new connections a listener accepts per second: a token bucket
// holding at most one second's worth. Past it a new socket is closed at once,
// before anything is read from it, and counted (Server.ListenerRateRefusals);
// the refusals are logged at most once a second, with how many there were.
//
// Options.MaxPublishRate (max_publish_rate, global) bounds the PUBLISH packets
// one connection may send per second, again a bucket of one second's worth.
// Past it the broker stops reading from that client until a token is there:
// the packets of the burst read so far are applied and acknowledged first
// (flushPending), then the read loop waits, holding no lock, and the client's
// own TCP window fills (back-pressure; nothing is dropped). The keep-alive
// deadline starts again after the wait, as after memWait: the silence was
// ours.

// tokenBucket is a token bucket of rate tokens per second holding at most
// burst. It is used by one goroutine only (a listener's accept loop, or a
// connection's read loop) and has no lock.
type tokenBucket struct {
	rate   float64
	burst  float64
	tokens float64
	last   time.Time
}

func newTokenBucket(rate, burst int, now time.Time) *tokenBucket {
	return &tokenBucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now}
}

// take takes one token and returns 0 when there is one; otherwise it takes
// nothing and returns how long until there is one.
func (b *tokenBucket) take(now time.Time) time.Duration {
	if el := now.Sub(b.last); el > 0 {
		b.tokens = min(b.burst, b.tokens+el.Seconds()*b.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		b.tokens--
		return 0
	}
	d := time.Duration((1 - b.tokens) / b.rate * float64(time.Second))
	return max(d, time.Millisecond)
}

// connRate is a listener's connection-rate state (accept loop only, but for
// the counter).
type connRate struct {
	bucket  *tokenBucket
	refused atomic.Int64 // sockets closed because of MaxConnectionRate
	logged  time.Time    // last refusal log line
	unlog   int64        // refusals since that line
}

// rateAllow reports whether the listener may accept nc under its
// MaxConnectionRate; if not, nc is closed at once, before any read, and
// counted. Called by limitListener.Accept only.
func (st *listenerState) rateAllow(s *Server, nc net.Conn, listener string) bool {
	n := st.opts.MaxConnectionRate
	if n <= 0 {
		return true
	}
	r := &st.rate
	now := time.Now()
	if r.bucket == nil {
		r.bucket = newTokenBucket(n, n, now)
	}
	if r.bucket.take(now) == 0 {
		return true
	}
	r.refused.Add(1)
	r.unlog++
	remote := remoteString(nc)
	nc.Close() // a plain accepted socket: nothing to write on close
	if now.Sub(r.logged) >= time.Second {
		s.log.Warn("connections refused: max_connection_rate reached", "listener", listener, "remote", remote,
			"max_connection_rate", n, "refused", r.unlog)
		r.logged, r.unlog = now, 0
	}
	return false
}

// ListenerRateRefusals returns how many sockets were closed because their
// listener's MaxConnectionRate was reached.
func (s *Server) ListenerRateRefusals() int64 {
	var n int64
	s.lstates.Range(func(_, v any) bool {
		n += v.(*listenerState).rate.refused.Load()
		return true
	})
	return n
}

// publishRateStep bounds one wait of a paused publisher, so that a close or
// shutdown is seen soon.
const publishRateStep = 50 * time.Millisecond

// publishRateWait runs in readPacket before a decoded packet is handled. For
// a PUBLISH past Options.MaxPublishRate it applies and acknowledges what the
// burst read so far, then waits, reading nothing, until a token is there, the
// connection closes or the server shuts down. No lock is held. The packet is
// then handled as usual.
func (c *conn) publishRateWait(pkt packet.Packet) error {
	rate := c.srv.opts.MaxPublishRate
	if rate <= 0 {
		return nil
	}
	if _, ok := pkt.(*packet.Publish); !ok {
		return nil
	}
	now := time.Now()
	x := c.extras()
	if x.pubRate == nil {
		x.pubRate = newTokenBucket(rate, rate, now)
	}
	d := x.pubRate.take(now)
	if d == 0 {
		return nil
	}
	if err := c.flushPending(); err != nil {
		return err
	}
	c.srv.pubRateWaits.Add(1)
	t := time.NewTimer(min(d, publishRateStep))
	defer t.Stop()
	for d > 0 {
		select {
		case <-t.C:
		case <-c.srv.done:
			return nil
		}
		if c.memWaitEnds() {
			return nil
		}
		if d = x.pubRate.take(time.Now()); d > 0 {
			t.Reset(min(d, publishRateStep))
		}
	}
	if c.keepAlive > 0 {
		c.pollMu.Lock()
		if !c.closeReq { // a close in progress set its own short deadline
			c.nc.SetReadDeadline(time.Now().Add(c.keepAliveDur() * 3 / 2))
		}
		c.pollMu.Unlock()
	}
	return nil
}

// PublishRateWaits returns how many times a client was paused by
// MaxPublishRate.
func (s *Server) PublishRateWaits() int64 { return s.pubRateWaits.Load() }
