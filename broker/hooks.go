package broker

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/mqttd/mqttd/packet"
)

// Hooks are the broker's one extension seam: small optional interfaces, each
// a single method, found by type assertion when a hook is added
// (Options.Hooks, Server.AddHook). The password and ACL files, dynamic
// security, HTTP and JWT authentication use it; none of them reaches into
// connections or sessions.
//
// Order: the hooks in the order they were added, then the Authenticate,
// Authorize and CheckSubscribe functions of Options (the password and ACL
// files when config wires them) last. No broker lock is held while a hook
// runs, and a server with no hook of a kind pays one length check for it.

// ErrDefer, returned (or wrapped) by an Authenticator or Authorizer, says the
// hook has no opinion: the next one decides.
var ErrDefer = errors.New("broker: hook defers")

// ErrHandled, returned by a PublishHook, says the hook consumed the message:
// it is acknowledged as usual but not routed to subscribers.
var ErrHandled = errors.New("broker: message handled by a hook")

// Authenticator checks a CONNECT (user name and password in c). nil accepts
// the client and no later hook is asked; ErrDefer asks the next; any other
// error refuses the client with the packet.ReasonCode it wraps (default:
// bad user name or password, 3.x return code 4). Wrap auth.ErrBadCredentials
// for a wrong password so that repeated failures are slowed down
// (authlimit.go). When every Authenticator defers, the client is let in if
// anonymous clients are allowed (Options.AllowAnonymous), else refused with
// NotAuthorized.
type Authenticator interface {
	Authenticate(c *ClientInfo) error
}

// Access is what an Authorizer is asked about.
type Access uint8

// Kinds of access.
const (
	AccessPublish     Access = iota + 1 // the client publishes to a topic name (also its will)
	AccessReceive                       // a message on a topic name is about to be delivered to the client
	AccessSubscribe                     // the client subscribes to a filter (after the mount point, without $share/group/)
	AccessUnsubscribe                   // the client unsubscribes from a filter
)

func (a Access) String() string {
	switch a {
	case AccessPublish:
		return "publish"
	case AccessReceive:
		return "receive"
	case AccessSubscribe:
		return "subscribe"
	case AccessUnsubscribe:
		return "unsubscribe"
	}
	return fmt.Sprintf("access(%d)", uint8(a))
}

// Authorizer decides an access. nil allows it and no later hook is asked;
// ErrDefer asks the next; any other error refuses it (PUBACK, PUBREC, SUBACK
// or UNSUBACK 0x87; a refused receive is not delivered). When every
// Authorizer defers, the access is allowed. c.Password is nil. AccessReceive
// is asked for each delivery: keep it fast.
type Authorizer interface {
	Authorize(c *ClientInfo, a Access, topic string) error
}

// PublishHook sees each PUBLISH from a client after validation and
// authorization, before it is routed. It may change p.Topic (it must stay a
// valid topic name: it is checked again), p.Payload, p.Retain and p.Props.
// ErrHandled consumes the message; another error refuses it with the
// packet.ReasonCode it wraps (default 0x83 implementation specific error; a
// QoS 0 message is dropped).
type PublishHook interface {
	OnPublish(c *ClientInfo, p *packet.Publish) error
}

// SessionEvent says what happened to a session.
type SessionEvent uint8

// Session events.
const (
	SessionCreated SessionEvent = iota + 1 // a CONNECT created a new session
	SessionResumed                         // a CONNECT resumed a session that existed
	SessionEnded                           // the session is gone (clean end, expiry, replaced, taken over by a clean start)
)

func (e SessionEvent) String() string {
	switch e {
	case SessionCreated:
		return "created"
	case SessionResumed:
		return "resumed"
	case SessionEnded:
		return "ended"
	}
	return fmt.Sprintf("session_event(%d)", uint8(e))
}

// SessionHook is told of sessions created, resumed and ended. For
// SessionEnded only c.ClientID (and the identity that owned the session,
// when known) is set.
type SessionHook interface {
	OnSession(c *ClientInfo, e SessionEvent)
}

// SubscriptionEvent is a subscription added or removed.
type SubscriptionEvent struct {
	Filter  string // as the client sent it, with $share/group/ when shared
	Routed  string // as the server routes it: after the listener's mount point, without $share/group/
	QoS     byte   // granted
	Removed bool   // UNSUBSCRIBE (sessions that end are reported by SessionHook)
}

// SubscriptionHook is told of subscriptions added and removed.
type SubscriptionHook interface {
	OnSubscription(c *ClientInfo, e SubscriptionEvent)
}

// DropReason says why a message was not delivered to a client; 0 means it
// was delivered (handed to the connection's writer).
type DropReason uint8

