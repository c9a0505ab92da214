package broker

import (
	"cmp"
	"slices"
	"strings"
	"time"
)

// Read-only views of the server's state for an administration interface
// (package admin). Each takes the locks it needs briefly and in the
// documented order (Server.sessMu, then one session.mu at a time; the
// retained tree's lock alone), copies what it reports, and does no I/O and
// no sorting of more than it must while holding a lock. Pages are in a
// stable order (client id; filter; topic level by level) and are resumed
// from a cursor: the last item of the previous page, so that a page costs
// the size of the page plus one pass over the keys, not a lock held for the
// whole session table.

// ClientFilter selects clients by substring of their client id, user name
// or remote address; empty fields select everything.
type ClientFilter struct {
	ID, Username, Address string
	ConnectedOnly         bool
}

// ClientSummary is one session as listed.
type ClientSummary struct {
	ID            string
	Username      string
	Connected     bool
	Remote        string // host:port of the connection; "" while offline
	Listener      string
	Protocol      byte // 3, 4 or 5 while connected; 0 offline
	Persistent    bool
	Subscriptions int
	Inflight      int
	Queued        int
}

// ClientDetail is one session with its subscriptions.
type ClientDetail struct {
	ClientSummary
	QueuedBytes   int64
	Expiry        time.Duration // how long kept offline; < 0 forever
	Subscriptions []SubscriptionInfo
}

// SubscriptionInfo is one subscription of a session.
type SubscriptionInfo struct {
	ClientID          string
	Filter            string // as the client sent it, with $share/GROUP/ when shared
	QoS               byte
	NoLocal           bool
	RetainAsPublished bool
	RetainHandling    byte
	SubscriptionID    uint32
}

// RetainedNode is one level of the retained-message tree.
type RetainedNode struct {
	Level    string // the level's name
	Topic    string // the full topic of the node
	Retained bool   // a retained message is stored for Topic
	Children int    // levels directly below
}

type sessRef struct {
	id string
	s  *session
}

// sessionsSorted copies the session table (only the keys and pointers,
// under sessMu) keeping those whose id contains idSub and comes after
// cursor, and returns, with no lock held, the first n of them in id order
// (all of them when n <= 0). Only the n are sorted: selecting them costs a
// pass over the table and O(log n) per session, not a sort of the table.
func (s *Server) sessionsSorted(idSub, cursor string, n int) []sessRef {
	s.sessMu.Lock()
	refs := make([]sessRef, 0, len(s.sessions))
	for id, ss := range s.sessions {
		if (idSub == "" || strings.Contains(id, idSub)) && (cursor == "" || id > cursor) {
			refs = append(refs, sessRef{id, ss})
		}
	}
	s.sessMu.Unlock()
	if n > 0 && len(refs) > 2*n {
		refs = smallestRefs(refs, n)
	}
	slices.SortFunc(refs, func(a, b sessRef) int { return strings.Compare(a.id, b.id) })
	return refs
}

// smallestRefs returns the n refs with the smallest ids (unordered), with a
// bounded max-heap.
func smallestRefs(refs []sessRef, n int) []sessRef {
	h := make([]sessRef, 0, n)
	less := func(i, j int) bool { return h[i].id > h[j].id } // max-heap
	down := func(i int) {
		for {
			l := 2*i + 1
			if l >= len(h) {
				return
			}
			m := l
			if r := l + 1; r < len(h) && less(r, l) {
				m = r
			}
			if !less(m, i) {
				return
			}
			h[i], h[m] = h[m], h[i]
			i = m
		}
	}
	for _, r := range refs {
		if len(h) < n {
			h = append(h, r)
			for i := len(h) - 1; i > 0; {
				p := (i - 1) / 2
				if !less(i, p) {
					break
				}
				h[i], h[p] = h[p], h[i]
				i = p
			}
			continue
		}
		if r.id < h[0].id {
			h[0] = r
			down(0)
		}
	}
	return h
}

// SessionCount returns the number of sessions (connected and offline).
func (s *Server) SessionCount() int {
	s.sessMu.Lock()
	defer s.sessMu.Unlock()
	return len(s.sessions)
}

