package client

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
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
	PersistentSession bool   // false = clean session / clean start (the default, as mosquitto_pub)
	SessionExpiry     uint32 // v5 Session Expiry Interval (seconds); 0xFFFFFFFF never. 0 with PersistentSession = never.
	// KeepAlive is sent in CONNECT, rounded to whole seconds: 0 = 60 s
	// default, negative = 0 (disabled). A Server Keep Alive in CONNACK
	// replaces it.
	KeepAlive      time.Duration
	Will           *packet.Will
	TLSConfig      *tls.Config        // used for mqtts:// and wss://
	ConnectTimeout time.Duration      // dial, CONNECT and CONNACK; default 10s
	ConnectProps   *packet.Properties // extra v5 CONNECT properties (user properties, receive maximum, ...)
	ReceiveMaximum uint16             // our inbound window (v5); 0 = 65535
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
	Logger           *slog.Logger // nil = discard
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
