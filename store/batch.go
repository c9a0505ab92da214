package store

import (
	"errors"
	"fmt"
	"slices"
)

// ErrInvalid is returned by Apply for a batch that cannot be applied.
var ErrInvalid = errors.New("store: invalid batch")

// OpKind is the kind of one change in a Batch.
type OpKind byte

// Op kinds.
const (
	OpPutSession OpKind = iota + 1
	OpDeleteSession
	OpPutSubscription
	OpDeleteSubscription
	OpPutMessage
	OpPutQueueEntry
	OpDeleteQueueEntry
	OpPutInbound
	OpDeleteInbound
	OpPutRetained
	OpDeleteRetained
)

// Op is one change in a Batch. Only the fields its Kind uses are set. Store
// implementations read a batch's changes with Batch.Ops.
type Op struct {
	Kind         OpKind
	ClientID     string        // sessions, subscriptions, queue entries, inbound ids
	Session      *Session      // OpPutSession
	Subscription *Subscription // OpPutSubscription
	Group        string        // OpDeleteSubscription
	Filter       string        // OpDeleteSubscription
	Message      *Message      // OpPutMessage, OpPutRetained
	Entry        *QueueEntry   // OpPutQueueEntry
	Seq          uint64        // OpDeleteQueueEntry
	// MessageID is, for OpDeleteQueueEntry, the message the entry names when
	// the caller knows it (DeleteQueueEntryOf): the store then need not read
	// the entry back. 0 = unknown.
	MessageID uint64
	PacketID  uint16 // OpPutInbound, OpDeleteInbound
	Topic     string // OpDeleteRetained
}

// Batch collects changes that a Store applies atomically, in order.
//
// Message bodies are reference-counted by the queue entries that name them:
// PutMessage once, and PutQueueEntry for every session that holds it, in the
// same batch. The store deletes a message when its last queue entry is
// deleted, and drops a message that no queue entry names when the batch is
// applied. The store keeps the counts (rebuilt on open).
//
// The values passed to a Batch must not be modified until Apply returns. The
// zero Batch is empty and ready to use; a Batch is not safe for concurrent
// use.
type Batch struct {
	ops []Op

	// Owner is for the batch's user; the store ignores it and Reset keeps
	// it. (The broker names the connection whose writes the batch
	// collects: deliveries that must wait for the batch go out once that
	// connection has applied it.)
	Owner any

	// Local marks a batch for this store only: a server's ReplicaHooks
	// (copies of the sessions kept elsewhere, a cluster) do not get it. The
	// store ignores it and Reset keeps it.
	Local bool
}

// Ops returns the batch's changes in order. The slice is the batch's own.
func (b *Batch) Ops() []Op { return b.ops }

// Empty reports whether the batch holds no change.
func (b *Batch) Empty() bool { return len(b.ops) == 0 }

// Len returns the number of changes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Reset empties the batch, keeping its memory.
func (b *Batch) Reset() {
	clear(b.ops)
	b.ops = b.ops[:0]
}

// PutSession creates or replaces the session s.ClientID.
func (b *Batch) PutSession(s *Session) {
	b.ops = append(b.ops, Op{Kind: OpPutSession, ClientID: s.ClientID, Session: s})
}

// DeleteSession deletes a session with its subscriptions, queue (releasing
// the messages it names) and inbound packet ids.
func (b *Batch) DeleteSession(clientID string) {
	b.ops = append(b.ops, Op{Kind: OpDeleteSession, ClientID: clientID})
}

// PutSubscription creates or replaces the subscription (ClientID, Group,
// Sub.Filter).
func (b *Batch) PutSubscription(s *Subscription) {
	b.ops = append(b.ops, Op{Kind: OpPutSubscription, ClientID: s.ClientID, Subscription: s})
}

// DeleteSubscription deletes a subscription; group is "" for a non-shared one.
func (b *Batch) DeleteSubscription(clientID, group, filter string) {
	b.ops = append(b.ops, Op{Kind: OpDeleteSubscription, ClientID: clientID, Group: group, Filter: filter})
}

// PutMessage stores a message body once; queue entries name it by m.ID.
func (b *Batch) PutMessage(m *Message) {
	b.ops = append(b.ops, Op{Kind: OpPutMessage, Message: m})
}

// PutQueueEntry creates or replaces the queue entry (e.ClientID, e.Seq), for
// example to record a new State or PacketID.
func (b *Batch) PutQueueEntry(e *QueueEntry) {
	b.ops = append(b.ops, Op{Kind: OpPutQueueEntry, ClientID: e.ClientID, Entry: e})
}

