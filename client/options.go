package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Options configure a Client. The zero value connects with MQTT 3.1.1, a
// clean session, a generated client identifier and a 60 s keep alive.
type Options struct {
	ClientID          string         // "" = let the server assign (v5) / generate one client-side for 3.x with clean session
	Version           packet.Version // packet.V31, packet.V311 (default when 0), packet.V5
	Username          string
	Password          []byte
	PersistentSession bool // false = clean session / clean start (the default, as mosquitto_pub)
	// SessionExpiry is the v5 Session Expiry Interval in seconds;
	// 0xFFFFFFFF = never. Left at 0 with PersistentSession, the session
	// NEVER expires (0xFFFFFFFF is sent, as mosquitto_sub -c does and as a
	// 3.1.1 persistent session behaves): the server keeps it, and queues
	// messages for it, until a clean start. Set a finite value to have the
	// server forget a client that does not come back.
	SessionExpiry uint32
	// KeepAlive is sent in CONNECT, rounded to whole seconds: 0 = 60 s
	// default, negative = 0 (disabled). A Server Keep Alive in CONNACK
	// replaces it.
	KeepAlive      time.Duration
	Will           *packet.Will
	TLSConfig      *tls.Config        // used for mqtts:// and wss://
	ConnectTimeout time.Duration      // dial, CONNECT and CONNACK; default 10s
	ConnectProps   *packet.Properties // extra v5 CONNECT properties (user properties, receive maximum, ...)
	// ReceiveMaximum is our inbound window (v5): how many QoS 1/2 messages
	// the server may send before we acknowledge them; 0 = 65535. It bounds
	// the QoS 1/2 messages waiting for handlers; a server that sends more
	// is disconnected with 0x93 [MQTT-3.3.4-9].
	ReceiveMaximum uint16
	// TopicAliasMaximum is how many topic aliases we accept from the server
	// (v5); inbound aliases are resolved before handlers see a Message.
	TopicAliasMaximum uint16
	// MaxPacketSize is the largest packet we accept (v5 Maximum Packet
	// Size); 0 = no limit beyond the protocol's.
	MaxPacketSize uint32
	// MaxInflight is the outbound QoS 1/2 window; it is also capped by the
	// server's Receive Maximum. Default 65535 for v5, 20 for 3.x.
	MaxInflight int
	// AutoReconnect reconnects with exponential backoff between MinBackoff
	// (default 1s) and MaxBackoff (default 30s), resubscribes when the
	// server kept no session, and re-sends in-flight messages with DUP.
	AutoReconnect          bool
	MinBackoff, MaxBackoff time.Duration
	// ConnectRetry makes Dial retry the first connection with the same
	// backoff until it succeeds or Dial's context ends (whose error, or the
	// last refusal, Dial then returns).
	ConnectRetry bool
	// Servers are more server URLs, tried in turn after the one given to
	// Dial, on the first connection and on every reconnection.
	Servers []string
	// Dialer opens the network connections (TCP and unix sockets, and the
	// ones under TLS and WebSocket), e.g. through a SOCKS proxy or with a
	// chosen local address. nil = a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// WebSocketHeader is sent with the WebSocket opening handshake (ws://
	// and wss://), e.g. an Authorization header.
	WebSocketHeader http.Header
	// WebSocketProxy returns the HTTP proxy for a WebSocket connection, e.g.
	// http.ProxyFromEnvironment; nil = none.
	WebSocketProxy func(*http.Request) (*url.URL, error)
	// Credentials, if set, is called before each connection attempt for the
	// user name and password to send (they replace Username and Password),
	// e.g. to fetch a short-lived token. An error fails that attempt.
	Credentials func(ctx context.Context) (username string, password []byte, err error)
	// Auth runs an MQTT 5 enhanced authentication method (AUTH exchange)
	// on every connection, e.g. NewSCRAMSHA256(user, password); see also
	// Client.Reauthenticate. Ignored before MQTT 5.
	Auth Authenticator
	// DefaultHandler receives messages that match no Subscribe handler; set
	// here, it is in place before the first message of a resumed session
	// can arrive. SetDefaultHandler changes it later.
	DefaultHandler Handler
	Store          Store // in-flight outbound QoS 1/2 store; nil = memory. NewFileStore(dir) persists.
	// OnConnect is called after every successful connection (the first one
	// included) from the client's connection goroutine.
	OnConnect func(*Client, *packet.Connack)
	// OnConnectionLost is called when an established connection fails,
	// before any reconnect attempt.
	OnConnectionLost func(*Client, error)
	// OnResend is called each time the client sends again a QoS 1/2
	// message that it sent on an earlier connection or loaded from the
	// Store: the PUBLISH (with DUP) or, with release set, its PUBREL. It
	// runs on the writer goroutine and must not block.
	OnResend func(p *packet.Publish, release bool)
	// OnStoreResult is called with the outcome of each message loaded from
	// the Store at Dial (its publisher is gone): nil once the server has
	// acknowledged it, or the server's *AckError. Messages left when the
	// client stops stay in the Store. It must not block.
	OnStoreResult func(p *packet.Publish, err error)
	// Logger receives connection events; at debug level it also traces
	// every packet sent and received ("sending PUBLISH (d0, q1, ...)").
	// nil = discard.
	Logger *slog.Logger

	// MaxQueuedQoS0 and MaxQueuedBytes bound the QoS 0 messages received
	// but not yet handled (queued or in a handler): a count (default 1000,
	// negative = no limit) and payload plus topic bytes (default 16 MiB,
	// negative = no limit). While either is reached, a newly arriving QoS 0
	// message is dropped (the queue keeps the older ones) and counted in
	// Client.Dropped; a warning is logged when dropping starts. QoS 1 and 2
	// messages are never dropped: they are bounded by ReceiveMaximum (v5)
	// or by the server's own in-flight limit (3.x).
	MaxQueuedQoS0  int
	MaxQueuedBytes int64
	// ManualAck leaves the acknowledgement of QoS 1 and 2 messages to the
	// application, which calls Client.Ack once it has really processed a
	// message. Unacknowledged messages count against ReceiveMaximum.
	ManualAck bool
}

