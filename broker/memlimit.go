package broker

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Memory limit (Options.MemoryLimit, memory_limit).
//
// One goroutine samples the Go heap every memSampleEvery. When the live
// heap passes memHighPct of the limit, the broker is "over": a connection
// that reads a PUBLISH then stops reading from its socket after that
// packet (keeping its read buffer) and waits until the live heap falls
// below memLowPct of the limit (TCP back-pressure on the publisher). The
// PUBLISH that was read is handled: QoS 0 is dropped and counted
// (Stats.DroppedMemory), QoS 1/2 is routed and acknowledged as usual (it
// was read; holding it would cost the same memory). Connections that do
// not publish are not paused: PINGREQ, acknowledgements, SUBSCRIBE and
// DISCONNECT go on, new connections are accepted and queued messages keep
// being delivered, which is what brings the heap back down.
//
// debug.SetMemoryLimit is set to the limit so that the collector runs
// harder near it. The heap's objects (garbage included) passing memHighPct
// force a collection, whose live heap decides; while over, a collection is
// forced every memGCEvery, so that the live heap watched is fresh even when
// nothing allocates (a broker paused on a slow subscriber).

const (
	memSampleEvery = 50 * time.Millisecond
	memGCEvery     = 200 * time.Millisecond
	memHighPct     = 80 // pause above this % of the limit (live heap)
	memLowPct      = 65 // resume below it
)

// memGauge is the broker-wide memory state.
type memGauge struct {
	limit   int64
	over    atomic.Bool
	dropped atomic.Int64 // QoS 0 PUBLISH dropped while over

	mu    sync.Mutex
	under chan struct{} // closed when memory goes back under; replaced when over
}

// startMemLimit starts the sampler when a limit is set. It ends with the
// server (s.done), restoring the process's previous memory limit.
func (s *Server) startMemLimit() {
	if s.opts.MemoryLimit <= 0 {
		return
	}
	g := &memGauge{limit: s.opts.MemoryLimit, under: make(chan struct{})}
	close(g.under)
	s.mem = g
	prev := debug.SetMemoryLimit(g.limit)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer debug.SetMemoryLimit(prev)
		s.memLoop(g)
	}()
}

// heapSample reads the bytes of heap objects now (live or not yet
// collected) and the heap marked live by the last collection.
func heapSample(sample []metrics.Sample) (objects, live int64) {
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		objects = int64(sample[0].Value.Uint64())
	}
	if sample[1].Value.Kind() == metrics.KindUint64 {
		live = int64(sample[1].Value.Uint64())
	}
	return objects, live
}

// memLoop decides, every memSampleEvery, whether the broker is over its
// limit. The heap's objects passing memHighPct (garbage included, so that
// a fast flood is seen at once) force a collection, and the live heap it
// leaves decides: over above memHighPct, back under below memLowPct.
func (s *Server) memLoop(g *memGauge) {
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	high, low := g.limit*memHighPct/100, g.limit*memLowPct/100
	t := time.NewTicker(memSampleEvery)
	defer t.Stop()
	var lastGC time.Time
	for {
		select {
		case <-s.done:
			g.setOver(false)
			return
		case <-t.C:
		}
		objects, live := heapSample(sample)
		over := g.over.Load()
		if !over && objects <= high {
			continue
		}
		if now := time.Now(); !over || now.Sub(lastGC) >= memGCEvery {
			runtime.GC()
			lastGC = now
			_, live = heapSample(sample)
		}
		switch {
		case !over && live > high:
			s.log.Warn("memory limit reached: pausing publishers", "live_heap", live, "memory_limit", g.limit)
			g.setOver(true)
		case over && live < low:
			s.log.Warn("memory back under the limit: publishers resume", "live_heap", live, "memory_limit", g.limit,
				"dropped_qos0", g.dropped.Load())
			g.setOver(false)
		}
	}
}

func (g *memGauge) setOver(over bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.over.Load() == over {
		return
	}
	if over {
		g.under = make(chan struct{})
	} else {
		close(g.under)
	}
	g.over.Store(over)
}

// underCh is closed once memory is back under the limit.
func (g *memGauge) underCh() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.under
}

// memOver reports whether the broker is over its memory limit.
func (s *Server) memOver() bool { return s.mem != nil && s.mem.over.Load() }

// memShed is called by handlePublish for a valid PUBLISH: past the memory
// limit it marks the connection to pause once its buffered bytes are
// handled, and reports true for a QoS 0 message, which is then dropped and
// counted.
func (c *conn) memShed(p *packet.Publish) bool {
	if !c.srv.memOver() {
		return false
	}
	c.memPaused = true
	if p.QoS == 0 {
		c.srv.mem.dropped.Add(1)
		return true
	}
	return false
}

// memWait runs in readBurst after a packet: a connection that read a
// PUBLISH while the broker was over its memory limit reads nothing more
// (its acknowledgements sent, its read buffer kept) until memory is back
// under, the connection closes or the server shuts down. No lock is held.
// Its keep-alive deadline starts again afterwards: the client's silence was
// our doing. (A polled connection waits on its burst goroutine, in
// pollReading, where its keep-alive timer does not fire and the socket is
// not re-armed.)
func (c *conn) memWait() {
	if !c.memPaused {
		return
	}
	c.memPaused = false
	g := c.srv.mem
	if g == nil || !g.over.Load() {
		return
	}
	t := time.NewTicker(memSampleEvery)
	defer t.Stop()
	under := g.underCh()
	for g.over.Load() && !c.memWaitEnds() {
		select {
		case <-under:
		case <-c.srv.done:
			return
		case <-t.C:
		}
	}
	if c.keepAlive > 0 {
		c.pollMu.Lock()
		if !c.closeReq { // a close in progress set its own short deadline
			c.nc.SetReadDeadline(time.Now().Add(c.keepAliveDur() * 3 / 2))
		}
		c.pollMu.Unlock()
	}
}

// memWaitEnds reports whether c is closing, so that a paused reader goes on
// to see the close.
func (c *conn) memWaitEnds() bool {
	c.outMu.Lock()
	dead := c.dead || c.closeAfter
	c.outMu.Unlock()
	if dead {
		return true
	}
	c.pollMu.Lock()
	defer c.pollMu.Unlock()
	return c.closeReq
}