// Reasons a message is not delivered.
const (
	Delivered         DropReason = iota // written to the client's connection
	DropQueueFull                       // the session's queue bounds (max_queued_messages, max_queued_bytes)
	DropBacklog                         // QoS 0 past the connection's backlog bound
	DropTooLarge                        // above the client's Maximum Packet Size
	DropNotAuthorized                   // the client may not read it
)

func (r DropReason) String() string {
	switch r {
	case Delivered:
		return "delivered"
	case DropQueueFull:
		return "queue_full"
	case DropBacklog:
		return "backlog"
	case DropTooLarge:
		return "too_large"
	case DropNotAuthorized:
		return "not_authorized"
	}
	return fmt.Sprintf("drop_reason(%d)", uint8(r))
}

// DeliveryHook is told of each message delivered to, or dropped for, a
// client. Deliveries happen under the session's lock, so this hook is
// called asynchronously, in order, from one goroutine of the server: it
// never runs under a broker lock, and a hook that falls more than
// deliveryHookBuffer events behind loses events (counted:
// Server.HookEventsLost).
type DeliveryHook interface {
	OnDelivery(clientID string, m *Message, r DropReason)
}

// DisconnectHook is told when a connected client's connection ends, with
// the recorded reason (closereason.go) and the error behind it.
type DisconnectHook interface {
	OnDisconnect(c *ClientInfo, cause Cause, err error)
}

// AttachHook is called once when the hook is added, with the server it is
// added to (to publish, subscribe inline or disconnect clients). An error
// refuses the hook.
type AttachHook interface {
	Attach(s *Server) error
}

// AckGate holds a publisher's acknowledgements (PUBACK, PUBREC) for the
// messages it handed on (Message.HoldAck) until what it did with them is
// safe: a cluster waits until the other nodes that may have received them
// have them stored, so that a node dying does not lose a message its
// publisher was told was taken. It is called once per read burst of the
// publisher that holds any, after the burst's store writes and before its
// acknowledgements leave, with the smallest and largest tokens the burst's
// messages were given. It may block. An error withholds the burst's
// acknowledgements and closes the connection (MQTT 5: DISCONNECT 0x89
// Server busy): the client sends the messages again [MQTT-4.3.2-2],
// [MQTT-4.3.3-2].
type AckGate interface {
	AwaitAcks(c *ClientInfo, first, last uint64) error
}

// AuthMethodHook offers MQTT 5 enhanced authentication methods (the AUTH
// exchange, section 4.12) beyond Options.EnhancedAuth: it returns the
// handler of method, or nil when the method is not its own.
type AuthMethodHook interface {
	AuthMethod(method string) EnhancedAuthenticator
}

// hooks holds the installed hooks by kind. The slices are written only while
// hooks are added (before Serve) and read without a lock afterwards.
type hooks struct {
	authn   []Authenticator
	authz   []Authorizer
	publish []PublishHook
	session []SessionHook
	subs    []SubscriptionHook
	deliver []DeliveryHook
	discon  []DisconnectHook
	methods []AuthMethodHook
	replica []ReplicaHook
	connect []ConnectHook
	connEnd []ConnectEndHook
	shared  []SharedRouteHook
	gate    []AckGate

	events chan deliveryEvent // to the DeliveryHooks; nil without one
	lost   atomic.Int64
}

// deliveryHookBuffer is how many delivery events may wait for the
// DeliveryHooks.
const deliveryHookBuffer = 1 << 16

type deliveryEvent struct {
	client string
	m      *Message
	r      DropReason
}

// errHookKind refuses a value that implements no hook interface.
var errHookKind = errors.New("broker: the value implements no hook interface")

// AddHook adds h, which implements one or more of the hook interfaces, after
// those already added. Add hooks before Serve.
func (s *Server) AddHook(h any) error {
	n := 0
	if a, ok := h.(AttachHook); ok {
		if err := a.Attach(s); err != nil {
			return err
		}
		n++
	}
	hk := &s.hooks
	n += addAs(&hk.authn, h) + addAs(&hk.authz, h) + addAs(&hk.publish, h) + addAs(&hk.session, h) +
		addAs(&hk.subs, h) + addAs(&hk.discon, h) + addAs(&hk.methods, h) + addAs(&hk.replica, h) +
		addAs(&hk.connect, h) + addAs(&hk.connEnd, h) + addAs(&hk.shared, h) + addAs(&hk.gate, h)
	if v, ok := h.(DeliveryHook); ok {
		if hk.events == nil {
			hk.events = make(chan deliveryEvent, deliveryHookBuffer)
			s.wg.Add(1)
			go s.deliveryLoop()
		}
		hk.deliver = append(hk.deliver, v)
		n++
	}
	if n == 0 {
		return fmt.Errorf("%w: %T", errHookKind, h)
	}
	return nil
}

