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
	closed       connStats    // folded from closed connections
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
	d.droppedTooLarge.Add(cs.droppedTooLarge.Swap(0))
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
	PublishDropped      int64 // all drops: the sum of the three below
	DroppedQueueFull    int64 // a session queue full (count, bytes or broker-wide bytes)
	DroppedBacklog      int64 // QoS 0 over a connection's write backlog
	DroppedTooLarge     int64 // above the client's Maximum Packet Size (5.0)
	PublishReceivedQoS  [3]int64
	PublishSentQoS      [3]int64
	StoreWrites         int64   // store batches applied
	StoreWriteSeconds   float64 // time spent applying them
	Subscriptions       int64
	Retained            int64
	Inflight            int64
	Queued              int64
	AuthFailures        int64
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
		out.DroppedTooLarge += cs.droppedTooLarge.Load()
	}
	add(&s.stats.closed)
	s.mu.Lock()
	for c := range s.conns {
		add(&c.stats)
	}
	s.mu.Unlock()
	s.sessMu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, ss := range s.sessions {
		sessions = append(sessions, ss)
	}
	s.sessMu.Unlock()
	for _, ss := range sessions {
		ss.mu.Lock()
		if ss.conn == nil {
			out.ClientsDisconnected++
		}
		out.Inflight += int64(len(ss.inflight))
		out.Queued += int64(len(ss.queue) - ss.qhead)
		ss.mu.Unlock()
	}
	out.ClientsConnected = s.stats.connected.Load()
	out.ClientsMaximum = s.stats.maxConnected.Load()
	out.ClientsExpired = s.stats.expired.Load()
	out.SocketsAccepted = s.stats.connsTotal.Load()
	out.DroppedQueueFull = s.stats.droppedQueue.Load()
	out.PublishDropped = out.DroppedQueueFull + out.DroppedBacklog + out.DroppedTooLarge
	for q := range 3 {
		out.PublishReceived += out.PublishReceivedQoS[q]
		out.PublishSent += out.PublishSentQoS[q]
	}
	out.StoreWrites = s.stats.storeWrites.Load()
	out.StoreWriteSeconds = float64(s.stats.storeNanos.Load()) / 1e9
	out.Subscriptions = int64(s.subs.Len())
	out.Retained = int64(s.retained.len())
	out.AuthFailures = s.stats.authFailed.Load()
	return out
}
