package broker

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/store"
	"github.com/mqttd/mqttd/topic"
)

// errRefused ends a connection whose CONNACK refused it.
var errRefused = errors.New("broker: connection refused")

// handleConnect decodes and answers the CONNECT packet. On refusal it queues
// the CONNACK with the reason and returns errRefused (or the decode error
// where the spec says to close without CONNACK).
func (c *conn) handleConnect(fh packet.FixedHeader, body []byte) error {
	pkt, err := packet.Decode(fh, body, 0)
	cp, _ := pkt.(*packet.Connect)
	if err != nil {
		var rc packet.ReasonCode
		errors.As(err, &rc)
		switch {
		case rc == packet.UnsupportedProtocolVersion:
			// [MQTT-3.1.2-2] CONNACK 0x01 (3.x) / 0x84 (5.0), then close.
			c.version = packet.V311
			if cp != nil && cp.Version == packet.V5 {
				c.version = packet.V5
			}
			return c.refuse(packet.UnsupportedProtocolVersion, err)
		case cp != nil && cp.Version == packet.V5 && rc.IsError():
			// 5.0: a malformed CONNECT may be answered with CONNACK 0x81/0x82.
			c.version = packet.V5
			return c.refuse(rc, err)
		}
		return err // 3.x: close without CONNACK [MQTT-3.1.4-1]
	}
	c.version = cp.Version
	c.bridge = cp.Bridge // the 3.x bridge bit (try_private): handle_subscribe.go
	opts := &c.srv.opts
	v5 := cp.Version == packet.V5
	if v5 {
		c.problemInfo = true
		if p := cp.Props; p != nil {
			// Reason strings only if the client did not ask to suppress
			// them [MQTT-3.1.2-29].
			c.problemInfo = p.RequestProblemInfo == nil || *p.RequestProblemInfo == 1
			if p.MaximumPacketSize != nil {
				c.maxOutSize = *p.MaximumPacketSize // [MQTT-3.1.2-24]
			}
		}
	}

	if cp.Will != nil {
		if err := topic.ValidateName(cp.Will.Topic); err != nil { // [MQTT-3.1.3-11]
			if v5 {
				return c.refuse(packet.TopicNameInvalid, err)
			}
			return errors.Join(errRefused, err) // invalid will topic: close
		}
		cp.Will.Topic = c.mountTopic(cp.Will.Topic)
	}

	// Client identifier [MQTT-3.1.3-3..9].
	// Decode aliases the CONNECT body, password included: what outlives
	// the packet is copied (see also finishConnect).
	id := strings.Clone(cp.ClientID)
	assigned := false
	switch {
	case len(id) > opts.MaxClientIDLen:
		return c.refuse(packet.ClientIdentifierNotValid, nil)
	case id == "" && cp.Version == packet.V31:
		return c.refuse(packet.ClientIdentifierNotValid, nil) // 3.1 requires 1 to 23 characters
	case id == "" && !cp.CleanStart && !v5:
		return c.refuse(packet.ClientIdentifierNotValid, nil) // [MQTT-3.1.3-8]
	case id == "" && c.refuseEmptyID(): // allow_zero_length_clientid false [MQTT-3.1.3-8]
		return c.refuse(packet.ClientIdentifierNotValid, nil)
	case id == "":
		id = c.assignID() // [MQTT-3.1.3-6], [MQTT-3.2.2-16]
		assigned = true
	}
	// Field by field: Remote and Listener, set by newConn, are read by other
	// goroutines.
	c.info.ClientID, c.info.Username, c.info.HasUsername = id, strings.Clone(cp.Username), cp.HasUsername
	c.info.Password, c.info.HasPassword, c.info.local = cp.Password, cp.HasPassword, c.local
	if err := c.applyIdentity(cp); err != nil { // use_identity_as_username
		c.srv.stats.authFailed.Add(1)
		return c.refuse(packet.NotAuthorized, err)
	}

	if err := c.checkConnectCaps(cp); err != nil {
		return err
	}

	// Authentication: an Authentication Method starts the AUTH exchange
	// (MQTT 5.0 section 4.12); otherwise user name and password.
	if v5 && cp.Props != nil && cp.Props.AuthMethod != "" {
		return c.startEnhancedAuth(cp, assigned)
	}
	if !cp.HasUsername && !opts.AllowAnonymous && !c.info.local {
		c.srv.stats.authFailed.Add(1)
		return c.refuse(packet.NotAuthorized, errors.New("anonymous clients are not allowed"))
	}
	if c.info.local {
		// DialLocal: the server's own connection, not authenticated.
	} else if c.srv.hasAuthn() {
		err := c.authenticate() // the Authenticators (hooks.go); failed-login delays: authlimit.go
		if errors.Is(err, errAllDeferred) {
			// No hook decided: as with none installed.
			if cp.HasUsername && !opts.AllowAnonymous {
				c.srv.stats.authFailed.Add(1)
				return c.refuse(packet.NotAuthorized, errors.New("no authenticator accepted the client"))
			}
		} else if err != nil {
			c.srv.stats.authFailed.Add(1)
			rc := packet.BadUserNameOrPassword
			errors.As(err, &rc)
			return c.refuse(rc, err)
		}
	} else if cp.HasUsername && !opts.AllowAnonymous {
		c.srv.stats.authFailed.Add(1)
		return c.refuse(packet.NotAuthorized, errors.New("no authentication configured"))
	}

	return c.finishConnect(cp, assigned, nil)
}

