package broker

import (
	"log/slog"
	"time"

	"github.com/mqttd/mqttd/store"
)

// DefaultPollSpin is Options.PollSpin's default.
const DefaultPollSpin = 200 * time.Microsecond

// Options configure a Server. The zero value is usable: every zero field takes
// the default named in its comment (Mosquitto's default where it has one).
type Options struct {
	// AllowAnonymous lets clients connect without a user name. With it false and
	// no Authenticate hook, every client is refused (as Mosquitto 2.0).
	AllowAnonymous bool
	// Authenticate checks a CONNECT's credentials; nil accepts every client that
	// AllowAnonymous lets in. A non-nil error refuses the connection with the
	// reason code it wraps (default: bad user name or password).
	Authenticate func(c *ClientInfo) error
	// Hooks are added in order when the server is made (hooks.go): each
	// implements one or more of the hook interfaces (Authenticator,
	// Authorizer, PublishHook, ...). They run before Authenticate, Authorize
	// and CheckSubscribe below. A hook that implements none, or whose Attach
	// fails, makes Serve return the error.
	Hooks []any
	// Authorize decides whether a client may publish (write=true) to, or receive
	// (write=false) from, a topic. nil allows everything.
	Authorize func(c *ClientInfo, topic string, write bool) bool
	// ListenerSecurity says that the listener a client came through selects
	// its authentication and ACL rules (Mosquitto's per_listener_settings).
	// Then an identity restored from a store or imported from another
	// server gets no ACL decision, so no delivery that needs one, while its
	// listener is not served here (persist.go, mayDecide). Without it the
	// rules are the same on every listener, and such an identity is judged
	// by them.
	ListenerSecurity bool

	MaxInflight       int    // outbound QoS 1/2 in flight per client (max_inflight_messages); default 20, -1 unlimited (65535)
	MaxQueuedMessages int    // queued QoS 1/2 per client beyond the window (max_queued_messages); default 1000, -1 unlimited
	MaxQueuedBytes    int64  // queued payload bytes per client (max_queued_bytes); 0 unlimited
	QueueQoS0         bool   // queue QoS 0 for offline persistent sessions (queue_qos0_messages)
	MessageSizeLimit  int    // largest payload accepted (message_size_limit); 0 unlimited
	MaxPacketSize     int    // largest packet accepted (max_packet_size); default DefaultMaxPacketSize (16 MiB)
	MaxKeepAlive      uint16 // largest keep-alive granted (max_keepalive); 0 = 65535
	MaxClientIDLen    int    // longest client id accepted; default 65535 (Mosquitto accepts long ids too)
	// MaxConnectPacketSize bounds every packet read before CONNACK (the
	// CONNECT, its will, and a v5 AUTH exchange); default 128 KiB, never more
	// than MaxPacketSize (max_connect_packet_size).
	MaxConnectPacketSize int

	// PersistentClientExpiration removes persistent sessions of 3.x clients that
	// stay disconnected this long (persistent_client_expiration); 0 = never.
	PersistentClientExpiration time.Duration
	// SysInterval is how often $SYS topics are refreshed (sys_interval);
	// default 10s, negative disables them.
	SysInterval time.Duration

	// PollSpin (poll_spin) is how long, at most, the poller's dispatcher
	// keeps polling for the next readiness event before it parks, while
	// the process is busy (its CPU time at least 0.3 of a core) and the
	// store (a store.SyncCounter) synced nothing lately; default
	// DefaultPollSpin, negative never. Parking costs a wake-up on the next
	// event, which on a virtual machine can take 100 µs and more: a flow
	// bounded by round trips pays it on each. Linux only.
	PollSpin time.Duration
	// pollSpinLoad replaces spinHotLoad, the cores of work from which the
	// dispatcher spins, when not 0 (tests).
	pollSpinLoad float64

	ConnectTimeout time.Duration // a socket must send CONNECT within this; default 10s
	WriteTimeout   time.Duration // a write that makes no progress this long closes the connection; default 30s
	// AuthFailureDelay (auth_failure_delay) is the longest a failed login
	// (Authenticate's error wraps auth.ErrBadCredentials) waits for its
	// refusal after repeated failures from its address: 100 ms after the
	// first, doubling up to this (authlimit.go). Default 5s; negative disables.
	AuthFailureDelay time.Duration
	authLimit        *authLimiter // made by withDefaults from AuthFailureDelay
	// MaxBacklogBytes bounds the bytes waiting to be written to one
	// connection, every packet counted until its write completes. A PUBLISH
	// is queued only below it (the backlog exceeds it by at most one PUBLISH
	// plus control packets, which are never dropped); past it QoS 0 messages
	// for that client are dropped (and counted, Stats.DroppedBacklog) and
	// QoS 1/2 ones stay queued in the session (within MaxQueuedMessages and
	// MaxQueuedBytes) until the backlog drains. Default 8 MiB.
	MaxBacklogBytes int

	// Store persists sessions, their queues and retained messages; nil keeps
	// everything in memory. Call Server.Restore before Serve.
	Store store.Store
	// MaxQueuedBytesTotal bounds the payload bytes queued across all
	// sessions; past it new messages for queues are dropped and counted.
	// 0 = unlimited.
	MaxQueuedBytesTotal int64
	// MemoryLimit (memory_limit), in bytes: past it publishers are paused
	// (TCP back-pressure) and QoS 0 messages read are dropped and counted
	// (memlimit.go). 0 = no limit.
	MemoryLimit int64
	// MaxPublishRate (max_publish_rate) bounds the PUBLISH packets one
	// connection sends per second, in bursts of up to as many; past it the
	// broker stops reading from the client until the rate allows
	// (back-pressure, nothing dropped; ratelimit.go). 0 = unlimited.
	MaxPublishRate int
	// StoreDir is the directory of Store, whose free space is watched: below
	// StoreMinFreeBytes (persistence_min_free_bytes; default
	// DefaultStoreMinFreeBytes, negative: not watched) QoS 1/2 and retained
	// messages are refused (diskfull.go).
	StoreDir          string
	StoreMinFreeBytes int64

	// CheckSubscribe, when set, decides whether a client may subscribe to a
	// filter (after the listener's mount point; acl_check_subscribe); nil:
	// Authorize(filter, read) decides for literal filters (listener_opts.go).
	CheckSubscribe func(c *ClientInfo, filter string) bool
	// OnEvent, when set, is told of connections accepted, connected, refused
	// and ended (events.go), e.g. for Mosquitto's connection messages. It runs
	// on the connection's goroutine with no lock held and must not block.
	OnEvent func(Event)

	// MQTT 5 capabilities the server advertises in CONNACK and enforces
	// (v5.go). Every zero value keeps the full feature set.

	// RetainAvailable (retain_available): nil or true supports retained
	// messages; false refuses a retained will (CONNACK 0x9A) and a retained
	// PUBLISH (DISCONNECT 0x9A, 3.x: close).
	RetainAvailable *bool
	// MaxQoS (max_qos) is the highest QoS accepted from clients and granted
	// to subscriptions; nil = 2.
	MaxQoS *byte
	// MaxTopicAlias (max_topic_alias) is how many topic aliases a v5 client
	// may set up towards the server; 0 = 10 (Mosquitto's default), negative
	// = none.
	MaxTopicAlias int
	// ReceiveMaximum is how many inbound QoS 1/2 PUBLISH a v5 client may
	// have unacknowledged, advertised in CONNACK; more is DISCONNECT 0x93.
	// 0 = MaxInflight, as Mosquitto advertises max_inflight_messages (20 by
	// default); 65535 is not advertised.
	ReceiveMaximum int
	// WildcardSubAvailable, SubIDAvailable and SharedSubAvailable: nil or
	// true offers the feature; false advertises it as unavailable and refuses
	// it (SUBACK 0xA2 / DISCONNECT 0xA1 / SUBACK 0x9E).
	WildcardSubAvailable *bool
	SubIDAvailable       *bool
	SharedSubAvailable   *bool
	// TopicAliasPolicy decides the aliases the server assigns on PUBLISH to
	// v5 clients that allow them (Topic Alias Maximum > 0 in CONNECT); the
	// zero value is TopicAliasLRU, TopicAliasOff sends none
	// (topic_alias_out false).
	TopicAliasPolicy TopicAliasPolicy
	// SharedSubPolicy picks the member of a shared subscription group that
	// receives a message; the zero value is round-robin.
	SharedSubPolicy SharedSubPolicy
	// StrictPayloadFormat rejects a PUBLISH (or will) whose Payload Format
	// Indicator is 1 and whose payload is not valid UTF-8 with 0x99.
	StrictPayloadFormat bool
	// ResponseInformation, when set, answers a v5 client that asks for
	// Request Response Information with the string it returns (typically a
	// topic prefix for its responses).
	ResponseInformation func(c *ClientInfo) string
	// EnhancedAuth maps v5 Authentication Method names to their handlers
	// (AUTH exchange, MQTT 5.0 section 4.12), e.g. "SCRAM-SHA-256":
	// SCRAMSHA256(lookup). A method not listed is refused with 0x8C.
	EnhancedAuth map[string]EnhancedAuthenticator
	// ServerReference, when set, redirects every v5 client: CONNECT is
	// answered with CONNACK 0x9C (0x9D with ServerMoved) carrying it as
	// Server Reference; 3.x clients get "server unavailable".
	ServerReference string
	ServerMoved     bool

	Logger  *slog.Logger // default: slog.Default()
	Version string       // reported in $SYS/broker/version; default "mqttd"
}

