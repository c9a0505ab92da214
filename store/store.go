package store

import (
	"errors"
	"fmt"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Sentinel errors.
var (
	// ErrCorrupt marks a store whose files are damaged. The error that wraps
	// it names the directory and what to do.
	ErrCorrupt = errors.New("store: damaged")
	// ErrClosed is returned by Apply and Load after Close.
	ErrClosed = errors.New("store: closed")
	// ErrFailed is returned by every write of a store that stopped after
	// an error it cannot recover from while running (Pebble: a write to
	// its log failed); the process goes on, the store needs a restart.
	ErrFailed = errors.New("store: failed; restart to use it again")
)

// NeverExpire is the session expiry interval of a session that never expires
// (v5 Session Expiry Interval 0xFFFFFFFF; a 3.x session with clean session 0).
const NeverExpire uint32 = 0xFFFFFFFF

// Message is one application message. The store keeps Publish as its MQTT 5
// PUBLISH encoding, so a loaded Message carries exactly what the codec
// round-trips. Times are kept to the millisecond.
type Message struct {
	ID       uint64 // assigned by the broker, unique among stored messages
	Publish  *packet.Publish
	Received time.Time
	Expiry   time.Time // zero = never
}

// Expired reports whether m's expiry has passed at now.
func (m *Message) Expired(now time.Time) bool {
	return !m.Expiry.IsZero() && !now.Before(m.Expiry)
}

// Session is a persistent session.
type Session struct {
	ClientID       string
	Username       string
	Listener       string // listener of the last connection (its per-listener security); "" = unknown, as in older records
	Version        packet.Version
	ExpiryInterval uint32       // seconds; NeverExpire for never
	DisconnectedAt time.Time    // zero while connected
	Will           *packet.Will // with its v5 properties, including the will delay
}

// Expired reports whether the session has ended at now: it is disconnected
// and its expiry interval has passed since the disconnect. A session still
// marked connected (zero DisconnectedAt, as after a crash) has not expired.
func (s *Session) Expired(now time.Time) bool {
	if s.DisconnectedAt.IsZero() || s.ExpiryInterval == NeverExpire {
		return false
	}
	end := s.DisconnectedAt.Add(time.Duration(s.ExpiryInterval) * time.Second)
	return !now.Before(end)
}

// Subscription is one subscription of a persistent session. Group is the
// share name of a shared subscription ($share/Group/filter), empty otherwise;
// Sub.Filter is the filter without the $share prefix.
type Subscription struct {
	ClientID string
	Sub      packet.Subscription
	Group    string
	SubID    uint32 // v5 subscription identifier, 0 = none
}

// QueueState is the delivery state of an outgoing QoS 1/2 message.
type QueueState byte

// Queue states.
const (
	Queued      QueueState = iota // not yet sent
	PublishSent                   // PUBLISH sent, waiting for PUBACK/PUBREC
	PubrelSent                    // PUBREL sent, waiting for PUBCOMP
)

func (s QueueState) String() string {
	switch s {
	case Queued:
		return "queued"
	case PublishSent:
		return "publish-sent"
	case PubrelSent:
		return "pubrel-sent"
	}
	return fmt.Sprintf("QueueState(%d)", byte(s))
}

// QueueEntry is one outgoing message in a session's queue. It names its
// message by MessageID; the message itself is stored once.
type QueueEntry struct {
	ClientID  string
	Seq       uint64 // order in the session queue
	MessageID uint64
	QoS       byte // QoS of this delivery (after downgrade to the subscription's)
	PacketID  uint16
	State     QueueState
	Retain    bool     // retain flag of this delivery
	SubIDs    []uint32 // subscription identifiers of this delivery
}

// State is everything a store holds, as Load returns it.
type State struct {
	Sessions []*SessionState // sorted by client id
	Retained []*Message      // sorted by topic
	// Messages are the messages that queue entries name, by id.
	Messages map[uint64]*Message
	// NextMessageID is one above the largest message id in the store (1 for
	// an empty store): the broker's first free id.
	NextMessageID uint64
	// Expired are the sessions Load dropped because they had expired, with
	// their wills: the broker may owe those wills to their subscribers.
	Expired []*Session
}

// SessionState is one session with everything that belongs to it.
type SessionState struct {
	Session       *Session
	Subscriptions []*Subscription // sorted by group, then filter
	Queue         []*QueueEntry   // sorted by Seq
	Inbound       []uint16        // inbound QoS 2 packet ids awaiting PUBREL, ascending
}

// Store is a persistence backend.
type Store interface {
	// Apply applies b atomically: all of it or none of it. When Apply
	// returns nil, b is durable as the sync policy promises. Apply is safe
	// for concurrent use; concurrent callers share one sync (group commit).
	// b is not modified and may be reused after Apply returns.
	Apply(b *Batch) error
	// Load returns everything in the store. It drops (and deletes) sessions
	// that expired before now, queued messages that expired before now,
	// expired retained messages and messages no queue entry names.
	Load(now time.Time) (*State, error)
	// Close flushes and closes the store. Apply and Load then return
	// ErrClosed.
	Close() error
}

// LazyApplier is implemented by stores that can apply a batch without
// waiting for stable storage, for writes whose loss in a power cut costs at
// most a redelivery (a queue entry deleted after its acknowledgement, say).
type LazyApplier interface {
	ApplyNoSync(b *Batch) error
}

// OrderedApplier is implemented by stores that can tell when a batch's
// place in the store's order is fixed, before Apply waits for stable
// storage: from then on every write applied is ordered after the batch (in
// a crash it is replayed after it, or lost with it).
type OrderedApplier interface {
	// ApplyOrdered is Apply that calls ordered once b is ordered, before
	// waiting for stable storage, on the caller's goroutine and with no lock
	// of the store held. ordered is not called when b is refused or fails
	// before it is ordered.
	ApplyOrdered(b *Batch, ordered func()) error
}

// AsyncApplier is implemented by stores that can apply a batch without its
// caller waiting for stable storage, and say when it got there: a
// connection goes on reading while its acknowledgements wait for the disk.
type AsyncApplier interface {
	// ApplyAsync is ApplyOrdered (ordered may be nil) that returns once b
	// is ordered, and calls done once b is durable as the sync policy
	// promises, with the error that kept it from being so. The done calls
	// of the ApplyAsync calls that returned nil come in the order those
	// calls returned, on a goroutine of the store (or on the caller's,
	// before ApplyAsync returns, when there is nothing to wait for). An
	// empty b is a barrier: its done comes after those of the batches
	// before it. When ApplyAsync returns an error, done is not called. done
	// must not call ApplyAsync, nor wait for a later done.
	ApplyAsync(b *Batch, ordered func(), done func(error)) error
}

// SyncCounter is implemented by stores that count the writes they made
// durable with a sync of their own (SyncAlways): the broker's poller keeps
// from polling for events while the store syncs (broker/spin_linux.go).
type SyncCounter interface {
	// SyncedWrites is the number of batches applied so far that waited
	// for a sync.
	SyncedWrites() uint64
}

// SyncPolicy says when a write reaches stable storage.
type SyncPolicy int

// Sync policies.
const (
	// SyncAlways: Apply returns once the batch is on stable storage.
	// Concurrent Apply calls share one fsync. The default.
	SyncAlways SyncPolicy = iota
	// SyncBatch: Apply returns once the batch is written to the OS; the store
	// syncs at most every sync interval, so a power loss or kernel crash can
	// lose the writes of the last interval. A process crash loses nothing.
	SyncBatch
	// SyncNever: the store never syncs before Close; the OS writes back when
	// it likes. A process crash loses nothing, a power loss may lose much.
	SyncNever
)

func (p SyncPolicy) String() string {
	switch p {
	case SyncAlways:
		return "always"
	case SyncBatch:
		return "batch"
	case SyncNever:
		return "never"
	}
	return fmt.Sprintf("SyncPolicy(%d)", int(p))
}

// ErrSyncPolicy is returned by ParseSyncPolicy for an unknown name.
var ErrSyncPolicy = errors.New("store: unknown sync policy (want always, batch or never)")

// ParseSyncPolicy parses the value of persistence_sync.
func ParseSyncPolicy(s string) (SyncPolicy, error) {
	switch s {
	case "always":
		return SyncAlways, nil
	case "batch":
		return SyncBatch, nil
	case "never":
		return SyncNever, nil
	}
	return 0, fmt.Errorf("%w: %q", ErrSyncPolicy, s)
}
