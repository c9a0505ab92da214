//go:build !linux || 386

package broker

import (
	"net"
	"time"
)

// poller is Linux-only; elsewhere every connection has its own read goroutine.
type poller struct{ timers idleTimers }

func newPoller(time.Duration, float64, func() uint64) *poller { return nil }
func (p *poller) spinCounts() (int64, int64)                  { return 0, 0 }
func (p *poller) stop()                                       {}
func (p *poller) add(c *conn) bool                            { return false }
func (p *poller) rearmLocked(c *conn)                         {}
func (p *poller) removeLocked(c *conn)                        {}
func (c *conn) moreToRead() bool                              { return false }

func (s *Server) wrapListener(l net.Listener) net.Listener { return l }
