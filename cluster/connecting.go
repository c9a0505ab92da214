package cluster

import (
	"context"
	"sync"

	"github.com/mqttd/mqttd/broker"
)

// A CONNECT on this node between its claim of the client id and its end
// (its client attached to the session, or refused) is not yet a client the
// broker can take over: Server.TakeOver finds no session, or one without
// its connection. A request from a node that claimed the id after it
// (takeover, release or end, whose ownerRequest.Rev is at least this
// CONNECT's claim) was answered "done" at once, and the CONNECT went on to
// connect its client: two nodes each serving the client as its owner, and
// nothing ever closing either (TestTakeoverRacing, TestTakeoverDuringConnect).
//
// So such a request marks the CONNECT superseded and waits for it to end
// before it takes over what this node holds: BeforeSession refuses a
// superseded CONNECT that has not returned yet, and one that connected
// is then taken over like any client. A request that gave up waiting
// (supersedeWait) leaves the CONNECT to close its own client once it
// connects (ConnectEnded).

// connecting is one CONNECT in flight on this node.
type connecting struct {
	info       *broker.ClientInfo
	writing    bool   // its claim's write of the ownership entry is in flight
	rev        uint64 // the revision its claim wrote; 0 before
	superseded bool   // a node that claimed the id later asked for it
	abandoned  bool   // superseded, and the request stopped waiting for it to end
}

// inflight holds the CONNECTs in flight, by client id.
type inflight struct {
	mu      sync.Mutex
	byID    map[string][]*connecting
	changed chan struct{} // closed and replaced at every change
}

// begin records the CONNECT of c; its ConnectEnded ends it.
func (f *inflight) begin(c *broker.ClientInfo) *connecting {
	k := &connecting{info: c}
	f.mu.Lock()
	if f.byID == nil {
		f.byID = make(map[string][]*connecting)
	}
	f.byID[c.ClientID] = append(f.byID[c.ClientID], k)
	f.mu.Unlock()
	return k
}

// set changes k under the lock and wakes the waiters.
func (f *inflight) set(k *connecting, change func(k *connecting)) {
	if k == nil {
		return
	}
	f.mu.Lock()
	change(k)
	f.signalLocked()
	f.mu.Unlock()
}

func (f *inflight) signalLocked() {
	if f.changed != nil {
		close(f.changed)
		f.changed = nil
	}
}

// isSuperseded reports whether a later claim asked for k's client id.
func (f *inflight) isSuperseded(k *connecting) bool {
	if k == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return k.superseded
}

// end removes the CONNECT of c and reports whether it was superseded by a
// request that stopped waiting for it.
func (f *inflight) end(c *broker.ClientInfo) (abandoned bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ks := f.byID[c.ClientID]
	for i, k := range ks {
		if k.info != c {
			continue
		}
		abandoned = k.abandoned
		ks = append(ks[:i], ks[i+1:]...)
		if len(ks) == 0 {
			delete(f.byID, c.ClientID)
		} else {
			f.byID[c.ClientID] = ks
		}
		f.signalLocked()
		break
	}
	return abandoned
}

// supersede marks the CONNECTs of id whose claim wrote a revision up to
// rev as superseded and waits until they ended, and until no claim write
// of id is in flight (it may be the one that wrote rev). It reports false
// when ctx ended first; the CONNECTs it waited for then close their
// clients themselves.
func (f *inflight) supersede(ctx context.Context, id string, rev uint64) bool {
	for {
		f.mu.Lock()
		wait := false
		for _, k := range f.byID[id] {
			switch {
			case k.writing:
				wait = true
			case k.rev != 0 && k.rev <= rev:
				k.superseded = true
				wait = true
			}
		}
		if !wait {
			f.mu.Unlock()
			return true
		}
		if f.changed == nil {
			f.changed = make(chan struct{})
		}
		ch := f.changed
		f.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			f.mu.Lock()
			for _, k := range f.byID[id] {
				if k.superseded {
					k.abandoned = true
				}
			}
			f.mu.Unlock()
			return false
		}
	}
}

// ConnectEnded ends the record of a CONNECT in flight
// (broker.ConnectEndHook). A client that connected although a later claim
// elsewhere superseded it, after the request stopped waiting, is taken
// over here now (v5: DISCONNECT 0x8E).
func (n *Node) ConnectEnded(c *broker.ClientInfo, connected bool) {
	if !n.conns.end(c) || !connected {
		return
	}
	id := c.ClientID
	n.log.Warn("cluster: a client connected after another node took its id over: it is disconnected",
		"client", id)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), takeoverWait)
		defer cancel()
		if _, err := n.srv.TakeOver(ctx, id); err != nil {
			n.log.Warn("cluster: superseded client not disconnected", "client", id, "err", err)
		}
	}()
}
