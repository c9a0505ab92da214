package admin

import (
	"encoding/base64"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/mqttd/mqttd/broker"
)

const (
	maxLiveNodes     = 250_000 // topic levels the live tree tracks; later new topics are only counted
	lastValueBytes   = 256     // the live tree keeps this much of each topic's last payload
	streamTick       = time.Second
	streamMaxEntries = 500 // levels per topic-stream event
	maxStreams       = 16  // concurrent topic or watch streams
	watchBuffer      = 512
	watchPayload     = 4096
	watchTick        = 250 * time.Millisecond
	heartbeat        = 15 * time.Second
)

// liveTree counts the messages routed to every topic while someone looks
// at it: the first topic stream adds an inline subscription to "#" and the
// last one removes it (and forgets the tree), so that an unwatched
// dashboard costs the broker nothing per message.
type liveTree struct {
	b *broker.Server

	mu       sync.Mutex
	viewers  int
	cancel   func()
	root     *liveNode
	nodes    int
	untraced int64 // messages to topics past maxLiveNodes
	seq      uint64
}

type liveNode struct {
	children map[string]*liveNode
	count    uint64 // messages at or below this level
	seq      uint64 // liveTree.seq when it last changed
	hasMsg   bool   // a message was routed to exactly this topic
	retained bool   // that last message was retained
	last     []byte // its first lastValueBytes bytes
	lastLen  int
	lastAt   time.Time
}

func newLiveTree(b *broker.Server) *liveTree { return &liveTree{b: b} }

var errTooManyStreams = errors.New("too many streams open")

// acquire registers a viewer, subscribing on the first.
func (t *liveTree) acquire() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.viewers >= maxStreams {
		return errTooManyStreams
	}
	if t.viewers == 0 {
		t.root = &liveNode{}
		t.nodes = 0
		cancel, err := t.b.Subscribe("#", 0, t.onMessage)
		if err != nil {
			return err
		}
		t.cancel = cancel
	}
	t.viewers++
	return nil
}

