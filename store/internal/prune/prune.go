// Package prune is the part of Store.Load that both stores share: from
// everything read back, it works out what survives and what Load deletes.
package prune

import (
	"cmp"
	"fmt"
	"slices"
	"time"

	"github.com/mqttd/mqttd/store"
)

// Raw is everything a store read back, before pruning.
type Raw struct {
	// Sessions by client id. A SessionState with a nil Session holds records
	// (subscriptions, queue entries, inbound ids) of a client that has no
	// session record. Queue and Inbound need not be sorted.
	Sessions map[string]*store.SessionState
	Messages map[uint64]*store.Message
	Retained []*store.Message
}

// EntryKey names a queue entry.
type EntryKey struct {
	ClientID string
	Seq      uint64
}

// Drops is what Load deletes from the store.
type Drops struct {
	Sessions []string   // client ids: delete the session and everything it holds
	Entries  []EntryKey // single queue entries (of surviving sessions)
	Messages []uint64   // messages no surviving entry names
	Retained []string   // topics of expired retained messages
}

// Empty reports whether there is nothing to delete.
func (d *Drops) Empty() bool {
	return len(d.Sessions) == 0 && len(d.Entries) == 0 && len(d.Messages) == 0 && len(d.Retained) == 0
}

// Prune turns raw (which it takes over) into the State that Load returns, the deletions that go
// with it and the reference count of every surviving message. It returns an
// error wrapping store.ErrCorrupt when a queue entry names a message that is
// not there.
func Prune(raw *Raw, now time.Time) (*store.State, *Drops, map[uint64]uint32, error) {
	st := &store.State{Messages: raw.Messages, NextMessageID: 1}
	drops := &Drops{}
	refs := make(map[uint64]uint32)
	for id := range raw.Messages {
		st.NextMessageID = max(st.NextMessageID, id+1)
	}
	for _, m := range raw.Retained {
		st.NextMessageID = max(st.NextMessageID, m.ID+1)
	}

	for cid, ss := range raw.Sessions {
		if ss.Session == nil {
			// Records of a client without a session record: nothing can
			// reach them.
			drops.Sessions = append(drops.Sessions, cid)
			continue
		}
		if ss.Session.Expired(now) {
			drops.Sessions = append(drops.Sessions, cid)
			st.Expired = append(st.Expired, ss.Session)
			continue
		}
		queue := ss.Queue[:0]
		for _, e := range ss.Queue {
			m, ok := raw.Messages[e.MessageID]
			if !ok {
				return nil, nil, nil, fmt.Errorf("%w: queue entry %d of client %q names missing message %d",
					store.ErrCorrupt, e.Seq, cid, e.MessageID)
			}
			// A message whose expiry passed before onward delivery started
			// is deleted for that subscriber; one already sent stays so
			// that its delivery completes. [MQTT-3.3.2-5]
			if e.State == store.Queued && m.Expired(now) {
				drops.Entries = append(drops.Entries, EntryKey{cid, e.Seq})
				continue
			}
			refs[e.MessageID]++
			queue = append(queue, e)
		}
		clear(ss.Queue[len(queue):])
		ss.Queue = queue
		slices.SortFunc(ss.Queue, func(a, b *store.QueueEntry) int { return cmp.Compare(a.Seq, b.Seq) })
		slices.SortFunc(ss.Subscriptions, func(a, b *store.Subscription) int {
			return cmp.Or(cmp.Compare(a.Group, b.Group), cmp.Compare(a.Sub.Filter, b.Sub.Filter))
		})
		slices.Sort(ss.Inbound)
		st.Sessions = append(st.Sessions, ss)
	}
	for id := range raw.Messages {
		if refs[id] == 0 {
			drops.Messages = append(drops.Messages, id)
			delete(st.Messages, id) // State.Messages is raw.Messages, pruned
		}
	}
	for _, m := range raw.Retained {
		if m.Expired(now) {
			drops.Retained = append(drops.Retained, m.Publish.Topic)
			continue
		}
		st.Retained = append(st.Retained, m)
	}

	slices.SortFunc(st.Sessions, func(a, b *store.SessionState) int {
		return cmp.Compare(a.Session.ClientID, b.Session.ClientID)
	})
	slices.SortFunc(st.Retained, func(a, b *store.Message) int {
		return cmp.Compare(a.Publish.Topic, b.Publish.Topic)
	})
	slices.SortFunc(st.Expired, func(a, b *store.Session) int { return cmp.Compare(a.ClientID, b.ClientID) })
	slices.Sort(drops.Sessions)
	slices.Sort(drops.Messages)
	slices.Sort(drops.Retained)
	return st, drops, refs, nil
}
