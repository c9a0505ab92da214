package broker

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mqttd/mqttd/packet"
)

// Why a connection ends is decided once, where the close is decided (the
// client's DISCONNECT, a failed read or write, the keep-alive timer, a
// takeover, Shutdown, Redirect), as nats-server's ClosedState: the first
// decision wins (conn.setClose) and the log line, the OnEvent event, the v5
// DISCONNECT and the per-reason counter all read it.

// Reasons a connection ends, beyond those listed with Cause in events.go.
const (
	CauseConnectTimeout Cause = iota + CauseError + 1 // no CONNECT within the connect timeout
	CauseRedirect                                     // Server.Redirect sent the client elsewhere
	CauseSlowConsumer                                 // a write made no progress for WriteTimeout
	CauseNotAuthorized                                // authentication failed (re-authentication, refused CONNECT)
	CauseMalformed                                    // a malformed packet
	CauseRefused                                      // the CONNECT was refused (CONNACK with an error)
	CauseAdministrative                               // Server.Disconnect (embed.go): an administrator or a hook
	causeEnd                                          // one past the last Cause
)

var causeNames = [causeEnd]string{
	CauseDisconnect:     "client_disconnect",
	CauseClosed:         "client_closed",
	CauseKeepAlive:      "keepalive_timeout",
	CauseTakenOver:      "taken_over",
	CauseShutdown:       "shutdown",
	CauseProtocol:       "protocol_error",
	CauseTooLarge:       "packet_too_large",
	CauseError:          "error",
	CauseConnectTimeout: "connect_timeout",
	CauseRedirect:       "redirect",
	CauseSlowConsumer:   "slow_consumer",
	CauseNotAuthorized:  "not_authorized",
	CauseMalformed:      "malformed_packet",
	CauseRefused:        "refused",
	CauseAdministrative: "administrative",
}

// String is the reason's name as a metric label: "client_disconnect",
// "keepalive_timeout", "taken_over", "shutdown", ...
func (c Cause) String() string {
	if c > 0 && c < causeEnd {
		return causeNames[c]
	}
	return "unknown"
}

// closeState is the recorded end of a connection: its reason and the error
// behind it (nil for a plain client close).
type closeState struct {
	cause Cause
	err   error
	// killTimer closes the socket if what is queued is not written in
	// time (closeWithin). Guarded by the connection's outMu.
	killTimer *time.Timer
}

// setClose records why c ends unless a reason is already recorded, and
// returns the one that stands. Safe from any goroutine.
func (c *conn) setClose(cause Cause, err error) *closeState {
	cs := &closeState{cause: cause, err: err}
	if c.closed.CompareAndSwap(nil, cs) {
		return cs
	}
	return c.closed.Load()
}

// closeCounters count connection ends by reason (Server.DisconnectsByReason).
type closeCounters [causeEnd]atomic.Int64

// DisconnectsByReason returns how many connections ended for each reason
// since the server started, keyed by Cause.String ("client_disconnect",
// "keepalive_timeout", "taken_over", "shutdown", "protocol_error", ...).
// Every reason is present, zero or not.
func (s *Server) DisconnectsByReason() map[string]int64 {
	out := make(map[string]int64, causeEnd-1)
	for c := Cause(1); c < causeEnd; c++ {
		out[c.String()] = s.closes[c].Load()
	}
	return out
}

// causeOf classifies the error that ended a connection.
func causeOf(err error, cleanExit bool) Cause {
	var rd *errRedirect
	var rc packet.ReasonCode
	switch {
	case cleanExit, errors.Is(err, errClientDisconnected), errors.Is(err, errDisconnectWithWill):
		return CauseDisconnect
	case errors.Is(err, errTakenOver):
		return CauseTakenOver
	case errors.Is(err, errAdministrative):
		return CauseAdministrative
	case errors.Is(err, errShuttingDown):
		return CauseShutdown
	case errors.As(err, &rd):
		return CauseRedirect
	case errors.Is(err, errKeepAlive):
		return CauseKeepAlive
	case errors.Is(err, errConnectTimeout):
		return CauseConnectTimeout
	case errors.Is(err, errRefused):
		return CauseRefused
	case errors.Is(err, errWriteTimeout):
		return CauseSlowConsumer
	case err == nil, errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return CauseClosed
	case errors.Is(err, packet.PacketTooLarge):
		return CauseTooLarge
	case errors.Is(err, errSecondConnect), errors.Is(err, errNotConnect):
		return CauseProtocol
	case errors.As(err, &rc):
		switch rc {
		case packet.MalformedPacket:
			return CauseMalformed
		case packet.NotAuthorized, packet.BadUserNameOrPassword, packet.BadAuthenticationMethod:
			return CauseNotAuthorized
		case packet.UnspecifiedError, packet.ImplementationSpecificError, packet.ServerUnavailable, packet.ServerBusy:
			return CauseError
		}
		return CauseProtocol
	}
	return CauseError
}

// errWriteTimeout ends a connection whose client did not read for
// WriteTimeout (a slow consumer).
var errWriteTimeout = errors.New("broker: write timeout (slow consumer)")

// writeFailed records why a write failed: a deadline is a slow consumer, a
// reset or broken pipe the client's close; a socket already closed was
// closed by whoever decided its end and recorded why.
func (c *conn) writeFailed(err error) {
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		c.setClose(CauseSlowConsumer, errWriteTimeout)
	case errors.Is(err, net.ErrClosed):
	default:
		c.setClose(causeOf(err, false), err)
	}
}
