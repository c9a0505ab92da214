package broker

import "sync/atomic"

// stats are the server's counters. Per-message counters live in each
// connection (connStats, no sharing between cores) and are folded in here
// when it closes; Stats adds the live ones.
type stats struct {
	connected    atomic.Int64
	maxConnected atomic.Int64
	connsTotal   atomic.Int64 // sockets accepted
	expired      atomic.Int64
	droppedQueue atomic.Int64 // queue overflow (count, bytes, broker-wide bytes)
	authFailed   atomic.Int64
	storeWrites  atomic.Int64 // store batches applied
	storeNanos   atomic.Int64 // time spent applying them
	// Store writes a ReplicaHook failed (a cluster that could not copy a
	// persistent session's change: cut off from the majority).
	replicaFailures atomic.Int64
	closed          connStats // folded from closed connections

	// Session gauges, kept by session.syncStatsLocked wherever a session's
	// connection, window or queue changes, so that Stats reads them without
	// walking (and locking) every session.
	offline  atomic.Int64 // registered sessions without a connection
	inflight atomic.Int64 // outbound QoS 1/2 messages awaiting acknowledgement
	queued   atomic.Int64 // messages waiting for a window

	// PUBLISH larger than a client's Maximum Packet Size: rare enough to be
	// counted here, which keeps it out of every connection's connStats.
	droppedTooLarge atomic.Int64
}

// sessionGauges is what one session contributes to the session gauges, as
// last added to them. 32-bit counts (a window is at most 65535; a queue of
// 2^31 messages would not fit in memory) keep it at 12 bytes, which keeps
// the session struct in a smaller size class.
type sessionGauges struct {
	inflight int32
	queued   int32
	offline  bool
}

// syncStatsLocked brings the server's session gauges up to date with s: it
// adds the difference between what s contributes now and what it last
// added. Every change of s.conn, s.inflight, s.queue/s.qhead or s.ended is
// followed by a call before s.mu is released; a session ended contributes
// nothing. s.mu is held.
func (s *session) syncStatsLocked() {
	now := sessionGauges{
		offline:  !s.ended && s.conn == nil,
		inflight: int32(len(s.inflight)),
		queued:   int32(len(s.queue) - s.qhead),
	}
	if s.ended {
		now = sessionGauges{}
	}
	was := &s.gauges
	if now == *was {
		return
	}
	st := &s.srv.stats
	if now.offline != was.offline {
		if now.offline {
			st.offline.Add(1)
		} else {
			st.offline.Add(-1)
		}
	}
	if d := int64(now.inflight) - int64(was.inflight); d != 0 {
		st.inflight.Add(d)
	}
	if d := int64(now.queued) - int64(was.queued); d != 0 {
		st.queued.Add(d)
	}
	*was = now
}

func (st *stats) fold(cs *connStats) {
	d := &st.closed
	d.msgsIn.Add(cs.msgsIn.Swap(0))
	d.bytesIn.Add(cs.bytesIn.Swap(0))
	d.pubBytesIn.Add(cs.pubBytesIn.Swap(0))
	d.msgsOut.Add(cs.msgsOut.Swap(0))
	d.bytesOut.Add(cs.bytesOut.Swap(0))
	d.pubBytesOut.Add(cs.pubBytesOut.Swap(0))
	for q := range 3 {
		d.pubIn[q].Add(cs.pubIn[q].Swap(0))
		d.pubOut[q].Add(cs.pubOut[q].Swap(0))
	}
	d.droppedBacklog.Add(cs.droppedBacklog.Swap(0))
}

func (st *stats) noteMaxConnected(n int64) {
	for {
		m := st.maxConnected.Load()
		if n <= m || st.maxConnected.CompareAndSwap(m, n) {
			return
		}
	}
}