// ClientInfo is what hooks are told about a client.
type ClientInfo struct {
	ClientID    string
	Username    string
	Password    []byte
	Remote      string
	Listener    string
	HasUsername bool
	HasPassword bool

	local bool // a DialLocal connection: the server's own, never checked
}

func (o *Options) withDefaults() Options {
	v := *o
	if v.MaxInflight == 0 {
		v.MaxInflight = 20
	} else if v.MaxInflight < 0 || v.MaxInflight > 65535 {
		v.MaxInflight = 65535
	}
	if v.MaxQueuedMessages == 0 {
		v.MaxQueuedMessages = 1000
	}
	switch {
	case v.MaxTopicAlias == 0:
		v.MaxTopicAlias = 10
	case v.MaxTopicAlias < 0:
		v.MaxTopicAlias = 0
	case v.MaxTopicAlias > 65535:
		v.MaxTopicAlias = 65535
	}
	if v.ReceiveMaximum <= 0 {
		v.ReceiveMaximum = v.MaxInflight // after MaxInflight's default
	}
	if v.ReceiveMaximum > 65535 {
		v.ReceiveMaximum = 65535
	}
	if v.MaxKeepAlive == 0 {
		v.MaxKeepAlive = 65535
	}
	if v.MaxClientIDLen <= 0 {
		v.MaxClientIDLen = 65535
	}
	if v.MaxPacketSize <= 0 {
		v.MaxPacketSize = DefaultMaxPacketSize
	}
	v.MaxPacketSize = min(v.MaxPacketSize, maxPacketSize)
	if v.MaxConnectPacketSize <= 0 {
		v.MaxConnectPacketSize = DefaultMaxConnectPacketSize
	}
	if v.SysInterval == 0 {
		v.SysInterval = 10 * time.Second
	}
	if v.ConnectTimeout <= 0 {
		v.ConnectTimeout = 10 * time.Second
	}
	if v.AuthFailureDelay == 0 {
		v.AuthFailureDelay = 5 * time.Second
	}
	v.authLimit = nil
	if v.AuthFailureDelay > 0 {
		v.authLimit = newAuthLimiter(v.AuthFailureDelay)
	}
	if v.WriteTimeout <= 0 {
		v.WriteTimeout = 30 * time.Second
	}
	if v.StoreMinFreeBytes == 0 {
		v.StoreMinFreeBytes = DefaultStoreMinFreeBytes
	}
	if v.MaxBacklogBytes <= 0 {
		v.MaxBacklogBytes = 8 << 20
	}
	if v.Logger == nil {
		v.Logger = slog.Default()
	}
	if v.Version == "" {
		v.Version = "mqttd"
	}
	return v
}

// DefaultMaxPacketSize is the max_packet_size of a broker that sets none.
// Mosquitto's default is the protocol's 256 MiB; mqttd's is lower so that one
// authenticated client cannot make the broker hold 256 MiB per packet, and
// high enough for firmware images and camera snapshots. `max_packet_size
// 268435460` restores the protocol maximum.
const DefaultMaxPacketSize = 16 << 20

// DefaultMaxConnectPacketSize is the largest packet accepted before CONNACK:
// every field of a CONNECT may be up to 64 KiB; this takes the largest will
// with room to spare.
const DefaultMaxConnectPacketSize = 128 << 10

// maxPacketSize is the largest packet MQTT can frame: a 4-byte remaining
// length plus the 5-byte fixed header.
const maxPacketSize = 268435455 + 5
