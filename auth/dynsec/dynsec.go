// Package dynsec is mqttd's built-in implementation of Mosquitto 2.0's
// dynamic-security plugin: clients, groups and roles kept in Mosquitto's
// JSON file, managed at run time over the $CONTROL/dynamic-security/v1
// topic (so Mosquitto's own mosquitto_ctrl drives it), and enforced through
// the broker's hooks (Authenticator, Authorizer, PublishHook).
//
// Evaluation follows the plugin. A CONNECT with a user name and password
// that names a known client is accepted or refused here (a disabled client,
// a client id that is not the bound one, or a wrong password is refused);
// anything else defers. An access is decided by the client's own roles in
// priority order, then its groups in priority order (each group's roles in
// priority order), each role's ACLs in priority order, the first matching
// ACL deciding; a client without a user name uses the anonymous group. When
// nothing matched, defaultACLAccess decides, except that $CONTROL topics are
// never granted by default.
package dynsec

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/mqttd/mqttd/auth"
	"github.com/mqttd/mqttd/broker"
	"github.com/mqttd/mqttd/packet"
	"github.com/mqttd/mqttd/topic"
)

// ControlTopic is where commands are published; responses go to
// ControlTopic + "/response".
const (
	ControlTopic  = "$CONTROL/dynamic-security/v1"
	ResponseTopic = ControlTopic + "/response"
)

// Options configure a Plugin.
type Options struct {
	// ConfigFile is the plugin's JSON file (plugin_opt_config_file). It is
	// read by New and rewritten after each change.
	ConfigFile string
	// FinalAuthn makes the plugin's authentication deferrals final, as in
	// Mosquitto when no password file follows: a CONNECT with a user name
	// that the plugin does not accept is refused (not authorized). Without
	// it the next hook (the password file) decides.
	FinalAuthn bool
	// FinalAuthz makes the plugin's access deferrals final, as in
	// Mosquitto when no ACL file follows: an access that no ACL and no
	// default granted is refused. Without it the next hook decides.
	FinalAuthz bool
	// Logger receives the plugin's log lines (nil: discarded).
	Logger *slog.Logger
}

// Plugin is the dynamic-security state and its broker hooks. Add it with
// broker.Server.AddHook (or Options.Hooks) before Serve.
type Plugin struct {
	opts Options
	log  *slog.Logger

	mu     sync.RWMutex
	d      *data
	saveMu sync.Mutex // orders the writes of the file

	srv *broker.Server

	connMu sync.Mutex
	conns  map[string]connInfo // connected clients by client id
}

type connInfo struct {
	username    string
	hasUsername bool
	remote      string
}