// summaryLocked describes ss; ss.mu is held.
func (ss *session) summaryLocked(id string) ClientSummary {
	cs := ClientSummary{
		ID:            id,
		Persistent:    ss.persistent,
		Subscriptions: len(ss.subs),
		Inflight:      len(ss.inflight),
		Queued:        len(ss.queue) - ss.qhead,
	}
	if ss.info != nil {
		cs.Username = ss.info.Username
	}
	if c := ss.conn; c != nil {
		// remote, listener and version are set before the connection is
		// attached to the session under ss.mu, and never change after.
		cs.Connected = true
		cs.Remote = c.info.Remote
		cs.Listener = c.info.Listener
		cs.Protocol = byte(c.version)
	}
	return cs
}

// ClientsPage returns up to limit sessions matching f in client id order,
// starting after the client id cursor ("" from the start) and skipping
// offset matches, and the cursor of the next page ("" when this was the
// last). Sessions that ended are left out.
func (s *Server) ClientsPage(f ClientFilter, cursor string, offset, limit int) (page []ClientSummary, next string) {
	if limit <= 0 {
		return nil, ""
	}
	// Without filters on what the session holds, the page is the first
	// offset+limit+1 ids after the cursor (one more tells whether a next
	// page exists); with them, every id after the cursor may be needed.
	n := 0
	if f.Username == "" && f.Address == "" && !f.ConnectedOnly {
		n = offset + limit + 1
	}
	refs := s.sessionsSorted(f.ID, cursor, n)
	for i := 0; i < len(refs); i++ {
		r := refs[i]
		r.s.mu.Lock()
		ended := r.s.ended
		cs := r.s.summaryLocked(r.id)
		r.s.mu.Unlock()
		if ended || !f.matches(&cs) {
			continue
		}
		if offset > 0 {
			offset--
			continue
		}
		if len(page) == limit {
			return page, page[len(page)-1].ID
		}
		page = append(page, cs)
	}
	return page, ""
}

func (f *ClientFilter) matches(cs *ClientSummary) bool {
	if f.ConnectedOnly && !cs.Connected {
		return false
	}
	if f.Username != "" && !strings.Contains(cs.Username, f.Username) {
		return false
	}
	if f.Address != "" && !strings.Contains(cs.Remote, f.Address) {
		return false
	}
	return true
}

// ClientDetail describes the session of clientID; false if there is none.
func (s *Server) ClientDetail(clientID string) (ClientDetail, bool) {
	s.sessMu.Lock()
	ss := s.sessions[clientID]
	s.sessMu.Unlock()
	if ss == nil {
		return ClientDetail{}, false
	}
	ss.mu.Lock()
	if ss.ended {
		ss.mu.Unlock()
		return ClientDetail{}, false
	}
	d := ClientDetail{ClientSummary: ss.summaryLocked(clientID), QueuedBytes: ss.queuedBytes, Expiry: ss.expiry}
	d.Subscriptions = ss.subscriptionsLocked(clientID)
	ss.mu.Unlock()
	sortSubs(d.Subscriptions)
	return d, true
}

func (ss *session) subscriptionsLocked(id string) []SubscriptionInfo {
	out := make([]SubscriptionInfo, len(ss.subs))
	for i, e := range ss.subs {
		f := e.filter
		if e.group != "" {
			f = "$share/" + e.group + "/" + e.filter
		}
		out[i] = SubscriptionInfo{ClientID: id, Filter: f, QoS: e.opts.QoS, NoLocal: e.opts.NoLocal,
			RetainAsPublished: e.opts.RetainAsPublished, RetainHandling: e.opts.RetainHandling,
			SubscriptionID: e.opts.SubID}
	}
	return out
}

func sortSubs(subs []SubscriptionInfo) {
	slices.SortFunc(subs, func(a, b SubscriptionInfo) int { return strings.Compare(a.Filter, b.Filter) })
}

// SubscriptionsPage returns up to limit subscriptions, ordered by client id
// then filter, after the subscription (cursorClient, cursorFilter) (both ""
// from the start), and whether more follow.
func (s *Server) SubscriptionsPage(cursorClient, cursorFilter string, limit int) (page []SubscriptionInfo, more bool) {
	if limit <= 0 {
		return nil, false
	}
	refs := s.sessionsSorted("", "", 0)
	i, _ := slices.BinarySearchFunc(refs, cursorClient, func(r sessRef, c string) int { return strings.Compare(r.id, c) })
	for ; i < len(refs); i++ {
		r := refs[i]
		if r.s.nsubs.Load() == 0 {
			continue
		}
		r.s.mu.Lock()
		var subs []SubscriptionInfo
		if !r.s.ended {
			subs = r.s.subscriptionsLocked(r.id)
		}
		r.s.mu.Unlock()
		sortSubs(subs)
		for _, si := range subs {
			if r.id == cursorClient && cursorClient != "" && si.Filter <= cursorFilter {
				continue
			}
			if len(page) == limit {
				return page, true
			}
			page = append(page, si)
		}
	}
	return page, false
}

