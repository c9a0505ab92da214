// Package mem is an in-memory store.Store: for tests, and for a broker that
// runs with persistence off. It keeps what it is given (copies of the
// records, sharing their Publish packets) and loses it all when the process
// ends.
package mem

import (
	"slices"
	"sync"
	"time"

	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/store/internal/prune"
)

// Store is an in-memory store.Store. The zero value is not usable; call New.
type Store struct {
	mu       sync.Mutex
	closed   bool
	clients  map[string]*client
	messages map[uint64]*store.Message
	refs     map[uint64]uint32
	retained map[string]*store.Message
}

type subKey struct{ group, filter string }

type client struct {
	session *store.Session
	subs    map[subKey]*store.Subscription
	queue   map[uint64]*store.QueueEntry
	inbound map[uint16]struct{}
}

var _ store.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	return &Store{
		clients:  make(map[string]*client),
		messages: make(map[uint64]*store.Message),
		refs:     make(map[uint64]uint32),
		retained: make(map[string]*store.Message),
	}
}

func (s *Store) client(id string) *client {
	c := s.clients[id]
	if c == nil {
		c = &client{
			subs:    make(map[subKey]*store.Subscription),
			queue:   make(map[uint64]*store.QueueEntry),
			inbound: make(map[uint16]struct{}),
		}
		s.clients[id] = c
	}
	return c
}

// ApplyNoSync implements store.LazyApplier; memory has no sync to skip.
func (s *Store) ApplyNoSync(b *store.Batch) error { return s.Apply(b) }

// Apply implements store.Store.
func (s *Store) Apply(b *store.Batch) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return store.ErrClosed
	}
	if err := b.Validate(func(id uint64) bool { return s.refs[id] > 0 }); err != nil {
		return err
	}
	var touched []uint64
	release := func(e *store.QueueEntry) {
		s.refs[e.MessageID]--
		touched = append(touched, e.MessageID)
	}
	for _, op := range b.Ops() {
		switch op.Kind {
		case store.OpPutSession:
			v := *op.Session
			s.client(op.ClientID).session = &v
		case store.OpDeleteSession:
			if c := s.clients[op.ClientID]; c != nil {
				for _, e := range c.queue {
					release(e)
				}
				delete(s.clients, op.ClientID)
			}
		case store.OpPutSubscription:
			v := *op.Subscription
			s.client(op.ClientID).subs[subKey{v.Group, v.Sub.Filter}] = &v
		case store.OpDeleteSubscription:
			if c := s.clients[op.ClientID]; c != nil {
				delete(c.subs, subKey{op.Group, op.Filter})
			}
		case store.OpPutMessage:
			v := *op.Message
			s.messages[v.ID] = &v
			touched = append(touched, v.ID)
		case store.OpPutQueueEntry:
			c := s.client(op.ClientID)
			if old := c.queue[op.Entry.Seq]; old != nil {
				release(old)
			}
			v := *op.Entry
			v.SubIDs = slices.Clone(v.SubIDs)
			c.queue[v.Seq] = &v
			s.refs[v.MessageID]++
		case store.OpDeleteQueueEntry:
			if c := s.clients[op.ClientID]; c != nil {
				if old := c.queue[op.Seq]; old != nil {
					release(old)
					delete(c.queue, op.Seq)
				}
			}
		case store.OpPutInbound:
			s.client(op.ClientID).inbound[op.PacketID] = struct{}{}
		case store.OpDeleteInbound:
			if c := s.clients[op.ClientID]; c != nil {
				delete(c.inbound, op.PacketID)
			}
		case store.OpPutRetained:
			v := *op.Message
			s.retained[op.Topic] = &v
		case store.OpDeleteRetained:
			delete(s.retained, op.Topic)
		}
	}
	for _, id := range touched {
		if s.refs[id] == 0 {
			delete(s.refs, id)
			delete(s.messages, id)
		}
	}
	return nil
}

// Load implements store.Store.
func (s *Store) Load(now time.Time) (*store.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, store.ErrClosed
	}
	raw := &prune.Raw{
		Sessions: make(map[string]*store.SessionState, len(s.clients)),
		Messages: make(map[uint64]*store.Message, len(s.messages)),
	}
	for id, c := range s.clients {
		ss := &store.SessionState{}
		if c.session != nil {
			v := *c.session
			ss.Session = &v
		}
		for _, sub := range c.subs {
			v := *sub
			ss.Subscriptions = append(ss.Subscriptions, &v)
		}
		for _, e := range c.queue {
			v := *e
			v.SubIDs = slices.Clone(v.SubIDs)
			ss.Queue = append(ss.Queue, &v)
		}
		for pid := range c.inbound {
			ss.Inbound = append(ss.Inbound, pid)
		}
		raw.Sessions[id] = ss
	}
	for id, m := range s.messages {
		v := *m
		raw.Messages[id] = &v
	}
	for _, m := range s.retained {
		v := *m
		raw.Retained = append(raw.Retained, &v)
	}
	st, drops, refs, err := prune.Prune(raw, now)
	if err != nil {
		return nil, err
	}
	for _, id := range drops.Sessions {
		delete(s.clients, id)
	}
	for _, k := range drops.Entries {
		delete(s.clients[k.ClientID].queue, k.Seq)
	}
	for _, id := range drops.Messages {
		delete(s.messages, id)
	}
	for _, t := range drops.Retained {
		delete(s.retained, t)
	}
	s.refs = refs
	return st, nil
}

// Close implements store.Store.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
