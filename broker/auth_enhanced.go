package broker

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/mqttd/mqttd/auth/scram"
	"github.com/mqttd/mqttd/packet"
)

// Enhanced authentication (MQTT 5.0 section 4.12): the AUTH exchange at
// CONNECT and re-authentication after it, with pluggable methods
// (Options.EnhancedAuth) and SCRAM-SHA-256 built in (SCRAMSHA256).

// EnhancedAuthenticator handles one v5 Authentication Method (MQTT 5.0
// section 4.12). Options.EnhancedAuth maps method names to them.
type EnhancedAuthenticator interface {
	// Start begins an exchange with the Authentication Data of a CONNECT or
	// of a re-authentication AUTH. It may set info.Username (during CONNECT
	// only). It returns the exchange, the data to send back, and done once
	// the client is authenticated. An error refuses the client with the
	// packet.ReasonCode it wraps (default 0x87 not authorized).
	Start(info *ClientInfo, data []byte) (ex AuthExchange, out []byte, done bool, err error)
}

// AuthExchange is one client's authentication exchange in progress.
type AuthExchange interface {
	// Continue takes the client's next Authentication Data (AUTH 0x18).
	Continue(data []byte) (out []byte, done bool, err error)
}

var errAuthFailed = errors.New("broker: authentication failed")

// checkConnectCaps refuses a CONNECT the server cannot serve: a redirect is
// configured, or the will asks for what the server does not support.
func (c *conn) checkConnectCaps(cp *packet.Connect) error {
	o := &c.srv.opts
	if o.ServerReference != "" {
		rd := &errRedirect{ref: o.ServerReference, moved: o.ServerMoved}
		return c.refuse(rd.code(), rd) // MQTT 5.0 section 4.11; 3.x: server unavailable
	}
	w := cp.Will
	if w == nil {
		return nil
	}
	if w.QoS > o.maxQoS() {
		return c.refuse(packet.QoSNotSupported, fmt.Errorf("will QoS %d above the maximum QoS %d", w.QoS, o.maxQoS())) // [MQTT-3.2.2-12]
	}
	if w.Retain && !o.retainAvailable() {
		return c.refuse(packet.RetainNotSupported, errors.New("retained wills are not supported")) // [MQTT-3.2.2-13]
	}
	if o.StrictPayloadFormat && w.Props != nil && w.Props.PayloadFormat != nil && *w.Props.PayloadFormat == 1 &&
		!utf8.Valid(w.Payload) {
		// Payload Format Indicator 1: the will payload must be UTF-8
		// (MQTT 5.0 section 3.1.3.2.3), refused with 0x99.
		return c.refuse(packet.PayloadFormatInvalid, errors.New("will payload is not valid UTF-8"))
	}
	return nil
}

// connectAuth is a CONNECT waiting for its AUTH exchange to finish.
type connectAuth struct {
	cp       *packet.Connect
	assigned bool
}

// authCode is the reason code an authenticator's error refuses with.
func authCode(err error) packet.ReasonCode {
	rc := packet.NotAuthorized
	errors.As(err, &rc)
	if !rc.IsError() {
		rc = packet.NotAuthorized
	}
	return rc
}

// startEnhancedAuth begins the exchange of the CONNECT's Authentication
// Method: an unknown method is refused with 0x8C [MQTT-4.12.0-1]; a method
// that needs more data answers AUTH 0x18 [MQTT-4.12.0-2].
func (c *conn) startEnhancedAuth(cp *packet.Connect, assigned bool) error {
	method := cp.Props.AuthMethod
	h := c.srv.enhancedAuth(method) // Options.EnhancedAuth, then AuthMethodHooks
	if h == nil {
		c.srv.stats.authFailed.Add(1)
		return c.refuse(packet.BadAuthenticationMethod, fmt.Errorf("authentication method %q is not supported", method))
	}
	c.authState = &authState{authMethod: method}
	ex, out, done, err := h.Start(&c.info, cp.Props.AuthData)
	if err != nil {
		c.srv.stats.authFailed.Add(1)
		return c.refuse(authCode(err), err) // [MQTT-4.12.0-4]
	}
	if done {
		return c.finishConnect(cp, assigned, out)
	}
	c.authEx = ex
	c.pendingConnect = &connectAuth{cp: cp, assigned: assigned}
	c.send(&packet.Auth{ReasonCode: packet.ContinueAuthentication,
		Props: &packet.Properties{AuthMethod: method, AuthData: out}}) // [MQTT-4.12.0-5]
	return nil
}

