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
	dropped      atomic.Int64 // queue overflow
	authFailed   atomic.Int64
	closed       connStats // folded from closed connections
}

func (st *stats) fold(cs *connStats) {
	d := &st.closed
	d.msgsIn.Add(cs.msgsIn.Swap(0))
	d.bytesIn.Add(cs.bytesIn.Swap(0))
	d.pubIn.Add(cs.pubIn.Swap(0))
	d.pubBytesIn.Add(cs.pubBytesIn.Swap(0))
	d.msgsOut.Add(cs.msgsOut.Swap(0))
	d.bytesOut.Add(cs.bytesOut.Swap(0))
	d.pubOut.Add(cs.pubOut.Swap(0))
	d.pubBytesOut.Add(cs.pubBytesOut.Swap(0))
	d.dropped.Add(cs.dropped.Swap(0))
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
	PublishDropped      int64
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
		out.PublishReceived += cs.pubIn.Load()
		out.PublishBytesRecv += cs.pubBytesIn.Load()
		out.MessagesSent += cs.msgsOut.Load()
		out.BytesSent += cs.bytesOut.Load()
		out.PublishSent += cs.pubOut.Load()
		out.PublishBytesSent += cs.pubBytesOut.Load()
		out.PublishDropped += cs.dropped.Load()
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
	out.PublishDropped += s.stats.dropped.Load()
	out.Subscriptions = int64(s.subs.Len())
	out.Retained = int64(s.retained.len())
	out.AuthFailures = s.stats.authFailed.Load()
	return out
}