// Stats is a snapshot of the server's counters.
type Stats struct {
	ClientsConnected    int64
	ClientsDisconnected int64 // persistent sessions without a connection
	ClientsMaximum      int64
	ClientsExpired      int64
	SocketsAccepted     int64
	MessagesReceived    int64 // packets of any type
	MessagesSent        int64
	BytesReceived       int64
	BytesSent           int64
	PublishReceived     int64
	PublishSent         int64
	PublishBytesRecv    int64
	PublishBytesSent    int64
	PublishDropped      int64 // all drops: the sum of the four below
	DroppedQueueFull    int64 // a session queue full (count, bytes or broker-wide bytes)
	DroppedBacklog      int64 // QoS 0 over a connection's write backlog
	DroppedTooLarge     int64 // above the client's Maximum Packet Size (5.0)
	DroppedMemory       int64 // QoS 0 read past memory_limit (memlimit.go)
	PublishReceivedQoS  [3]int64
	PublishSentQoS      [3]int64
	StoreWrites         int64   // store batches applied
	StoreWriteSeconds   float64 // time spent applying them
	ReplicaFailures     int64   // store writes a ReplicaHook failed to copy (replica.go)
	Subscriptions       int64
	Retained            int64
	Inflight            int64
	Queued              int64
	AuthFailures        int64
	RefusedConnRate     int64 // sockets closed by a listener's MaxConnectionRate (ratelimit.go)
	PublishRateWaits    int64 // times a publisher was paused by MaxPublishRate (ratelimit.go)
	PollSpins           int64 // times the poller, busy, polled for events instead of parking (spin_linux.go)
	PollSpinHits        int64 // of those, the ones that found an event
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	var out Stats
	add := func(cs *connStats) {
		out.MessagesReceived += cs.msgsIn.Load()
		out.BytesReceived += cs.bytesIn.Load()
		out.PublishBytesRecv += cs.pubBytesIn.Load()
		out.MessagesSent += cs.msgsOut.Load()
		out.BytesSent += cs.bytesOut.Load()
		out.PublishBytesSent += cs.pubBytesOut.Load()
		for q := range 3 {
			out.PublishReceivedQoS[q] += cs.pubIn[q].Load()
			out.PublishSentQoS[q] += cs.pubOut[q].Load()
		}
		out.DroppedBacklog += cs.droppedBacklog.Load()
	}
	add(&s.stats.closed)
	out.DroppedTooLarge = s.stats.droppedTooLarge.Load()
	s.mu.Lock()
	for c := range s.conns {
		add(&c.stats)
	}
	s.mu.Unlock()
	// O(1) in the number of sessions, and no session lock: the gauges are
	// kept as sessions change (syncStatsLocked).
	out.ClientsDisconnected = s.stats.offline.Load()
	out.Inflight = s.stats.inflight.Load()
	out.Queued = s.stats.queued.Load()
	out.ClientsConnected = s.stats.connected.Load()
	out.ClientsMaximum = s.stats.maxConnected.Load()
	out.ClientsExpired = s.stats.expired.Load()
	out.SocketsAccepted = s.stats.connsTotal.Load()
	out.DroppedQueueFull = s.stats.droppedQueue.Load()
	if s.mem != nil {
		out.DroppedMemory = s.mem.dropped.Load()
	}
	out.PublishDropped = out.DroppedQueueFull + out.DroppedBacklog + out.DroppedTooLarge + out.DroppedMemory
	for q := range 3 {
		out.PublishReceived += out.PublishReceivedQoS[q]
		out.PublishSent += out.PublishSentQoS[q]
	}
	out.StoreWrites = s.stats.storeWrites.Load()
	out.ReplicaFailures = s.stats.replicaFailures.Load()
	out.StoreWriteSeconds = float64(s.stats.storeNanos.Load()) / 1e9
	out.Subscriptions = int64(s.subs.Len())
	out.Retained = int64(s.retained.len())
	out.AuthFailures = s.stats.authFailed.Load()
	out.RefusedConnRate = s.ListenerRateRefusals()
	out.PublishRateWaits = s.PublishRateWaits()
	out.PollSpins, out.PollSpinHits = s.poller.spinCounts()
	return out
}
