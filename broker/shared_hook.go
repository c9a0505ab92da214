package broker

import (
	"fmt"
	"strings"
	"time"
)

// SharedRouteHook takes over the choice of the member of a shared
// subscription group (MQTT 5.0 section 4.8.2) when the group's members
// are not all in this server, as in a cluster. For each message, the
// router calls RouteShared once per matching (group, filter) that has a
// member here, instead of giving the message to one of those members
// itself. RouteShared returns true when it took the message (it gives it
// to exactly one member of the group, wherever that member is, with
// Server.DeliverShared on the server that holds it, or decides that the
// group is served elsewhere), false to let the router pick a local member
// as it does without the hook. filter is the routed filter (after the
// listener's mount point, without $share/group/). RouteShared runs on the
// publisher's goroutine, with no broker lock held; it must not block for
// long.
type SharedRouteHook interface {
	RouteShared(m *Message, group, filter string) bool
}

// SharedOfferHook, implemented by a SharedRouteHook that can, takes a
// message a leaving member of a shared subscription group did not
// deliver (queued, or QoS 1 in flight) when no member of the group is
// left in this server: OfferShared gives it to a member elsewhere, and
// reports whether it took it. A QoS 2 message whose delivery started is
// never offered [MQTT-4.8.2-5].
type SharedOfferHook interface {
	OfferShared(m *Message, group, filter string) bool
}

// offerSharedHooks offers m, which no member of the group of key is left
// here to take, to the SharedOfferHooks.
func (s *Server) offerSharedHooks(m *Message, key string) bool {
	if len(s.hooks.shared) == 0 {
		return false
	}
	group, filter, _ := strings.Cut(key, "\x00")
	for _, h := range s.hooks.shared {
		if o, ok := h.(SharedOfferHook); ok && o.OfferShared(m, group, filter) {
			return true
		}
	}
	return false
}

// routeSharedHooks offers m for the shared subscription group of key
// (group "\x00" filter) to the SharedRouteHooks, and reports whether one
// took it.
func (s *Server) routeSharedHooks(m *Message, key string) bool {
	if len(s.hooks.shared) == 0 {
		return false
	}
	group, filter, _ := strings.Cut(key, "\x00")
	for _, h := range s.hooks.shared {
		if h.RouteShared(m, group, filter) {
			return true
		}
	}
	return false
}

// DeliverShared gives m to one member of the shared subscription group
// (group, filter) held in this server, chosen by Options.SharedSubPolicy
// as for the server's own messages (connected members first), at the
// lower of the published QoS and the member's granted QoS [MQTT-3.8.4-8]
// [MQTT-4.8.2-3], never with the retain flag. filter is the routed filter,
// as SharedRouteHook.RouteShared is given it, and must match m.Topic. It
// reports false when no member of the group here matches (it left
// meanwhile) or the server is closing: the caller may then offer m to the
// group elsewhere. The message goes to no other subscription, and to no
// SharedRouteHook. A QoS 1 or 2 delivery to a persistent member is in the
// store (and the ReplicaHooks' copies) when it returns; err says that
// write failed: the member got m as without a store, which a kill -9
// would lose.
func (s *Server) DeliverShared(m *Message, group, filter string) (delivered bool, err error) {
	if m == nil || group == "" || s.isClosing() {
		return false, nil
	}
	var members []*session
	for _, e := range s.subs.Match(m.Topic) {
		if e.Group == group && e.Filter == filter {
			members = append(members, e.Key)
		}
	}
	if len(members) == 0 {
		return false, nil
	}
	if m.Props != nil && m.Props.MessageExpiry != nil && m.Created.IsZero() {
		m.Created = time.Now()
	}
	if m.expired(time.Now()) {
		return true, nil // [MQTT-3.3.2-5]: no member gets it, none should
	}
	b := s.heldBatch() // deliveries to persistent sessions wait for it (persist.go)
	n := s.deliverShared(group+"\x00"+filter, members, m, b)
	if err := s.applyHeld(b); err != nil {
		return n > 0, fmt.Errorf("broker: deliver to a shared subscription: %w", err)
	}
	return n > 0, nil
}