// handleConnectAuth handles a packet that arrives while a CONNECT waits for
// its AUTH exchange: only AUTH 0x18 with the same method, or DISCONNECT, may
// come [MQTT-3.1.2-30], [MQTT-4.12.0-3].
func (c *conn) handleConnectAuth(fh packet.FixedHeader, body []byte) error {
	pkt, err := packet.Decode(fh, body, packet.V5)
	if err != nil {
		rc := packet.MalformedPacket
		errors.As(err, &rc)
		return c.refuse(rc, err)
	}
	switch p := pkt.(type) {
	case *packet.Disconnect:
		return errClientDisconnected
	case *packet.Auth:
		if p.ReasonCode != packet.ContinueAuthentication || p.Props == nil || p.Props.AuthMethod != c.authMethod {
			return c.refuse(packet.ProtocolError, errors.New("AUTH must continue the CONNECT's authentication method"))
		}
		out, done, err := c.authEx.Continue(p.Props.AuthData)
		if err != nil {
			c.srv.stats.authFailed.Add(1)
			return c.refuse(authCode(err), err) // [MQTT-4.12.0-4]
		}
		if !done {
			c.send(&packet.Auth{ReasonCode: packet.ContinueAuthentication,
				Props: &packet.Properties{AuthMethod: c.authMethod, AuthData: out}})
			return nil
		}
		pc := c.pendingConnect
		c.pendingConnect, c.authEx = nil, nil
		return c.finishConnect(pc.cp, pc.assigned, out)
	}
	return c.refuse(packet.ProtocolError, fmt.Errorf("%s before CONNACK", fh.Type)) // [MQTT-3.1.2-30]
}

// handleAuth handles AUTH after CONNACK: re-authentication (0x19) with the
// method of the CONNECT [MQTT-4.12.1-1], and its continuation (0x18). A
// failure ends the connection with DISCONNECT [MQTT-4.12.1-2].
func (c *conn) handleAuth(p *packet.Auth) error {
	if c.authState == nil || c.authMethod == "" {
		return errors.Join(packet.ProtocolError, errors.New("AUTH without an authentication method at CONNECT")) // [MQTT-4.12.0-7]
	}
	if p.Props == nil || p.Props.AuthMethod != c.authMethod {
		return errors.Join(packet.ProtocolError, errors.New("AUTH with another authentication method")) // [MQTT-4.12.1-1]
	}
	var (
		out  []byte
		done bool
		err  error
	)
	switch p.ReasonCode {
	case packet.ReAuthenticate:
		info := c.info // the live ClientInfo is shared with hooks: a copy
		var ex AuthExchange
		ex, out, done, err = c.srv.enhancedAuth(c.authMethod).Start(&info, p.Props.AuthData)
		c.authEx = ex
	case packet.ContinueAuthentication:
		if c.authEx == nil {
			return errors.Join(packet.ProtocolError, errors.New("AUTH 0x18 with no exchange in progress"))
		}
		out, done, err = c.authEx.Continue(p.Props.AuthData)
	default:
		return errors.Join(packet.ProtocolError, fmt.Errorf("AUTH reason code 0x%02X from a client", byte(p.ReasonCode)))
	}
	if err != nil {
		c.srv.stats.authFailed.Add(1)
		// DISCONNECT has no 0x86: a failed re-authentication is 0x87.
		return errors.Join(packet.NotAuthorized, errAuthFailed, err)
	}
	rc := packet.ContinueAuthentication
	if done {
		rc, c.authEx = packet.Success, nil
	}
	c.send(&packet.Auth{ReasonCode: rc, Props: &packet.Properties{AuthMethod: c.authMethod, AuthData: out}})
	return nil
}

// SCRAMSHA256 is the built-in SCRAM-SHA-256 method (RFC 5802, RFC 7677):
// register it as Options.EnhancedAuth[scram.Method]. The client's CONNECT
// carries its client-first-message; the server answers AUTH 0x18 with its
// server-first-message; the client's AUTH 0x18 carries the proof; CONNACK
// (or AUTH 0x00 when re-authenticating) carries the server signature. A
// client without a CONNECT user name is known by its SCRAM user name.
// Unknown users and wrong proofs are refused with 0x86.
func SCRAMSHA256(lookup scram.Lookup) EnhancedAuthenticator {
	return scramAuth{srv: scram.NewServer(lookup)}
}

type scramAuth struct{ srv *scram.Server }

type scramExchange struct{ conv *scram.Conversation }

func (a scramAuth) Start(info *ClientInfo, data []byte) (AuthExchange, []byte, bool, error) {
	conv, out, err := a.srv.Start(data)
	if err != nil {
		return nil, nil, false, scramErr(err)
	}
	if !info.HasUsername {
		info.Username, info.HasUsername = conv.User(), true
	} else if info.Username != conv.User() {
		return nil, nil, false, errors.Join(packet.NotAuthorized, errors.New("SCRAM user is not the CONNECT user name"))
	}
	return scramExchange{conv}, out, false, nil
}

func (e scramExchange) Continue(data []byte) ([]byte, bool, error) {
	out, err := e.conv.Finish(data)
	if err != nil {
		return nil, false, scramErr(err)
	}
	return out, true, nil
}

func scramErr(err error) error {
	if errors.Is(err, scram.ErrAuthFailed) {
		return errors.Join(packet.BadUserNameOrPassword, err)
	}
	return errors.Join(packet.NotAuthorized, err)
}