// DeleteQueueEntry deletes a queue entry, and the message it names when no
// other entry names it.
func (b *Batch) DeleteQueueEntry(clientID string, seq uint64) {
	b.ops = append(b.ops, Op{Kind: OpDeleteQueueEntry, ClientID: clientID, Seq: seq})
}

// DeleteQueueEntryOf is DeleteQueueEntry for a caller that knows which
// message the entry names (the one it put). The store still checks the
// entry: one already gone (its session was deleted meanwhile) is a no-op,
// and one naming another message makes the batch invalid.
func (b *Batch) DeleteQueueEntryOf(clientID string, seq, messageID uint64) {
	b.ops = append(b.ops, Op{Kind: OpDeleteQueueEntry, ClientID: clientID, Seq: seq, MessageID: messageID})
}

// PutInbound records an inbound QoS 2 packet id awaiting PUBREL.
func (b *Batch) PutInbound(clientID string, packetID uint16) {
	b.ops = append(b.ops, Op{Kind: OpPutInbound, ClientID: clientID, PacketID: packetID})
}

// DeleteInbound forgets an inbound QoS 2 packet id (PUBREL received).
func (b *Batch) DeleteInbound(clientID string, packetID uint16) {
	b.ops = append(b.ops, Op{Kind: OpDeleteInbound, ClientID: clientID, PacketID: packetID})
}

// PutRetained creates or replaces the retained message of m.Publish.Topic.
// Retained messages are stored apart from queued ones and are not counted.
func (b *Batch) PutRetained(m *Message) {
	b.ops = append(b.ops, Op{Kind: OpPutRetained, Topic: m.Publish.Topic, Message: m})
}

// DeleteRetained deletes the retained message of topic.
func (b *Batch) DeleteRetained(topic string) {
	b.ops = append(b.ops, Op{Kind: OpDeleteRetained, Topic: topic})
}

// Validate checks b against exists, which reports whether a message id is in
// the store when the batch starts. It returns an error wrapping ErrInvalid
// for a change that lacks its value or client id, or a queue entry naming a
// message that is neither in the store nor put earlier in the batch. Stores
// call it before applying anything, so that a batch applies fully or not at
// all.
func (b *Batch) Validate(exists func(id uint64) bool) error {
	// The messages put so far: a few in most batches (a burst of
	// PUBLISHes), looked up in a list; a map past that.
	var few [16]uint64
	listed := few[:0]
	var put map[uint64]struct{}
	wasPut := func(id uint64) bool {
		if put != nil {
			_, ok := put[id]
			return ok
		}
		return slices.Contains(listed, id)
	}
	for i := range b.ops {
		op := &b.ops[i]
		var bad string
		switch op.Kind {
		case OpPutSession:
			if op.Session == nil || op.ClientID == "" {
				bad = "session without client id"
			}
		case OpPutSubscription:
			if op.Subscription == nil || op.ClientID == "" {
				bad = "subscription without client id"
			}
		case OpDeleteSession, OpDeleteSubscription, OpDeleteQueueEntry, OpPutInbound, OpDeleteInbound:
			if op.ClientID == "" {
				bad = "missing client id"
			}
		case OpPutMessage, OpPutRetained:
			if op.Message == nil || op.Message.Publish == nil {
				bad = "message without publish"
			} else if op.Kind == OpPutMessage {
				switch {
				case put != nil:
					put[op.Message.ID] = struct{}{}
				case len(listed) < cap(listed):
					listed = append(listed, op.Message.ID)
				default:
					put = make(map[uint64]struct{}, 2*len(listed))
					for _, id := range listed {
						put[id] = struct{}{}
					}
					put[op.Message.ID] = struct{}{}
				}
			}
		case OpPutQueueEntry:
			if op.Entry == nil || op.ClientID == "" {
				bad = "queue entry without client id"
			} else if !wasPut(op.Entry.MessageID) && !exists(op.Entry.MessageID) {
				bad = fmt.Sprintf("queue entry %d of client %q names unknown message %d",
					op.Entry.Seq, op.ClientID, op.Entry.MessageID)
			}
		case OpDeleteRetained:
		default:
			bad = fmt.Sprintf("unknown change kind %d", op.Kind)
		}
		if bad != "" {
			return fmt.Errorf("%w: change %d: %s", ErrInvalid, i, bad)
		}
	}
	return nil
}