// PublishOptions are the per-message settings of Publish.
type PublishOptions struct {
	QoS    byte
	Retain bool
	Props  *packet.Properties // v5 PUBLISH properties
}

const (
	defaultKeepAlive      = 60 * time.Second
	defaultConnectTimeout = 10 * time.Second
	defaultMinBackoff     = time.Second
	defaultMaxBackoff     = 30 * time.Second
	defaultInflightV5     = 65535
	defaultInflightV3     = 20
	defaultMaxQueuedQoS0  = 1000
	defaultMaxQueuedBytes = 16 << 20
)

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	switch o.Version {
	case 0:
		o.Version = packet.V311
	case packet.V31, packet.V311, packet.V5:
	default:
		return o, fmt.Errorf("client: unsupported protocol version %d", o.Version)
	}
	switch {
	case o.KeepAlive == 0:
		o.KeepAlive = defaultKeepAlive
	case o.KeepAlive < 0:
		o.KeepAlive = 0
	case o.KeepAlive < time.Second:
		o.KeepAlive = time.Second
	case o.KeepAlive > 65535*time.Second:
		o.KeepAlive = 65535 * time.Second
	}
	o.KeepAlive = o.KeepAlive.Round(time.Second)
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = defaultConnectTimeout
	}
	if o.MinBackoff <= 0 {
		o.MinBackoff = defaultMinBackoff
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = defaultMaxBackoff
	}
	if o.MaxBackoff < o.MinBackoff {
		o.MaxBackoff = o.MinBackoff
	}
	if o.MaxInflight <= 0 {
		o.MaxInflight = defaultInflightV3
		if o.Version == packet.V5 {
			o.MaxInflight = defaultInflightV5
		}
	}
	if o.MaxInflight > 65535 {
		o.MaxInflight = 65535
	}
	if o.MaxQueuedQoS0 == 0 {
		o.MaxQueuedQoS0 = defaultMaxQueuedQoS0
	}
	if o.MaxQueuedBytes == 0 {
		o.MaxQueuedBytes = defaultMaxQueuedBytes
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Will != nil {
		if o.Will.QoS > 2 {
			return o, fmt.Errorf("client: will: %w", ErrInvalidQoS)
		}
		if !validTopicName(o.Will.Topic) {
			return o, fmt.Errorf("client: will: %w", ErrInvalidTopic)
		}
	}
	if o.Version != packet.V5 && o.ClientID == "" && o.PersistentSession {
		// A 3.x client with a zero-byte ClientId must set CleanSession
		// [MQTT-3.1.3-7]; a generated id would be lost on restart.
		return o, errors.New("client: a persistent session needs a client ID before MQTT 5")
	}
	return o, nil
}

// connectProps builds the v5 CONNECT properties from ConnectProps and the
// dedicated option fields (which take precedence when set).
func (o *Options) connectProps() *packet.Properties {
	var p packet.Properties
	if o.ConnectProps != nil {
		p = *o.ConnectProps
	}
	if o.SessionExpiry != 0 {
		p.SessionExpiry = packet.Ptr(o.SessionExpiry)
	} else if o.PersistentSession && p.SessionExpiry == nil {
		p.SessionExpiry = packet.Ptr(uint32(0xFFFFFFFF))
	}
	if o.ReceiveMaximum != 0 {
		p.ReceiveMaximum = packet.Ptr(o.ReceiveMaximum)
	}
	if o.TopicAliasMaximum != 0 {
		p.TopicAliasMaximum = packet.Ptr(o.TopicAliasMaximum)
	}
	if o.MaxPacketSize != 0 {
		p.MaximumPacketSize = packet.Ptr(o.MaxPacketSize)
	}
	return &p
}