// finishConnect accepts an authenticated CONNECT: keep alive, session, and
// CONNACK (carrying authData when an AUTH exchange authenticated the client).
func (c *conn) finishConnect(cp *packet.Connect, assigned bool, authData []byte) error {
	opts := &c.srv.opts
	v5 := cp.Version == packet.V5
	id := c.info.ClientID
	// Authentication is done: the password is not kept, nor anything that
	// aliases the CONNECT body (which holds it).
	c.info.Password = nil
	if c.authState != nil {
		c.authMethod = strings.Clone(c.authMethod)
	}

	// Keep alive: 3.x clients asking for more than max_keepalive are refused
	// (they cannot be told another value, as Mosquitto); 5.0 clients are told
	// the server's value [MQTT-3.2.2-21].
	ka := cp.KeepAlive
	var serverKA *uint16
	if ka > opts.MaxKeepAlive || (ka == 0 && opts.MaxKeepAlive < 65535) {
		if !v5 {
			return c.refuse(packet.ClientIdentifierNotValid, errors.New("keep alive above max_keepalive"))
		}
		ka = opts.MaxKeepAlive
		serverKA = packet.Ptr(ka)
	}
	c.keepAlive = ka

	// Session lifetime.
	persistent := !cp.CleanStart
	expiry := opts.PersistentClientExpiration
	if expiry == 0 {
		expiry = -1 // never
	}
	if v5 {
		// 5.0: the Session Expiry Interval decides, clean start only discards
		// what existed [MQTT-3.1.2-4..6], [MQTT-3.1.2-23].
		var se uint32
		if cp.Props != nil && cp.Props.SessionExpiry != nil {
			se = *cp.Props.SessionExpiry
		}
		persistent = se > 0
		switch se {
		case 0:
			expiry = 0
		case 0xFFFFFFFF:
			expiry = -1
		default:
			expiry = time.Duration(se) * time.Second
		}
		c.recvMax = 65535
		if p := cp.Props; p != nil {
			if p.ReceiveMaximum != nil {
				c.recvMax = *p.ReceiveMaximum
			}
			if p.TopicAliasMaximum != nil && *p.TopicAliasMaximum > 0 && opts.TopicAliasPolicy == TopicAliasLRU {
				// Aliases only up to the client's Topic Alias Maximum, and
				// none to a client that allows none [MQTT-3.1.2-26], [MQTT-3.1.2-27].
				c.aliasOut = newAliasTable(*p.TopicAliasMaximum)
			}
		}
	}
	c.will = cloneWill(cp.Will)

	ack := &packet.Connack{}
	if v5 {
		props := &packet.Properties{ServerKeepAlive: serverKA}
		opts.capabilityProps(props)
		if assigned {
			props.AssignedClientID = id // [MQTT-3.2.2-16]
		}
		if cp.Props != nil && cp.Props.RequestResponseInfo != nil && *cp.Props.RequestResponseInfo == 1 &&
			opts.ResponseInformation != nil {
			// Response Information only when asked for [MQTT-3.1.2-28].
			props.ResponseInfo = opts.ResponseInformation(&c.info)
		}
		if c.authState != nil && c.authMethod != "" {
			// Same method as CONNECT on the successful CONNACK [MQTT-4.12.0-5].
			props.AuthMethod, props.AuthData = c.authMethod, authData
		}
		ack.Props = props
	}

	// Take over or resume the session [MQTT-3.1.4-2..4].
	srv := c.srv
	if err := srv.beforeSession(&c.info, cp.CleanStart); err != nil {
		srv.connectEnded(&c.info, false)
		// Another server holds the client id and could not hand it over.
		rc := packet.ServerUnavailable
		if code, ok := errors.AsType[packet.ReasonCode](err); ok && code.IsError() {
			rc = code
		}
		return c.refuse(rc, err)
	}
	connected := false
	defer func() { srv.connectEnded(&c.info, connected) }()
	srv.sessMu.Lock()
	old := srv.sessions[id]
	var oldConn *conn
	var sess *session
	if old != nil {
		old.mu.Lock()
		oldConn, old.conn = old.conn, nil
		if !cp.CleanStart && old.persistent && !old.ended {
			sess = old
			ack.SessionPresent = true // [MQTT-3.2.2-2]
		}
		old.mu.Unlock()
	}
	var b *store.Batch
	if srv.opts.Store != nil {
		b = new(store.Batch)
	}
	if sess == nil {
		sess = newSession(srv, id) // [MQTT-3.1.2-6] clean start: a new session
		srv.sessions[id] = sess
		if old != nil && b != nil {
			old.mu.Lock()
			if old.onDisk {
				b.DeleteSession(id) // the old session's state ends here
			}
			old.mu.Unlock()
		}
	}
	sess.mu.Lock()
	sess.persistent = persistent
	sess.expiry = expiry
	// The identity that owns the session now. While connected the session
	// shares the connection's ClientInfo (its password was dropped above,
	// and nothing changes it once the client is connected); teardown gives
	// the session a copy of its own (releaseInfo): it outlives the
	// connection and must not keep it reachable.
	sess.info = &c.info
	sess.authGen++ // read checks made for the previous owner are stale
	sess.restored = false
	c.sess = sess
	if b != nil && sess.stored() {
		b.PutSession(sess.sessionRecordLocked(time.Time{}, c.will))
		sess.onDisk = true
	} else if b != nil && sess.onDisk {
		b.DeleteSession(id) // resumed, but no longer persistent
		sess.onDisk = false
	}
	if b != nil && !b.Empty() {
		// The session is on disk before CONNACK says it exists; no lock is
		// held across the store call.
		sess.mu.Unlock()
		srv.sessMu.Unlock()
		if err := srv.storeApply(b, false); err != nil {
			srv.log.Error("store write failed", "client", id, "err", err)
			if sess != old {
				// A new session: nothing of it is kept. A resumed one
				// stays as it was (offline, its queue intact) for the
				// client's next try; ending it would delete what it holds.
				srv.endSession(sess, true)
			}
			srv.abandonTakeover(old, sess, oldConn)
			return c.refuse(packet.ServerUnavailable, err)
		}
		sess.mu.Lock()
		if sess.ended || sess.conn != nil {
			// Another connection with this id won the race meanwhile.
			sess.mu.Unlock()
			srv.abandonTakeover(old, sess, oldConn)
			return c.refuse(packet.ServerBusy, errors.New("client id taken over while connecting"))
		}
	} else {
		srv.sessMu.Unlock()
	}
	// A resumed session [MQTT-3.1.2-4] keeps its state, but its queued and
	// in-flight messages are checked against the new owner's read access
	// before anything is sent (a client id is no credential; whatever the
	// authentication method, the identity it established decides).
	ok, dropped, redo := sess.reauthorizeLocked(&c.info, c.batch())
	if !ok {
		sess.mu.Unlock()
		srv.redistribute(redo)
		srv.abandonTakeover(old, sess, oldConn)
		return c.refuse(packet.ServerBusy, errors.New("client id taken over while connecting"))
	}
	c.sendConnack(ack) // CONNACK is the first packet the server sends [MQTT-3.2.0-1]
	sess.attachLocked(c, c.batch())
	sess.mu.Unlock()
	if dropped > 0 {
		srv.log.Info("resumed session: messages the client may not read dropped", "client", id,
			"listener", c.info.Listener, "dropped", dropped)
	}
	srv.redistribute(redo)

	if oldConn != nil {
		oldConn.takenOver() // [MQTT-3.1.4-3]
		srv.log.Info("client taken over", "client", id, "remote", oldConn.info.Remote)
	}
	if old != nil && old != sess {
		srv.endSession(old, false)
	}
	n := srv.stats.connected.Add(1)
	srv.stats.noteMaxConnected(n)
	c.emitConnected(cp.CleanStart, ka, oldConn != nil)
	if len(srv.hooks.session) > 0 {
		ev := SessionCreated
		if ack.SessionPresent {
			ev = SessionResumed
		}
		srv.noteSession(&c.info, ev)
	}
	srv.log.Info("client connected", "client", id, "remote", c.info.Remote, "listener", c.info.Listener,
		"version", cp.Version.String(), "clean", cp.CleanStart, "keepalive", ka, "session_present", ack.SessionPresent)
	connected = true
	return nil
}

