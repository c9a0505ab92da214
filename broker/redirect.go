package broker

import (
	"github.com/mqttd/mqttd/packet"
)

// errRedirect makes a connected client use another server (Server.Redirect).
type errRedirect struct {
	ref   string
	moved bool
}

func (e *errRedirect) Error() string { return "broker: use another server: " + e.ref }

func (e *errRedirect) code() packet.ReasonCode {
	if e.moved {
		return packet.ServerMoved
	}
	return packet.UseAnotherServer
}

// Redirect tells every connected v5 client to use the server ref with
// DISCONNECT 0x9C (use another server) or, when moved, 0x9D (server moved),
// carrying ref as Server Reference (MQTT 5.0 section 4.11), and closes every
// connection (3.x clients cannot be told).
func (s *Server) Redirect(ref string, moved bool) {
	s.mu.Lock()
	cs := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		c.disconnect(&errRedirect{ref: ref, moved: moved})
	}
}