// splitLevels splits a topic prefix into its levels; "" is the root.
func splitLevels(prefix string) []string {
	if prefix == "" {
		return nil
	}
	return strings.Split(prefix, "/")
}

// RetainedChildren lists the levels directly below prefix ("" for the
// root) in the retained-message tree, in name order, after the level name
// cursor, at most limit, and whether more follow. A prefix that is not in
// the tree has no children.
func (s *Server) RetainedChildren(prefix, cursor string, limit int) (page []RetainedNode, more bool) {
	if limit <= 0 {
		return nil, false
	}
	levels := splitLevels(prefix)
	r := &s.retained
	r.mu.RLock()
	n := r.root
	for _, l := range levels {
		if n = n.children[l]; n == nil {
			break
		}
	}
	var all []RetainedNode
	if n != nil {
		all = make([]RetainedNode, 0, len(n.children))
		for name, c := range n.children {
			if cursor != "" && name <= cursor {
				continue
			}
			all = append(all, RetainedNode{Level: name, Retained: c.msg != nil, Children: len(c.children)})
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(all, func(a, b RetainedNode) int { return cmp.Compare(a.Level, b.Level) })
	if len(all) > limit {
		all, more = all[:limit], true
	}
	for i := range all {
		if prefix == "" {
			all[i].Topic = all[i].Level
		} else {
			all[i].Topic = prefix + "/" + all[i].Level
		}
	}
	return all, more
}

// RetainedPage returns up to limit unexpired retained messages at or below
// prefix ("" for all), in level-by-level name order (a topic before the
// topics below it), after the topic cursor ("" from the start), and
// whether more follow. Only the levels on the way to the cursor and the
// page are visited.
func (s *Server) RetainedPage(prefix, cursor string, limit int) (page []*Message, more bool) {
	if limit <= 0 {
		return nil, false
	}
	levels := splitLevels(prefix)
	var cur []string
	if cursor != "" {
		cur = strings.Split(cursor, "/")
	}
	now := time.Now()
	r := &s.retained
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := r.root
	for _, l := range levels {
		if n = n.children[l]; n == nil {
			return nil, false
		}
	}
	// A cursor outside the prefix's subtree starts the subtree afresh.
	onPath := len(cur) >= len(levels) && slices.Equal(cur[:len(levels)], levels)
	full := false
	var visit func(n *retainedNode, depth int, onPath bool)
	visit = func(n *retainedNode, depth int, onPath bool) {
		if full {
			return
		}
		// The node's own message comes before its children; on the
		// cursor's path it was on an earlier page.
		if n.msg != nil && !onPath && !n.msg.expired(now) {
			if len(page) == limit {
				more, full = true, true
				return
			}
			page = append(page, n.msg)
		}
		if len(n.children) == 0 {
			return
		}
		names := make([]string, 0, len(n.children))
		var from string
		inPath := onPath && depth < len(cur)
		if inPath {
			from = cur[depth]
		}
		for name := range n.children {
			if inPath && name < from {
				continue
			}
			names = append(names, name)
		}
		slices.Sort(names)
		for _, name := range names {
			visit(n.children[name], depth+1, inPath && name == from)
			if full {
				return
			}
		}
	}
	visit(n, len(levels), onPath)
	return page, more
}

// RetainedMessage returns the unexpired retained message of topic name.
func (s *Server) RetainedMessage(name string) (*Message, bool) {
	r := &s.retained
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := r.root
	for l := range strings.SplitSeq(name, "/") {
		if n = n.children[l]; n == nil {
			return nil, false
		}
	}
	if n.msg == nil || n.msg.expired(time.Now()) {
		return nil, false
	}
	return n.msg, true
}

// StartTime returns when the server was created.
func (s *Server) StartTime() time.Time { return s.started }
