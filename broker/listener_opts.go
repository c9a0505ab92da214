package broker

import (
	"errors"
	"net"
	"strings"
	"sync/atomic"

	"github.com/mqttd/mqttd/packet"
)

// ListenerOptions are the settings of one listener: the mosquitto.conf
// options that follow a `listener` line and concern the broker rather than
// the transport.
type ListenerOptions struct {
	// Port is the listener's port, reported in connection events ("New
	// connection from ... on port N."); 0 for unix sockets.
	Port int
	// MountPoint prefixes the topics of this listener's clients (Mosquitto's
	// mount_point): a PUBLISH to "t" is routed as MountPoint+"t", a
	// subscription to "t/#" is to MountPoint+"t/#", and the prefix is taken
	// off again on delivery, so these clients live in their own subtree.
	MountPoint string
	// MaxConnections caps the simultaneous connections of this listener
	// (max_connections); past it a new socket is closed at once. <= 0: no cap.
	MaxConnections int
	// Identity, when set, replaces the user name of every CONNECT on this
	// listener with the connection's identity, such as a TLS client
	// certificate's common name (use_identity_as_username) or subject
	// (use_subject_as_username). ok false refuses the client as not
	// authorized: it has no identity.
	Identity func(nc net.Conn) (username string, ok bool)
	// RefuseEmptyClientID refuses a CONNECT with an empty client id (CONNACK
	// 0x02 / 0x85) instead of assigning one (allow_zero_length_clientid false).
	RefuseEmptyClientID bool
	// AutoIDPrefix starts the ids assigned to clients that send none
	// (auto_id_prefix); "" = "auto-".
	AutoIDPrefix string
	// MaxConnectionRate caps the new connections this listener accepts per
	// second, in bursts of up to as many (max_connection_rate); past it a new
	// socket is closed at once (ratelimit.go). <= 0: no cap.
	MaxConnectionRate int
}

// listenerState is one served listener's options and live counters.
type listenerState struct {
	opts    ListenerOptions
	active  atomic.Int64 // connections accepted and not yet finished
	refused atomic.Int64 // sockets closed because of MaxConnections
	rate    connRate     // MaxConnectionRate (ratelimit.go)
}

// release counts a finished connection out of its listener. nil-safe.
func (st *listenerState) release() {
	if st != nil {
		st.active.Add(-1)
	}
}

// errNoIdentity refuses a client without the identity its listener needs.
var errNoIdentity = errors.New("broker: connection has no identity to use as user name")

// ServeListener is Serve with per-listener settings. It returns like Serve.
func (s *Server) ServeListener(l net.Listener, lo ListenerOptions) error {
	st := &listenerState{opts: lo}
	name := l.Addr().String()
	s.lstates.Store(name, st)
	defer s.lstates.CompareAndDelete(name, st)
	return s.Serve(&limitListener{Listener: s.wrapListener(l), srv: s, st: st})
}

// ListenerRefusals returns how many sockets were closed because their
// listener had MaxConnections connections already.
func (s *Server) ListenerRefusals() int64 {
	var n int64
	s.lstates.Range(func(_, v any) bool {
		n += v.(*listenerState).refused.Load()
		return true
	})
	return n
}

// listenerFor returns the state of the listener called name, nil for one
// served with plain Serve.
func (s *Server) listenerFor(name string) *listenerState {
	if v, ok := s.lstates.Load(name); ok {
		return v.(*listenerState)
	}
	return nil
}

// limitListener enforces MaxConnections and reports accepted sockets.
type limitListener struct {
	net.Listener
	srv *Server
	st  *listenerState
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if !l.st.rateAllow(l.srv, nc, l.Addr().String()) {
			continue // max_connection_rate: closed before any read (ratelimit.go)
		}
		if max := l.st.opts.MaxConnections; max > 0 && l.st.active.Load() >= int64(max) {
			l.st.refused.Add(1)
			l.srv.log.Info("connection refused: max_connections reached", "remote", remoteString(nc),
				"listener", l.Addr().String(), "max_connections", max)
			nc.Close()
			continue
		}
		l.st.active.Add(1)
		if l.srv.opts.OnEvent != nil { // the address and the name are not formatted for nobody
			l.srv.emit(Event{Kind: EventAccepted, Remote: remoteString(nc), Port: l.st.opts.Port,
				Listener: l.Addr().String()})
		}
		return nc, nil
	}
}

// mountTopic puts the listener's mount point in front of a client's topic
// name or filter.
func (c *conn) mountTopic(t string) string {
	if c.lst == nil || c.lst.opts.MountPoint == "" {
		return t
	}
	return c.lst.opts.MountPoint + t
}

// localTopic takes the listener's mount point off a topic delivered to a
// client.
func (c *conn) localTopic(t string) string {
	if c.lst == nil || c.lst.opts.MountPoint == "" {
		return t
	}
	return strings.TrimPrefix(t, c.lst.opts.MountPoint)
}

// applyIdentity replaces the CONNECT's user name with the connection's
// identity when the listener asks for it (use_identity_as_username).
func (c *conn) applyIdentity(cp *packet.Connect) error {
	if c.lst == nil || c.lst.opts.Identity == nil {
		return nil
	}
	name, ok := c.lst.opts.Identity(c.nc)
	if !ok {
		return errNoIdentity
	}
	cp.Username, cp.HasUsername = name, true
	c.info.Username, c.info.HasUsername = name, true
	return nil
}

// subscribeAllowed decides whether a (mounted) filter may be subscribed to:
// the Authorizer hooks, then Options.CheckSubscribe when set, else
// Options.Authorize for literal filters (hooks.go, Server.allowed).
func (s *Server) subscribeAllowed(info *ClientInfo, filter string) bool {
	if !s.hasAuthz() && s.opts.CheckSubscribe == nil {
		return true
	}
	return s.allowed(info, AccessSubscribe, filter)
}