// New loads opts.ConfigFile. A file that does not exist is an error (as
// Mosquitto refuses to activate the plugin with an unreadable file); an
// empty file is an empty configuration.
func New(opts Options) (*Plugin, error) {
	if opts.ConfigFile == "" {
		return nil, errors.New("dynsec: no configuration file (plugin_opt_config_file)")
	}
	b, err := os.ReadFile(opts.ConfigFile)
	if err != nil {
		return nil, fmt.Errorf("dynsec: %w", err)
	}
	d, err := parseFile(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.ConfigFile, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Plugin{opts: opts, log: log, d: d, conns: map[string]connInfo{}}, nil
}

// Attach implements broker.AttachHook.
func (p *Plugin) Attach(s *broker.Server) error {
	p.srv = s
	return nil
}

// errRefused is a refusal by the plugin (not authorized: what Mosquitto
// answers for MOSQ_ERR_AUTH and MOSQ_ERR_ACL_DENIED).
type refusal struct {
	why string
	bad bool // a wrong password: slowed down by the broker
}

func (r *refusal) Error() string { return "dynsec: " + r.why }

func (r *refusal) Unwrap() []error {
	if r.bad {
		return []error{packet.NotAuthorized, auth.ErrBadCredentials}
	}
	return []error{packet.NotAuthorized}
}

// Authenticate implements broker.Authenticator (the plugin's basic auth).
func (p *Plugin) Authenticate(c *broker.ClientInfo) error {
	err := p.authenticate(c)
	if errors.Is(err, broker.ErrDefer) && p.opts.FinalAuthn && c.HasUsername {
		return &refusal{why: "unknown client"}
	}
	return err
}

func (p *Plugin) authenticate(c *broker.ClientInfo) error {
	if !c.HasUsername || !c.HasPassword {
		return broker.ErrDefer
	}
	p.mu.RLock()
	cl := p.d.clients[c.Username]
	var pw *password
	var disabled, bound bool
	var clientid string
	if cl != nil {
		pw, disabled = cl.pw, cl.disabled
		clientid, bound = cl.clientid.s, cl.clientid.set
	}
	p.mu.RUnlock()
	switch {
	case cl == nil:
		return broker.ErrDefer
	case disabled:
		return &refusal{why: "client disabled"}
	case bound && clientid != c.ClientID:
		return &refusal{why: "client id is not the one bound to the user name"}
	case pw == nil:
		return broker.ErrDefer
	case !pw.check(string(c.Password)):
		return &refusal{why: "wrong password", bad: true}
	}
	return nil
}

// errDenied refuses an access.
var errDenied = &refusal{why: "access denied"}

// Authorize implements broker.Authorizer (the plugin's ACL check).
func (p *Plugin) Authorize(c *broker.ClientInfo, a broker.Access, t string) error {
	err := p.authorize(c, a, t)
	if errors.Is(err, broker.ErrDefer) && p.opts.FinalAuthz {
		return errDenied
	}
	return err
}

// decision is the outcome of evaluating roles.
type decision int

const (
	notFound decision = iota
	allow
	deny
)

func (p *Plugin) authorize(c *broker.ClientInfo, a broker.Access, t string) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	d := p.d
	var def bool
	switch a {
	case broker.AccessPublish:
		def = d.def.pubSend
	case broker.AccessReceive:
		def = d.def.pubRecv
	case broker.AccessSubscribe:
		def = d.def.subscribe
	case broker.AccessUnsubscribe:
		def = d.def.unsubscribe
	default:
		return broker.ErrDefer
	}
	r := notFound
	if c.HasUsername {
		cl := d.clients[c.Username]
		if cl == nil {
			return broker.ErrDefer
		}
		r = d.checkRoles(cl.roles, a, t)
		for i := 0; r == notFound && i < len(cl.groups); i++ {
			if g := d.groups[cl.groups[i].name]; g != nil {
				r = d.checkRoles(g.roles, a, t)
			}
		}
	} else if g := d.groups[d.anon]; d.anon != "" && g != nil {
		r = d.checkRoles(g.roles, a, t)
	}
	switch r {
	case allow:
		return nil
	case deny:
		return errDenied
	}
	if !def || strings.HasPrefix(t, "$CONTROL") {
		// $CONTROL topics are never granted by default: only explicitly.
		return broker.ErrDefer
	}
	return nil
}

// checkRoles walks roles in order; the first matching ACL decides.
func (d *data) checkRoles(roles []ref, a broker.Access, t string) decision {
	for _, rr := range roles {
		r := d.roles[rr.name]
		if r == nil {
			continue
		}
		switch a {
		case broker.AccessPublish:
			if x := matchPublish(r.acls[kPubSend], t); x != notFound {
				return x
			}
		case broker.AccessReceive:
			if x := matchPublish(r.acls[kPubRecv], t); x != notFound {
				return x
			}
		case broker.AccessSubscribe:
			if x := matchSub(r.acls[kSubLiteral], r.acls[kSubPattern], t); x != notFound {
				return x
			}
		case broker.AccessUnsubscribe:
			if x := matchSub(r.acls[kUnsubLiteral], r.acls[kUnsubPattern], t); x != notFound {
				return x
			}
		}
	}
	return notFound
}

func verdict(allowed bool) decision {
	if allowed {
		return allow
	}
	return deny
}

// matchPublish: the ACL topic is a filter matched against the topic name.
func matchPublish(acls []acl, name string) decision {
	for _, a := range acls {
		if aclMatchesName(a.topic, name) {
			return verdict(a.allow)
		}
	}
	return notFound
}

// aclMatchesName is mosquitto_topic_matches_sub: a '$' topic is matched
// only by a filter that starts with '$' too [MQTT-4.7.2-1].
func aclMatchesName(filter, name string) bool {
	if (strings.HasPrefix(filter, "$")) != (strings.HasPrefix(name, "$")) {
		return false
	}
	return topic.Match(filter, name)
}