// addAs appends h to list when it implements the list's hook kind, and
// reports 1 if it did.
func addAs[T any](list *[]T, h any) int {
	v, ok := h.(T)
	if !ok {
		return 0
	}
	*list = append(*list, v)
	return 1
}

// HookEventsLost returns how many delivery events were not given to the
// DeliveryHooks because they fell behind.
func (s *Server) HookEventsLost() int64 { return s.hooks.lost.Load() }

// deliveryLoop hands delivery events to the DeliveryHooks until shutdown.
func (s *Server) deliveryLoop() {
	defer s.wg.Done()
	for {
		select {
		case ev := <-s.hooks.events:
			for _, h := range s.hooks.deliver {
				h.OnDelivery(ev.client, ev.m, ev.r)
			}
		case <-s.done:
			return
		}
	}
}

// noteDelivery reports a delivery or a drop to the DeliveryHooks without
// blocking; any lock may be held.
func (s *Server) noteDelivery(client string, m *Message, r DropReason) {
	if s.hooks.events == nil {
		return
	}
	select {
	case s.hooks.events <- deliveryEvent{client, m, r}:
	default:
		s.hooks.lost.Add(1)
	}
}

// hasAuthz reports whether any access decision is made at all (an
// Authorizer hook or Options.Authorize).
func (s *Server) hasAuthz() bool {
	return len(s.hooks.authz) > 0 || s.opts.Authorize != nil
}

// allowed asks the Authorizers, then Options.Authorize, whether info may
// have access a to topic. Connections from DialLocal are the server's own
// and always allowed. Call with no lock held.
func (s *Server) allowed(info *ClientInfo, a Access, topic string) bool {
	if info.local {
		return true
	}
	for _, h := range s.hooks.authz {
		err := h.Authorize(info, a, topic)
		if err == nil {
			return true
		}
		if !errors.Is(err, ErrDefer) {
			return false
		}
	}
	if a == AccessSubscribe && s.opts.CheckSubscribe != nil {
		return s.opts.CheckSubscribe(info, topic)
	}
	if s.opts.Authorize == nil {
		return true
	}
	switch a {
	case AccessPublish:
		return s.opts.Authorize(info, topic, true)
	case AccessReceive:
		return s.opts.Authorize(info, topic, false)
	case AccessSubscribe:
		return s.opts.Authorize(info, topic, false) || s.canEverRead(info, topic)
	}
	return true // Options.Authorize says nothing about unsubscribing
}

// errAllDeferred is what runAuthenticators returns when every Authenticator
// deferred (or there is none).
var errAllDeferred = errors.New("broker: no authenticator decided")

// runAuthenticators asks the Authenticator hooks, then
// Options.Authenticate, in order. It returns nil (accepted),
// errAllDeferred, or the refusal.
func (s *Server) runAuthenticators(info *ClientInfo) error {
	for _, h := range s.hooks.authn {
		err := h.Authenticate(info)
		if err == nil || !errors.Is(err, ErrDefer) {
			return err
		}
	}
	if s.opts.Authenticate != nil {
		err := s.opts.Authenticate(info)
		if errors.Is(err, ErrDefer) {
			return errAllDeferred
		}
		return err
	}
	return errAllDeferred
}

// hasAuthn reports whether an Authenticator hook or Options.Authenticate is
// installed.
func (s *Server) hasAuthn() bool {
	return len(s.hooks.authn) > 0 || s.opts.Authenticate != nil
}

// onPublish runs the PublishHooks on p. Call with no lock held.
func (s *Server) onPublish(info *ClientInfo, p *packet.Publish) error {
	for _, h := range s.hooks.publish {
		if err := h.OnPublish(info, p); err != nil {
			return err
		}
	}
	return nil
}

// noteSession tells the SessionHooks. Call with no lock held.
func (s *Server) noteSession(info *ClientInfo, e SessionEvent) {
	for _, h := range s.hooks.session {
		h.OnSession(info, e)
	}
}

// noteSubscription tells the SubscriptionHooks. Call with no lock held.
func (s *Server) noteSubscription(info *ClientInfo, e SubscriptionEvent) {
	for _, h := range s.hooks.subs {
		h.OnSubscription(info, e)
	}
}

// enhancedAuth returns the handler of a v5 authentication method:
// Options.EnhancedAuth first, then the AuthMethodHooks.
func (s *Server) enhancedAuth(method string) EnhancedAuthenticator {
	if h := s.opts.EnhancedAuth[method]; h != nil {
		return h
	}
	for _, m := range s.hooks.methods {
		if h := m.AuthMethod(method); h != nil {
			return h
		}
	}
	return nil
}
