package client

import (
	"errors"
	"fmt"

	"github.com/mqttd/mqttd/packet"
)

// Sentinel errors.
var (
	// ErrClosed is returned by operations on a client that was closed or
	// disconnected by its user.
	ErrClosed = errors.New("client: closed")
	// ErrConnectionLost wraps the cause when the network connection fails
	// while an operation waits for the server.
	ErrConnectionLost = errors.New("client: connection lost")
	// ErrNotConnected is returned by Subscribe and Unsubscribe when the
	// client is between connections and the context ends before it is back.
	ErrNotConnected = errors.New("client: not connected")
	// ErrInvalidTopic is returned by Publish for a topic name that MQTT does
	// not allow (empty, wildcards, invalid UTF-8).
	ErrInvalidTopic = errors.New("client: invalid topic name")
	// ErrInvalidQoS is returned for a QoS above 2.
	ErrInvalidQoS = errors.New("client: invalid QoS")
	// ErrPingTimeout is the cause of a lost connection when the server did
	// not answer a PINGREQ in time.
	ErrPingTimeout = errors.New("client: no PINGRESP from server")
	// ErrNoPacketID is returned when all 65535 packet identifiers are in use.
	ErrNoPacketID = errors.New("client: no free packet identifier")
	// ErrProtocol is the cause of a lost connection when the server broke
	// the protocol.
	ErrProtocol = errors.New("client: protocol violation by server")
	// ErrBadURL is returned by Dial for an address it cannot use.
	ErrBadURL = errors.New("client: bad server URL")
)

// ConnectError is returned by Dial when the server refuses the connection.
// It wraps the CONNACK reason code (v5 numbering; 3.x return codes are
// mapped onto it), so errors.As(err, &rc) works for a packet.ReasonCode rc.
type ConnectError struct {
	Connack *packet.Connack
}

func (e *ConnectError) Error() string {
	s := "client: connection refused: " + e.Connack.ReasonCode.Error()
	if e.Connack.Props != nil && e.Connack.Props.ReasonString != "" {
		s += " (" + e.Connack.Props.ReasonString + ")"
	}
	return s
}

// Unwrap returns the reason code.
func (e *ConnectError) Unwrap() error { return e.Connack.ReasonCode }

// AckError is returned for a PUBLISH, SUBSCRIBE or UNSUBSCRIBE that the
// server answered with a failure reason code (0x80 or above). It wraps the
// reason code.
type AckError struct {
	Type         packet.Type // PUBACK, PUBREC, SUBACK or UNSUBACK
	ReasonCode   packet.ReasonCode
	ReasonString string // v5 Reason String property, if the server sent one
	Filter       string // SUBACK and UNSUBACK: the filter that failed
}

func (e *AckError) Error() string {
	s := "client: " + e.Type.String() + ": " + e.ReasonCode.Error()
	if e.Filter != "" {
		s += fmt.Sprintf(" (filter %q)", e.Filter)
	}
	if e.ReasonString != "" {
		s += ": " + e.ReasonString
	}
	return s
}

// Unwrap returns the reason code.
func (e *AckError) Unwrap() error { return e.ReasonCode }

// DisconnectError is the cause of a lost connection when the server sent a
// DISCONNECT packet (v5). It wraps the reason code.
type DisconnectError struct {
	Disconnect *packet.Disconnect
}

func (e *DisconnectError) Error() string {
	s := "client: disconnected by server: " + e.Disconnect.ReasonCode.Error()
	if e.Disconnect.Props != nil && e.Disconnect.Props.ReasonString != "" {
		s += " (" + e.Disconnect.Props.ReasonString + ")"
	}
	return s
}

// Unwrap returns the reason code.
func (e *DisconnectError) Unwrap() error { return e.Disconnect.ReasonCode }

func reasonString(p *packet.Properties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}