// matchSub: a literal ACL equal to the filter decides first, then the
// pattern ACLs in priority order.
func matchSub(literal, pattern []acl, filter string) decision {
	for _, a := range literal {
		if a.topic == filter {
			return verdict(a.allow)
		}
	}
	for _, a := range pattern {
		if subACLCheck(a.topic, filter) {
			return verdict(a.allow)
		}
	}
	return notFound
}

// subACLCheck reports whether the subscription filter sub is covered by the
// ACL pattern acl (the plugin's sub_acl_check): '+' in acl matches any one
// level of sub (including a '+'), a trailing '#' in acl matches the rest
// (including the parent level), and a '#' in sub needs one in acl.
func subACLCheck(acl, sub string) bool {
	if acl == "#" {
		return true
	}
	acl, aclHash := cutHash(acl)
	sub, subHash := cutHash(sub)
	if subHash && !aclHash {
		return false
	}
	al := strings.Split(acl, "/")
	sl := strings.Split(sub, "/")
	if len(al) > len(sl) || (len(sl) > len(al) && !aclHash) {
		return false
	}
	for i := range sl {
		if i < len(al) {
			if al[i] != "+" && al[i] != sl[i] {
				return false
			}
		}
	}
	return true
}

// cutHash removes a trailing "#" level.
func cutHash(s string) (string, bool) {
	if s == "#" {
		return "", true
	}
	if strings.HasSuffix(s, "/#") {
		return s[:len(s)-2], true
	}
	return s, false
}

// OnSession implements broker.SessionHook: it records who is connected so
// that changes can disconnect the clients they affect.
func (p *Plugin) OnSession(c *broker.ClientInfo, e broker.SessionEvent) {
	if e == broker.SessionEnded {
		return
	}
	p.connMu.Lock()
	p.conns[c.ClientID] = connInfo{username: c.Username, hasUsername: c.HasUsername, remote: c.Remote}
	p.connMu.Unlock()
}

// OnDisconnect implements broker.DisconnectHook.
func (p *Plugin) OnDisconnect(c *broker.ClientInfo, _ broker.Cause, _ error) {
	p.connMu.Lock()
	if ci, ok := p.conns[c.ClientID]; ok && ci.remote == c.Remote {
		delete(p.conns, c.ClientID)
	}
	p.connMu.Unlock()
}

// kick disconnects the connected clients of the given user names; anon
// includes those without a user name (mosquitto_kick_client_by_username).
func (p *Plugin) kick(usernames map[string]bool, anon bool) {
	if p.srv == nil || (len(usernames) == 0 && !anon) {
		return
	}
	var ids []string
	p.connMu.Lock()
	for id, ci := range p.conns {
		if (ci.hasUsername && usernames[ci.username]) || (!ci.hasUsername && anon) {
			ids = append(ids, id)
		}
	}
	p.connMu.Unlock()
	for _, id := range ids {
		if p.srv.Disconnect(id, packet.AdministrativeAction) {
			p.log.Info("dynsec: client disconnected after a change", "client", id)
		}
	}
}

// OnPublish implements broker.PublishHook: a message to the control topic
// is a batch of commands, answered on ResponseTopic. Who may send commands
// is decided, as in Mosquitto, by the publish ACL check that ran before.
// Other $CONTROL/dynamic-security/ topics are consumed too (Mosquitto does
// not route $CONTROL messages).
func (p *Plugin) OnPublish(c *broker.ClientInfo, pk *packet.Publish) error {
	if !strings.HasPrefix(pk.Topic, "$CONTROL/dynamic-security/") {
		return nil
	}
	if pk.Topic != ControlTopic {
		return broker.ErrHandled
	}
	resp, k := p.Handle(c.ClientID, c.Username, pk.Payload)
	if p.srv != nil {
		if err := p.srv.Publish(&broker.Message{Topic: ResponseTopic, Payload: resp}); err != nil {
			p.log.Warn("dynsec: response not published", "client", c.ClientID, "topic", ResponseTopic, "err", err)
		}
	}
	// Disconnect after answering, and not on the sender's own goroutine
	// (a command may disconnect the sender).
	if len(k.users) > 0 || k.anon {
		go p.kick(k.users, k.anon)
	}
	return broker.ErrHandled
}

// SetLogger sets the logger (before Serve).
func (p *Plugin) SetLogger(l *slog.Logger) {
	if l != nil {
		p.log = l
	}
}
