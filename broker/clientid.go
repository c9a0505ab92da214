package broker

import (
	"strings"
)

// refuseEmptyID reports whether the listener refuses empty client ids.
func (c *conn) refuseEmptyID() bool { return c.lst != nil && c.lst.opts.RefuseEmptyClientID }

// assignID makes a client id for a client that sent none, with the
// listener's auto_id_prefix.
func (c *conn) assignID() string {
	id := c.srv.assignClientID()
	if c.lst != nil && c.lst.opts.AutoIDPrefix != "" {
		id = c.lst.opts.AutoIDPrefix + strings.TrimPrefix(id, "auto-")
	}
	return id
}
