package broker

import (
	"errors"

	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// Wills across servers (a cluster): a hook copies the will of a connected
// client elsewhere (ConnectionWill), and when the server holding the
// connection dies, another server publishes it (PublishWill).

// ConnectionWill returns a copy of the will of the connection whose
// ClientInfo is info (nil when it has none), and whether that connection's
// session is persistent; ok is false when info is not the ClientInfo of a
// client connected now. It is meant for a SessionHook's SessionCreated and
// SessionResumed events, called with the ClientInfo the hook was given:
// the hook runs on the connection's own goroutine then, before anything
// else of the connection is read. (The will may go later: a DISCONNECT
// discards it [MQTT-3.1.2-10], the end of the connection publishes it.)
func (srv *Server) ConnectionWill(info *ClientInfo) (w *packet.Will, persistent, ok bool) {
	if info == nil {
		return nil, false, false
	}
	srv.sessMu.Lock()
	s := srv.sessions[info.ClientID]
	srv.sessMu.Unlock()
	if s == nil {
		return nil, false, false
	}
	s.mu.Lock()
	c := s.conn
	persistent = s.persistent
	s.mu.Unlock()
	if c == nil || &c.info != info {
		return nil, false, false
	}
	return cloneWill(c.will), persistent, true
}

// PublishWill publishes the will a client of another server was owed when
// that server went away with the client connected (a cluster node that
// died), as this server publishes a will [MQTT-3.1.2-8]: with the will's
// QoS and retain flag, dropped when it goes to $SYS or when the ACL does
// not let info publish to its topic (info's listener must be served here
// for a decision, as for a will restored from the store: fail closed). The
// Will Delay Interval is not waited for: the caller decides when the will
// is due.
func (srv *Server) PublishWill(w *packet.Will, info *ClientInfo) error {
	if w == nil || info == nil {
		return errors.New("broker: PublishWill: no will")
	}
	if err := topic.ValidateName(w.Topic); err != nil {
		return err
	}
	if w.QoS > 2 {
		return errors.New("broker: PublishWill: QoS above 2")
	}
	if srv.isClosing() {
		return ErrServerClosed
	}
	srv.publishWill(w, info, true)
	return nil
}