// release drops a viewer; the last one unsubscribes.
func (t *liveTree) release() {
	t.mu.Lock()
	t.viewers--
	var cancel func()
	if t.viewers == 0 {
		cancel, t.cancel = t.cancel, nil
		t.root, t.nodes = nil, 0
	}
	t.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

func (t *liveTree) close() {
	t.mu.Lock()
	cancel := t.cancel
	t.cancel, t.viewers, t.root = nil, 0, nil
	t.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// onMessage runs on the publisher's goroutine: the payload is copied
// before the lock and the lock is held for a walk down the topic's levels.
func (t *liveTree) onMessage(m *broker.Message) {
	last := make([]byte, min(len(m.Payload), lastValueBytes))
	copy(last, m.Payload)
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.root
	if n == nil {
		return
	}
	t.seq++
	n.count++
	n.seq = t.seq
	for lvl := range strings.SplitSeq(m.Topic, "/") {
		c := n.children[lvl]
		if c == nil {
			if t.nodes >= maxLiveNodes {
				t.untraced++
				return
			}
			if n.children == nil {
				n.children = make(map[string]*liveNode)
			}
			c = &liveNode{}
			n.children[lvl] = c
			t.nodes++
		}
		n = c
		n.count++
		n.seq = t.seq
	}
	n.hasMsg, n.retained, n.last, n.lastLen, n.lastAt = true, m.Retain, last, len(m.Payload), now
}

// topicEntry is one level below a prefix, as the API and the streams
// report it.
type topicEntry struct {
	Level     string     `json:"level"`
	Topic     string     `json:"topic"`
	Retained  bool       `json:"retained"`            // a retained message is stored (or the last live one was retained)
	Children  int        `json:"children"`            // levels below (the larger of the retained and live trees)
	Messages  uint64     `json:"messages"`            // routed at or below since the tree began watching
	LastValue *string    `json:"last_value,omitzero"` // the topic's last payload (live), truncated
	LastB64   bool       `json:"last_value_base64,omitempty"`
	LastSize  int        `json:"last_size,omitempty"`
	LastAt    *time.Time `json:"last_at,omitzero"`
}

// children lists the live levels below prefix changed after seq (0: all),
// in name order after cursor, at most limit; it returns the tree's seq and
// whether more were left out. ok is false while nothing is watched.
func (t *liveTree) children(prefix, cursor string, after uint64, limit int) (out []topicEntry, seq uint64, more, ok bool) {
	t.mu.Lock()
	n := t.root
	if n == nil {
		t.mu.Unlock()
		return nil, 0, false, false
	}
	seq = t.seq
	if prefix != "" {
		for lvl := range strings.SplitSeq(prefix, "/") {
			if n = n.children[lvl]; n == nil {
				break
			}
		}
	}
	if n != nil {
		for name, c := range n.children {
			if c.seq <= after || (cursor != "" && name <= cursor) {
				continue
			}
			e := topicEntry{Level: name, Retained: c.retained, Children: len(c.children), Messages: c.count}
			if c.hasMsg {
				v, b64 := renderPayload(c.last)
				at := c.lastAt
				e.LastValue, e.LastB64, e.LastSize, e.LastAt = &v, b64, c.lastLen, &at
			}
			out = append(out, e)
		}
	}
	t.mu.Unlock()
	slices.SortFunc(out, func(a, b topicEntry) int { return strings.Compare(a.Level, b.Level) })
	if len(out) > limit {
		out, more = out[:limit], true
	}
	for i := range out {
		out[i].Topic = joinTopic(prefix, out[i].Level)
	}
	return out, seq, more, true
}

func joinTopic(prefix, level string) string {
	if prefix == "" {
		return level
	}
	return prefix + "/" + level
}

// renderPayload returns p as text when it is UTF-8, else in base64.
func renderPayload(p []byte) (string, bool) {
	if utf8.Valid(p) {
		return string(p), false
	}
	return base64.StdEncoding.EncodeToString(p), true
}

// sse prepares w for a server-sent-events stream.
func sse(w http.ResponseWriter) (*http.ResponseController, bool) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	return rc, rc.Flush() == nil
}

func writeEvent(w http.ResponseWriter, rc *http.ResponseController, name string, v any) bool {
	b, err := jsonMarshal(v)
	if err != nil {
		return false
	}
	rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := w.Write([]byte("event: " + name + "\ndata: ")); err != nil {
		return false
	}
	if _, err := w.Write(b); err != nil {
		return false
	}
	if _, err := w.Write([]byte("\n\n")); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// streamTopics serves GET /api/v1/stream/topics?prefix=P: an event
// "topics" at most every second with the levels below P that changed,
// each with its total message count (the page derives rates), last value
// and retained flag. The first event has them all (up to 500).
func (s *Server) streamTopics(w http.ResponseWriter, r *http.Request) {
	prefix := r.URL.Query().Get("prefix")
	if err := s.live.acquire(); err != nil {
		writeError(w, http.StatusTooManyRequests, err.Error())
		return
	}
	defer s.live.release()
	rc, ok := sse(w)
	if !ok {
		return
	}
	tick := time.NewTicker(streamTick)
	defer tick.Stop()
	var after uint64
	lastSent := time.Now()
	for first := true; ; first = false {
		entries, seq, more, _ := s.live.children(prefix, "", after, streamMaxEntries)
		s.mergeRetained(entries)
		if entries == nil {
			entries = []topicEntry{}
		}
		if first || len(entries) > 0 {
			ev := map[string]any{"prefix": prefix, "full": first, "more": more, "topics": entries,
				"time": time.Now()}
			if !writeEvent(w, rc, "topics", ev) {
				return
			}
			lastSent = time.Now()
		} else if time.Since(lastSent) > heartbeat {
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil || rc.Flush() != nil {
				return
			}
			lastSent = time.Now()
		}
		after = seq
		select {
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		case <-tick.C:
		}
	}
}

// mergeRetained sets the retained flag of live entries from the retained
// tree.
func (s *Server) mergeRetained(entries []topicEntry) {
	for i := range entries {
		_, ok := s.b.RetainedMessage(entries[i].Topic)
		entries[i].Retained = ok
	}
}

// watchLimiter bounds the watch streams.
type watchLimiter struct{ n atomic.Int32 }

type watchMsg struct {
	Topic   string    `json:"topic"`
	Payload string    `json:"payload"`
	Base64  bool      `json:"payload_base64,omitempty"`
	Size    int       `json:"size"`
	QoS     byte      `json:"qos"`
	Retain  bool      `json:"retain"`
	Time    time.Time `json:"time"`
}

// streamWatch serves GET /api/v1/stream/watch?filter=F: the messages
// routed to topics F matches, in events "messages" every 250 ms, through an
// inline subscription (QoS 0). A page that reads too slowly loses
// messages, counted in "dropped".
func (s *Server) streamWatch(w http.ResponseWriter, r *http.Request) {
	filter := r.URL.Query().Get("filter")
	if filter == "" {
		writeError(w, http.StatusBadRequest, "filter is required")
		return
	}
	if s.watch.n.Add(1) > maxStreams {
		s.watch.n.Add(-1)
		writeError(w, http.StatusTooManyRequests, errTooManyStreams.Error())
		return
	}
	defer s.watch.n.Add(-1)
	ch := make(chan watchMsg, watchBuffer)
	var dropped atomic.Int64
	cancel, err := s.b.Subscribe(filter, 0, func(m *broker.Message) {
		p := m.Payload[:min(len(m.Payload), watchPayload)]
		v, b64 := renderPayload(p)
		select {
		case ch <- watchMsg{Topic: m.Topic, Payload: v, Base64: b64, Size: len(m.Payload), QoS: m.QoS,
			Retain: m.Retain, Time: time.Now()}:
		default:
			dropped.Add(1)
		}
	})
	if err != nil {
		writeError(w, http.StatusBadRequest, "filter: "+err.Error())
		return
	}
	defer cancel()
	rc, ok := sse(w)
	if !ok {
		return
	}
	if !writeEvent(w, rc, "messages", map[string]any{"filter": filter, "messages": []watchMsg{}, "dropped": 0}) {
		return
	}
	tick := time.NewTicker(watchTick)
	defer tick.Stop()
	lastSent := time.Now()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.stop:
			return
		case <-tick.C:
		}
		var batch []watchMsg
	drain:
		for len(batch) < 200 {
			select {
			case m := <-ch:
				batch = append(batch, m)
			default:
				break drain
			}
		}
		d := dropped.Swap(0)
		if len(batch) > 0 || d > 0 {
			if !writeEvent(w, rc, "messages", map[string]any{"filter": filter, "messages": batch, "dropped": d}) {
				return
			}
			lastSent = time.Now()
		} else if time.Since(lastSent) > heartbeat {
			if _, err := w.Write([]byte(": keep-alive\n\n")); err != nil || rc.Flush() != nil {
				return
			}
			lastSent = time.Now()
		}
	}
}
