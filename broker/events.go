package broker

import "github.com/mqttd/mqttd/packet"

// EventKind says what happened to a connection.
type EventKind int

// Connection events, in the order a connection meets them.
const (
	EventAccepted     EventKind = iota + 1 // a socket was accepted (ServeListener only)
	EventConnected                         // a CONNECT was accepted
	EventRefused                           // a CONNECT was refused with Code
	EventDisconnected                      // a connected client's connection ended, for Cause
)

// Cause says why a connection ended.
type Cause int

// Reasons a connection ends.
const (
	CauseDisconnect Cause = iota + 1 // the client sent DISCONNECT
	CauseClosed                      // the client closed the socket without DISCONNECT
	CauseKeepAlive                   // nothing received within 1.5 x keep alive
	CauseTakenOver                   // another connection took over the client id
	CauseShutdown                    // the server is shutting down
	CauseProtocol                    // a protocol violation or malformed packet
	CauseTooLarge                    // a packet above the maximum packet size
	CauseError                       // any other error (Err says which)
	// More in closereason.go.
)

// Event describes a connection's accept, CONNECT or end, for logs in
// Mosquitto's wording (Options.OnEvent).
type Event struct {
	Kind        EventKind
	Remote      string // the client's address, host:port
	Port        int    // the listener's port (ListenerOptions.Port); 0 if unknown
	Listener    string // the listener's address
	ClientID    string // "" before an accepted CONNECT
	Username    string
	HasUsername bool
	Version     packet.Version // EventConnected
	CleanStart  bool           // EventConnected
	KeepAlive   uint16         // EventConnected: the keep alive in force
	TookOver    bool           // EventConnected: an older connection with this id was closed
	Code        packet.ReasonCode
	Cause       Cause // EventDisconnected
	Err         error // EventDisconnected: the error that ended the connection, if any
}

// emit hands ev to Options.OnEvent.
func (s *Server) emit(ev Event) {
	if s.opts.OnEvent != nil {
		s.opts.OnEvent(ev)
	}
}

// emitConnected reports an accepted CONNECT.
func (c *conn) emitConnected(clean bool, ka uint16, tookOver bool) {
	if c.srv.opts.OnEvent == nil {
		return
	}
	c.srv.emit(Event{Kind: EventConnected, Remote: c.info.Remote, Port: c.port(), Listener: c.info.Listener,
		ClientID: c.info.ClientID, Username: c.info.Username, HasUsername: c.info.HasUsername,
		Version: c.version, CleanStart: clean, KeepAlive: ka, TookOver: tookOver})
}

// emitRefused reports a refused CONNECT.
func (c *conn) emitRefused(rc packet.ReasonCode) {
	if c.srv.opts.OnEvent == nil {
		return
	}
	c.srv.emit(Event{Kind: EventRefused, Remote: c.info.Remote, Port: c.port(), Listener: c.info.Listener,
		ClientID: c.info.ClientID, Username: c.info.Username, HasUsername: c.info.HasUsername,
		Version: c.version, Code: rc})
}

// emitEnd reports the end of a connection, once, from teardown, with the
// reason recorded for it (closereason.go). Connections refused at CONNECT
// were reported by emitRefused.
func (c *conn) emitEnd(cs *closeState) {
	if c.srv.opts.OnEvent == nil || cs.cause == CauseRefused {
		return
	}
	ev := Event{Kind: EventDisconnected, Remote: c.info.Remote, Port: c.port(), Listener: c.info.Listener,
		ClientID: c.info.ClientID, Username: c.info.Username, HasUsername: c.info.HasUsername,
		Version: c.version, Cause: cs.cause, Err: cs.err}
	if !c.connected.Load() {
		ev.ClientID = ""
	}
	c.srv.emit(ev)
}

// port is the listener's port for events.
func (c *conn) port() int {
	if c.lst == nil {
		return 0
	}
	return c.lst.opts.Port
}
