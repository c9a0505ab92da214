package broker

import (
	"math"
	"strconv"
	"time"
)

// sysLoop publishes the $SYS/broker/... topics every SysInterval, retained,
// as Mosquitto does: static ones once, the rest when their value changed.
func (s *Server) sysLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SysInterval)
	defer t.Stop()
	sp := sysPublisher{srv: s, last: make(map[string]string), prevTime: time.Now()}
	sp.put("$SYS/broker/version", s.opts.Version)
	sp.tick(time.Now())
	for {
		select {
		case <-s.done:
			return
		case now := <-t.C:
			sp.tick(now)
		}
	}
}

// AddSysSource adds fn to what is published under $SYS every sys_interval:
// fn is called on the $SYS goroutine with put, which publishes a retained
// value on a $SYS topic when it changed (bridges and the cluster report
// there). fn must not block.
func (s *Server) AddSysSource(fn func(put func(topic, value string))) {
	s.sysMu.Lock()
	s.sysSources = append(s.sysSources[:len(s.sysSources):len(s.sysSources)], fn)
	s.sysMu.Unlock()
}

// sysPublisher remembers what was last published and the load averages.
type sysPublisher struct {
	srv      *Server
	last     map[string]string
	prev     Stats
	prevTime time.Time
	loads    map[string]*[3]float64
}

func (sp *sysPublisher) put(topicName, value string) {
	if sp.last[topicName] == value {
		return
	}
	sp.last[topicName] = value
	sp.srv.publish(&Message{Topic: topicName, Payload: []byte(value), Retain: true}, nil, nil)
}

func (sp *sysPublisher) tick(now time.Time) {
	s := sp.srv
	st := s.Stats()
	i := func(v int64) string { return strconv.FormatInt(v, 10) }
	sp.put("$SYS/broker/uptime", i(int64(now.Sub(s.started)/time.Second))+" seconds")
	sp.put("$SYS/broker/clients/connected", i(st.ClientsConnected))
	sp.put("$SYS/broker/clients/active", i(st.ClientsConnected))
	sp.put("$SYS/broker/clients/disconnected", i(st.ClientsDisconnected))
	sp.put("$SYS/broker/clients/inactive", i(st.ClientsDisconnected))
	sp.put("$SYS/broker/clients/total", i(st.ClientsConnected+st.ClientsDisconnected))
	sp.put("$SYS/broker/clients/maximum", i(st.ClientsMaximum))
	sp.put("$SYS/broker/clients/expired", i(st.ClientsExpired))
	sp.put("$SYS/broker/messages/received", i(st.MessagesReceived))
	sp.put("$SYS/broker/messages/sent", i(st.MessagesSent))
	sp.put("$SYS/broker/messages/inflight", i(st.Inflight))
	sp.put("$SYS/broker/messages/stored", i(st.Inflight+st.Queued+st.Retained))
	sp.put("$SYS/broker/store/messages/count", i(st.Inflight+st.Queued+st.Retained))
	sp.put("$SYS/broker/bytes/received", i(st.BytesReceived))
	sp.put("$SYS/broker/bytes/sent", i(st.BytesSent))
	sp.put("$SYS/broker/publish/messages/received", i(st.PublishReceived))
	sp.put("$SYS/broker/publish/messages/sent", i(st.PublishSent))
	sp.put("$SYS/broker/publish/messages/dropped", i(st.PublishDropped))
	sp.put("$SYS/broker/publish/bytes/received", i(st.PublishBytesRecv))
	sp.put("$SYS/broker/publish/bytes/sent", i(st.PublishBytesSent))
	sp.put("$SYS/broker/subscriptions/count", i(st.Subscriptions))
	sp.put("$SYS/broker/retained messages/count", i(st.Retained))
	s.sysMu.Lock()
	sources := s.sysSources
	s.sysMu.Unlock()
	for _, src := range sources {
		src(sp.put) // AddSysSource: bridges, the cluster
	}

	// Load averages: per-minute rates smoothed over 1, 5 and 15 minutes.
	dt := now.Sub(sp.prevTime).Seconds()
	if dt > 0 {
		if sp.loads == nil {
			sp.loads = make(map[string]*[3]float64)
		}
		load := func(name string, cur, prev int64) {
			avg := sp.loads[name]
			if avg == nil {
				avg = new([3]float64)
				sp.loads[name] = avg
			}
			rate := float64(cur-prev) / dt * 60
			for k, w := range [3]float64{60, 300, 900} {
				f := math.Exp(-dt / w)
				avg[k] = avg[k]*f + rate*(1-f)
				sp.put("$SYS/broker/load/"+name+"/"+[3]string{"1min", "5min", "15min"}[k],
					strconv.FormatFloat(avg[k], 'f', 2, 64))
			}
		}
		load("messages/received", st.MessagesReceived, sp.prev.MessagesReceived)
		load("messages/sent", st.MessagesSent, sp.prev.MessagesSent)
		load("bytes/received", st.BytesReceived, sp.prev.BytesReceived)
		load("bytes/sent", st.BytesSent, sp.prev.BytesSent)
		load("publish/received", st.PublishReceived, sp.prev.PublishReceived)
		load("publish/sent", st.PublishSent, sp.prev.PublishSent)
		load("publish/dropped", st.PublishDropped, sp.prev.PublishDropped)
		load("connections", st.SocketsAccepted, sp.prev.SocketsAccepted)
		load("sockets", st.SocketsAccepted, sp.prev.SocketsAccepted)
	}
	sp.prev, sp.prevTime = st, now
}
