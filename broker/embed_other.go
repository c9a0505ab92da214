//go:build !unix

package broker

import (
	"errors"
	"net"
)

// DialLocal needs unix sockets; elsewhere it reports an error.
func (s *Server) DialLocal() (net.Conn, error) {
	return nil, errors.New("broker: DialLocal needs unix sockets")
}