// abandonTakeover finishes, for a CONNECT refused after it took the client
// id over (another CONNECT with the id won the race, or the store failed),
// what that takeover started: the old connection, already detached from
// its session, is closed as taken over [MQTT-3.1.4-3], and an old session
// this CONNECT replaced (no longer registered under the id) ends. Left
// alone, both lived on unreachable: the connection open, and the session in
// the subscription index, queueing messages for good (the soak's sessions
// and heap grew by one full queue per lost race).
func (srv *Server) abandonTakeover(old, sess *session, oldConn *conn) {
	if oldConn != nil {
		oldConn.takenOver()
	}
	if old != nil && old != sess {
		srv.endSession(old, false)
	}
}

// refuse queues a CONNACK carrying rc (mapped to a 3.x return code for 3.x
// clients) and ends the connection [MQTT-3.2.2-5].
func (c *conn) refuse(rc packet.ReasonCode, why error) error {
	ack := &packet.Connack{ReasonCode: rc}
	if c.version == packet.V5 {
		var rd *errRedirect
		if errors.As(why, &rd) {
			ack.Props = &packet.Properties{ServerReference: rd.ref} // MQTT 5.0 section 4.11
		} else {
			ack.Props = c.reasonProps(reasonText(why, rc))
		}
	}
	c.send(ack)
	c.emitRefused(rc)
	c.srv.log.Info("connection refused", "remote", c.info.Remote, "listener", c.info.Listener,
		"client", c.info.ClientID, "reason", rc.Error(), "err", why)
	return errRefused
}

// assignClientID makes a unique identifier for a client that sent none.
func (s *Server) assignClientID() string {
	var b [8]byte
	rand.Read(b[:])
	return "auto-" + hex.EncodeToString(b[:])
}

// cloneWill copies w out of the CONNECT body it aliases, so that the body
// (and the password in it) is not kept for the life of the connection.
func cloneWill(w *packet.Will) *packet.Will {
	if w == nil {
		return nil
	}
	c := *w
	c.Topic = strings.Clone(w.Topic)
	c.Payload = bytes.Clone(w.Payload)
	if w.Props != nil {
		p := *w.Props
		p.ContentType = strings.Clone(p.ContentType)
		p.ResponseTopic = strings.Clone(p.ResponseTopic)
		p.CorrelationData = bytes.Clone(p.CorrelationData)
		p.AuthMethod, p.AuthData = "", nil // not will properties
		if len(p.User) > 0 {
			p.User = slices.Clone(p.User)
			for i := range p.User {
				p.User[i].Key = strings.Clone(p.User[i].Key)
				p.User[i].Value = strings.Clone(p.User[i].Value)
			}
		}
		c.Props = &p
	}
	return &c
}
